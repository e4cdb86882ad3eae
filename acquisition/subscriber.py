"""Receiving the frame stream: a SUB-socket helper for the engine, the dashboard and tests.

:class:`FrameSubscriber` connects a SUB socket, decodes every message and applies the receiver
rules of docs/protocol.md:

- a ``seq`` gap is a drop (counted, the missing range recorded, the stream goes on); so are
  the frames of a session sent before the first one received (``seq`` 0 to the first
  ``seq`` - 1) and those missing between the last one received and the ``eos`` (which
  carries ``n_sent``);
- a new ``session_id`` is a restart (state reset, counted);
- a ``seq`` going back (or repeating) within a session breaks the protocol: it is counted as
  out of order and never as a drop (a later gap is measured from the highest ``seq`` seen);
- a malformed message is counted and skipped with its reason kept (logged as a warning for
  the first few and then every 1000th), never fatal;
- a frame whose shape/dtype differs from the session's (from ``start``, the constructor's
  ``expected_shape``/``expected_dtype``, or the first frame) is rejected with the reason kept;
- a ``daq_frame`` gap over contiguous ``seq`` is a loss upstream of the sender (counted).

Each of these is also queued as a :class:`SubscriberEvent` (``pop_events()``) so a consumer
can store it. Every receive goes through a poll with a timeout; closing uses ``linger=0``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from acquisition.errors import ProtocolError
from acquisition.protocol import (
    TOPIC_EOS,
    TOPIC_FRAME,
    TOPIC_START,
    EosMessage,
    FrameMessage,
    Message,
    StartMessage,
    decode_any,
)

__all__ = ["FrameSubscriber", "SubscriberEvent", "SubscriberStats", "poll_recv_multipart"]

logger = logging.getLogger(__name__)

MAX_RANGES = 1000  # drop ranges kept in the stats
MAX_EVENTS = 10000  # events queued before the oldest are discarded


def poll_recv_multipart(socket: zmq.Socket, timeout_ms: int) -> list[zmq.Frame] | None:
    """Receive one multipart message (zero-copy frames) or None after ``timeout_ms``."""
    if socket.poll(timeout_ms, zmq.POLLIN) == 0:
        return None
    return socket.recv_multipart(copy=False)


@dataclass(frozen=True, slots=True)
class SubscriberEvent:
    """Something a consumer should record.

    Attributes
    ----------
    kind : str
        ``drop``, ``restart``, ``out_of_order``, ``malformed``, ``reject``, ``daq_loss``,
        ``start`` or ``eos``.
    seq : int or None
        The ``seq`` of the frame that revealed it, when there is one.
    detail : str
        Human-readable reason (missing range, decode error, shape mismatch...).
    first, last : int or None
        Missing ``seq`` range (inclusive) for ``drop``; DAQ range for ``daq_loss``.
    frame_index : int or None
        ``frame_index`` of the frame that revealed it (``reject``, ``out_of_order``, and
        ``drop`` of frames before it).
    session_id : str or None
        The session the event belongs to (for ``restart``: the new one).
    """

    kind: str
    seq: int | None
    detail: str
    first: int | None = None
    last: int | None = None
    frame_index: int | None = None
    session_id: str | None = None


@dataclass(slots=True)
class SubscriberStats:
    """Counters of a :class:`FrameSubscriber` (cumulative over sessions)."""

    n_frames: int = 0
    n_dropped: int = 0
    drop_ranges: list[tuple[int, int]] = field(default_factory=list)
    n_restarts: int = 0
    n_out_of_order: int = 0
    n_malformed: int = 0
    last_malformed: str | None = None
    n_rejected: int = 0
    last_rejected: str | None = None
    n_daq_lost: int = 0
    n_superseded: int = 0
    n_start: int = 0
    n_eos: int = 0
    n_other: int = 0


class FrameSubscriber:
    """Subscribe to a frame stream and validate it.

    Parameters
    ----------
    endpoint : str
        The publisher's endpoint, e.g. ``tcp://127.0.0.1:5555`` or ``ipc:///tmp/frames``.
    rcvhwm : int
        Receive high-water mark in messages (frames queued before ZeroMQ drops).
    conflate : bool
        Keep only the newest frame: :meth:`recv` drains what is queued and returns the last
        frame, counting the others as ``n_superseded`` (not drops). ZMQ_CONFLATE itself does
        not work with multipart messages, so this is done here. For display clients.
    expected_shape, expected_dtype : optional
        Reject frames of another shape/dtype regardless of the session (e.g. the model's).
    topics : tuple of str
        Topics to subscribe to, in this order (default: start, eos, frame; ``frame`` last so a
        publisher waiting for the ``frame`` subscription knows the others are in place).
    context : zmq.Context, optional
    """

    def __init__(
        self,
        endpoint: str,
        rcvhwm: int = 256,
        conflate: bool = False,
        expected_shape: tuple[int, int] | None = None,
        expected_dtype: str | None = None,
        topics: tuple[str, ...] = (TOPIC_START, TOPIC_EOS, TOPIC_FRAME),
        context: zmq.Context | None = None,
    ) -> None:
        if rcvhwm < 1:
            raise ValueError(f"rcvhwm is {rcvhwm}; expected >= 1 message")
        self.endpoint = endpoint
        self.conflate = conflate
        self.expected_shape = None if expected_shape is None else tuple(expected_shape)
        self.expected_dtype = expected_dtype
        self.stats = SubscriberStats()
        self.session: StartMessage | None = None
        self.session_id: str | None = None
        self.eos: EosMessage | None = None
        self._last_seq: int | None = None
        self._seq_high: int | None = None  # highest seq of the session
        self._last_daq: int | None = None
        self._shape: tuple[int, int] | None = None
        self._dtype: str | None = None
        self._events: deque[SubscriberEvent] = deque(maxlen=MAX_EVENTS)
        ctx = context or zmq.Context.instance()
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
        self.socket.connect(endpoint)

    # -- public ------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """True once the current session's ``eos`` arrived (reset by a new session)."""
        return self.eos is not None

    def pop_events(self) -> list[SubscriberEvent]:
        """Return and clear the queued events (drops, restarts, rejections, ...)."""
        events = list(self._events)
        self._events.clear()
        return events

    def recv_any(self, timeout_ms: int = 1000) -> FrameMessage | StartMessage | EosMessage | None:
        """Receive the next valid message of any topic, or None after ``timeout_ms``.

        Malformed and rejected messages are counted and skipped (the wait goes on until the
        timeout). Session bookkeeping (``session``, ``eos``, restarts, drops) is done here.
        """
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            parts = poll_recv_multipart(self.socket, remaining)
            if parts is None:
                return None
            message = self._accept(parts)
            if message is not None:
                return message
            if remaining == 0:
                return None

    def recv(self, timeout_ms: int = 1000) -> FrameMessage | None:
        """Receive the next valid frame, or None after ``timeout_ms`` or at end of stream.

        ``start`` and ``eos`` messages are handled on the way (see ``session``/``ended``);
        None is returned right after an ``eos`` so a consumer can check :attr:`ended`. In
        ``conflate`` mode the newest queued frame is returned.
        """
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            message = self.recv_any(remaining)
            if message is None or isinstance(message, EosMessage):
                return None
            if isinstance(message, FrameMessage):
                return self._newest(message) if self.conflate else message

    def close(self) -> None:
        """Close the socket without lingering (idempotent)."""
        if not self.socket.closed:
            self.socket.close(linger=0)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bookkeeping -------------------------------------------------------------------
    def _event(
        self, kind: str, seq: int | None, detail: str, first=None, last=None, frame_index=None
    ) -> None:
        event = SubscriberEvent(kind, seq, detail, first, last, frame_index, self.session_id)
        self._events.append(event)

    def _newest(self, frame: FrameMessage) -> FrameMessage:
        while True:
            parts = poll_recv_multipart(self.socket, 0)
            if parts is None:
                return frame
            message = self._accept(parts)
            if isinstance(message, EosMessage):
                return frame
            if isinstance(message, FrameMessage):
                self.stats.n_superseded += 1
                frame = message

    def _accept(self, parts) -> FrameMessage | StartMessage | EosMessage | None:
        try:
            message = decode_any(parts)
        except ProtocolError as exc:
            self.stats.n_malformed += 1
            self.stats.last_malformed = str(exc)
            self._event("malformed", None, str(exc))
            n = self.stats.n_malformed
            level = logging.WARNING if n <= 3 or n % 1000 == 0 else logging.DEBUG
            logger.log(level, "malformed message skipped (%d so far): %s", n, exc)
            return None
        if isinstance(message, StartMessage):
            self._on_start(message)
            return message
        if isinstance(message, EosMessage):
            if self.eos is not None and message.session_id == self.eos.session_id:
                return None  # the publisher repeats its eos; one is enough
            if message.session_id == self.session_id or self.session_id is None:
                self.eos = message
                self._count_tail_drop(message)
            self.stats.n_eos += 1
            self._event("eos", None, f"session {message.session_id} ended: {message.reason}")
            return message
        if isinstance(message, Message):
            self.stats.n_other += 1
            return None
        return self._on_frame(message)

    def _new_session(self, session_id: str, why: str, seq: int | None) -> None:
        restart = self.session_id is not None
        self.session_id = session_id
        self.session = None
        self.eos = None
        self._last_seq = self._seq_high = self._last_daq = None
        self._shape = self._dtype = None
        if restart:
            self.stats.n_restarts += 1
            self._event("restart", seq, why)
            logger.info("stream restarted: %s", why)

    def _on_start(self, start: StartMessage) -> None:
        self.stats.n_start += 1
        if start.session_id != self.session_id:
            self._new_session(
                start.session_id, f"new session {start.session_id} ({start.description})", None
            )
            self._event("start", None, start.description)
        self.session = start
        if self._shape is None:
            self._shape, self._dtype = tuple(start.shape), start.dtype

    def _check_shape(self, frame: FrameMessage) -> str | None:
        shape = self.expected_shape or self._shape
        dtype = self.expected_dtype or self._dtype
        if shape is not None and frame.shape != shape or dtype is not None and frame.dtype != dtype:
            return (
                f"frame {frame.frame_index} (seq {frame.seq}) is {frame.shape} {frame.dtype}; "
                f"the session is {shape} {dtype}"
            )
        return None

    def _on_frame(self, frame: FrameMessage) -> FrameMessage | None:
        if frame.session_id != self.session_id:
            self._new_session(frame.session_id, f"new session {frame.session_id}", frame.seq)
        elif self._last_seq is not None and frame.seq <= self._last_seq:
            self.stats.n_out_of_order += 1
            self._event(
                "out_of_order",
                frame.seq,
                f"seq went back from {self._last_seq} to {frame.seq} within session "
                f"{frame.session_id} (a repeated frame or a sender that reset its counter)",
                frame_index=frame.frame_index,
            )
        self._count_gaps(frame)
        reason = self._check_shape(frame)
        if reason is not None:
            self.stats.n_rejected += 1
            self.stats.last_rejected = reason
            self._event("reject", frame.seq, reason, frame_index=frame.frame_index)
            logger.debug("frame rejected: %s", reason)
            return None
        if self._shape is None:
            self._shape, self._dtype = frame.shape, frame.dtype
        self.stats.n_frames += 1
        return frame

    def _record_drop(
        self, first: int, last: int, frame: FrameMessage | None, why: str = "missing"
    ) -> None:
        self.stats.n_dropped += last - first + 1
        if len(self.stats.drop_ranges) < MAX_RANGES:
            self.stats.drop_ranges.append((first, last))
        seq, index = (None, None) if frame is None else (frame.seq, frame.frame_index)
        self._event("drop", seq, f"seq {first}-{last} {why}", first, last, index)

    def _count_tail_drop(self, eos: EosMessage) -> None:
        """Frames after the last one received but before the ``eos`` are drops too."""
        high = self._seq_high
        if high is not None and eos.n_sent - 1 > high:
            self._record_drop(high + 1, eos.n_sent - 1, None, "missing before the end of stream")
            self._last_seq = self._seq_high = eos.n_sent - 1

    def _count_gaps(self, frame: FrameMessage) -> None:
        last, high = self._last_seq, self._seq_high
        self._last_seq = frame.seq
        self._seq_high = frame.seq if high is None else max(high, frame.seq)
        if high is None and frame.seq > 0:
            self._record_drop(0, frame.seq - 1, frame, "sent before the first frame received")
        elif high is not None and frame.seq > high + 1:
            self._record_drop(high + 1, frame.seq - 1, frame)
        contiguous = last is not None and frame.seq == last + 1
        last_daq, self._last_daq = self._last_daq, frame.daq_frame
        if contiguous and last_daq is not None and frame.daq_frame is not None:
            gap = frame.daq_frame - last_daq - 1
            if gap > 0:
                self.stats.n_daq_lost += gap
                self._event(
                    "daq_loss",
                    frame.seq,
                    f"DAQ frames {last_daq + 1}-{frame.daq_frame - 1} never reached the sender",
                    last_daq + 1,
                    frame.daq_frame - 1,
                )
