"""The engine's receive side: a thread draining the frame SUB socket into a bounded queue.

The thread owns the SUB socket (via :class:`acquisition.subscriber.FrameSubscriber`, which
applies the receiver rules of docs/protocol.md) and never waits on the model: when the queue
holds ``capacity`` frames the newest frame is dropped and the drop is recorded (merged into
ranges of frame indices), never lost silently. Stream incidents (drops upstream, restarts,
malformed or rejected messages, end of stream) travel through the same FIFO as control items,
so the model thread sees them in order with the frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from acquisition.protocol import TOPIC_EOS, TOPIC_FRAME, TOPIC_START, EosMessage, FrameMessage
from acquisition.subscriber import FrameSubscriber

logger = logging.getLogger(__name__)

POLL_MS = 50


@dataclass(slots=True)
class QueuedFrame:
    """A frame waiting for the model, with its arrival time (engine ``monotonic_ns``)."""

    frame: FrameMessage
    t_recv_ns: int


@dataclass(slots=True)
class Control:
    """A stream incident for the model thread.

    ``kind``: ``drop`` (``first``..``last`` frame indices lost), ``reject``, ``malformed``,
    ``restart``, ``daq_loss`` (counted only), ``eos``.
    """

    kind: str
    detail: str = ""
    first: int = -1
    last: int = -1
    session_id: str | None = None


class FrameQueue:
    """FIFO of frames (bounded) and control items (never refused), for two threads."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[QueuedFrame | Control] = deque()
        self._n_frames = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        """Frames waiting (control items are not counted)."""
        return self._n_frames

    def put_frame(self, item: QueuedFrame) -> bool:
        """Append a frame; False (and nothing queued) when ``capacity`` frames are waiting."""
        with self._cond:
            if self._n_frames >= self.capacity:
                return False
            self._items.append(item)
            self._n_frames += 1
            self._cond.notify_all()
        return True

    def put_frame_wait(self, item: QueuedFrame, stop: threading.Event) -> bool:
        """Append a frame, waiting for space; False only when ``stop`` was set meanwhile."""
        with self._cond:
            while self._n_frames >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            self._items.append(item)
            self._n_frames += 1
            self._cond.notify_all()
        return True

    def put_control(self, item: Control) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout_s: float) -> QueuedFrame | Control | None:
        """The oldest item, or None after ``timeout_s``."""
        with self._cond:
            if not self._items and not self._cond.wait(timeout_s):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, QueuedFrame):
                self._n_frames -= 1
                self._cond.notify_all()  # a receiver may wait for space (queue_full="wait")
            return item


class Receiver(threading.Thread):
    """Receive frames until ``stop`` is set; see the module docstring.

    Parameters
    ----------
    endpoint : str
        Frame publisher to connect to.
    queue : FrameQueue
    stop : threading.Event
    rcvhwm : int
        ZeroMQ receive high-water mark (frames buffered in the socket).
    context : zmq.Context, optional
    wait_when_full : bool
        Stop reading the socket while the queue is full instead of dropping: the sender's
        lossless ``--rate max`` mode then slows to the engine's pace; a paced sender drops at
        its high-water mark, which shows up (and is recorded) as a ``seq`` gap.
    """

    def __init__(
        self,
        endpoint: str,
        queue: FrameQueue,
        stop: threading.Event,
        rcvhwm: int = 64,
        context=None,
        wait_when_full: bool = False,
    ):
        super().__init__(name="engine-receive", daemon=True)
        self.endpoint = endpoint
        self.queue = queue
        self.stop = stop
        self.rcvhwm = rcvhwm
        self.context = context
        self.wait_when_full = wait_when_full
        self.n_received = 0  # frames accepted by the subscriber
        self.n_overflow = 0  # frames dropped because the queue was full
        self.n_malformed = 0
        self.session_id: str | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._offset = 0  # frame_index - seq of the last frame (to place rejected frames)
        self._overflow: list[int] | None = None  # [first, last] frame indices being dropped

    def run(self) -> None:
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
                message = sub.recv_any(POLL_MS)
                pending = sub.pop_events()
                frame = message if isinstance(message, FrameMessage) else None
                for event in pending:
                    self._forward(event, frame)
                self.n_malformed = sub.stats.n_malformed
                self.session_id = sub.session_id
                if frame is not None:
                    self._enqueue(frame)
                elif isinstance(message, EosMessage):
                    self._flush_overflow()
                    self.queue.put_control(
                        Control("eos", message.reason, session_id=message.session_id)
                    )
        except Exception as exc:  # noqa: BLE001 - a receive bug must not hang the engine
            logger.exception("the receive thread failed")
            self.error = exc
        finally:
            sub.close()

    def _enqueue(self, frame: FrameMessage) -> None:
        self.n_received += 1
        self._offset = frame.frame_index - frame.seq
        item = QueuedFrame(frame, time.monotonic_ns())
        if self.wait_when_full:
            self.queue.put_frame_wait(item, self.stop)
            return
        if self.queue.put_frame(item):
            self._flush_overflow()
            return
        self.n_overflow += 1
        if self._overflow is None:
            self._overflow = [frame.frame_index, frame.frame_index]
        else:
            self._overflow[1] = frame.frame_index

    def _flush_overflow(self) -> None:
        if self._overflow is not None:
            first, last = self._overflow
            self._overflow = None
            n = last - first + 1
            detail = f"engine queue full ({self.queue.capacity} frames): {n} frame(s) dropped"
            logger.warning("%s (frames %d-%d)", detail, first, last)
            self.queue.put_control(Control("drop", detail, first, last))

    def _forward(self, event, frame: FrameMessage | None) -> None:
        kind = event.kind
        if kind == "drop":
            n = event.last - event.first + 1
            last = frame.frame_index - 1 if frame is not None else event.last + self._offset
            first = last - n + 1
            self.queue.put_control(Control("drop", f"upstream: {event.detail}", first, last))
        elif kind == "reject":
            index = (event.seq + self._offset) if event.seq is not None else -1
            self.queue.put_control(Control("reject", event.detail, index, index))
        elif kind == "restart":
            self.queue.put_control(Control("restart", event.detail, session_id=None))
        elif kind == "malformed":
            self.queue.put_control(Control("malformed", event.detail))
        elif kind == "daq_loss":
            self.queue.put_control(Control("daq_loss", event.detail, event.first, event.last))
