"""The slow path: everything off the per-frame critical path, amortised in bounded slices.

Symbols: y frame, c traces, r residual ``(I - UWD)(y - A c - b0)``, A footprints, W ring
weights, CY / CC footprint statistics (:mod:`.suffstats`).

Per frame the model calls :func:`observe_frame` (O(nnz + n_pixels), no solve): CY, CC with
exponential forgetting ``lam = 1 - 1 / (frame_rate_hz * stats_forgetting_time_s)`` (on one
frame in ``slow_stats_stride_frames``, with ``lam ** stride``), activity bookkeeping, the
detection images (on the other frames: one in ``slow_detect_stride_frames``), and on one frame
in ``stride`` a background sample for the W refresh. Then :func:`slow_step` does a fixed,
count-bounded amount of work (never decided by the clock, so runs are reproducible) and may
return a :class:`ModelUpdate`:

1. births confirmed on the previous step are seeded and handed over, alone (no refresh rides
   along; appending columns keeps pending indices valid);
2. detection, on frames ``t % slow_detect_period_frames == period // 2`` without a birth: at
   most ``slow_evaluations_per_step`` candidates evaluated (:mod:`.detection`); a
   confirmed one waits for the next step;
3. ring-W refresh: ``ceil(n_bg / period)`` grid pixels re-solved, period =
   ``slow_ring_refresh_period_frames`` stretched to keep at most ``slow_ring_max_rows`` per step
   (:mod:`.ring_refresh`);
4. footprint refresh: ``K / footprint_update_period_frames`` neurons per frame, round robin, by
   exact one-neuron HALS on CY / CC with support growth (damped for established neurons). A
   frame with an evaluation, a birth or a batched hand-over defers its share; later frames pay
   it back one a frame;
5. merges, on frames ``t % slow_emit_period_frames == 1`` without an evaluation or a birth:
   ``slow_merge_checks_per_frame`` neurons checked (:mod:`.merging`; neurons born
   less than three refresh periods ago are not merged), and at most one inactive neuron removed.

Footprint and W refreshes are handed over on frames ``t % slow_emit_period_frames == 0``
(phase 0; evaluations fall on phase 2), merges and removals at once. So no frame stacks an
evaluation, a birth and a batched hand-over. All kernels are compiled and loaded at
:func:`init_slow_path` (:mod:`.warmup`).

:func:`work_limits` states the bounds; ``SlowPathState.work`` records what the last step did.
The slow path never touches the model's arrays: it mirrors A in ``stats.a_sup`` and assumes
that the model applies every returned update before the next :func:`observe_frame`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from online_cnmfe.model._kernels import stats as kst
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path import merging, suffstats
from online_cnmfe.model.slow_path import ring_refresh as rr
from online_cnmfe.model.slow_path.update import ModelUpdate, SlowPathInputs, _csc
from online_cnmfe.params import CNMFEParams

__all__ = [
    "ModelUpdate",
    "SlowPathInputs",
    "SlowPathState",
    "SlowWork",
    "init_slow_path",
    "observe_frame",
    "slow_step",
    "work_limits",
]

logger = logging.getLogger(__name__)

_ACTIVE_SIGMA = 4.0  # a trace above this many noise sigmas counts as activity (removal clock)


@dataclass(slots=True)
class SlowWork:
    """Work done by the last :func:`slow_step` (counts) and running totals of events."""

    hals: int = 0
    ring_pixels: int = 0
    ring_samples: int = 0
    candidates: int = 0
    merge_checks: int = 0
    births: int = 0
    merges: int = 0
    removals: int = 0
    total_births: int = 0
    total_merges: int = 0
    total_removals: int = 0
    ms_ring: float = 0.0  # wall time of each stage in the last step (diagnostics only)
    ms_footprints: float = 0.0
    ms_merge: float = 0.0
    ms_detect: float = 0.0
    ms_finish: float = 0.0


@dataclass(slots=True)
class SlowPathState:
    """Everything the slow path keeps between frames (arrays, scalars, nested dataclasses)."""

    t: int
    dims: np.ndarray
    lam: float
    stats: suffstats.FootprintStats
    ring: rr.RingRefreshState
    det: det_mod.DetectionState
    merge_cursor: int
    work: SlowWork
    hals_debt: int = 0  # footprint refreshes deferred from frames that evaluated a candidate
    pending_replaced: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending_w_start: int = 0  # W rows solved (in ring.W_out) but not yet handed over
    pending_w_stop: int = 0
    # confirmed candidates (evaluate() results) handed over on the next step, not on the
    # frame that evaluated them: an evaluation and a birth never share a frame
    pending_births: list = field(default_factory=list)
    last_emit: int = -(2**40)
    # frame of the initialisation: initial footprints may grow (support growth) for three
    # refresh periods after it, as a newborn's do after its birth (see ``_growth``)
    t_init: int = -(2**40)


@functools.lru_cache(maxsize=8)
def _geometry(params: CNMFEParams) -> det_mod.Geometry:
    return det_mod.geometry(params)


def _ring_period(n_bg: int, params: CNMFEParams) -> int:
    o = params.online
    return rr.effective_period(n_bg, o.slow_ring_refresh_period_frames, o.slow_ring_max_rows)


def forgetting_factor(params: CNMFEParams) -> float:
    """``lam = 1 - 1 / (frame_rate_hz * stats_forgetting_time_s)`` (at least 1 frame)."""
    n = params.data.frame_rate_hz * params.online.stats_forgetting_time_s
    return float(1.0 - 1.0 / max(n, 1.0))


def work_limits(slow: SlowPathState, params: CNMFEParams, n_components: int) -> dict:
    """Upper bounds of the per-step work counts in ``slow.work``."""
    n_bg = slow.ring.W_out.shape[0]
    return {
        "hals": math.ceil(n_components / params.online.footprint_update_period_frames) + 1,
        "ring_pixels": rr.pixels_per_step(n_bg, _ring_period(n_bg, params)),
        "ring_samples": 1,
        "candidates": min(
            params.online.slow_evaluations_per_step, params.detection.max_candidates_per_frame
        ),
        "merge_checks": params.online.slow_merge_checks_per_frame,
        "removals": 2 + math.ceil(n_components / params.online.footprint_update_period_frames),
    }


def init_slow_path(
    init: InitResult, frames: np.ndarray | None, params: CNMFEParams, warm: bool = True
) -> SlowPathState:
    """Slow-path state from the initial model and (optionally) its frames (T, H, W).

    With frames, CY is computed on ``Y - B`` of the (last <= 500) frames, the detection noise is
    warmed up on their residuals and the ring-refresh samples are taken from them; without,
    CY starts at its HALS fixed point and detection warms up online.
    """
    if warm:  # load every kernel now, not on the frame of the first birth or merge
        from online_cnmfe.model.slow_path.warmup import warm_up

        warm_up()
    dims = (int(init.dims[0]), int(init.dims[1]))
    H, W = dims
    C = np.asarray(init.C, np.float32)
    growth = params.online.footprint_growth_px
    max_region = suffstats.max_region_pixels(params.data.neuron_diameter_px, growth)
    geo = _geometry(params)
    ssub = int(init.background_downsample)
    grid = (-(-H // ssub), -(-W // ssub))
    ring = rr.make_ring_refresh(
        init.ring_offsets, grid, ssub, params.online.slow_ring_samples,
        _ring_period(grid[0] * grid[1], params),
    )  # fmt: skip
    ring.W_prior[:] = np.asarray(init.W, np.float32)
    det = det_mod.make_detection_state(dims, params.detection.pool_size, geo.ds)
    T0 = C.shape[1]
    YB = None
    if frames is not None:
        frames = np.asarray(frames, np.float32).reshape(-1, H * W)
        first = max(0, frames.shape[0] - 500)
        YB, X = _background_subtracted(init, frames[first:], C[:, first:], dims, ssub)
        Cw = C[:, first:]
        fs = suffstats.stats_from_footprints(
            init.A, Cw, YB, dims, growth, max_region, init.trace_noise, T0 - 1, init.pixel_noise
        )
        resid = YB - (init.A @ Cw).T.astype(np.float32)
        for row in resid[-params.online.residual_buffer_frames :]:
            det_mod.observe_residual(det, np.ascontiguousarray(row.reshape(H, W)), geo)
        pick = np.unique(np.linspace(0, X.shape[0] - 1, ring.samples.shape[0]).astype(int))
        ring.samples[: pick.size] = X[pick]
        ring.sample_t[: pick.size] = first + pick
        ring.head = pick.size % ring.samples.shape[0]
    else:
        fs = suffstats.stats_from_footprints(
            init.A, C, None, dims, growth, max_region, init.trace_noise, T0 - 1, init.pixel_noise
        )
    d = params.data.neuron_diameter_px
    fs.max_radius = float(0.8 * d + growth)  # footprints stay cell-sized (no sprawl into
    fs.max_support = int(3.0 * math.pi * d * d / 4)  # background structure or neighbours)
    return SlowPathState(
        t=T0 - 1, dims=np.array(dims, np.int64), lam=forgetting_factor(params), stats=fs,
        ring=ring, det=det, merge_cursor=0, work=SlowWork(), t_init=T0 - 1,
    )  # fmt: skip


def _background_subtracted(init, frames, C, dims, ssub):
    """``Y - B`` (T, n_pixels) and the background samples X = D(Y - A C - b0) (T, hb, wb)."""
    from online_cnmfe.model._kernels import ring as kring

    H, W = dims
    AC = (init.A @ C).T.astype(np.float32)
    b0 = np.asarray(init.b0, np.float32)
    hb, wb = -(-H // ssub), -(-W // ssub)
    Wr = np.ascontiguousarray(init.W, np.float32)
    off = np.ascontiguousarray(init.ring_offsets, np.int32)
    YB = np.empty_like(frames)
    X = np.empty((frames.shape[0], hb, wb), np.float32)
    wx = np.empty((hb, wb), np.float32)
    up = np.empty((H, W), np.float32)
    for t in range(frames.shape[0]):
        x = np.ascontiguousarray((frames[t] - AC[t] - b0).reshape(H, W))
        kring.downsample_mean(x, ssub, X[t])
        kring.ring_apply(Wr, off, X[t], wx)
        kring.upsample_nearest(wx, ssub, up)
        YB[t] = frames[t] - b0 - up.ravel()
    return YB, X


def observe_frame(
    slow: SlowPathState, t: int, y: np.ndarray, c: np.ndarray, residual: np.ndarray, params
) -> None:
    """Per-frame accumulation (no solve, no allocation beyond small temporaries).

    Parameters
    ----------
    slow : SlowPathState
    t : int
        Frame index.
    y : ndarray of shape (n_pixels,) or (H, W)
        The frame (float32).
    c : ndarray of shape (K,)
        Traces of the frame (K must match the model after every applied update).
    residual : ndarray of shape (n_pixels,) or (H, W)
        ``(I - UWD)(y - A c - b0)``.
    params : CNMFEParams
    """
    fs = slow.stats
    H, W = (int(v) for v in slow.dims)
    c = np.ascontiguousarray(c, np.float32)
    if c.shape != (fs.n_components,):
        raise ValueError(
            f"observe_frame got {c.shape[0] if c.ndim else 0} traces but the slow path tracks "
            f"{fs.n_components} neurons; apply every ModelUpdate returned by slow_step before "
            "the next frame"
        )
    r = np.ascontiguousarray(residual, np.float32).reshape(H * W)
    stride = params.online.slow_stats_stride_frames
    if t % stride == 0:  # calcium decays over many frames: every 2nd frame loses little
        lam = slow.lam**stride
        kst.suffstat_update(
            c, r, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cy, fs.cc, fs.cbar, lam,
            fs.scratch,
        )  # fmt: skip
        fs.n_eff = min(fs.n_eff + 1.0, (1.0 + lam) / (1.0 - lam))
    active = c > _ACTIVE_SIGMA * fs.noise[fs.slot_of]
    fs.last_active[fs.slot_of[active]] = t
    if rr.is_sample_frame(slow.ring, t):
        kst.scatter_ac(c, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.scratch)
        ymac = np.asarray(y, np.float32).reshape(H * W) - fs.scratch
        kst.clear_regions(fs.slot_of, fs.sup_idx, fs.sup_n, fs.scratch)
        rr.observe_sample(slow.ring, t, ymac.reshape(H, W), r.reshape(H, W))
    dstride = params.online.slow_detect_stride_frames
    if params.detection.enabled and t % dstride == (1 if dstride > 1 else 0):
        det_mod.observe_residual(slow.det, r.reshape(H, W), _geometry(params))
    slow.t = t


class _Changes:
    """What one slow step decided (model indices before the update)."""

    def __init__(self) -> None:
        self.replaced: set[int] = set()  # refreshed footprints (sent from the mirror)
        self.merges: list[tuple[int, int, tuple[np.ndarray, np.ndarray]]] = []
        self.removed: set[int] = set()
        self.births: list[tuple[int, dict]] = []  # (slot, evaluation result)
        self.w: tuple[int, int, np.ndarray] | None = None

    def gone(self) -> set[int]:
        return self.removed | {j for _, j, _ in self.merges}

    def touched(self) -> set[int]:
        return self.gone() | {i for i, _, _ in self.merges}


def slow_step(
    slow: SlowPathState, model_view: SlowPathInputs, params: CNMFEParams
) -> ModelUpdate | None:
    """One bounded slice of slow-path work; returns the changes for the model or None.

    Parameters
    ----------
    slow : SlowPathState
    model_view : SlowPathInputs
    params : CNMFEParams

    Notes
    -----
    The work of a step is set by counts, never by the clock, so results are reproducible and
    the per-frame cost is bounded (see :func:`work_limits` and the module docstring).

    Returns
    -------
    ModelUpdate or None
    """
    t_start = time.perf_counter()
    fs = slow.stats
    K = fs.n_components
    if model_view.A.shape[1] != K:
        raise ValueError(
            f"the model has {model_view.A.shape[1]} neurons but the slow path tracks {K}; "
            "apply every ModelUpdate returned by slow_step before the next frame"
        )
    t = int(model_view.t)
    work = slow.work
    work.hals = work.ring_pixels = work.ring_samples = work.candidates = 0
    work.merge_checks = work.births = work.merges = work.removals = 0
    ch = _Changes()
    work.ms_detect = work.ms_merge = 0.0
    o = params.online
    for res in slow.pending_births:  # found on an earlier step: slot, stats, hand-over now
        ch.births.append((_birth_stats(fs, model_view, res, params), res))
    slow.pending_births = []
    evaluate_now = t % o.slow_detect_period_frames == _detect_phase(params)
    if params.detection.enabled and evaluate_now and not ch.births:
        _detect(slow, model_view, params, ch, t)
    t1 = time.perf_counter()
    work.ms_detect = 1e3 * (t1 - t_start)
    _ring_slice(slow, model_view, params, ch, t)
    t2 = time.perf_counter()
    work.ms_ring = 1e3 * (t2 - t1)
    buffer = (model_view.residual, model_view.c_buffer, model_view.residual_frame >= 0)
    P = o.footprint_update_period_frames
    n_fp = min(K, (t + 1) * K // P - t * K // P)  # exactly K refreshes per period
    heavy = bool(work.candidates or ch.births)
    handover = o.slow_emit_period_frames > 1 and t % o.slow_emit_period_frames == 0
    if heavy or handover:  # a frame that evaluates, adds a neuron or hands the batch over
        # refreshes no footprint ...
        slow.hals_debt = min(slow.hals_debt + n_fp, K)
        n_fp = 0
    elif slow.hals_debt > 0:  # ... the others pay the deferred ones back, one per frame
        slow.hals_debt -= 1
        n_fp = min(K, n_fp + 1)
    for _ in range(n_fp):
        k = fs.cursor % K
        fs.cursor = (k + 1) % K
        work.hals += 1
        young = t - int(fs.birth[fs.slot_of[k]]) < 3 * P
        refused = fs.n_refused
        grows = t - max(int(fs.birth[fs.slot_of[k]]), slow.t_init) < 3 * P
        if suffstats.refresh_footprint(fs, k, _growth(params, grows), buffer, young):
            if fs.n_refused == refused:  # a refused refresh leaves A as it is: nothing to send
                ch.replaced.add(k)
        else:
            ch.removed.add(k)
    t3 = time.perf_counter()
    work.ms_footprints = 1e3 * (t3 - t2)
    E = o.slow_emit_period_frames
    if not heavy and t % E == (1 % E):  # merge checks on one frame per hand-over period, never
        _merge_and_remove(slow, model_view, params, ch, t)  # with an evaluation or a birth
    t4 = time.perf_counter()
    work.ms_merge = 1e3 * (t4 - t3)
    out = _finish(slow, model_view, params, ch, t)
    work.ms_finish = 1e3 * (time.perf_counter() - t4)
    return out


def _ring_slice(slow, view, params, ch: _Changes, t: int) -> None:
    ring = slow.ring
    H, W = (int(v) for v in slow.dims)
    if ring.pending_t >= 0:
        b0 = np.asarray(view.b0, np.float32).reshape(H, W)
        if rr.ingest_pending(ring, b0, params.background.outlier_clip_sigma):
            slow.work.ring_samples += 1
    n_bg = ring.W_out.shape[0]
    n_px = rr.pixels_at(t, n_bg, _ring_period(n_bg, params))
    W0 = np.ascontiguousarray(view.W, np.float32)
    out = rr.solve_slice(ring, W0, t, n_px, slow.lam, params.online.slow_ring_prior_samples)
    if out is not None:
        ch.w = out
        slow.work.ring_pixels += out[1] - out[0]


def _growth(params: CNMFEParams, young: bool) -> int:
    """Support growth of a footprint refresh: ``footprint_growth_px`` while the neuron is young
    (born, or initialised, less than three refresh periods ago), 0 afterwards.

    Growth re-seeds the margin from the residual buffer at every refresh and keeps what passes a
    z-test; over thousands of frames that ratchets an established footprint outwards (on the
    256² simulation 25 of 270 truth-initialised footprints spread to ``max_support`` and lost
    their match by frame 12,000: cosine with the true footprint 1.0 -> 0.3-0.6). A young
    footprint (cut from a short birth buffer) still extends to its cell's size; afterwards it
    only refines its values on its support.
    """
    return params.online.footprint_growth_px if young else 0


def _young(fs, k: int, t: int, params: CNMFEParams) -> bool:
    """Born online less than three footprint-refresh periods ago."""
    return t - int(fs.birth[fs.slot_of[k]]) < 3 * params.online.footprint_update_period_frames


def _merge_and_remove(slow, view, params, ch: _Changes, t: int) -> None:
    fs = slow.stats
    K = fs.n_components
    max_region = fs.sup_idx.shape[1]
    for _ in range(min(K, params.online.slow_merge_checks_per_frame)):
        i = slow.merge_cursor % K
        slow.merge_cursor = (i + 1) % K
        slow.work.merge_checks += 1
        if i in ch.touched() or _young(fs, i, t, params):
            continue
        j = merging.find_partner(fs, i, view, params)
        if j < 0 or j in ch.touched() or _young(fs, j, t, params):
            continue  # a young neuron's CC spans little more than its birth buffer, so its
            # "long-window" correlation with a neighbour is not long yet (false merges)
        si, sj = fs.slot_of[i], fs.slot_of[j]
        keep, drop = (i, j) if fs.cc[si, si] >= fs.cc[sj, sj] else (j, i)
        if not merging.merge_into(fs, keep, drop, max_region):
            continue
        ch.replaced.discard(keep)
        ch.replaced.discard(drop)
        ch.merges.append((keep, drop, suffstats.footprint_column(fs, keep)))
        slow.work.merges += 1
    limit = int(params.data.frame_rate_hz * params.online.slow_remove_inactive_s)
    for k in merging.inactive(fs, t, limit)[:1]:
        if int(k) not in ch.touched():
            ch.removed.add(int(k))
            ch.replaced.discard(int(k))


def _detect_phase(params: CNMFEParams) -> int:
    """Frame phase (t mod ``slow_detect_period_frames``) of the evaluation frames: half-way
    between two hand-overs, so an evaluation and a batched update never share a frame."""
    return params.online.slow_detect_period_frames // 2


def _detect(slow, view, params, ch: _Changes, t: int) -> None:
    """Search and evaluate at most ``slow_evaluations_per_step`` candidates (a count, not a
    time: the same movie gives the same births on any machine)."""
    fs, det = slow.stats, slow.det
    geo = _geometry(params)
    if fs.n_components + len(ch.births) + len(slow.pending_births) >= params.detection.max_neurons:
        return
    fr = params.data.frame_rate_hz
    L = view.residual.shape[0]
    quota = params.online.slow_evaluations_per_step
    for row, col in det_mod.search(det, t, params, geo)[:quota]:
        slow.work.candidates += 1
        reason, res = det_mod.evaluate(fs, view, int(row), int(col), params, geo)
        det.reason_counts[reason] += 1
        if res is None:
            det_mod.block(det, row, col, geo.diameter / 2, t + math.ceil(fr * 2.0))
            continue
        det_mod.block(det, row, col, geo.diameter / 2, t + geo.separation)
        entry, n_events = det_mod.pool_record(det, res, t, geo)
        if n_events >= params.detection.confirm_events:
            slow.pending_births.append(res)
            det_mod.forget_entry(det, entry)
            det_mod.after_birth(det, res, t, geo, L)
            slow.work.births += 1


def _birth_stats(fs, view, res: dict, params: CNMFEParams) -> int:
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


def _collect_pending(slow, params, ch: _Changes, t: int) -> tuple[list[int], tuple | None]:
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
    due = renumbers or t % params.online.slow_emit_period_frames == 0
    if not (due or w_out):
        slow.pending_replaced = np.array(sorted(pend), np.int64)
        return [], None
    if due and w_out is None and slow.pending_w_stop > slow.pending_w_start:
        w_out = (slow.pending_w_start, slow.pending_w_stop)
        slow.pending_w_start = slow.pending_w_stop = 0
    slow.pending_replaced = np.zeros(0, np.int64)
    slow.last_emit = t
    return sorted(pend), w_out


def _finish(slow, view, params, ch: _Changes, t: int) -> ModelUpdate | None:
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
