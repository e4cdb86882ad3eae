"""The engine's storage side: a thread that owns the :class:`ResultsWriter` and the checkpoints.

The model thread hands over small operations (one frame's result, new footprints, a drop, a
checkpoint snapshot) through an unbounded FIFO and never waits for the disk. A store failure
(unwritable path, full disk) is kept in :attr:`StoreWorker.error`; the worker then discards
further writes (counting them) while the engine keeps processing and reports the failure on the
status stream. Frames discarded because the disk fell behind are recorded in the file's
bookkeeping as ``unsaved`` (in ranges of frame indices) once it catches up.

Checkpoints: the model thread passes a copy of the state (:mod:`.snapshot`, refilled in place
each time); the worker saves it to ``<path>.tmp``, renames it over ``<path>`` (a crash never
leaves a half-written checkpoint) and hands the copy back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from online_cnmfe.engine.resume import CHECKPOINT_FILE_ID
from online_cnmfe.engine.snapshot import PendingCopy
from online_cnmfe.results import state_file
from online_cnmfe.results.writer import ResultsWriter, StoreError

logger = logging.getLogger(__name__)

MAX_BACKLOG = 20000  # queued store operations (about 11 min of 30 Hz frames)
BATCH_FRAMES = 8  # frames queued before the worker is woken (else it wakes every WAKE_S)
WAKE_S = 0.2
# longest a batch of operations waits for the model thread to be between frames (then it is
# written anyway: a model thread that is never idle, e.g. catching up, does not stall the disk)
MAX_DEFER_S = 0.1
BOOKKEEPING_OPS = ("drop", "reject", "lost", "session", "count")  # kept until the file opens


class StoreWorker(threading.Thread):
    """Run the results writer on its own thread.

    Parameters
    ----------
    flush_period_s : float
        Longest time between two flushes, also when no frames arrive.
    between_frames : threading.Event, optional
        Set while the model thread is not processing a frame. The worker starts each
        operation while it is set (waiting at most ``MAX_DEFER_S`` per batch): HDF5 writes
        hold the GIL, and a block write or flush that overlaps a frame's critical path delays
        its traces by as much (BENCHMARKS.md "The end-to-end tail, stage by stage").
    """

    def __init__(self, flush_period_s: float, between_frames: threading.Event | None = None):
        super().__init__(name="engine-store", daemon=True)
        self.flush_period_s = flush_period_s
        self.between_frames = between_frames
        self.writer: ResultsWriter | None = None
        self.error: str | None = None
        self.hdf5_failed = False
        self.n_unsaved = 0
        self.n_checkpoints = 0
        self.checkpoint_error: str | None = None
        self._ops: deque[tuple[str, tuple]] = deque()
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._early: list[tuple[str, tuple]] = []  # bookkeeping before the file exists
        self._unsaved: list[int] = []  # [first, last] frame indices being discarded

    # ---- model-thread side -----------------------------------------------------------------
    def submit(self, op: str, *args: Any) -> None:
        """Queue an operation: open, frame, footprints, b0, images, checkpoint, flush, and the
        bookkeeping (drop, reject, lost, session, count: :class:`ResultsWriter` methods).

        A frame is discarded (counted in :attr:`n_unsaved`) rather than queued when the disk
        has fallen ``MAX_BACKLOG`` operations behind, so a stalled disk cannot exhaust memory.
        Frames are taken in batches: the worker is woken once ``BATCH_FRAMES`` wait, or finds
        them when it wakes by itself (every ``WAKE_S``), instead of once per frame (a thread
        woken 30 times a second takes the GIL from the model thread as often); any other
        operation wakes it at once.
        """
        wake = True
        if op == "frame":
            if len(self._ops) >= MAX_BACKLOG:
                self._discard(int(args[1]["frame_index"]))
                return
            self._flush_unsaved()
            wake = len(self._ops) + 1 >= BATCH_FRAMES
        elif op == "close":
            self._flush_unsaved()
        with self._cond:
            self._ops.append((op, args))
            if wake:
                self._cond.notify()

    def _discard(self, index: int) -> None:
        self.n_unsaved += 1
        if self.n_unsaved % 1000 == 1:
            logger.error("the disk is %d operations behind; frames are not saved", MAX_BACKLOG)
        if self._unsaved and self._unsaved[1] == index - 1:
            self._unsaved[1] = index
        else:
            self._flush_unsaved()
            self._unsaved = [index, index]

    def _flush_unsaved(self) -> None:
        if self._unsaved:
            first, last = self._unsaved
            self._unsaved = []
            reason = f"not saved: the disk fell {MAX_BACKLOG} operations behind"
            with self._cond:
                self._ops.append(("lost", ("unsaved", first, last, reason)))
                self._cond.notify()

    def close(self, timeout_s: float = 60.0) -> None:
        """Write everything queued, close the file and stop the thread."""
        self.submit("close")
        self._closed.wait(timeout_s)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def backlog(self) -> int:
        return len(self._ops)

    @property
    def n_frames(self) -> int:
        return 0 if self.writer is None else self.writer.n_frames

    # ---- worker ------------------------------------------------------------------------------
    def run(self) -> None:
        last_flush = time.monotonic()
        while True:
            with self._cond:
                if not self._ops or len(self._ops) < BATCH_FRAMES and self._only_frames():
                    self._cond.wait(WAKE_S)
                batch = list(self._ops)
                self._ops.clear()
            deadline = time.monotonic() + MAX_DEFER_S
            for op, args in batch:
                if op == "close":
                    self._close()
                    self._closed.set()
                    return
                self._wait_between_frames(deadline)
                self._apply(op, args)
            if self.writer is not None and time.monotonic() - last_flush >= self.flush_period_s:
                self._wait_between_frames(deadline)
                self._apply("flush", ())
                last_flush = time.monotonic()

    def _wait_between_frames(self, deadline: float) -> None:
        gate = self.between_frames
        if gate is not None and not gate.is_set():
            gate.wait(max(0.0, deadline - time.monotonic()))

    def _pace(self) -> None:
        """Before each block of a checkpoint: wait (at most ``MAX_DEFER_S``) for the model
        thread to be between frames."""
        self._wait_between_frames(time.monotonic() + MAX_DEFER_S)

    def _only_frames(self) -> bool:
        return all(op == "frame" for op, _ in self._ops)

    def _apply(self, op: str, args: tuple) -> None:
        if op == "checkpoint":
            self._checkpoint(*args)
            return
        if op == "prime_snapshot":  # (snapshotter, live state): allocate the copy here
            args[0].prime(args[1])
            return
        if op == "open":
            self._open(*args)
            return
        if op == "close_writer":  # the session ended (restart with on_restart=reinitialise)
            if self.writer is not None:
                self._close_writer()
                self.writer = None
            return
        if self.writer is None:
            if op in BOOKKEEPING_OPS:
                self._early.append((op, args))
            elif op == "frame":
                self.n_unsaved += 1
            return
        if self.error is not None:
            self.n_unsaved += op == "frame"
            return
        w = self.writer
        try:
            if op == "frame":
                w.append_frame(*args)
            elif op == "footprints":
                w.set_footprints(*args)
            elif op == "b0":
                w.set_background(*args)
            elif op == "images":
                w.set_images(args[0], **args[1])
            elif op == "drop":
                w.record_drop(*args)
            elif op == "reject":
                w.record_reject(*args)
            elif op == "lost":
                w.record_lost(*args)
            elif op == "session":
                w.start_session(*args)
            elif op == "count":
                w.count_incident(*args)
            elif op == "flush":
                w.flush()
        except StoreError as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a flush hook's bug: stop storing, say so
            if op == "frame" and isinstance(exc, ValueError):  # this frame's bookkeeping only
                self.n_unsaved += 1
                logger.error("frame not stored: %s", exc)
                w.record_reject(-1, f"not stored: {exc}")  # -1: the index itself may not fit
                return
            logger.exception("store operation %r failed", op)
            self._fail(StoreError(f"store operation {op!r} failed: {type(exc).__name__}: {exc}"))

    def _open(self, kwargs: dict[str, Any]) -> None:
        if self.writer is not None:
            self._close_writer()
        self.error = None
        try:
            self.writer = ResultsWriter(**kwargs)
        except StoreError as exc:
            self.writer = None
            self._fail(exc)
            return
        logger.info("writing results to %s", self.writer.path)
        for op, args in self._early:
            self._apply(op, args)
        self._early.clear()

    def _fail(self, exc: StoreError) -> None:
        self.error = str(exc)
        if self.writer is not None and self.writer.hdf5_failed:
            self.hdf5_failed = True
        logger.error("%s", exc)

    def _close_writer(self) -> None:
        try:
            self.writer.close()
        except StoreError as exc:
            self._fail(exc)

    def _close(self) -> None:
        if self.writer is not None:
            self._close_writer()

    def _checkpoint(self, params: Any, state: Any, path: Path, done: Callable[[], Any]) -> None:
        """Save a state copy (owned by this thread until ``done()``; a ``PendingCopy`` is
        finished here first) as ``path``, atomically. Both the copy's rows and the file's
        blocks start between frames (:meth:`_pace`)."""
        tmp = path.with_name(path.name + ".tmp")
        file_id = None if self.writer is None else self.writer.file_id
        try:
            if isinstance(state, PendingCopy):
                state = state.complete(self._pace)
            attrs = {CHECKPOINT_FILE_ID: file_id} if file_id else None
            state_file.save_model(tmp, params, state, attrs=attrs, pace=self._pace)
            os.replace(tmp, path)
            self.n_checkpoints += 1
            self.checkpoint_error = None
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint is reported, not fatal
            self.checkpoint_error = f"{type(exc).__name__}: {exc}"
            logger.error("checkpoint to %s failed: %s", path, self.checkpoint_error)
        finally:
            done()
