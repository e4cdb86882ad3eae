"""Client side of closed-loop triggering: listen to triggers, change rules at run time.

Examples
--------
::

    from online_cnmfe.triggers.client import TriggerControl, TriggerListener

    with TriggerListener("tcp://127.0.0.1:5557") as triggers:
        for trig in triggers:             # blocks; TriggerRecord per firing
            print(trig.rule, trig.frame_index, trig.age_ms)

    ctl = TriggerControl("tcp://127.0.0.1:5558")
    ctl.add({"name": "cell7", "neurons": [7], "signal": "zscore", "condition": "threshold",
             "threshold": 4.0, "release": 2.0, "refractory_ms": 500})
    ctl.disable("cell7")
    print(ctl.list())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from online_cnmfe.errors import ConfigError, ProtocolError
from online_cnmfe.triggers.auth import read_token
from online_cnmfe.triggers.records import TriggerRecord
from online_cnmfe.triggers.wire import decode_json, decode_trigger, encode_json

__all__ = ["TriggerControl", "TriggerListener"]

logger = logging.getLogger(__name__)


class TriggerListener:
    """Receive triggers from the engine's trigger socket.

    Parameters
    ----------
    endpoint : str
        The engine's trigger endpoint, e.g. ``tcp://127.0.0.1:5557``.
    socket_type : str
        ``"sub"`` for a PUB trigger socket (default), ``"pull"`` for PUSH.
    timeout_s : float or None
        Iteration stops after this long without a trigger (None: never).
    context : zmq.Context, optional

    Notes
    -----
    A malformed message is logged, counted in :attr:`n_malformed` and skipped. Iterating yields
    :class:`~online_cnmfe.triggers.records.TriggerRecord`; :meth:`receive` returns one or None.
    """

    def __init__(
        self,
        endpoint: str,
        socket_type: str = "sub",
        timeout_s: float | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if socket_type not in ("sub", "pull"):
            raise ValueError(f"socket_type={socket_type!r}; expected 'sub' or 'pull'")
        ctx = context or zmq.Context.instance()
        self._socket = ctx.socket(zmq.SUB if socket_type == "sub" else zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        if socket_type == "sub":
            self._socket.setsockopt(zmq.SUBSCRIBE, b"trigger")
        self._socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.n_received = 0
        self.n_malformed = 0
        self.last_recv_ns = 0

    def receive(self, timeout_s: float | None = None) -> TriggerRecord | None:
        """The next valid trigger, or None after ``timeout_s`` (None: wait forever).

        :attr:`last_recv_ns` is this host's ``time.monotonic_ns()`` right after receipt.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if left is None else int(left * 1000)):
                return None
            frames = self._socket.recv_multipart()
            self.last_recv_ns = time.monotonic_ns()
            try:
                record = decode_trigger(frames)
            except ProtocolError as exc:
                self.n_malformed += 1
                logger.warning("skipping a malformed trigger message: %s", exc)
                continue
            self.n_received += 1
            return record

    @property
    def socket(self) -> zmq.Socket:
        """The receiving socket, to poll it with others (``zmq.Poller``); read with
        :meth:`receive`."""
        return self._socket

    def __iter__(self) -> Iterator[TriggerRecord]:
        while True:
            record = self.receive(self.timeout_s)
            if record is None:
                return
            yield record

    def close(self) -> None:
        self._socket.close(linger=0)

    def __enter__(self) -> TriggerListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TriggerControl:
    """Change the engine's rules at run time over its control socket (REQ/REP, JSON).

    Parameters
    ----------
    endpoint : str
        The engine's control endpoint, e.g. ``tcp://127.0.0.1:5558``.
    timeout_s : float
        How long to wait for each reply.
    context : zmq.Context, optional
    token : str, optional
        The engine's control token; by default read from ``token_file``.
    token_file : path, optional
        The engine's ``triggers.control_token_file`` (default: the per-user file of
        :func:`~online_cnmfe.triggers.auth.default_token_file`), read at the first request.

    Raises
    ------
    TimeoutError
        From each method when the engine does not answer in time (the socket is then reset).
    ConfigError
        When the engine rejects the request (invalid rule, unknown name...); the message is the
        engine's.
    """

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = 2.0,
        context: zmq.Context | None = None,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._token = token
        self._token_file = token_file
        self._ctx = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._ctx.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.endpoint)
        return self._socket

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply object (``ok`` is true)."""
        if self._token is None:
            self._token = read_token(self._token_file)
        sock = self._connect()
        sock.send(encode_json({"cmd": cmd, **fields, "token": self._token}))
        if not sock.poll(int(self.timeout_s * 1000)):
            self.close()  # a REQ socket without its reply is stuck: start afresh next time
            raise TimeoutError(
                f"no reply from the trigger control socket {self.endpoint} within "
                f"{self.timeout_s} s; is the engine running with that control_endpoint?"
            )
        reply = decode_json(sock.recv(), "control reply")
        if reply.get("ok") is not True:
            raise ConfigError(f"the engine rejected '{cmd}': {reply.get('error', reply)}")
        return reply

    def list(self) -> list[dict[str, Any]]:
        """Rules with their state and counters."""
        return self.request("list")["rules"]

    def add(self, rule: dict[str, Any]) -> dict[str, Any]:
        """Add a rule (dict as in the config file); returns the validated rule."""
        return self.request("add", rule=rule)["rule"]

    def remove(self, name: str) -> None:
        self.request("remove", name=name)

    def enable(self, name: str) -> None:
        self.request("enable", name=name)

    def disable(self, name: str) -> None:
        self.request("disable", name=name)

    def stats(self) -> dict[str, Any]:
        return self.request("stats")["stats"]

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> TriggerControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
