"""The frame publisher: streams a :class:`~acquisition.sources.FrameSource` on a ZeroMQ socket.

The only acquisition module that sends on sockets. It binds an XPUB socket (a PUB that also
sees subscriptions) and sends ``start`` (first, then every second), ``frame`` and ``eos``
messages of the wire protocol (docs/protocol.md).

Pacing (``rate``):

- ``"real"``: absolute schedule from the source timestamps, ``t0 + (t_acq[i] - t_acq[0])``;
  the publisher sleeps until each frame's due time, so it never drifts (a late frame is sent at
  once and the next ones are not shifted). Non-monotonic timestamps never go back in time.
- a number: a fixed rate in Hz, also on an absolute schedule.
- ``"max"``: as fast as the slowest subscriber takes frames. The socket is switched to
  ``XPUB_NODROP``, so when a subscriber's queue (its RCVHWM plus our SNDHWM plus the OS socket
  buffers) is full the send waits instead of dropping: lossless back-pressure with the same
  SUB-side code. It also waits for a subscriber before the first frame and whenever the last
  one has left (XPUB reports subscriptions), so no frame is sent to nobody. In the paced modes
  the socket drops at the high-water mark like any PUB (a slow consumer must not stall
  acquisition); the receivers detect the drop from ``seq``.

Slow joiners: ``wait_for_subscriber_s`` holds the first frame until a subscription reaches the
publisher, which is the deterministic handshake tests use; receivers still tolerate joining
mid-stream (they learn the session from the periodic ``start`` and record the frames sent
before they joined as dropped).

Honest counts: :class:`PublishSummary` says how many frames were read from the source, sent,
and sent while no subscriber of ``frame`` was connected (nobody got those).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from acquisition.errors import SourceError
from acquisition.protocol import (
    TOPIC_FRAME,
    EosMessage,
    FrameMessage,
    StartMessage,
    encode_eos,
    encode_frame,
    encode_start,
)
from acquisition.publisher_config import (
    DEFAULT_ENDPOINT,
    PublisherConfig,
    PublishSummary,
    is_local_endpoint,
    parse_rate,
)
from acquisition.publisher_pacing import PacedRun
from acquisition.sources.base import FrameSource, SourceFrame

__all__ = [
    "DEFAULT_ENDPOINT",
    "FramePublisher",
    "PublishSummary",
    "PublisherConfig",
    "is_local_endpoint",
    "parse_rate",
    "stop_on_signals",
]

logger = logging.getLogger(__name__)

EOS_REPEAT_PERIOD_S = 0.1
SUBSCRIPTION_GRACE_S = 0.05


@contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[threading.Event]:
    """Set ``event`` on SIGINT/SIGTERM (main thread only) instead of raising; restore after."""
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {}

    def handler(signum, _frame):
        logger.info(
            "received %s; stopping after an end-of-stream message", signal.Signals(signum).name
        )
        event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class FramePublisher:
    """Bind a socket and stream frame sources on it.

    Parameters
    ----------
    config : PublisherConfig
    context : zmq.Context, optional
        Shared context (default: the process-wide instance).
    """

    def __init__(self, config: PublisherConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        if not is_local_endpoint(config.endpoint):
            logger.warning(
                "binding %s: reachable from other machines; frames are unauthenticated",
                config.endpoint,
            )
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription: an exact count
        self.socket.setsockopt(zmq.SNDHWM, config.sndhwm)
        self.socket.setsockopt(zmq.LINGER, config.linger_ms)
        self.socket.setsockopt(zmq.SNDTIMEO, 100)
        if config.rate == "max":
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        try:
            self.socket.bind(config.endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)
            raise SourceError(f"cannot bind {config.endpoint}: {exc}") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.n_subscribers = 0
        self.session_id = uuid.uuid4().hex[:12]

    # -- socket helpers ----------------------------------------------------------------
    def _drain_subscriptions(self) -> None:
        """Read the subscription messages XPUB queued; count subscribers of ``frame``."""
        while True:
            try:
                msg = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic = msg[1:]
            if not TOPIC_FRAME.encode().startswith(topic):
                continue  # a subscription that does not receive frames
            if msg[:1] == b"\x01":
                self.n_subscribers += 1
            elif msg[:1] == b"\x00":
                self.n_subscribers = max(0, self.n_subscribers - 1)

    def wait_for_subscriber(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Wait until a subscriber of ``frame`` is connected; True if one was within ``timeout_s``.

        :class:`~acquisition.subscriber.FrameSubscriber` subscribes to ``frame`` last, so its
        ``start`` and ``eos`` subscriptions are in place too when this returns True; for
        other orders a 50 ms grace period follows the first ``frame`` subscription.
        """
        deadline = time.monotonic() + timeout_s
        self._drain_subscriptions()
        while self.n_subscribers == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            if self.socket.poll(int(min(remaining, 0.1) * 1000) + 1, zmq.POLLIN):
                self._drain_subscriptions()
        # a subscriber that subscribed to frame before start/eos: let those arrive too
        grace = time.monotonic() + SUBSCRIPTION_GRACE_S
        while (left := grace - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1, zmq.POLLIN):
                self._drain_subscriptions()
        return True

    def _send(self, frames: list, stop: threading.Event, timeout_s: float = math.inf) -> bool:
        """Send a multipart message; in ``max`` mode wait for room.

        Returns False if ``stop`` was set or ``timeout_s`` passed before there was room.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.socket.send_multipart(frames, copy=False)
                return True
            except zmq.Again:  # only in XPUB_NODROP mode: the slowest subscriber is full
                self._drain_subscriptions()
                if stop.is_set() or time.monotonic() > deadline:
                    return False

    def _send_start(self, info, stop: threading.Event) -> None:
        start = StartMessage(
            session_id=self.session_id,
            source=info.kind,
            frame_rate_hz=info.frame_rate_hz,
            shape=info.shape,
            dtype=info.dtype,
            description=info.description,
            n_frames=self.n_to_send(info),
            metadata=info.metadata,
        )
        self._send(encode_start(start), stop)

    def n_to_send(self, info) -> int | None:
        cfg = self.config
        if cfg.loop:
            return None
        end = info.n_frames if cfg.stop is None else cfg.stop
        if info.n_frames is not None and end is not None:
            end = min(end, info.n_frames)
        return None if end is None else max(0, end - cfg.start)

    def _frames(self, source: FrameSource) -> Iterator[tuple[SourceFrame, float]]:
        """Frames with their schedule offset in seconds from the first frame.

        With ``loop``, each pass's times are shifted to follow the previous pass by one frame
        period, so ``t_acq_ms`` keeps growing.
        """
        cfg = self.config
        shift_ms = 0.0
        period_ms = 1000.0 / source.info.frame_rate_hz
        t_zero = None
        while True:
            t_last = None
            for frame in source.frames(cfg.start, cfg.stop):
                t_acq = frame.t_acq_ms + shift_ms
                if t_zero is None:
                    t_zero = t_acq
                t_last = t_acq
                yield frame._replace(t_acq_ms=t_acq), (t_acq - t_zero) / 1000.0
            if not cfg.loop or t_last is None:
                return
            shift_ms = t_last + period_ms - t_zero

    # -- the streaming loop --------------------------------------------------------------
    def publish(
        self,
        source: FrameSource,
        stop: threading.Event | None = None,
        progress=None,
    ) -> PublishSummary:
        """Stream ``source`` until it ends, ``stop`` is set, or an error occurs.

        Parameters
        ----------
        source : FrameSource
        stop : threading.Event, optional
            Set it (e.g. from a signal handler) to end the stream with an ``eos``.
        progress : tqdm-like, optional
            Its ``update(1)`` is called per frame sent.

        Returns
        -------
        PublishSummary
            The ``eos`` has been sent when this returns (also after an error, which is re-raised).
        """
        stop = stop or threading.Event()
        cfg = self.config
        info = source.info
        run = PacedRun(cfg.rate, info.frame_rate_hz)
        if not self._first_subscriber(stop):
            run.reason = "interrupted" if stop.is_set() else "no subscriber"
            return self._summary(run, info)
        try:
            self._stream(source, stop, progress, run)
        except KeyboardInterrupt:
            run.reason = "interrupted"
            raise
        except BaseException:
            run.reason = "error"
            raise
        finally:
            self._send_eos(run.n_sent, run.reason)
            self._drain_subscriptions()
        return self._summary(run, info)

    def _summary(self, run: PacedRun, info) -> PublishSummary:
        elapsed = (run.t_last - run.t_first) if run.n_sent > 1 else 0.0
        return PublishSummary(
            session_id=self.session_id,
            n_sent=run.n_sent,
            elapsed_s=elapsed,
            rate_hz=(run.n_sent - 1) / elapsed if elapsed > 0 else 0.0,
            reason=run.reason,
            n_late=run.n_late,
            lost_daq_frames=int(info.metadata.get("lost_daq_frames", 0)),
            n_subscribers=self.n_subscribers,
            n_read=run.n_read,
            n_unsubscribed=run.n_unsubscribed,
        )

    def _first_subscriber(self, stop: threading.Event) -> bool:
        """Wait for a subscriber as configured; False when a lossless replay has none."""
        wait = self.config.wait_for_subscriber_s
        if wait <= 0:
            return True
        if not math.isfinite(wait):
            logger.info("waiting for a subscriber on %s (Ctrl-C to stop)", self.endpoint)
        if self.wait_for_subscriber(wait, stop):
            return True
        if self.config.rate == "max" or stop.is_set():
            logger.error("no subscriber connected to %s after %.1f s; nothing sent",
                         self.endpoint, wait)  # fmt: skip
            return False
        logger.warning("no subscriber after %.1f s; publishing anyway", wait)
        return True

    def _has_subscriber(self, run: PacedRun, stop: threading.Event) -> bool:
        """Before a frame: a lossless replay waits for a subscriber to come back (False if
        none did); a paced one goes on and counts the frame as sent to nobody."""
        self._drain_subscriptions()
        if self.n_subscribers > 0:
            return True
        if run.paced or self.config.wait_for_subscriber_s <= 0:
            run.n_unsubscribed += 1
            return True
        logger.warning("no subscriber connected: holding the frames until one connects")
        if self.wait_for_subscriber(self.config.wait_for_subscriber_s, stop):
            return True
        run.reason = "interrupted" if stop.is_set() else "no subscriber"
        return False

    def _stream(self, source: FrameSource, stop: threading.Event, progress, run: PacedRun) -> None:
        """The frame loop: start messages, pacing, sending. Sets ``run.reason`` when stopped."""
        info = source.info
        self._send_start(info, stop)
        next_start = time.monotonic() + self.config.start_interval_s
        for frame, offset_s in self._frames(source):
            now = time.monotonic()
            if now >= next_start:
                self._drain_subscriptions()
                self._send_start(info, stop)
                next_start = now + self.config.start_interval_s
            run.n_read += 1
            if stop.is_set() or not run.wait_until_due(offset_s, stop):
                run.reason = "interrupted"
                return
            if not self._has_subscriber(run, stop):
                return
            msg = FrameMessage(
                seq=run.n_sent,
                frame_index=frame.frame_index,
                daq_frame=frame.daq_frame,
                t_acq_ms=frame.t_acq_ms,
                t_send_ns=time.monotonic_ns(),
                session_id=self.session_id,
                source=info.kind,
                pixels=frame.pixels,
            )
            if not self._send(encode_frame(msg), stop):
                run.reason = "interrupted"
                return
            run.sent()
            if progress is not None:
                progress.update(1)
        if stop.is_set():
            run.reason = "interrupted"

    def _send_eos(self, n_sent: int, reason: str) -> None:
        """Send the ``eos``, repeated for ``eos_repeat_s`` so a full receiver still gets it.

        A PUB-side pipe that hit its HWM is parked until the receiver's read credit comes
        back, and a message sent meanwhile is silently not delivered to it even with
        ``XPUB_NODROP``. Repeating the ``eos`` (receivers ignore duplicates) lets it through
        once the receiver has drained its queue.
        """
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        eos = encode_eos(EosMessage(self.session_id, n_sent, reason))
        deadline = time.monotonic() + self.config.eos_repeat_s
        timeout_s = self.config.linger_ms / 1000
        while True:
            self.socket.getsockopt(zmq.EVENTS)  # process pending read credits first
            if not self._send(eos, threading.Event(), timeout_s=timeout_s):
                logger.warning("the end-of-stream message could not be queued (subscriber full)")
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(EOS_REPEAT_PERIOD_S)

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket, waiting up to ``linger_ms`` (default: the config's) for the queue."""
        if not self.socket.closed:
            self.socket.close(linger=self.config.linger_ms if linger_ms is None else linger_ms)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
