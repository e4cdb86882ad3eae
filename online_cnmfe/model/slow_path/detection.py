"""Online search for new neurons in the residual (slow path): detection images and candidates.

Symbols: r residual ``(I - UWD)(y - A c - b0)`` of each frame, z its band-pass (box means,
see ``_kernels/detection.py``) on a grid block-averaged by ``ds = max(1, diameter // 6)`` (a
neuron stays >= 6 px across on it), sigma its noise, d neuron diameter (px).

Per observed frame (:func:`observe_residual`, O(n_pixels)): the statistic of the
initialisation's seeding, computed online (on z averaged in time by the matched filter when
the initialisation chose it, ``detection.matched_filter``; otherwise on the residual averaged
over the transient's rise, ``detection.search_average_s``, which :func:`accumulate_residual`
keeps from every frame, also those the images skip): running moments of z thresholded
at 2 sigma (local correlation), its noise from the negative half, a decaying max (PNR;
CaImAn keeps a cumulative max that never forgets), and the same on ``-z``, the *null*: the
sign-flipped residual, from which the model's neurons are gone and whose errors are as
often negative as positive.

Every ``CALIBRATION_PERIOD_S`` (:func:`calibrate`), the threshold on ``v = corr x PNR`` is set
where the null's peaks give ``detection.false_seeds_per_fov`` false candidates per 256 x 256
pixels (:mod:`online_cnmfe.model.null_threshold`, the same rule as the initialisation's
seeding). Per evaluation step (:func:`search`): pixels with ``v`` above it, greedy
non-maximum suppression on v, at most ``max_candidates_per_frame``; each is then tested by
:mod:`.candidates`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from online_cnmfe.model._kernels import detection as kdet
from online_cnmfe.model.null_threshold import (
    MIN_NULL_PEAKS,
    peak_values,
    rate_for_frame,
    threshold_at_rate,
)
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

K_SIGMA = 2.0  # z below this many sigma is zeroed for the correlation (as the init's image)
CALIBRATION_PERIOD_S = 10.0  # the threshold is recalibrated this often
MIN_FRAMES = 20  # observed frames before the first search


@dataclass(slots=True)
class DetectionState:
    """Detection images, scratch, candidate pool and counters (arrays/scalars only).

    ``pos``/``neg`` are (5, h, w) stacks (m1, m2, mr, md, mx) of z and -z on the grid;
    ``threshold`` is the calibrated threshold on corr x PNR (inf until calibrated).
    """

    pos: np.ndarray
    neg: np.ndarray
    nvar: np.ndarray
    blocked_until: np.ndarray  # (h, w) int64
    z: np.ndarray  # band-passed residual, averaged in time by the matched filter
    z_frame: np.ndarray  # this frame's band-passed residual
    tmp: np.ndarray
    small: np.ndarray
    vimg: np.ndarray  # corr x PNR: the null's in calibrate(), scratch of search()
    cand_idx: np.ndarray
    cand_score: np.ndarray
    pool_rc: np.ndarray  # (P, 2) float64 centroid
    pool_events: np.ndarray  # (P, MAX_EVENTS) int64
    pool_n: np.ndarray  # (P,) int32
    pool_last: np.ndarray  # (P,) int64
    pool_used: np.ndarray  # (P,) bool
    pool_zmax: np.ndarray  # (P,) float64: strongest event seen
    null_peaks: np.ndarray  # (NULL_POOL,) float64 ring of null peak values (recent snapshots)
    reason_counts: np.ndarray  # (len(REASONS),) int64
    r_small: np.ndarray  # (h, w) residual on the detection grid
    ds: int = 1  # detection grid = image block-averaged by ds
    n_frames: int = 0
    threshold: float = math.inf
    calibrated_at: int = -(2**40)
    n_calibrations: int = 0
    null_head: int = 0
    null_filled: int = 0
    null_per_snapshot: float = 0.0  # running mean of the null peaks per snapshot (= per frame)
    # per pool entry, the evaluation result of its strongest event (its footprint is the best
    # estimate the pool has; the birth uses it)
    pool_best: list = field(default_factory=list)
    # (h, w) the grid residual averaged in time over every frame (``Geometry.average``;
    # allocated by :func:`accumulate_residual`), and how many frames entered it
    r_avg: np.ndarray | None = None
    n_avg: int = 0


MAX_EVENTS = 8
NULL_POOL = 512  # null peaks kept over recent calibrations (a small grid has few per snapshot)


def make_detection_state(
    dims: tuple[int, int], pool_size: int, ds: int = 1, n_reasons: int = 16
) -> DetectionState:
    """Detection images on the grid ``ceil(dims / ds)`` (ds = :attr:`Geometry.ds`)."""
    H, W = -(-dims[0] // ds), -(-dims[1] // ds)
    f = lambda: np.zeros((H, W), np.float32)  # noqa: E731
    return DetectionState(
        pos=np.zeros((5, H, W), np.float32), neg=np.zeros((5, H, W), np.float32), nvar=f(),
        blocked_until=np.zeros((H, W), np.int64), z=f(), z_frame=f(), tmp=f(), small=f(), vimg=f(),
        cand_idx=np.zeros(4096, np.int64), cand_score=np.zeros(4096, np.float32),
        pool_rc=np.zeros((pool_size, 2)), pool_events=np.full((pool_size, MAX_EVENTS), -1),
        pool_n=np.zeros(pool_size, np.int32), pool_last=np.zeros(pool_size, np.int64),
        pool_used=np.zeros(pool_size, bool), pool_zmax=np.zeros(pool_size),
        null_peaks=np.zeros(NULL_POOL),
        reason_counts=np.zeros(n_reasons, np.int64), r_small=f(), ds=ds,
        pool_best=[None] * pool_size,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Geometry:
    """Sizes derived once from the parameters (pixels / frames)."""

    diameter: float
    ds: int  # detection grid downsampling (neurons keep >= ~6 px across on it)
    half_small: int
    half_large: int
    box_half: int
    nms_radius: float
    window: int  # N frames of the event mean
    separation: int  # frames between distinct events
    alpha: float
    alpha_noise: float
    rho: float
    expiry: int
    calibration_period: int  # frames between two calibrations of the threshold
    smooth: float  # matched temporal filter coefficient a (0: none)
    # per-frame coefficient of the residual's average over the transient's rise
    # (detection.search_average_s; 0: none, e.g. when the matched filter is on)
    average: float = 0.0


def geometry(params: CNMFEParams) -> Geometry:
    d = params.data.neuron_diameter_px
    fr = params.data.frame_rate_hz
    L = params.online.residual_buffer_frames
    ds = max(1, int(d // 6))
    hs = max(1, round(d / 8 / ds))
    return Geometry(
        diameter=d,
        ds=ds,
        half_small=hs,
        half_large=max(hs + 1, round(d / ds)),
        box_half=math.ceil(0.9 * d),
        nms_radius=0.6 * d,
        window=max(1, math.ceil(fr * params.data.decay_time_s / 2)),
        separation=max(1, math.ceil(fr * params.detection.event_separation_s)),
        alpha=1.0 / L,
        alpha_noise=1.0 / (5 * L),
        rho=math.exp(-1.0 / (fr * params.detection.max_decay_s)),
        expiry=max(1, math.ceil(fr * params.detection.pool_expiry_s)),
        calibration_period=max(1, math.ceil(fr * CALIBRATION_PERIOD_S)),
        smooth=(
            math.exp(-1.0 / (fr * params.data.decay_time_s))
            if params.detection.matched_filter == "on"
            else 0.0
        ),
        average=(
            math.exp(-1.0 / (fr * params.detection.search_average_s))
            if params.detection.matched_filter != "on" and params.detection.search_average_s > 0
            else 0.0
        ),
    )


def accumulate_residual(det: DetectionState, resid: np.ndarray, geo: Geometry) -> None:
    """Per-frame: the residual (H, W) float32 into its time average on the detection grid.

    ``r_avg <- a r_avg + (1 - a) D r`` with ``a = Geometry.average`` (every frame, also those
    the detection images skip): white noise is reduced to ``sqrt((1 - a) / (1 + a))`` of a
    frame's (0.49 at 20 Hz and 0.1 s) while a transient decaying over ``data.decay_time_s``
    keeps most of its peak (0.85 at 0.4 s). :func:`observe_residual` then reads the average.
    """
    if det.r_avg is None:
        det.r_avg = np.zeros_like(det.z)
        det.n_avg = 0
    if det.ds > 1:
        kdet.block_mean(resid, det.ds, det.r_small)
        resid = det.r_small
    kdet.smooth_update(resid, geo.average if det.n_avg else 0.0, det.r_avg)
    det.n_avg += 1


def observe_residual(det: DetectionState, resid: np.ndarray, geo: Geometry) -> None:
    """Per-frame update of the detection images from the residual (H, W) float32.

    With ``Geometry.average`` on, ``resid`` is ignored: the images read the time average that
    :func:`accumulate_residual` kept (it must have been given this frame first).
    """
    if geo.average > 0 and det.r_avg is not None and det.n_avg > 0:
        resid = det.r_avg
    elif det.ds > 1:
        kdet.block_mean(resid, det.ds, det.r_small)
        resid = det.r_small
    if geo.smooth > 0:  # the matched temporal filter, as the seeding's (starts at frame 0)
        kdet.band_pass(resid, geo.half_small, geo.half_large, det.tmp, det.small, det.z_frame)
        kdet.smooth_update(det.z_frame, geo.smooth if det.n_frames else 0.0, det.z)
    else:  # single frames: no copy on the per-frame path
        kdet.band_pass(resid, geo.half_small, geo.half_large, det.tmp, det.small, det.z)
    alpha = max(geo.alpha, 1.0 / (det.n_frames + 1))
    alpha_n = max(geo.alpha_noise, 1.0 / (det.n_frames + 1))
    kdet.detection_images_update(
        det.z, det.pos, det.neg, det.nvar, alpha, alpha_n, geo.rho, K_SIGMA
    )
    det.n_frames += 1


def peak_window(geo: Geometry, ds: int) -> int:
    """Side (grid px) of the neighbourhood a candidate must be the maximum of (the NMS)."""
    return 2 * max(1, round(geo.nms_radius / ds)) + 1


def calibrate(det: DetectionState, geo: Geometry, params: CNMFEParams, t: int) -> bool:
    """Set ``det.threshold`` from the null images (the sign-flipped residual's corr x PNR).

    The peaks of the null image join a pool of the recent snapshots' peaks (a small frame has
    few per snapshot); the threshold is where ``detection.false_seeds_per_fov`` null peaks are
    expected per 256 x 256 pixels (scaled to the frame). Returns False (threshold unchanged)
    before :data:`MIN_FRAMES` frames or while the pool holds too few null peaks.
    """
    det.calibrated_at = t
    if det.n_frames < MIN_FRAMES:
        return False
    kdet.corr_pnr_image(det.neg, det.nvar, det.vimg)
    snap = peak_values(det.vimg, peak_window(geo, det.ds))
    n = min(snap.size, NULL_POOL)
    idx = (det.null_head + np.arange(n)) % NULL_POOL
    det.null_peaks[idx] = snap[:n]
    det.null_head = int((det.null_head + n) % NULL_POOL)
    det.null_filled = int(min(NULL_POOL, det.null_filled + n))
    k = min(det.n_calibrations, 7)  # running mean of the count over the last ~8 snapshots
    det.null_per_snapshot = (k * det.null_per_snapshot + snap.size) / (k + 1)
    det.n_calibrations += 1
    if det.null_filled < MIN_NULL_PEAKS:
        return False
    h, w = det.vimg.shape
    rate = rate_for_frame(params.detection.false_seeds_per_fov, h * w * det.ds * det.ds)
    null = det.null_peaks[: det.null_filled]
    cal = threshold_at_rate(null, max(det.null_per_snapshot, 1.0), rate)
    first = not math.isfinite(det.threshold)
    det.threshold = cal.threshold
    logger.log(  # INFO once (the calibration the session starts with), then DEBUG
        logging.INFO if first else logging.DEBUG,
        "online search: candidates where corr x PNR >= %.2f (%.3g false candidates expected "
        "in the frame; sign-flipped residual's peaks Gumbel mu %.2f, beta %.2f)",
        cal.threshold, cal.rate, cal.mu, cal.beta,
    )  # fmt: skip
    return True


def search(det: DetectionState, t: int, params: CNMFEParams, geo: Geometry) -> np.ndarray:
    """Candidate peaks (n, 2) int64 (row, col), best first, after NMS and the per-frame cap."""
    p = params.detection
    if det.n_frames < MIN_FRAMES or not math.isfinite(det.threshold):
        return np.zeros((0, 2), np.int64)
    n = kdet.detection_candidates(
        det.z,
        det.pos,
        det.nvar,
        det.blocked_until,
        t,
        det.threshold,
        det.vimg,
        det.cand_idx,
        det.cand_score,
    )  # fmt: skip  (vimg: scratch here; calibrate() fills it on frames without a search)
    if n == 0:
        return np.zeros((0, 2), np.int64)
    W = det.z.shape[1]
    rows, cols = np.divmod(det.cand_idx[:n], W)
    order = np.argsort(-det.cand_score[:n], kind="stable")
    keep = np.zeros(p.max_candidates_per_frame, np.int64)
    nk = kdet.nms_greedy(
        rows.astype(np.float64), cols.astype(np.float64), order, geo.nms_radius / det.ds,
        p.max_candidates_per_frame, keep,
    )  # fmt: skip
    out = np.stack([rows[keep[:nk]], cols[keep[:nk]]], axis=1) * det.ds + det.ds // 2
    H, Wf = det.ds * np.array(det.z.shape)
    return np.minimum(out, [H - 1, Wf - 1]) if det.ds > 1 else out


def block(det: DetectionState, row: float, col: float, radius: float, until: int) -> None:
    """Suppress candidates within ``radius`` of (row, col) (image px) until frame ``until``."""
    block_disk(det.blocked_until, det.ds, row, col, radius, until)


def block_disk(
    until_map: np.ndarray, ds: int, row: float, col: float, radius: float, until: int
) -> None:
    """Raise ``until_map`` (a grid of ``ds`` px) to ``until`` within ``radius`` of (row, col)
    (image px)."""
    H, W = until_map.shape
    row, col, radius = row / ds, col / ds, radius / ds
    r0, r1 = max(int(row - radius), 0), min(int(row + radius) + 1, H)
    c0, c1 = max(int(col - radius), 0), min(int(col + radius) + 1, W)
    rr, cc = np.ogrid[r0:r1, c0:c1]
    disk = (rr - row) ** 2 + (cc - col) ** 2 <= radius * radius
    sub = until_map[r0:r1, c0:c1]
    sub[disk] = np.maximum(sub[disk], until)


def after_birth(det: DetectionState, centroid, t: int, geo: Geometry, L: int) -> None:
    """Clear the decaying max around a promoted neuron and block the spot until every frame
    of the buffer was demixed with it (the frames before its hand-over still hold its
    transient in the residual; the event window and the hand-over frame come on top)."""
    cr, cc = centroid
    block(det, cr, cc, geo.diameter, t + L + geo.window + 2)
    H, W = det.z.shape
    cr, cc, rad = cr / det.ds, cc / det.ds, geo.diameter / det.ds
    r0, r1 = max(int(cr - rad), 0), min(int(cr + rad) + 1, H)
    c0, c1 = max(int(cc - rad), 0), min(int(cc + rad) + 1, W)
    det.pos[4, r0:r1, c0:c1] = 0.0
