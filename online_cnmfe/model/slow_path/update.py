"""The contract between the slow path and the online model: its read-only view of the model
(:class:`SlowPathInputs`) and the changes it hands back (:class:`ModelUpdate`).

Symbols: A footprints (n_pixels x K, CSC, pixels row-major), W ring weights (n_bg, R), c traces.
Both are re-exported by :mod:`.schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse


@dataclass(frozen=True, slots=True)
class SlowPathInputs:
    """Read-only view of the model that :func:`slow_step` works on.

    Attributes
    ----------
    t : int
        Index of the frame just processed.
    A : scipy.sparse.csc_array of shape (n_pixels, K)
    W : ndarray of shape (n_bg, R), float32
    b0 : ndarray of shape (n_pixels,), float32
    g : ndarray of shape (K,) or (K, p)
        AR coefficients (the population median is given to new neurons).
    residual : ndarray of shape (L, n_pixels), float32
        Ring buffer of residuals; ``residual_frame`` (L,) int64 the frame in each slot (-1 empty).
    c_buffer : ndarray of shape (K, L), float32
        Traces aligned with ``residual`` (same slots).
    """

    t: int
    A: scipy.sparse.csc_array
    W: np.ndarray
    b0: np.ndarray
    g: np.ndarray
    residual: np.ndarray
    residual_frame: np.ndarray
    c_buffer: np.ndarray


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """Changes to apply atomically between two frames, in this order.

    1. ``replaced``: footprint columns replaced by ``replaced_footprints`` (same order).
    2. ``merged_kept[m]`` absorbs ``merged_absorbed[m]``: the kept column becomes
       ``merged_footprints[:, m]`` and its trace (and OASIS state) the *sum* of both traces.
    3. the absorbed and the ``removed`` neurons are deleted (survivors keep their order:
       :meth:`survivors`).
    4. new neurons are appended: ``new_footprints`` (unit-norm columns), ``new_traces``
       (n_new, T) raw traces over the buffer frames ``new_trace_frames`` (T,) (for warm
       starting OASIS), ``new_g`` AR coefficients (population median), ``new_noise``.
    5. W rows ``w_start:w_stop`` become ``w_rows`` (empty when ``w_stop == w_start``).

    All indices refer to the neuron order *before* the update.
    """

    frame_index: int
    replaced: np.ndarray
    replaced_footprints: scipy.sparse.csc_array
    merged_kept: np.ndarray
    merged_absorbed: np.ndarray
    merged_footprints: scipy.sparse.csc_array
    removed: np.ndarray
    new_footprints: scipy.sparse.csc_array
    new_traces: np.ndarray
    new_trace_frames: np.ndarray
    new_g: np.ndarray
    new_noise: np.ndarray
    w_start: int = 0
    w_stop: int = 0
    w_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    removed_reasons: tuple[str, ...] = ()  # why each of ``removed`` goes (same order)

    @property
    def changes_footprints(self) -> bool:
        return bool(
            self.replaced.size or self.merged_kept.size or self.removed.size
            or self.new_footprints.shape[1]
        )  # fmt: skip

    def survivors(self, n_components: int) -> np.ndarray:
        """Old indices that survive, in their new order (new neurons follow them)."""
        gone = np.union1d(self.removed, self.merged_absorbed)
        return np.setdiff1d(np.arange(n_components), gone).astype(np.int64)

    def apply_footprints(self, A: scipy.sparse.csc_array) -> scipy.sparse.csc_array:
        """The footprint matrix after this update (reference implementation of steps 1-4)."""
        A = scipy.sparse.csc_array(A, dtype=np.float32)
        cols = {int(k): m for m, k in enumerate(self.replaced)}
        merged = {int(k): m for m, k in enumerate(self.merged_kept)}
        parts = []
        for k in self.survivors(A.shape[1]):
            if k in merged:
                parts.append(_column(self.merged_footprints, merged[k]))
            elif k in cols:
                parts.append(_column(self.replaced_footprints, cols[k]))
            else:
                parts.append(_column(A, k))
        for m in range(self.new_footprints.shape[1]):
            parts.append(_column(self.new_footprints, m))
        return _csc(parts, A.shape[0])


def _column(M: scipy.sparse.csc_array, k: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = M.indptr[k], M.indptr[k + 1]
    return M.indices[lo:hi], M.data[lo:hi]


def _csc(cols: list[tuple[np.ndarray, np.ndarray]], n_pixels: int) -> scipy.sparse.csc_array:
    if not cols:
        return scipy.sparse.csc_array((n_pixels, 0), dtype=np.float32)
    indptr = np.zeros(len(cols) + 1, np.int64)
    indptr[1:] = np.cumsum([len(p) for p, _ in cols])
    idx = np.concatenate([p for p, _ in cols]).astype(np.int32) if cols else np.zeros(0, np.int32)
    val = np.concatenate([v for _, v in cols]).astype(np.float32) if cols else np.zeros(0)
    return scipy.sparse.csc_array(
        (val.astype(np.float32), idx, indptr), shape=(n_pixels, len(cols))
    )
