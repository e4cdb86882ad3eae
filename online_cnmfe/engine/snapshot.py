"""Cheap model snapshots for checkpoints: refill one reused copy instead of deep-copying, and
copy the two big parts off the model thread.

A checkpoint must save the state as it was at one frame while the model thread goes on, so
the state is copied and the store thread writes the copy. ``copy.deepcopy`` allocates ~50 MB
at 256 × 256 every time, and the first touch of freshly allocated pages (page faults), not the
copying, makes it cost 30-75 ms of the model thread. :class:`Snapshotter` keeps one copy and
refills it in place (``np.copyto``: no allocation, no page faults) — only arrays whose shape
changed (births, removals) are allocated again — and the store thread pre-faults the copy
(:meth:`Snapshotter.prime`) before the first checkpoint.

Of a 608 × 608 model's 250 MB, 148 MB are the residual buffer and 54 MB the slow path's state;
:meth:`Snapshotter.take_model` copies only the rest on the model thread (5 ms instead of
25-35). The residual buffer is copied copy-on-write (:class:`RingCopy`): the store thread
copies its rows, and the model thread copies a row itself first only when it is about to
overwrite one not copied yet (``OnlineCNMFE.residual_guard``). The slow path's state is
copied by the slow-path executor, queued behind the step in flight and before the next one,
which are the only writers of that state. Both finish with :meth:`PendingCopy.complete` on the
store thread, and the copy is the state at the frame it was taken: no torn checkpoint.

The copy belongs to the store thread from :meth:`~Snapshotter.take` until
:meth:`~Snapshotter.release` (after the file is written); a periodic checkpoint that finds it
still busy is skipped, never waited for, on the model thread.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import scipy.sparse

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic)


def copy_into(dst: Any, src: Any) -> Any:
    """A copy of ``src`` sharing no mutable data with it, reusing ``dst``'s arrays where the
    shapes and dtypes match (dataclasses, dicts, lists and tuples are walked recursively).

    Returns the copy (``dst`` itself, refilled, when it has the same structure).
    """
    if isinstance(src, np.ndarray):
        if (
            isinstance(dst, np.ndarray)
            and dst is not src
            and dst.shape == src.shape
            and dst.dtype == src.dtype
            and dst.flags.writeable
        ):
            np.copyto(dst, src)
            return dst
        return src.copy()
    if isinstance(src, _IMMUTABLE):
        return src
    if dataclasses.is_dataclass(src) and not isinstance(src, type):
        target = dst if type(dst) is type(src) else copy.copy(src)
        for f in dataclasses.fields(src):
            old = getattr(target, f.name) if target is dst else None
            object.__setattr__(target, f.name, copy_into(old, getattr(src, f.name)))
        return target
    if scipy.sparse.issparse(src):
        return src.copy()
    if isinstance(src, dict):
        old = dst if isinstance(dst, dict) else {}
        return {k: copy_into(old.get(k), v) for k, v in src.items()}
    if isinstance(src, list | tuple):
        old = list(dst) if isinstance(dst, list | tuple) and len(dst) == len(src) else []
        items = [copy_into(old[i] if old else None, v) for i, v in enumerate(src)]
        return items if isinstance(src, list) else tuple(items)
    return copy.deepcopy(src)


class Snapshotter:
    """One reusable copy of a model state, handed from the model thread to the store thread.

    Examples
    --------
    ::

        snap = Snapshotter()
        state_copy = snap.take(model.state)      # model thread; None if still being saved
        ...                                      # store thread writes state_copy, then
        snap.release()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._copy: Any = None

    def prime(self, state: Any) -> None:
        """Allocate (and touch) the copy's memory off the model thread.

        Reads ``state`` while the model thread may change it: the contents may be torn, which
        does not matter (:meth:`take` overwrites them); only the allocation is kept. Does
        nothing when a copy is already taken: the store thread must never wait for the lock
        it is the one to release (the checkpoint queued behind this call).
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._copy = copy_into(self._copy, state)
        except Exception:  # noqa: BLE001 - best effort (a dict changed size meanwhile…):
            pass  # take() then allocates what is missing
        finally:
            self._lock.release()

    def take(self, state: Any, *, wait: bool = False, timeout_s: float = 60.0) -> Any | None:
        """Refill the copy from ``state`` (model thread) and hand it over, or None when the
        store thread still holds the previous one (with ``wait``: wait for it, at most
        ``timeout_s``)."""
        if not self._lock.acquire(blocking=wait, timeout=timeout_s if wait else -1):
            return None
        try:
            self._copy = copy_into(self._copy, state)
        except BaseException:
            self._lock.release()
            raise
        return self._copy

    def release(self) -> None:
        """The store thread is done with the copy taken last."""
        self._lock.release()

    def take_model(
        self, model: Any, *, wait: bool = False, timeout_s: float = 60.0
    ) -> PendingCopy | None:
        """Like :meth:`take` for an ``OnlineCNMFE`` whose slow path is settled, copying on
        this thread all but the residual buffer and the slow path's state (see the module
        docstring); the store thread finishes the copy with :meth:`PendingCopy.complete`."""
        if not self._lock.acquire(blocking=wait, timeout=timeout_s if wait else -1):
            return None
        try:
            state = model.state
            old = self._copy if type(self._copy) is type(state) else None
            target = old if old is not None else copy.copy(state)  # (its two parts are live)
            for f in dataclasses.fields(state):
                if f.name not in _DEFERRED:
                    prev = getattr(old, f.name) if old is not None else None
                    object.__setattr__(target, f.name, copy_into(prev, getattr(state, f.name)))
            rows = old.residual if old is not None else None
            if not _same_layout(rows, state.residual):
                rows = np.empty_like(state.residual)
            ring = RingCopy(state.residual, rows)
            object.__setattr__(target, "residual", rows)
            model.residual_guard = ring
            prev_slow = old.slow if old is not None and old.slow is not state.slow else None
            object.__setattr__(target, "slow", None)  # set by PendingCopy.complete
            slow = None if state.slow is None else model.after_slow_steps(
                copy_into, prev_slow, state.slow
            )  # fmt: skip
            self._copy = target
        except BaseException:
            if getattr(model, "residual_guard", None) is not None:
                model.residual_guard = None  # no copy will be finished
            self._lock.release()
            raise
        return PendingCopy(target, ring, slow, model)


_DEFERRED = ("residual", "slow")  # ModelState fields take_model copies off the model thread


def _same_layout(dst: Any, src: np.ndarray) -> bool:
    return (
        isinstance(dst, np.ndarray) and dst is not src and dst.shape == src.shape
        and dst.dtype == src.dtype and dst.flags.writeable
    )  # fmt: skip


class RingCopy:
    """Copy-on-write of a ring buffer's rows (the residual buffer, shape (L, n_pixels)).

    The copier (store thread) calls :meth:`copy_rest`; the owner (model thread) calls
    :meth:`before_write` before it overwrites a row, which copies that row first if the copier
    has not yet. Either way each row is copied once, as it was when the copy was taken.
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.src, self.dst = src, dst
        self._copied = np.zeros(src.shape[0], bool)
        self._lock = threading.Lock()  # held for one row's copy (~0.15 ms at 608²)

    def before_write(self, row: int, every_row: bool = False) -> None:
        """The owner is about to overwrite ``row`` (``every_row``: all of them)."""
        for r in range(self.src.shape[0]) if every_row else (row,):
            with self._lock:
                self._copy_row(r)

    def copy_rest(self, pace: Callable[[], Any] | None = None) -> None:
        """Copy every row not copied yet (``pace()`` before each, e.g. to wait between
        frames)."""
        for r in range(self.src.shape[0]):
            if not self._copied[r]:
                if pace is not None:
                    pace()
                with self._lock:
                    self._copy_row(r)

    @property
    def done(self) -> bool:
        return bool(self._copied.all())

    def _copy_row(self, r: int) -> None:
        if not self._copied[r]:
            np.copyto(self.dst[r], self.src[r])
            self._copied[r] = True


class PendingCopy:
    """A model state copy from :meth:`Snapshotter.take_model`, finished on the store thread."""

    def __init__(self, state: Any, ring: RingCopy, slow: Future | None, model: Any) -> None:
        self.state, self.ring, self.slow, self._model = state, ring, slow, model

    def complete(self, pace: Callable[[], Any] | None = None) -> Any:
        """Copy the residual rows left and wait for the slow path's copy; returns the state
        copy (as it was when taken)."""
        self.ring.copy_rest(pace)
        if self._model.residual_guard is self.ring:
            self._model.residual_guard = None  # (one the model thread still holds: a no-op)
        if self.slow is not None:
            object.__setattr__(self.state, "slow", self.slow.result())
        return self.state
