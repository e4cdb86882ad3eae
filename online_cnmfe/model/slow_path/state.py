"""The slow path's state and its per-frame accumulation (:func:`observe_frame`).

:class:`SlowPathState` holds everything the slow path keeps between frames;
:func:`init_slow_path` builds it from the initial model, :func:`observe_frame` accumulates one
frame (statistics with forgetting, activity, detection images, background samples) without
solving anything. What is done with it, and when, is :mod:`.schedule`'s job.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from online_cnmfe.model._kernels import stats as kst
from online_cnmfe.model.footprint_shape import sharpness, sharpness_limit, size_ratios
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.slow_path import candidates as cand_mod
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path import reseed as reseed_mod
from online_cnmfe.model.slow_path import ring_refresh as rr
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.params import CNMFEParams

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
    reseed_frames: int = 0  # buffer frames read by the re-seeding pass (or its noise rows'
    # equivalent in values)
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
    reseed: reseed_mod.ReseedState
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
    # size ratio above which a neuron born online is out-of-focus neuropil once grown (the
    # initialisation's acceptance limit: init.max_size_ratio x the initial components' 25th
    # percentile when above 1); size_cursor walks the neurons, one check per merge frame
    size_limit: float = math.inf
    size_cursor: int = 0
    # the initial components' 25th percentile size ratio when above 1 (cells larger than
    # data.neuron_diameter_px says, e.g. blurred by a preprocessing filter): the candidates'
    # size test (detection.max_size_ratio) is scaled by it, as the acceptance limit above is
    size_scale: float = 1.0
    # sharpness (footprint_shape.sharpness_of at data.neuron_diameter_px) under which such a
    # grown neuron is a blurred, out-of-focus structure: init.min_sharpness_ratio x the median
    # of the strongest initial components (0: no test)
    sharpness_limit: float = 0.0


@functools.lru_cache(maxsize=8)
def geometry(params: CNMFEParams) -> det_mod.Geometry:
    return det_mod.geometry(params)


def ring_period(n_bg: int, params: CNMFEParams) -> int:
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
        "ring_pixels": rr.pixels_per_step(n_bg, ring_period(n_bg, params)),
        "ring_samples": 1,
        "candidates": min(
            params.online.slow_evaluations_per_step, params.detection.max_candidates_per_frame
        )
        + (params.online.reseed_evaluations_per_step if params.detection.reseed_period_s else 0),
        "reseed_frames": params.online.reseed_frames_per_step,
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
    geo = geometry(params)
    ssub = int(init.background_downsample)
    grid = (-(-H // ssub), -(-W // ssub))
    ring = rr.make_ring_refresh(
        init.ring_offsets, grid, ssub, params.online.slow_ring_samples,
        ring_period(grid[0] * grid[1], params),
    )  # fmt: skip
    ring.W_prior[:] = np.asarray(init.W, np.float32)
    det = det_mod.make_detection_state(
        dims, params.detection.pool_size, geo.ds, len(cand_mod.REASONS)
    )
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
        warm = resid[-params.online.residual_buffer_frames :]
        for i, row in enumerate(warm):
            row = np.ascontiguousarray(row.reshape(H, W))
            if geo.average > 0:
                det_mod.accumulate_residual(det, row, geo)
            det_mod.observe_residual(det, row, geo)
            if i + 1 >= det_mod.MIN_FRAMES and (warm.shape[0] - 1 - i) % 20 == 0:
                det_mod.calibrate(det, geo, params, T0 - 1)  # a few snapshots to start with
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
    typical = _typical_size(init, dims, params)
    rs = reseed_mod.make_reseed_state(det)
    rs.started_at = T0 - 1  # the initialisation seeded its frames: the first pass a period on
    return SlowPathState(
        t=T0 - 1, dims=np.array(dims, np.int64), lam=forgetting_factor(params), stats=fs,
        ring=ring, det=det, reseed=rs, merge_cursor=0, work=SlowWork(), t_init=T0 - 1,
        size_limit=params.init.max_size_ratio * typical, size_scale=typical,
        sharpness_limit=_sharpness_limit(init, dims, params),
    )  # fmt: skip


def _typical_size(init, dims, params: CNMFEParams) -> float:
    """max(1, the initial components' 25th percentile size ratio) (1 without components)."""
    if init.A.shape[1] == 0:
        return 1.0
    ratios = size_ratios(init.A, dims, params.data.neuron_diameter_px)
    ratios = ratios[np.isfinite(ratios)]
    return max(1.0, float(np.percentile(ratios, 25))) if ratios.size else 1.0


def _sharpness_limit(init, dims, params: CNMFEParams) -> float:
    """The initial components' sharpness limit (see ``SlowPathState.sharpness_limit``), the
    strongest ranked by peak over trace noise."""
    if init.A.shape[1] == 0 or params.init.min_sharpness_ratio <= 0:
        return 0.0
    sharp = sharpness(init.A, dims, params.data.neuron_diameter_px)
    C = np.asarray(init.C, np.float64)
    noise = np.maximum(np.asarray(init.trace_noise, np.float64), 1e-12)
    strength = (C.max(axis=1) if C.shape[1] else np.zeros(C.shape[0])) / noise
    return sharpness_limit(sharp, strength, params.init.min_sharpness_ratio)


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
    if params.detection.enabled:
        geo = geometry(params)
        if geo.average > 0:  # every frame enters the search's time average
            det_mod.accumulate_residual(slow.det, r.reshape(H, W), geo)
        if t % dstride == (1 if dstride > 1 else 0):
            det_mod.observe_residual(slow.det, r.reshape(H, W), geo)
    slow.t = t
