"""Applying a slow-path ``ModelUpdate`` to the model atomically, keeping Q = ÃᵀÃ exact.

Order (as documented on ``ModelUpdate``): replaced footprints, merges (kept column replaced,
traces summed), deletions (absorbed + removed; survivors keep their order), births appended,
then W rows. Only the touched columns of D A, G and Q are recomputed
(``_kernels/model_update.py``); W rows update G in place and Q by an exact low-rank
correction, so an update costs O(touched neurons × neighbours), never a full rebuild.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from online_cnmfe.model import deconvolution_online as _deconv
from online_cnmfe.model import traces as _tr
from online_cnmfe.model._kernels import model_update as _ku
from online_cnmfe.model.frame_result import ModelEvent
from online_cnmfe.model.slow_path.update import SlowPathInputs

# K-indexed arrays of ModelState that follow the neuron order (rows).
_ROWWISE = (
    "c", "c_den", "s", "g", "lam", "s_min", "trace_noise", "pool_v", "pool_w", "pool_t",
    "pool_l", "pool_first", "pool_count", "c_raw_buffer", "c_den_buffer", "neuron_ids",
    "birth_frame", "boxes", "scratch_rhs",
)  # fmt: skip


def slow_inputs(model, snapshot: bool = False):
    """The read-only ``SlowPathInputs`` view of the model for ``slow_step``.

    With ``snapshot``, the view stays valid while the next frame's critical path runs (the
    step may run on another thread meanwhile): b0 and g are copied (the next frame updates
    b0), and the buffer slot the next frame will write is marked empty (``residual_frame``
    −1), so the step never reads it — on any executor, for identical results.
    """
    st = model.state
    b0, g, frames = st.b0, st.g[:, None], st.residual_frame
    if snapshot:
        b0, g, frames = b0.copy(), g.copy(), frames.copy()
        frames[st.residual_head] = -1
    return SlowPathInputs(
        t=st.t, A=_FootprintsView(model), W=st.W, b0=b0, g=g, residual=st.residual,
        residual_frame=frames, c_buffer=st.c_raw_buffer,
    )  # fmt: skip


class _FootprintsView:
    """Stands in for A in ``SlowPathInputs``: ``shape`` is free, anything else materialises
    the csc_array (an O(nnz) copy the slow path so far never asks for)."""

    __slots__ = ("_model",)

    def __init__(self, model) -> None:
        self._model = model

    @property
    def shape(self) -> tuple[int, int]:
        st = self._model.state
        return (st.n_pixels, st.n_components)

    def __getattr__(self, name):
        return getattr(self._model.footprints, name)


def apply_update(model, update) -> list[ModelEvent]:
    """Apply ``update`` to ``model.state``; returns the events (births, merges, removals)."""
    st, ops = model.state, model._ops
    events: list[ModelEvent] = []
    touched = False
    if update.changes_footprints:
        events = _apply_footprints(model, update)
        touched = True
    if update.w_stop > update.w_start:
        _apply_w_rows(st, ops, update.w_start, update.w_stop, update.w_rows)
        touched = True
    if touched:
        K = st.n_components
        if K:  # one exact Gram column per update, round robin (bounds rounding drift)
            st.gram_cursor %= K
            _gram_column(st, ops, st.gram_cursor)
            st.gram_cursor += 1
        _tr.refresh_csr(st)
    return events


def _apply_footprints(model, u) -> list[ModelEvent]:
    st, ops, params = model.state, model._ops, model.params
    K = st.n_components
    ids_before = st.neuron_ids.copy()
    changed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m, k in enumerate(u.replaced):
        changed[int(k)] = _column(u.replaced_footprints, m)
    for m, k in enumerate(u.merged_kept):
        changed[int(k)] = _column(u.merged_footprints, m)
    _merge_traces(st, u)
    n_new = int(u.new_footprints.shape[1])
    if u.merged_absorbed.size or u.removed.size or n_new:
        surv = u.survivors(K)
        pos = np.full(K, -1, np.int64)
        pos[surv] = np.arange(len(surv))
        for M in (st.A, st.DA, st.G):
            M.select(surv, n_new)
        _reindex_rows(st, surv, n_new, u, params)
        Kn = len(surv) + n_new
        gram = np.zeros((Kn, Kn), np.float32)
        gram[: len(surv), : len(surv)] = st.gram[np.ix_(surv, surv)]
        pattern = np.zeros((Kn, Kn), bool)
        pattern[: len(surv), : len(surv)] = st.pattern[np.ix_(surv, surv)]
        st.gram, st.pattern = gram, pattern
        changed = {int(pos[k]): v for k, v in changed.items() if pos[k] >= 0}
        for j in range(n_new):
            changed[len(surv) + j] = _column(u.new_footprints, j)
    for j, (idx, val) in changed.items():
        st.A.write(j, idx, val)
        da_idx, da_val = _block_average(idx, val, st, ops)
        st.DA.write(j, da_idx, da_val)
        g_idx, g_val = _ku.g_column(
            da_idx, da_val, st.W, st.ring_idx, st.ring_offsets, ops.grid[0], ops.grid[1],
            ops.scratch_n, ops.mark, _next_tags(ops, 1),
        )  # fmt: skip
        st.G.write(j, g_idx, g_val)
        st.boxes[j] = _tr.column_box(da_idx, g_idx, ops.grid[1])
    for j in changed:
        _gram_column(st, ops, j)
    st.footprints_version += 1
    return _events(st, u, ids_before, n_new)


def _column(M, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (indices int64, values float32) of column m of a CSC matrix."""
    if not isinstance(M, scipy.sparse.csc_array):  # (a conversion checks the whole matrix)
        M = scipy.sparse.csc_array(M)
    if not M.has_sorted_indices:
        M.sort_indices()
    lo, hi = M.indptr[m], M.indptr[m + 1]
    return M.indices[lo:hi].astype(np.int64), M.data[lo:hi].astype(np.float32)


def _block_average(idx, val, st, ops) -> tuple[np.ndarray, np.ndarray]:
    """D a for one sparse column a: block averages on the background grid (sorted)."""
    rows, cols = np.divmod(idx, st.dims[1])
    blocks = (rows // st.ssub) * ops.grid[1] + cols // st.ssub
    uniq, inv = np.unique(blocks, return_inverse=True)
    sums = np.bincount(inv, weights=val, minlength=len(uniq))
    return uniq.astype(np.int64), (sums / st.block_count[uniq]).astype(np.float32)


def _gram_column(st, ops, j: int) -> None:
    cand = np.flatnonzero(_tr.box_overlap(st.boxes, st.boxes[j])).astype(np.int64)
    out = np.zeros(len(cand), np.float32)
    _ku.gram_column(
        j, cand, *_slot(st.A), *_slot(st.DA), *_slot(st.G), st.block_count, ops.scratch_a,
        ops.scratch_g, ops.scratch_s, out,
    )  # fmt: skip
    st.gram[j, :] = 0.0
    st.gram[:, j] = 0.0
    st.gram[cand, j] = out
    st.gram[j, cand] = out
    st.pattern[j, :] = False
    st.pattern[:, j] = False
    st.pattern[cand, j] = True
    st.pattern[j, cand] = True


def _slot(m) -> tuple:
    return m.start, m.stop, m.indices, m.data


def _merge_traces(st, u) -> None:
    """Kept neuron's trace = sum of both; its OASIS pools are refitted on the summed buffer."""
    if not u.merged_kept.size:
        return
    valid = np.flatnonzero(st.residual_frame >= 0)
    order = valid[np.argsort(st.residual_frame[valid])]
    for i, j in zip(u.merged_kept, u.merged_absorbed):
        st.c[i] += st.c[j]
        st.c_raw_buffer[i] += st.c_raw_buffer[j]
        hist = st.c_raw_buffer[i, order][None, :]
        pools = _deconv.empty_pools(1, st.pool_v.shape[1])
        c, s, c_all = _deconv.run_history(
            pools, st.g[[i]], st.lam[[i]], st.s_min[[i]], hist, st.n_processed - hist.shape[1]
        )
        for name, arr in pools.items():
            getattr(st, name)[i] = arr[0]
        st.c_den[i] = c[0]
        st.c_den_buffer[i, order] = c_all[0]


def _reindex_rows(st, surv, n_new, u, params) -> None:
    """Row-wise arrays: survivors in order, then the new neurons."""
    for name in _ROWWISE:
        old = getattr(st, name)
        new = np.zeros((len(surv) + n_new,) + old.shape[1:], old.dtype)
        new[: len(surv)] = old[surv]
        setattr(st, name, new)
    if not n_new:
        return
    ns = len(surv)
    g_new = np.asarray(u.new_g)
    g = _deconv.ar1_coefficients(g_new if g_new.ndim == 2 else g_new[:, None])
    noise = np.asarray(u.new_noise, np.float32)
    s_min, lam = _deconv.spike_thresholds(g, noise, params.deconv)
    st.g[ns:], st.trace_noise[ns:], st.s_min[ns:], st.lam[ns:] = g, noise, s_min, lam
    traces = np.asarray(u.new_traces, np.float32).reshape(n_new, -1)
    pools = _deconv.empty_pools(n_new, st.pool_v.shape[1])
    c, s, c_all = _deconv.run_history(
        pools, st.g[ns:], st.lam[ns:], st.s_min[ns:], traces, st.n_processed - traces.shape[1]
    )
    for name, arr in pools.items():
        getattr(st, name)[ns:] = arr
    st.c[ns:] = np.maximum(traces[:, -1], 0) if traces.shape[1] else 0
    st.c_den[ns:] = c
    slot_of = {int(f): s for s, f in enumerate(st.residual_frame) if f >= 0}
    for col, f in enumerate(np.asarray(u.new_trace_frames)):
        slot = slot_of.get(int(f))
        if slot is not None:
            st.c_raw_buffer[ns:, slot] = traces[:, col]
            st.c_den_buffer[ns:, slot] = c_all[:, col]
    st.neuron_ids[ns:] = np.arange(st.next_id, st.next_id + n_new)
    st.next_id += n_new
    st.birth_frame[ns:] = int(u.frame_index)


def _apply_w_rows(st, ops, start: int, stop: int, rows: np.ndarray) -> None:
    st.W[start:stop] = rows
    ops.Wt[:, start:stop] = st.W[start:stop].T  # the frame path's copy of W
    wb = ops.grid[1]
    r0, r1 = start // wb, (stop - 1) // wb
    c0, c1 = (start % wb, (stop - 1) % wb) if r0 == r1 else (0, wb - 1)
    affected = np.flatnonzero(
        _tr.box_overlap(st.boxes, np.array([r0, r1, c0, c1], np.int64))
    ).astype(np.int64)
    if affected.size:
        _ku.w_rows_update(
            start, stop, st.W, st.ring_idx, affected, *_slot(st.DA), *_slot(st.G),
            st.block_count, st.gram, ops.scratch_n,
        )  # fmt: skip


def _events(st, u, ids_before, n_new) -> list[ModelEvent]:
    t = int(u.frame_index)
    ev = []
    for i, j in zip(u.merged_kept, u.merged_absorbed):
        ids = (int(ids_before[i]), int(ids_before[j]))
        ev.append(ModelEvent("merged", t, ids, f"{ids[1]} merged into {ids[0]} (kept)"))
    reasons = u.removed_reasons or ("",) * u.removed.size
    for why in dict.fromkeys(reasons):  # one event per reason, in order
        ids = tuple(int(ids_before[k]) for k, r in zip(u.removed, reasons) if r == why)
        ev.append(ModelEvent("removed", t, ids, why))
    if n_new:
        ev.append(ModelEvent("born", t, tuple(int(x) for x in st.neuron_ids[-n_new:])))
    return ev


def _next_tags(ops, n: int) -> int:
    tag = ops.tag
    ops.tag += n
    return tag
