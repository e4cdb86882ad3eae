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
   most ``slow_evaluations_per_step`` candidates searched (:mod:`.detection`) and evaluated
   (:mod:`.candidates`); a confirmed one waits for the next step. The search threshold is
   recalibrated on the null images every ``detection.CALIBRATION_PERIOD_S``, on a frame one
   after an evaluation phase (no evaluation, birth or hand-over shares it);
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

import logging
import math
import time

import numpy as np

from online_cnmfe.model.footprint_shape import sharpness_box, sharpness_of
from online_cnmfe.model.slow_path import candidates as cand_mod
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path import merging, reseed, suffstats
from online_cnmfe.model.slow_path import ring_refresh as rr
from online_cnmfe.model.slow_path.handover import StepChanges, birth_stats, finish
from online_cnmfe.model.slow_path.state import (
    SlowPathState,
    SlowWork,
    geometry,
    init_slow_path,
    observe_frame,
    ring_period,
    work_limits,
)
from online_cnmfe.model.slow_path.update import ModelUpdate, SlowPathInputs
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
    work.hals = work.ring_pixels = work.ring_samples = work.candidates = work.reseed_frames = 0
    work.merge_checks = work.births = work.merges = work.removals = 0
    ch = StepChanges()
    work.ms_detect = work.ms_merge = 0.0
    o = params.online
    for res in slow.pending_births:  # found on an earlier step: slot, stats, hand-over now
        ch.births.append((birth_stats(fs, model_view, res, params), res))
    slow.pending_births = []
    evaluate_now = t % o.slow_detect_period_frames == _detect_phase(params)
    if params.detection.enabled and evaluate_now and not ch.births:
        _detect(slow, model_view, params, ch, t)
    elif params.detection.enabled and not ch.births and _calibration_due(slow, params, t):
        det_mod.calibrate(slow.det, geometry(params), params, t)
    elif params.detection.enabled and not ch.births:  # a frame without an evaluation or a
        _reseed_images(slow, model_view, params, t)  # birth reads the re-seeding's frames
    t1 = time.perf_counter()
    work.ms_detect = 1e3 * (t1 - t_start)
    if not ch.births:  # a birth is handed over alone: its frame solves no W rows (the rows of
        _ring_slice(slow, model_view, params, ch, t)  # this slice wait for the next period)
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
            ch.remove(k, "footprint vanished (its HALS refresh left no pixel)")
    t3 = time.perf_counter()
    work.ms_footprints = 1e3 * (t3 - t2)
    E = o.slow_emit_period_frames
    if not heavy and t % E == (1 % E):  # merge checks on one frame per hand-over period, never
        _merge_and_remove(slow, model_view, params, ch, t)  # with an evaluation or a birth
    t4 = time.perf_counter()
    work.ms_merge = 1e3 * (t4 - t3)
    out = finish(slow, model_view, params, ch, t)
    work.ms_finish = 1e3 * (time.perf_counter() - t4)
    return out


def _ring_slice(slow, view, params, ch: StepChanges, t: int) -> None:
    ring = slow.ring
    H, W = (int(v) for v in slow.dims)
    if ring.pending_t >= 0:
        b0 = np.asarray(view.b0, np.float32).reshape(H, W)
        if rr.ingest_pending(ring, b0, params.background.outlier_clip_sigma):
            slow.work.ring_samples += 1
    n_bg = ring.W_out.shape[0]
    n_px = rr.pixels_at(t, n_bg, ring_period(n_bg, params))
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


def _merge_and_remove(slow, view, params, ch: StepChanges, t: int) -> None:
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
        # the older neuron (the lower model index: neurons are appended at birth and keep
        # their order) keeps its id and history; the younger is absorbed
        keep, drop = (i, j) if i < j else (j, i)
        if not merging.merge_into(fs, keep, drop, max_region):
            continue
        ch.replaced.discard(keep)
        ch.replaced.discard(drop)
        ch.merges.append((keep, drop, suffstats.footprint_column(fs, keep)))
        slow.work.merges += 1
    _remove_out_of_focus(slow, params, ch, t)
    limit = int(params.data.frame_rate_hz * params.online.slow_remove_inactive_s)
    for k in merging.inactive(fs, t, limit)[:1]:
        if int(k) not in ch.touched():
            ch.remove(
                int(k),
                f"inactive: trace below its noise for {params.online.slow_remove_inactive_s:g} s",
            )
            ch.replaced.discard(int(k))


FOCUS_CHECKS_PER_STEP = 2  # footprints checked per merge frame (size ~0.1 ms, sharpness
# 0.3-0.7 ms at d = 12-24 px; on the slow path, off the frame's critical path)


def _remove_out_of_focus(slow, params, ch: StepChanges, t: int) -> None:
    """Out-of-focus checks (:data:`FOCUS_CHECKS_PER_STEP` per call, round robin over the
    neurons born online): one blurred below the initialisation's sharpness limit once its
    footprint has been refreshed (one refresh period after its birth), or grown beyond its
    size limit once its youth's support growth is over, is out-of-focus neuropil, not a cell
    (a birth passes the candidate's tests with its first events' footprint; the refreshes then
    follow the broad structure it came from). Initial neurons passed the same limits at the
    acceptance."""
    fs = slow.stats
    K = fs.n_components
    if K == 0 or (not math.isfinite(slow.size_limit) and slow.sharpness_limit <= 0):
        return
    d = params.data.neuron_diameter_px
    period = params.online.footprint_update_period_frames
    checked = 0
    for _ in range(K):
        k = slow.size_cursor % K
        slow.size_cursor = (k + 1) % K
        born = int(fs.birth[fs.slot_of[k]])
        if born <= slow.t_init or t - born < period or k in ch.touched():
            continue
        pix, val = suffstats.footprint_column(fs, k)
        reason = _out_of_focus(pix, val, slow, d, grown=not _young(fs, k, t, params))
        if reason:
            ch.remove(k, reason)
            ch.replaced.discard(k)
            return
        checked += 1
        if checked >= FOCUS_CHECKS_PER_STEP:
            return


def _out_of_focus(pix, val, slow, d: float, grown: bool = True) -> str:
    """Why a footprint is out of focus ('' when it is not): less sharp than the sharpness
    limit of the initialisation or, once ``grown``, larger than its size limit."""
    if grown:
        ratio = merging.size_ratio(pix, val, slow.dims, d)
        if ratio > slow.size_limit:
            return (
                f"out of focus: grew to {ratio:.1f} x the expected neuron's size "
                f"(limit {slow.size_limit:.1f}, as at the initialisation)"
            )
    if slow.sharpness_limit > 0 and pix.size:
        dims = (int(slow.dims[0]), int(slow.dims[1]))
        sharp = sharpness_of(sharpness_box(pix, val, dims, d), d)
        if sharp < slow.sharpness_limit:
            return (
                f"out of focus: sharpness {sharp:.2f} at the cell's scale (limit "
                f"{slow.sharpness_limit:.2f}, as at the initialisation)"
            )
    return ""


def _detect_phase(params: CNMFEParams) -> int:
    """Frame phase (t mod ``slow_detect_period_frames``) of the evaluation frames: half-way
    between two hand-overs, so an evaluation and a batched update never share a frame."""
    return params.online.slow_detect_period_frames // 2


def _calibration_due(slow, params: CNMFEParams, t: int) -> bool:
    """Recalibrate the search threshold once per calibration period, on the frame after an
    evaluation phase (not a hand-over frame)."""
    P = params.online.slow_detect_period_frames
    phase = (_detect_phase(params) + 1) % P
    if P > 1 and (phase == 0 and params.online.slow_emit_period_frames > 1):
        phase = (phase + 1) % P
    due = t - slow.det.calibrated_at >= geometry(params).calibration_period
    return due and t % P == phase


def _detect(slow, view, params, ch: StepChanges, t: int) -> None:
    """Search and evaluate at most ``slow_evaluations_per_step`` candidates, then up to
    ``reseed_evaluations_per_step`` of the re-seeding pass's queue (:mod:`.reseed`) -- counts,
    not a time: the same movie gives the same births on any machine."""
    fs, det = slow.stats, slow.det
    geo = geometry(params)
    if fs.n_components + len(ch.births) + len(slow.pending_births) >= params.detection.max_neurons:
        return
    quota = params.online.slow_evaluations_per_step
    for row, col in det_mod.search(det, t, params, geo)[:quota]:
        _evaluate(slow, view, params, int(row), int(col), t)
    rs = slow.reseed
    if rs.head < rs.queue.shape[0]:
        n = params.online.reseed_evaluations_per_step
        for row, col in reseed.next_candidates(rs, det, t, n):
            rs.n_evaluated += 1
            reason = _evaluate(slow, view, params, int(row), int(col), t, reseeded=True)
            rs.n_accepted += reason == 0
            logger.debug(
                "re-seeding candidate (%d, %d) at frame %d: %s",
                row,
                col,
                t,
                cand_mod.REASONS[reason],
            )


def _evaluate(slow, view, params, row: int, col: int, t: int, reseeded: bool = False) -> int:
    """Test one candidate (:mod:`.candidates`), record it in the pool, and queue its birth
    once the pool confirms it; returns the test's reason (0: accepted, see ``REASONS``).

    A rejected spot is blocked for 2 s; one the re-seeding pass queued (``reseeded``) is
    instead kept out of the pass's queues for a whole buffer (:func:`.reseed.reject`; the
    search's own candidates there are not blocked: late_born lost recall when they were), and its
    footprint must pass the initialisation's sharpness test (the pass reaches deeper into
    weak peaks than the search: on the held-out heavy_neuropil the passes without it cost
    0.005-0.017 F1 in blurred births, with it F1 rose 0.932 -> 0.939)."""
    fs, det = slow.stats, slow.det
    geo = geometry(params)
    slow.work.candidates += 1
    sharp = slow.sharpness_limit if reseeded else 0.0
    reason, res = cand_mod.evaluate(fs, view, row, col, params, geo, slow.size_scale, sharp)
    det.reason_counts[reason] += 1
    if res is None:
        if reseeded:  # the search's own candidates are not blocked by the pass's verdicts
            reseed.reject(slow.reseed, det, row, col, geo, t + view.residual.shape[0])
        else:
            det_mod.block(
                det, row, col, geo.diameter / 2, t + math.ceil(params.data.frame_rate_hz * 2)
            )
        return reason
    det_mod.block(det, row, col, geo.diameter / 2, t + geo.separation)
    entry, _ = cand_mod.pool_record(det, res, t, geo)
    if cand_mod.confirmed(det, entry, params):
        res = cand_mod.best_result(det, entry, res, view, geo)
        slow.pending_births.append(res)
        cand_mod.forget_entry(det, entry)
        det_mod.after_birth(det, res["centroid"], t, geo, view.residual.shape[0])
        slow.work.births += 1
    return reason


def _reseed_images(slow, view, params, t: int) -> None:
    """Start a re-seeding pass when one is due, or read the next buffer frames of the running
    one (``online.reseed_frames_per_step``) and queue its candidates when it has read all."""
    rs = slow.reseed
    if reseed.due(rs, t, params):
        reseed.start(rs, slow.det, view.residual_frame, t)
    dims = (int(slow.dims[0]), int(slow.dims[1]))
    geo = geometry(params)
    n = params.online.reseed_frames_per_step
    if rs.phase == reseed.IMAGES:
        slow.work.reseed_frames = reseed.read_frames(rs, slow.det, view, dims, geo, n)
        if rs.cursor >= rs.slots.size:
            rs.phase = reseed.NOISE
    elif rs.phase == reseed.NOISE:  # as many values per step as the images read
        row0, n_read = rs.noise_row, rs.n_read
        done = reseed.estimate_noise(rs, n * slow.det.z.size)
        slow.work.reseed_frames = -(-(rs.noise_row - row0) * n_read // slow.det.z.shape[0])
        if done:
            reseed.finish_images(rs, slow.det, geo, params, t)
