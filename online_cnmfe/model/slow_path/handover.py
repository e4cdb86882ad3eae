"""What one slow step decided, and its hand-over to the model as one :class:`ModelUpdate`.

:class:`StepChanges` collects a step's decisions (refreshed footprints, merges, removals,
births, W rows); :func:`birth_stats` seeds a promoted candidate's statistics;
:func:`finish` batches pending refreshes (handed over every ``slow_emit_period_frames``) and
builds the update.
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model._kernels import stats as kst
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.model.slow_path.update import ModelUpdate, _csc
from online_cnmfe.params import CNMFEParams


class StepChanges:
    """What one slow step decided (model indices before the update)."""

    def __init__(self) -> None:
        self.replaced: set[int] = set()  # refreshed footprints (sent from the mirror)
        self.merges: list[tuple[int, int, tuple[np.ndarray, np.ndarray]]] = []
        self.removed: set[int] = set()
        self.removal_reason: dict[int, str] = {}  # why (in the removal's ModelEvent detail)
        self.births: list[tuple[int, dict]] = []  # (slot, evaluation result)
        self.w: tuple[int, int, np.ndarray] | None = None

    def gone(self) -> set[int]:
        return self.removed | {j for _, j, _ in self.merges}

    def remove(self, k: int, reason: str) -> None:
        """Remove neuron ``k`` (model index) and say why."""
        self.removed.add(int(k))
        self.removal_reason[int(k)] = reason

    def touched(self) -> set[int]:
        return self.gone() | {i for i, _, _ in self.merges}


def birth_stats(fs, view, res: dict, params: CNMFEParams) -> int:
    """Allocate a slot for a promoted candidate and seed its statistics from the buffer."""
    a = res["a"].copy()
    a[a < 0.1 * a.max()] = 0.0
    supp = res["pix"][a > 0]
    pix = suffstats.region_from_support(
        supp, tuple(fs.dims), params.online.footprint_growth_px, fs.sup_idx.shape[1]
    )
    vals = np.zeros(pix.size, np.float32)
    pos = np.searchsorted(pix, supp)
    ok = (pos < pix.size) & (pix[np.minimum(pos, pix.size - 1)] == supp)
    vals[pos[ok]] = a[a > 0][ok]
    L = view.residual.shape[0]
    rf = np.asarray(view.residual_frame)
    fr = np.asarray(res["frames"])  # the buffer of the evaluation (sorted), maybe frames ago
    pos = np.minimum(np.searchsorted(fr, rf), max(fr.size - 1, 0))
    hit = (rf >= 0) & (fr[pos] == rf) if fr.size else np.zeros(L, bool)
    cnew = np.zeros(L, np.float32)
    cnew[hit] = np.maximum(np.asarray(res["trace"], np.float32)[pos[hit]], 0)
    valid = rf >= 0
    n = max(int(valid.sum()), 1)
    nbrs = suffstats.neighbours(fs, None, box=_bbox(pix, int(fs.dims[1])))
    cy = np.zeros(pix.size, np.float32)
    kst.buffer_cy(
        cnew, view.residual, valid, pix.astype(np.int32),
        suffstats.ac_rows(fs, pix, nbrs, view.c_buffer), cy,
    )  # fmt: skip
    s = suffstats.alloc_slot(fs)
    suffstats.set_region(fs, s, pix, vals, cy)
    suffstats.record_birth_gaps(fs, s, view.c_buffer[:, valid])
    cross = (view.c_buffer[:, valid] @ cnew[valid]) / n if fs.n_components else np.zeros(0)
    fs.cc[fs.slot_of, s] = cross
    fs.cc[s, fs.slot_of] = cross
    fs.cc[s, s] = float(cnew[valid] @ cnew[valid]) / n
    fs.cbar[s] = float(cnew[valid].sum()) / n
    fs.noise[s] = res["noise"]
    fs.last_active[s] = fs.birth[s] = int(view.t)
    return s


def _bbox(pix: np.ndarray, W: int) -> np.ndarray:
    rows, cols = np.divmod(pix, W)
    return np.array([rows.min(), rows.max() + 1, cols.min(), cols.max() + 1], np.int32)


def _collect_pending(slow, params, ch: StepChanges, t: int) -> tuple[list[int], tuple | None]:
    """Add this step's footprint and W refreshes to the pending ones; return what to hand over
    now: (model indices, (w_start, w_stop) or None), or ([], None) to keep waiting.

    Refreshes are handed over on frames ``t % slow_emit_period_frames == 0`` (fewer, slightly
    larger updates: the model pays a fixed cost per update); births at once but alone (they
    append columns, so pending indices stay valid); merges and removals at once with every
    pending refresh (they renumber the neurons).
    """
    renumbers = bool(ch.merges or ch.removed)
    pend = set(slow.pending_replaced.tolist()) | set(ch.replaced)
    w_out = None
    if ch.w:
        s0, s1, _ = ch.w
        if slow.pending_w_stop > slow.pending_w_start and s0 != slow.pending_w_stop:
            w_out = (slow.pending_w_start, slow.pending_w_stop)  # the cursor wrapped: flush
            slow.pending_w_start, slow.pending_w_stop = s0, s1
        elif slow.pending_w_stop > slow.pending_w_start:
            slow.pending_w_stop = s1
        else:
            slow.pending_w_start, slow.pending_w_stop = s0, s1
    due = renumbers or (t % params.online.slow_emit_period_frames == 0 and not ch.births)
    if not (due or w_out):
        slow.pending_replaced = np.array(sorted(pend), np.int64)
        return [], None
    if due and w_out is None and slow.pending_w_stop > slow.pending_w_start:
        w_out = (slow.pending_w_start, slow.pending_w_stop)
        slow.pending_w_start = slow.pending_w_stop = 0
    slow.pending_replaced = np.zeros(0, np.int64)
    slow.last_emit = t
    return sorted(pend), w_out


def finish(slow, view, params, ch: StepChanges, t: int) -> ModelUpdate | None:
    fs = slow.stats
    K = fs.n_components
    n_pixels = int(slow.dims[0] * slow.dims[1])
    pend, w_range = _collect_pending(slow, params, ch, t)
    if not (pend or ch.merges or ch.removed or ch.births or w_range):
        return None
    gone = ch.gone()
    replaced = {k: suffstats.footprint_column(fs, k) for k in pend if k not in gone}
    for k in ch.removed:
        s = int(fs.slot_of[k])
        fs.used[s] = False
        fs.sup_n[s] = 0
        fs.bbox[s] = 0
    if gone or ch.births:
        keep = np.ones(K, bool)
        keep[list(gone)] = False
        new_slots = np.array([s for s, _ in ch.births], np.int32)
        fs.slot_of = np.ascontiguousarray(np.concatenate([fs.slot_of[keep], new_slots]))
    nK = max(fs.n_components, 1)
    fs.cursor %= nK
    slow.merge_cursor %= nK
    slow.work.removals = len(ch.removed)
    slow.work.total_births += len(ch.births)
    slow.work.total_merges += len(ch.merges)
    slow.work.total_removals += len(ch.removed)
    rep = sorted(replaced)
    g = np.asarray(view.g, np.float32)
    births = [res for _, res in ch.births]
    if births:
        g_med = np.median(g, axis=0) if g.shape[0] else np.full(g.shape[1:], 0.9, np.float32)
        frames = births[0]["frames"]
        traces = np.stack([b["trace"] for b in births]).astype(np.float32)
    else:
        g_med = np.zeros(g.shape[1:], np.float32)
        frames, traces = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    if w_range:
        w_start, w_stop = w_range
        w_rows = slow.ring.W_out[w_start:w_stop].copy()
    else:
        w_start, w_stop, w_rows = 0, 0, np.zeros((0, 0), np.float32)
    return ModelUpdate(
        frame_index=t,
        replaced=np.array(rep, np.int64),
        replaced_footprints=_csc([replaced[k] for k in rep], n_pixels),
        merged_kept=np.array([m[0] for m in ch.merges], np.int64),
        merged_absorbed=np.array([m[1] for m in ch.merges], np.int64),
        merged_footprints=_csc([m[2] for m in ch.merges], n_pixels),
        removed=np.array(sorted(ch.removed), np.int64),
        removed_reasons=tuple(ch.removal_reason.get(k, "") for k in sorted(ch.removed)),
        new_footprints=_csc(
            [suffstats.footprint_column_slot(fs, s) for s, _ in ch.births], n_pixels
        ),
        new_traces=traces,
        new_trace_frames=frames,
        new_g=np.tile(np.asarray(g_med, np.float32), (len(births),) + (1,) * g_med.ndim),
        new_noise=np.array([b["noise"] for b in births], np.float32),
        w_start=int(w_start),
        w_stop=int(w_stop),
        w_rows=w_rows,
    )
