"""Consistency of a ModelState read back from a file, before any kernel indexes with it.

The per-frame kernels are compiled without bounds checks: an index array that points outside
its target (a damaged or crafted checkpoint) would read or write arbitrary memory. A state
from a file is therefore checked once when a model is built from it
(:meth:`OnlineCNMFE.from_state`): shapes against the dimensions and the number of neurons K,
and every index array of the frame path against the array it indexes. The slow path's state
is checked by its own code when it runs (see docs/security.md for what remains).
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model.state import ModelState


class StateError(ValueError):
    """The state is inconsistent (message: the field and what is wrong)."""


def _shape(name: str, array, shape: tuple) -> None:
    if not isinstance(array, np.ndarray) or array.shape != shape:
        got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise StateError(f"{name} has shape {got}; expected {shape}")


def _within(name: str, array: np.ndarray, low: int, high: int) -> None:
    if array.dtype.kind not in "iu":
        raise StateError(f"{name} holds {array.dtype}; expected integers")
    if array.size and (array.min() < low or array.max() > high):
        raise StateError(f"{name} holds values outside [{low}, {high}]")


def _slotted(name: str, cols, n_rows: int, k: int) -> None:
    if int(cols.n_rows) != n_rows:
        raise StateError(f"{name} has {cols.n_rows} rows; expected {n_rows}")
    for part in ("start", "stop", "cap"):
        _shape(f"{name}.{part}", getattr(cols, part), (k,))
    n = cols.indices.shape[0]
    if cols.data.shape != (n,) or cols.indices.ndim != 1:
        raise StateError(f"{name}.indices and .data differ in length")
    _within(f"{name}.start", cols.start, 0, n)
    _within(f"{name}.stop", cols.stop, 0, n)
    if (cols.stop < cols.start).any() or (cols.stop - cols.start > cols.cap).any():
        raise StateError(f"{name} has a column ending before it starts or past its slot")
    _within(f"{name}.end", np.array([cols.end]), 0, n)
    for k_, (a, b) in enumerate(zip(cols.start.tolist(), cols.stop.tolist(), strict=True)):
        if b > a:
            _within(f"{name}.indices of column {k_}", cols.indices[a:b], 0, n_rows - 1)


def check_state(st: ModelState) -> None:
    """Raise :class:`StateError` when ``st``'s arrays disagree in shape or point outside.

    Parameters
    ----------
    st : ModelState
    """
    if len(st.dims) != 2 or min(st.dims) <= 0 or int(st.ssub) < 1:
        raise StateError(f"dims {st.dims} / ssub {st.ssub} are invalid")
    n_pixels = int(st.dims[0]) * int(st.dims[1])
    k = int(np.asarray(st.neuron_ids).shape[0])
    if st.W.ndim != 2:
        raise StateError(f"W has shape {st.W.shape}; expected (n_bg, R)")
    n_bg, r = st.W.shape
    _slotted("A", st.A, n_pixels, k)
    _slotted("DA", st.DA, n_bg, k)
    _slotted("G", st.G, n_bg, k)
    _shape("ring_idx", st.ring_idx, (n_bg, r))
    _within("ring_idx", st.ring_idx, 0, n_bg)
    _shape("ring_offsets", st.ring_offsets, (r, 2))
    for name in ("b0", "scratch_ytilde", "scratch_ac"):
        _shape(name, getattr(st, name), (n_pixels,))
    for name in ("scratch_bg", "scratch_zsum", "scratch_gc", "block_count"):
        _shape(name, getattr(st, name), (n_bg,))
    for name in ("c", "c_den", "s", "g", "lam", "s_min", "trace_noise", "birth_frame",
                 "q_diag", "scratch_rhs", "pool_first", "pool_count"):  # fmt: skip
        _shape(name, getattr(st, name), (k,))
    _shape("gram", st.gram, (k, k))
    _shape("pattern", st.pattern, (k, k))
    _shape("boxes", st.boxes, (k, 4))
    _shape("order", st.order, (k,))
    _within("order", st.order, 0, max(k - 1, 0))
    _shape("q_indptr", st.q_indptr, (k + 1,))
    _within("q_indptr", st.q_indptr, 0, st.q_indices.shape[0])
    if st.q_indptr[0] != 0 or (np.diff(st.q_indptr) < 0).any():
        raise StateError("q_indptr does not start at 0 and increase")
    if st.q_data.shape != st.q_indices.shape:
        raise StateError("q_indices and q_data differ in length")
    _within("q_indices", st.q_indices, 0, max(k - 1, 0))
    p = st.pool_v.shape[1] if st.pool_v.ndim == 2 else -1
    for name in ("pool_v", "pool_w", "pool_t", "pool_l"):
        _shape(name, getattr(st, name), (k, p))
    _within("pool_first", st.pool_first, 0, p)
    _within("pool_count", st.pool_count, 0, p)
    if st.residual.ndim != 2 or st.residual.shape[1] != n_pixels:
        raise StateError(f"residual has shape {st.residual.shape}; expected (L, {n_pixels})")
    n_slots = st.residual.shape[0]
    _shape("residual_frame", st.residual_frame, (n_slots,))
    _within("residual_head", np.array([st.residual_head]), 0, max(n_slots - 1, 0))
    for name in ("c_raw_buffer", "c_den_buffer"):
        _shape(name, getattr(st, name), (k, n_slots))
    if st.pre is not None:
        _check_pre(st.pre, (int(st.dims[0]), int(st.dims[1])))


def _check_pre(pre, dims: tuple[int, int]) -> None:
    """The preprocessing state (its kernels index rows, columns and the sample buffer)."""
    h, w = dims
    if tuple(pre.dims) != dims:
        raise StateError(f"pre.dims {tuple(pre.dims)} differ from the model's {dims}")
    for name in ("template", "mask"):
        _shape(f"pre.{name}", getattr(pre, name), (h, w))
    for name in ("rough_base", "row_off", "row_rough"):
        _shape(f"pre.{name}", getattr(pre, name), (h,))
    _shape("pre.col_off", pre.col_off, (w,))
    if pre.fov_registered is not None:  # a mask of the corrected frame (detection, sanity)
        _shape("pre.fov_registered", pre.fov_registered, (h, w))
    if int(pre.col_step) < 1 or int(pre.row_step) < 1:
        raise StateError(f"pre.col_step/row_step {pre.col_step}/{pre.row_step} must be >= 1")
    need = max(-(-w // int(pre.col_step)), -(-h // int(pre.row_step)))
    if not isinstance(pre.samples, np.ndarray) or pre.samples.ndim != 1:
        raise StateError("pre.samples is not a 1-d array")
    if pre.samples.shape[0] < need:
        raise StateError(f"pre.samples holds {pre.samples.shape[0]} values; needs {need}")
