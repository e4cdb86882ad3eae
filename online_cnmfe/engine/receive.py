"""The engine's receive side: a thread draining the frame SUB socket into the frame queue.

The thread owns the SUB socket (via :class:`acquisition.subscriber.FrameSubscriber`, which
applies the receiver rules of docs/protocol.md) and never waits on the model: frames beyond
the queue's memory bound go to the disk spool (:mod:`.frame_queue`), so nothing is dropped
while the disk has room. A frame the queue refuses (``engine.queue_full="drop"``, or the
spool is full) is recorded as dropped, in ranges of frame indices.

It also keeps the stream's ledger in frame indices, per session: every index from the first
frame of the session on is either received (then processed, rejected or left unprocessed by
the model thread) or sent to the model thread as a ``drop`` control naming why it is missing:

- frames of the session sent before the first one received (its ``seq`` > 0);
- a ``seq`` gap (lost in transit: the sender's or our high-water mark);
- a ``frame_index`` jump over contiguous ``seq`` (missing in the source, e.g. a lost
  Miniscope chunk);
- frames sent after the last one received but before the ``eos`` (its ``n_sent``).

A frame whose index goes back (a repeated frame, a looped replay) is counted as out of order,
never as a drop. Stream incidents travel through the same FIFO as the frames, so the model
thread sees them in order.
"""

from __future__ import annotations

import logging
import threading
import time

from acquisition.protocol import (
    TOPIC_EOS,
    TOPIC_FRAME,
    TOPIC_START,
    EosMessage,
    FrameMessage,
    StartMessage,
)
from acquisition.subscriber import FrameSubscriber, SubscriberEvent
from online_cnmfe.engine.frame_queue import Control, FrameQueue, QueuedFrame
from online_cnmfe.engine.priority import raise_to_realtime

__all__ = ["Control", "FrameQueue", "QueuedFrame", "Receiver"]

logger = logging.getLogger(__name__)

POLL_MS = 50
FINAL_DRAIN_S = 0.5  # after a stop: frames already in the socket are still received


class Receiver(threading.Thread):
    """Receive frames until ``stop`` is set; see the module docstring.

    Parameters
    ----------
    endpoint : str
        Frame publisher to connect to.
    queue : FrameQueue
        Its ``policy`` says what happens to frames beyond its memory bound.
    stop : threading.Event
    rcvhwm : int
        ZeroMQ receive high-water mark (frames buffered in the socket).
    context : zmq.Context, optional
    on_frame : callable, optional
        ``on_frame(frame, t_recv_ns)`` is called for every frame received, before it is
        queued (the raw recorder); it must not block.
    """

    def __init__(
        self,
        endpoint: str,
        queue: FrameQueue,
        stop: threading.Event,
        rcvhwm: int = 64,
        context=None,
        on_frame=None,
        realtime_priority: int = 0,
    ):
        super().__init__(name="engine-receive", daemon=True)
        self.endpoint = endpoint
        self.queue = queue
        self.stop = stop
        self.rcvhwm = rcvhwm
        self.context = context
        self.on_frame = on_frame
        self.realtime_priority = realtime_priority  # engine.realtime_priority
        self.n_received = 0  # frames accepted by the subscriber
        self.n_overflow = 0  # frames dropped because the queue refused them
        self.n_malformed = 0
        self.session_id: str | None = None
        self.frame_rate_hz: float | None = None  # the stream's declared rate (start message)
        self.newest_t_acq_ms: float | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.put_ns = 0  # time spent queueing (memory or spool), for the overhead benchmark
        self._next_index: int | None = None  # next frame index expected in this session
        self._overflow: list = []  # [first, last, reason] of frames being dropped

    def run(self) -> None:
        raise_to_realtime(self.realtime_priority, "receive")
        try:
            sub = FrameSubscriber(
                self.endpoint,
                rcvhwm=self.rcvhwm,
                topics=(TOPIC_FRAME, TOPIC_START, TOPIC_EOS),
                context=self.context,
            )
        except Exception as exc:  # noqa: BLE001 - reported by the engine, which stops
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self.stop.is_set():
                self._receive_one(sub)
            # what already reached the socket is received (and accounted), not thrown away
            deadline = time.monotonic() + FINAL_DRAIN_S
            while time.monotonic() < deadline and self._receive_one(sub, timeout_ms=20):
                pass
        except Exception as exc:  # noqa: BLE001 - a receive bug must not hang the engine
            logger.exception("the receive thread failed")
            self.error = exc
        finally:
            self.n_malformed = sub.stats.n_malformed
            self._flush_overflow()
            sub.close()

    def _receive_one(self, sub: FrameSubscriber, timeout_ms: int = POLL_MS) -> bool:
        """Receive one message (False after ``timeout_ms`` without any)."""
        message = sub.recv_any(timeout_ms)
        gaps: list[SubscriberEvent] = []  # seq gaps revealed by the next frame (or rejection)
        for event in sub.pop_events():
            if event.kind == "restart":  # the old session ends before the new one starts
                self.queue.put_control(Control("restart", event.detail))
            if event.session_id is not None and event.session_id != self.session_id:
                start = message if isinstance(message, StartMessage) else None
                if start is not None and start.session_id != event.session_id:
                    start = None
                self._new_session(event.session_id, start)
            if event.kind == "restart":
                continue
            if event.kind == "drop" and event.frame_index is not None:
                gaps.append(event)
            elif event.kind == "reject":
                index = -1 if event.frame_index is None else event.frame_index
                if index >= 0:
                    self._account(index, gaps)
                gaps = []
                self.queue.put_control(Control("reject", event.detail, index, index))
            else:
                self._forward(event)
        self.n_malformed = sub.stats.n_malformed
        if isinstance(message, FrameMessage):
            if message.session_id != self.session_id:
                self._new_session(message.session_id, None)
            self._account(message.frame_index, gaps)
            self._enqueue(message)
        elif isinstance(message, StartMessage):
            if message.session_id != self.session_id or self.frame_rate_hz is None:
                self._new_session(message.session_id, message)  # new, or its rate now known
        elif isinstance(message, EosMessage):
            self._flush_overflow()
            self.queue.put_control(Control("eos", message.reason, session_id=message.session_id))
        return message is not None

    def _new_session(self, session_id: str, start: StartMessage | None) -> None:
        if session_id != self.session_id:
            self._flush_overflow()
            self._next_index = None
        self.session_id = session_id
        self.frame_rate_hz = None if start is None else float(start.frame_rate_hz)
        detail = "" if start is None else start.description
        self.queue.put_control(
            Control("session", detail, session_id=session_id, frame_rate_hz=self.frame_rate_hz)
        )

    # ---- the ledger --------------------------------------------------------------------------
    def _account(self, index: int, gaps: list[SubscriberEvent]) -> None:
        """Send a ``drop`` for the frame indices missing before ``index`` (see the module
        docstring); an index going back is out of order, never a drop."""
        expected = self._next_index
        self._next_index = index + 1 if expected is None else max(expected, index + 1)
        if expected is None:  # the first frame of the session
            for gap in gaps:  # seq 0..s-1 were sent before it: the indices just before it
                n = gap.last - gap.first + 1
                reason = f"sent before the first frame the engine received: {gap.detail}"
                if index - n >= 0:
                    self._drop(index - n, index - 1, reason)
                else:  # the sender's indices do not follow its seq: counted, not placed
                    self._drop(-1, -1, reason, count=n)
        elif index > expected:
            why = "; ".join(f"lost in transit ({gap.detail})" for gap in gaps)
            if not why:
                why = f"missing from the source (frame_index jumps from {expected - 1} to {index})"
            self._drop(expected, index - 1, why)
        elif index < expected:
            detail = f"frame_index went back from {expected - 1} to {index}"
            self.queue.put_control(Control("out_of_order", detail, index, index))

    def _drop(self, first: int, last: int, reason: str, count: int = 0) -> None:
        self._flush_overflow()
        count = count or last - first + 1
        self.queue.put_control(Control("drop", reason, first, last, count=count))

    # ---- queueing ----------------------------------------------------------------------------
    def _enqueue(self, frame: FrameMessage) -> None:
        self.n_received += 1
        self.newest_t_acq_ms = frame.t_acq_ms
        t_recv = time.monotonic_ns()
        if self.on_frame is not None:
            self.on_frame(frame, t_recv)
        item = QueuedFrame(frame, t_recv)
        if self.queue.policy == "wait":
            self.queue.put_frame_wait(item, self.stop)
            return
        ok = self.queue.put_frame(item)
        self.put_ns += time.monotonic_ns() - t_recv
        if ok:
            self._flush_overflow()
            return
        self.n_overflow += 1
        reason = self.queue.spool_error or (
            f"engine queue full ({self.queue.capacity} frames in memory, engine.queue_full='drop')"
        )
        index = frame.frame_index
        if self._overflow and self._overflow[2] == reason and self._overflow[1] == index - 1:
            self._overflow[1] = index
        else:
            self._flush_overflow()
            self._overflow = [index, index, reason]

    def _flush_overflow(self) -> None:
        if self._overflow:
            first, last, reason = self._overflow
            self._overflow = []
            n = last - first + 1
            logger.warning("%d frame(s) dropped at the engine (frames %d-%d): %s", n, first, last,
                           reason)  # fmt: skip
            self.queue.put_control(Control("drop", f"dropped at the engine: {reason}", first, last))

    def _forward(self, event: SubscriberEvent) -> None:
        kind = event.kind
        if kind == "drop":  # frames missing before the eos: after the last index received
            n = event.last - event.first + 1
            reason = f"lost in transit ({event.detail})"
            if self._next_index is None:  # nothing of the session arrived: no index known
                self._drop(-1, -1, reason, count=n)
                return
            first = self._next_index
            self._next_index += n
            self._drop(first, first + n - 1, reason)
        elif kind == "malformed":
            self.queue.put_control(Control("malformed", event.detail))
        elif kind == "daq_loss":
            self.queue.put_control(Control("daq_loss", event.detail, event.first, event.last))
        elif kind == "out_of_order":
            pass  # accounted in frame indices by _account
