"""The FIFO between the receive thread and the model thread: frames and stream incidents.

Frames wait in memory up to ``memory_frames``; what arrives beyond that is handled by the
queue's ``policy``:

- ``"spool"`` (default): the pixels go to the :class:`~.spool.DiskSpool` and only the frame's
  small header stays in the FIFO, so order is kept and nothing is dropped while the disk has
  room; the model thread reads the pixels back when the frame's turn comes (catch-up);
- ``"drop"``: the frame is refused (the receiver records it as dropped);
- ``"wait"``: the receive thread waits for room (the sender's lossless ``--rate max`` then
  slows to the engine's pace).

Control items (drops upstream, rejections, restarts, end of stream) are never refused, so the
model thread sees every incident in order with the frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from acquisition.protocol import FrameMessage
from online_cnmfe.engine.spool import DiskSpool, SpoolTicket

QUEUE_POLICIES = ("spool", "drop", "wait")
SPOOL_RETRY_S = 1.0  # after the spool refused a frame, frames are dropped for this long


@dataclass(slots=True)
class QueuedFrame:
    """A frame waiting for the model, with its arrival time (engine ``monotonic_ns``).

    ``spooled`` is its ticket in the disk spool (``frame.pixels`` is then a zero-cost
    placeholder of the right shape and dtype until :meth:`FrameQueue.get` fetches them).
    """

    frame: FrameMessage
    t_recv_ns: int
    spooled: SpoolTicket | None = None


@dataclass(slots=True)
class Control:
    """A stream incident for the model thread.

    ``kind``: ``drop`` (``first``..``last`` frame indices lost; ``count`` frames, which are
    not placed (``first = last = -1``) when their indices are unknown), ``reject``, ``malformed``,
    ``restart``, ``out_of_order``, ``daq_loss`` (``first``..``last`` DAQ counter values),
    ``session`` (a session started or its frame rate became known: ``session_id``,
    ``frame_rate_hz``, ``detail``), ``unreadable`` (a spooled frame could not be read back),
    ``eos``.
    """

    kind: str
    detail: str = ""
    first: int = -1
    last: int = -1
    session_id: str | None = None
    frame_rate_hz: float | None = None
    count: int = 0


class FrameQueue:
    """FIFO of frames and control items for two threads (see the module docstring).

    Parameters
    ----------
    memory_frames : int
        Frames kept in memory; beyond it the ``policy`` applies.
    policy : {"spool", "drop", "wait"}
    spool : DiskSpool, optional
        Required for ``policy="spool"``.
    """

    def __init__(
        self, memory_frames: int, policy: str = "drop", spool: DiskSpool | None = None
    ) -> None:
        if memory_frames < 1:
            raise ValueError(f"memory_frames must be >= 1, got {memory_frames}")
        if policy not in QUEUE_POLICIES:
            raise ValueError(f"policy must be one of {QUEUE_POLICIES}, got {policy!r}")
        if policy == "spool" and spool is None:
            raise ValueError("policy 'spool' needs a DiskSpool")
        self.capacity = memory_frames
        self.policy = policy
        self.spool = spool
        self.spool_error: str | None = None  # why the last frame could not be spooled
        self._items: deque[QueuedFrame | Control] = deque()
        self._n_frames = 0  # frames waiting (memory and disk)
        self._n_memory = 0  # of which in memory
        self._cond = threading.Condition()

    def __len__(self) -> int:
        """Frames waiting, in memory and on disk (control items are not counted)."""
        return self._n_frames

    @property
    def n_spooled(self) -> int:
        """Frames waiting on disk."""
        return self._n_frames - self._n_memory

    def oldest_t_recv_ns(self) -> int | None:
        """Arrival time of the oldest frame waiting (None when none waits)."""
        with self._cond:
            for item in self._items:
                if isinstance(item, QueuedFrame):
                    return item.t_recv_ns
        return None

    # ---- receive-thread side -----------------------------------------------------------------
    def put_frame(self, item: QueuedFrame) -> bool:
        """Append a frame; False (nothing queued) when it can be neither kept in memory nor
        spooled (``policy="drop"`` and memory full, or the spool refused it: ``spool_error``)."""
        if self._n_memory >= self.capacity:  # only this thread adds: the check cannot go stale
            if self.policy != "spool":
                return False
            spool = self.spool
            if spool.error is not None and time.monotonic() - spool.error_at < SPOOL_RETRY_S:
                self.spool_error = spool.error  # the disk refused a frame just now: drop
                return False
            self.spool_error = None
            item = self._spool(item)
        self._append(item)
        return True

    def put_frame_wait(self, item: QueuedFrame, stop: threading.Event) -> bool:
        """Append a frame, waiting for room in memory; False only when ``stop`` was set."""
        with self._cond:
            while self._n_memory >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
        self._append(item)
        return True

    def put_control(self, item: Control) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def _spool(self, item: QueuedFrame) -> QueuedFrame:
        pixels = item.frame.pixels
        ticket = self.spool.submit(pixels)
        placeholder = np.broadcast_to(np.zeros((), pixels.dtype), pixels.shape)
        return QueuedFrame(replace(item.frame, pixels=placeholder), item.t_recv_ns, ticket)

    def _append(self, item: QueuedFrame) -> None:
        with self._cond:
            self._items.append(item)
            self._n_frames += 1
            self._n_memory += item.spooled is None
            self._cond.notify_all()

    # ---- model-thread side -------------------------------------------------------------------
    def get(self, timeout_s: float) -> QueuedFrame | Control | None:
        """The oldest item (a spooled frame with its pixels read back), or None after
        ``timeout_s``."""
        with self._cond:
            if not self._items and not self._cond.wait(timeout_s):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, QueuedFrame):
                self._n_frames -= 1
                self._n_memory -= item.spooled is None
                self._cond.notify_all()  # a receiver may wait for room (policy "wait")
        if isinstance(item, QueuedFrame) and item.spooled is not None:
            try:
                pixels = self.spool.fetch(item.spooled)
            except OSError as exc:  # the spool file vanished or the disk failed
                index = item.frame.frame_index
                return Control("unreadable", f"spooled frame unreadable: {exc}", index, index)
            item = QueuedFrame(replace(item.frame, pixels=pixels), item.t_recv_ns, item.spooled)
        return item
