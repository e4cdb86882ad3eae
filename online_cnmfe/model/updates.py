"""Applying a slow-path ``ModelUpdate`` to the model atomically, keeping Q = ÃᵀÃ exact.

Order (as documented on ``ModelUpdate``): replaced footprints, merges (kept column replaced,
traces summed), deletions (absorbed + removed; survivors keep their order), births appended,
then W rows. Only the touched columns of D A, G and Q are recomputed
(``_kernels/model_update.py``); W rows update G and Q by an exact low-rank correction, so an
update costs O(touched neurons × neighbours), never a full rebuild. That arithmetic is done
by :func:`~.update_prepare.prepare`, on the slow path's thread when the update comes from a
slow job; :func:`commit` (model thread) writes its columns and swaps in its Q.
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model import deconvolution_online as _deconv
from online_cnmfe.model import update_prepare as _prep
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


def apply_update(model, update, prepared: _prep.Prepared | None = None) -> list[ModelEvent]:
    """Apply ``update`` to ``model.state``; returns the events (births, merges, removals).

    ``prepared``: its :func:`~.update_prepare.prepare` from the slow job, used when made for
    this update and the model as it is (else the update is prepared here first).
    """
    st, ops = model.state, model._ops
    if prepared is None or not prepared.valid_for(update, ops):
        prepared = _prep.prepare(st, ops, update, model.params, st.n_processed)
    if prepared is None:  # neither footprints nor W change
        return []
    return commit(model, prepared)


def commit(model, p: _prep.Prepared) -> list[ModelEvent]:
    """Write a prepared update into the model (model thread): columns, rows, W, Q, CSR."""
    st, ops, u = model.state, model._ops, p.update
    events: list[ModelEvent] = []
    if u.changes_footprints:
        ids_before = st.neuron_ids.copy()
        _merge_traces(st, u)
        if p.surv is not None:
            for M in (st.A, st.DA, st.G):
                M.select(p.surv, p.n_new)
            _reindex_rows(st, p.surv, p.n_new, u, model.params, p.births)
        for j, (a_idx, a_val, da_idx, da_val, g_idx, g_val) in p.columns.items():
            st.A.write(j, a_idx, a_val)
            st.DA.write(j, da_idx, da_val)
            st.G.write(j, g_idx, g_val)
        st.footprints_version += 1
        events = _events(st, u, ids_before, p.n_new)
    G = st.G
    for k, vals in p.g_values.items():  # G of unchanged neurons under new W rows (same support)
        G.data[G.start[k] : G.stop[k]] = vals
    if u.w_stop > u.w_start:
        st.W[u.w_start : u.w_stop] = u.w_rows
        ops.Wt[:, u.w_start : u.w_stop] = st.W[u.w_start : u.w_stop].T  # the frame path's W
    st.boxes, st.gram, st.pattern = p.boxes, p.gram, p.pattern
    st.q_indptr, st.q_indices, st.q_data, st.q_diag, st.order = p.csr
    st.gram_cursor = p.gram_cursor
    ops.epoch += 1
    return events


def _filled_slots(st) -> np.ndarray:
    """The residual buffer's filled slots, in frame order."""
    slots = np.flatnonzero(st.residual_frame >= 0)
    return slots[np.argsort(st.residual_frame[slots])]


def _merge_traces(st, u) -> None:
    """Kept neuron's trace = sum of both; its OASIS pools are refitted on the summed buffer."""
    if not u.merged_kept.size:
        return
    order = _filled_slots(st)
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


def _reindex_rows(st, surv, n_new, u, params, births) -> None:
    """Row-wise arrays: survivors in order, then the new neurons (``births``: their
    ``new_neurons``, recomputed unless made for this frame's ``n_processed``)."""
    for name in _ROWWISE:
        old = getattr(st, name)
        new = np.zeros((len(surv) + n_new,) + old.shape[1:], old.dtype)
        new[: len(surv)] = old[surv]
        setattr(st, name, new)
    if not n_new:
        return
    if births is None or births["n_processed"] != st.n_processed:
        births = _prep.new_neurons(u, params, st.pool_v.shape[1], st.n_processed)
    ns = len(surv)
    st.g[ns:], st.trace_noise[ns:] = births["g"], births["noise"]
    st.s_min[ns:], st.lam[ns:] = births["s_min"], births["lam"]
    for name, arr in births["pools"].items():
        getattr(st, name)[ns:] = arr
    traces, c_all = births["traces"], births["c_all"]
    st.c[ns:] = np.maximum(traces[:, -1], 0) if traces.shape[1] else 0
    st.c_den[ns:] = births["c_den"]
    slots = _filled_slots(st)  # the buffer's slots of the trace frames
    held = st.residual_frame[slots]
    frames = np.asarray(u.new_trace_frames, np.int64)
    if held.size and frames.size:
        i = np.minimum(np.searchsorted(held, frames), held.size - 1)
        hit = np.flatnonzero(held[i] == frames)
        st.c_raw_buffer[ns:, slots[i[hit]]] = traces[:, hit]
        st.c_den_buffer[ns:, slots[i[hit]]] = c_all[:, hit]
    st.neuron_ids[ns:] = np.arange(st.next_id, st.next_id + n_new)
    st.next_id += n_new
    st.birth_frame[ns:] = int(u.frame_index)


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
