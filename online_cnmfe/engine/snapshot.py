"""Cheap model snapshots for checkpoints: refill one reused copy instead of deep-copying.

A checkpoint must save the state as it was at one frame while the model thread goes on, so
the model thread copies the state and the store thread writes the copy. ``copy.deepcopy``
allocates ~50 MB at 256 × 256 every time, and the first touch of freshly allocated pages
(page faults), not the copying, makes it cost 30-75 ms of the model thread. :class:`Snapshotter`
keeps one copy and refills it in place (``np.copyto``: no allocation, no page faults) — only
arrays whose shape changed (births, removals) are allocated again — and the store thread
pre-faults the copy (:meth:`Snapshotter.prime`) before the first checkpoint.

The copy belongs to the store thread from :meth:`~Snapshotter.take` until
:meth:`~Snapshotter.release` (after the file is written); a periodic checkpoint that finds it
still busy is skipped, never waited for, on the model thread.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
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
