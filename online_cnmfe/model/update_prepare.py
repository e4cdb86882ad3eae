"""The slow path's hand-over, prepared off the model thread.

Applying a ``ModelUpdate`` (order as documented on it) changes the footprint columns of A,
D A and G, the ring rows W, Q = ÃᵀÃ (exact columns of the changed neurons, then the W rows'
exact low-rank correction, then one round-robin exact column) and Q's CSR. All of it depends
only on the update and on model arrays that nothing but the hand-over's commit
(``updates.commit``) writes: A, D A, G, ``boxes``, Q and its pattern, W, ``gram_cursor``.
So :func:`prepare` computes it from those arrays as they are while the slow job runs — on the
slow path's thread, while the next frame's critical path only reads them — and the commit
writes the finished columns and swaps in the new Q on the model thread: copies of the touched
columns (and, for births, merges and removals, the neuron-wise arrays), no arithmetic on Q.
The arithmetic is the same, in the same order, as applying the update in place was, so the
results are bit for bit those of applying it directly.

The Gram kernels read columns through a small *overlay* (slotted CSC holding copies of only
the columns they need: the changed ones as they will be, and their neighbours), never the
model's matrices in place, so the W rows' correction of G can run on a copy too.

A :class:`Prepared` is valid for one update and one ``Operators.epoch`` (advanced by every
commit); otherwise (e.g. an update restored from a state file) it is prepared on the model
thread at its commit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model import deconvolution_online as _deconv
from online_cnmfe.model import traces as _tr
from online_cnmfe.model._kernels import model_update as _ku
from online_cnmfe.model.slotted import INDEX_DTYPE


@dataclass(slots=True)
class Prepared:
    """A ``ModelUpdate`` worked out against one model epoch (see the module docstring).

    ``columns[j]`` (j in the order after the update): (A, D A, G) of a changed neuron as
    (indices, values) pairs, G as it is after the W rows; ``g_values[k]``: new G values (same
    support) of an unchanged neuron whose G the W rows changed; ``surv`` the surviving old
    indices (None: nobody is renumbered); ``births`` the new neurons' OASIS warm start, made
    for ``births["n_processed"]``.
    """

    update: object
    ops: object
    epoch: int
    surv: np.ndarray | None
    n_new: int
    columns: dict
    g_values: dict
    boxes: np.ndarray
    gram: np.ndarray
    pattern: np.ndarray
    csr: tuple
    gram_cursor: int
    births: dict | None

    def valid_for(self, update, ops) -> bool:
        return self.update is update and self.ops is ops and self.epoch == ops.epoch


def slow_job(slow_path, slow_state, frame: tuple, view, params, base: tuple):
    """One frame's slow-path work on the slow-path executor: ``observe_frame``, ``slow_step``
    and, when it returns a ``ModelUpdate``, its :func:`prepare`. Returns (update or None,
    Prepared or None). ``base`` = (state, ops, n_processed at the hand-over), taken at
    submission; only ``slow_state``, the arguments and ``ops``' update scratch are written."""
    t, y, c, residual = frame
    slow_path.observe_frame(slow_state, t, y, c, residual, params)
    update = slow_path.slow_step(slow_state, view, params)
    if update is None:
        return None, None
    st, ops, n_processed = base
    return update, prepare(st, ops, update, params, n_processed)


def prepare(st, ops, u, params, n_processed: int) -> Prepared | None:
    """Work out ``u`` against the model's current arrays (read only; see the module
    docstring); None when it changes neither footprints nor W."""
    has_fp, has_w = u.changes_footprints, u.w_stop > u.w_start
    if not (has_fp or has_w):
        return None
    K = st.n_components
    changed = _changed_footprints(u) if has_fp else {}
    n_new = int(u.new_footprints.shape[1]) if has_fp else 0
    surv = None
    if has_fp and (u.merged_absorbed.size or u.removed.size or n_new):
        surv = u.survivors(K)
        pos = np.full(K, -1, np.int64)
        pos[surv] = np.arange(len(surv))
        ns, Kn = len(surv), len(surv) + n_new
        gram = np.zeros((Kn, Kn), np.float32)
        gram[:ns, :ns] = st.gram[np.ix_(surv, surv)]
        pattern = np.zeros((Kn, Kn), bool)
        pattern[:ns, :ns] = st.pattern[np.ix_(surv, surv)]
        boxes = np.zeros((Kn, 4), np.int64)
        boxes[:ns] = st.boxes[surv]
        changed = {int(pos[k]): v for k, v in changed.items() if pos[k] >= 0}
        for j in range(n_new):
            changed[ns + j] = _column(u.new_footprints, j)
        old_of = np.concatenate([surv, np.full(n_new, -1, np.int64)])
    else:
        gram, pattern, boxes = st.gram.copy(), st.pattern.copy(), st.boxes.copy()
        old_of = np.arange(K, dtype=np.int64)
    columns = {}
    for j, (idx, val) in changed.items():
        da_idx, da_val = _block_average(idx, val, st, ops)
        g_idx, g_val = _ku.g_column(
            da_idx, da_val, st.W, st.ring_idx, st.ring_offsets, ops.grid[0], ops.grid[1],
            ops.scratch_n, ops.mark, _next_tag(ops),
        )  # fmt: skip
        columns[j] = (idx, val, da_idx, da_val, g_idx, g_val)
        boxes[j] = _tr.column_box(da_idx, g_idx, ops.grid[1])
    cand = {j: _neighbours(boxes, boxes[j]) for j in changed}
    affected = _neighbours(boxes, _w_box(u, ops.grid[1])) if has_w else np.zeros(0, np.int64)
    Kn = boxes.shape[0]
    cursor = st.gram_cursor % Kn if Kn else None
    rr = _neighbours(boxes, boxes[cursor]) if Kn else np.zeros(0, np.int64)
    need = [np.fromiter(changed, np.int64, len(changed)), affected, rr, *cand.values()]
    if cursor is not None:
        need.append(np.array([cursor], np.int64))
    need = np.unique(np.concatenate(need)).astype(np.int64)
    ov = [_overlay(need, columns, M, 2 * m, old_of, Kn) for m, M in enumerate((st.A, st.DA, st.G))]
    for j in changed:
        _gram_column(gram, pattern, j, cand[j], ov, st.block_count, ops)
    if has_w:
        w_rows = np.ascontiguousarray(u.w_rows, dtype=st.W.dtype)
        _ku.w_rows_update(
            u.w_start, u.w_stop, w_rows, st.ring_idx, affected, *ov[1], *ov[2], st.block_count,
            gram, ops.scratch_n,
        )  # fmt: skip
    gram_cursor = st.gram_cursor
    if cursor is not None:  # one exact Gram column per update, round robin (bounds drift)
        _gram_column(gram, pattern, cursor, rr, ov, st.block_count, ops)
        gram_cursor = cursor + 1
    g_s, g_e, _, g_d = ov[2]
    for j, col in columns.items():
        columns[j] = col[:5] + (g_d[g_s[j] : g_e[j]],)
    g_values = {int(k): g_d[g_s[k] : g_e[k]] for k in affected if int(k) not in columns}
    births = new_neurons(u, params, st.pool_v.shape[1], n_processed) if n_new else None
    csr = _tr.csr_arrays(gram, pattern)
    return Prepared(
        update=u, ops=ops, epoch=ops.epoch, surv=surv, n_new=n_new, columns=columns,
        g_values=g_values, boxes=boxes, gram=gram, pattern=pattern, csr=csr,
        gram_cursor=gram_cursor, births=births,
    )  # fmt: skip


def new_neurons(u, params, capacity: int, n_processed: int) -> dict:
    """The born neurons' AR coefficients, noise, thresholds and OASIS state, warm-started on
    their buffer traces as frames ``n_processed - T`` … ``n_processed - 1``."""
    g_new = np.asarray(u.new_g)
    g = _deconv.ar1_coefficients(g_new if g_new.ndim == 2 else g_new[:, None])
    noise = np.asarray(u.new_noise, np.float32)
    s_min, lam = _deconv.spike_thresholds(g, noise, params.deconv)
    n_new = int(u.new_footprints.shape[1])
    traces = np.asarray(u.new_traces, np.float32).reshape(n_new, -1)
    g, s_min, lam = (np.asarray(x, np.float32) for x in (g, s_min, lam))
    pools = _deconv.empty_pools(n_new, capacity)
    c, _, c_all = _deconv.run_history(pools, g, lam, s_min, traces, n_processed - traces.shape[1])
    return {
        "g": g, "noise": noise, "s_min": s_min, "lam": lam, "pools": pools, "c_den": c,
        "c_all": c_all, "traces": traces, "n_processed": n_processed,
    }  # fmt: skip


def _changed_footprints(u) -> dict:
    changed = {}
    for m, k in enumerate(u.replaced):
        changed[int(k)] = _column(u.replaced_footprints, m)
    for m, k in enumerate(u.merged_kept):
        changed[int(k)] = _column(u.merged_footprints, m)
    return changed


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


def _neighbours(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    return np.flatnonzero(_tr.box_overlap(boxes, box)).astype(np.int64)


def _w_box(u, wb: int) -> np.ndarray:
    """Grid box of the W rows [w_start, w_stop)."""
    start, stop = u.w_start, u.w_stop
    r0, r1 = start // wb, (stop - 1) // wb
    c0, c1 = (start % wb, (stop - 1) % wb) if r0 == r1 else (0, wb - 1)
    return np.array([r0, r1, c0, c1], np.int64)


def _overlay(need, columns, M, part: int, old_of, Kn: int) -> tuple:
    """Slotted (start, stop, indices, data) of Kn columns holding copies of columns ``need``:
    a changed one from ``columns`` (its ``part``), any other from the model's ``M``."""
    is_new = np.zeros(len(need), bool)  # (need is sorted and holds every changed column)
    is_new[np.searchsorted(need, np.fromiter(columns, np.int64, len(columns)))] = True
    old, fresh = need[~is_new], need[is_new]
    src = old_of[old]
    n_old = int((M.stop[src] - M.start[src]).sum())
    n = n_old + sum(len(columns[int(k)][part]) for k in fresh)
    start = np.zeros(Kn, np.int64)
    stop = np.zeros(Kn, np.int64)
    indices = np.empty(n, INDEX_DTYPE)
    data = np.empty(n, np.float32)
    pos = _ku.gather_columns(old, src, M.start, M.stop, M.indices, M.data, 0, start, stop,
                             indices, data)  # fmt: skip
    for k in fresh:
        idx, val = columns[int(k)][part], columns[int(k)][part + 1]
        start[k], stop[k] = pos, pos + len(idx)
        indices[pos : stop[k]] = idx
        data[pos : stop[k]] = val
        pos = stop[k]
    return start, stop, indices, data


def _gram_column(gram, pattern, j: int, cand, ov, nblk, ops) -> None:
    """Exact Q[:, j] = Q[j, :] on j's box neighbours ``cand`` (columns read from ``ov``)."""
    out = np.zeros(len(cand), np.float32)
    _ku.gram_column(
        j, cand, *ov[0], *ov[1], *ov[2], nblk, ops.scratch_a, ops.scratch_g, ops.scratch_s, out
    )
    gram[j, :] = 0.0
    gram[:, j] = 0.0
    gram[cand, j] = out
    gram[j, cand] = out
    pattern[j, :] = False
    pattern[:, j] = False
    pattern[cand, j] = True
    pattern[j, cand] = True


def _next_tag(ops) -> int:
    tag = ops.tag
    ops.tag += 1
    return tag
