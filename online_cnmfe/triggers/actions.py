"""Trigger actions: the trigger socket, a serial device and user callbacks.

All three run on the engine's model thread right after a rule fires, and none of them can block
or crash it: the socket sends with ``NOBLOCK`` (a full PUSH queue drops and counts), a serial
failure (device unplugged, write timeout) is logged, counted and the port reopened at most every
``reconnect_s`` seconds, and an exception in a user callback is logged and counted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from online_cnmfe.errors import ConfigError
from online_cnmfe.triggers.records import TriggerRecord
from online_cnmfe.triggers.rules import Rule
from online_cnmfe.triggers.wire import encode_trigger

__all__ = ["ActionDispatcher", "SerialOutput", "TriggerPublisher"]

logger = logging.getLogger(__name__)
_FULL = "output buffer full (device not reading)"


class TriggerPublisher:
    """The dedicated trigger socket (PUB or PUSH, bound), one ``trigger`` message per firing.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://127.0.0.1:5557`` (``tcp://127.0.0.1:*`` picks a port; see
        :attr:`endpoint` after binding).
    socket_type : str
        ``"pub"`` or ``"push"``.
    send_hwm : int
        Send high-water mark.
    context : zmq.Context, optional

    Notes
    -----
    Use from one thread at a time (the model thread). ``close()`` is idempotent.
    """

    def __init__(
        self,
        endpoint: str,
        socket_type: str = "pub",
        send_hwm: int = 1000,
        context: zmq.Context | None = None,
    ) -> None:
        if socket_type not in ("pub", "push"):
            raise ValueError(f"socket_type={socket_type!r}; expected 'pub' or 'push'")
        ctx = context or zmq.Context.instance()
        self._socket = ctx.socket(zmq.PUB if socket_type == "pub" else zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise ConfigError(
                f"cannot bind the trigger socket to {endpoint}: {exc}. Is another engine running? "
                "Choose another triggers.endpoint."
            ) from exc
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.socket_type = socket_type
        self.n_sent = 0
        self.n_dropped = 0

    def send(self, record: TriggerRecord) -> bool:
        """Send one trigger without blocking; False (and counted) when it had to be dropped."""
        try:
            self._socket.send_multipart(encode_trigger(record), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.n_dropped += 1
            return False
        self.n_sent += 1
        return True

    def close(self) -> None:
        self._socket.close(linger=0)


class SerialOutput:
    """A serial device written by the ``serial`` action (pyserial, optional ``serial`` extra).

    Parameters
    ----------
    port : str
        Device path (``/dev/ttyACM0``, ``COM3``, a pty...).
    baudrate : int
    reconnect_s : float
        After a failure the port is closed; reopening is tried at most this often, on the next
        write.

    Notes
    -----
    Writes use ``write_timeout=0`` (never block: a full OS buffer is a counted failure).
    """

    def __init__(self, port: str, baudrate: int = 115200, reconnect_s: float = 2.0) -> None:
        try:
            import serial  # noqa: F401  (pyserial)
        except ImportError as exc:
            raise ConfigError(
                "the 'serial' trigger action needs pyserial: pip install 'online-cnmfe[serial]'"
            ) from exc
        self.port = port
        self.baudrate = baudrate
        self.reconnect_s = reconnect_s
        self._serial: Any = None
        self._next_attempt = 0.0
        self.n_written = 0
        self.n_errors = 0
        self.last_error: str | None = None

    def open(self) -> bool:
        """Open the port now; False (logged, counted) when it cannot be opened."""
        import serial

        self._next_attempt = time.monotonic() + self.reconnect_s
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._fail(f"cannot open serial port {self.port}: {exc}")
            return False
        if self.last_error is not None:
            logger.warning("serial port %s reopened", self.port)
        self.last_error = None
        return True

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def write(self, payload: bytes) -> bool:
        """Write ``payload`` without blocking; False (logged, counted) on failure."""
        import serial

        if self._serial is None and (time.monotonic() < self._next_attempt or not self.open()):
            return False
        try:
            n = self._write(payload)
        except serial.SerialTimeoutException:
            n = 0
        except (serial.SerialException, OSError) as exc:
            self._fail(f"serial write to {self.port} failed: {exc}")
            return False
        if n != len(payload):  # OS buffer full: (the rest of) this trigger is lost, port kept
            self.n_errors += 1
            if self.last_error != _FULL:
                logger.error(
                    "serial port %s is not draining (buffer full); trigger dropped", self.port
                )
            self.last_error = _FULL
            return False
        self.n_written += 1
        if self.last_error == _FULL:
            self.last_error = None
        return True

    def _write(self, payload: bytes) -> int:
        fd = getattr(self._serial, "fd", None)
        if fd is None:  # not POSIX: pyserial's write honours write_timeout=0
            return self._serial.write(payload)
        # POSIX: pyserial's write spins forever on EAGAIN when write_timeout=0 (the model thread
        # would hang on a device that stops reading), so write to its non-blocking fd directly
        try:
            return os.write(fd, payload)
        except BlockingIOError:
            import serial

            raise serial.SerialTimeoutException("output buffer full") from None

    def _fail(self, message: str) -> None:
        self.n_errors += 1
        if message != self.last_error:  # log each new problem once, not per trigger
            logger.error(
                "%s; triggers go on without it, reopening every %.1f s", message, self.reconnect_s
            )
        self.last_error = message
        self.close()
        self._next_attempt = time.monotonic() + self.reconnect_s

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, Exception) as exc:  # noqa: BLE001 - a dead device may fail to close
                logger.debug("closing %s: %s", self.port, exc)
            self._serial = None


class ActionDispatcher:
    """Runs the actions of fired rules: socket, serial, callbacks (in that order per firing).

    Parameters
    ----------
    publisher : TriggerPublisher, optional
    serial : SerialOutput, optional
    """

    def __init__(
        self, publisher: TriggerPublisher | None = None, serial: SerialOutput | None = None
    ) -> None:
        self.publisher = publisher
        self.serial = serial
        self.callbacks: list[Callable[[TriggerRecord], Any]] = []
        self.n_callback_errors = 0
        self._payloads: dict[str, bytes] = {}

    def add_callback(self, fn: Callable[[TriggerRecord], Any]) -> None:
        """Call ``fn(record)`` on the model thread for every firing of a rule with the
        ``callback`` action. Keep it short: it delays the next frame."""
        if not callable(fn):
            raise TypeError(f"callback must be callable, got {type(fn).__name__}")
        self.callbacks.append(fn)

    def dispatch(self, rule: Rule, record: TriggerRecord) -> None:
        actions = rule.actions
        if "serial" in actions and self.serial is not None:
            payload = self._payloads.get(rule.serial_payload)
            if payload is None:
                payload = self._payloads[rule.serial_payload] = rule.serial_payload.encode("ascii")
            self.serial.write(payload)
        if "publish" in actions and self.publisher is not None:
            self.publisher.send(record)
        if "callback" in actions:
            for fn in self.callbacks:
                try:
                    fn(record)
                except Exception:  # a user callback must never stop the engine
                    self.n_callback_errors += 1
                    if self.n_callback_errors <= 3:
                        logger.exception("trigger callback %r failed (rule %s)", fn, rule.name)

    def stats(self) -> dict[str, Any]:
        pub, ser = self.publisher, self.serial
        return {
            "n_sent": pub.n_sent if pub else 0,
            "n_send_dropped": pub.n_dropped if pub else 0,
            "n_serial_written": ser.n_written if ser else 0,
            "n_serial_errors": ser.n_errors if ser else 0,
            "serial_error": ser.last_error if ser else None,
            "n_callback_errors": self.n_callback_errors,
        }

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.serial is not None:
            self.serial.close()
