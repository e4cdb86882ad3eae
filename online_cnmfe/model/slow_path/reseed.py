"""Periodic re-seeding over the residual buffer (slow path): the online search's second source.

The online search (:mod:`.detection`) evaluates one candidate per evaluation step, the best
peak of running images; on a real recording (minian CA1: ~1500 peaks above the threshold)
most of those evaluations go to background structure, and the cells that start firing after
the initialisation wait their turn or are never tested. The initialisation instead seeds on
the whole movie's summary images at once. This pass does the same on the last L frames the
slow path keeps (the residual buffer), in bounded slices:

1. **images** (``online.reseed_frames_per_step`` buffer frames per step, oldest first, so
   the ring's overwrites never reach a frame before it is read): the online search's filter
   (block mean, band-pass, the matched temporal filter when on) and the same images
   (moments of the values above 2 sigma of the search's noise for the local correlation,
   the max for the PNR, on ``z`` and on ``-z``), here with equal weights over the buffer and
   a max that does not decay;
2. **noise** (as many values per step as an images step reads): the PNR's noise is the
   robust ``1.4826 MAD`` of each pixel's filtered values over the buffer, not the search's
   running estimate from the negative half of z, which the model's errors and the
   band-pass's negative surround of a missing cell inflate exactly where cells are (minian
   CA1: 28 of 52 evaluated peaks near a visible cell with it, 17 of 58 without);
3. **threshold**: the local maxima of the null image (the sign-flipped residual's corr x
   PNR) calibrate the threshold by the rule of the initialisation and of the online search
   (:mod:`online_cnmfe.model.null_threshold`, ``detection.false_seeds_per_fov``); too few
   null peaks (a tiny frame): no candidates this pass;
4. **queue**: the local maxima of the residual's image at or above it (not blocked: not
   near a recent birth, nor a spot the search rejected in the last 2 s), greedy
   non-maximum suppression, the best ``detection.reseed_max_candidates`` first;
5. **evaluations** (``online.reseed_evaluations_per_step`` per evaluation step, on the
   frames the online search evaluates on): each queued peak goes through the same tests and
   pool as the online search's candidates (:mod:`.candidates`), and the initialisation's
   sharpness test; a peak whose spot was blocked since it was queued is skipped, and a
   rejected one is not queued again until the buffer holds none of the frames it was judged
   on (:func:`reject`; judged again on the same frames, it would only re-roll the noise).

A pass starts every ``detection.reseed_period_s`` once the previous one has queued its peaks;
its images and noise are read on the steps without an evaluation while the previous queue
is evaluated on the evaluation steps, and its queue replaces that one. Counts, not the clock,
bound every step (reproducible results).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from online_cnmfe.model._kernels import detection as kdet
from online_cnmfe.model.null_threshold import (
    MIN_NULL_PEAKS,
    peak_values,
    rate_for_frame,
    threshold_at_rate,
)
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path.detection import (
    K_SIGMA,
    DetectionState,
    Geometry,
    peak_window,
)
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

IDLE, IMAGES, NOISE = 0, 1, 2  # a pass's phases; its queue is evaluated in any of them


@dataclass(slots=True)
class ReseedState:
    """One re-seeding pass in progress (arrays and scalars only; see the module).

    ``pos``/``neg`` are (5, h, w) image stacks as :class:`.detection.DetectionState`'s;
    ``frames`` the buffer's frame indices the pass reads (oldest first), ``slots`` their
    buffer slots; ``queue`` (n, 2) int64 candidate peaks (image px), ``head`` the next one.
    """

    pos: np.ndarray
    neg: np.ndarray
    nvar: np.ndarray
    z: np.ndarray
    z_frame: np.ndarray
    tmp: np.ndarray
    small: np.ndarray
    r_small: np.ndarray
    vimg: np.ndarray
    zero: np.ndarray
    frames: np.ndarray
    slots: np.ndarray
    queue: np.ndarray
    noise_var: np.ndarray
    # (h, w) int64 grid: the pass does not queue a peak here before this frame (a spot its
    # evaluation rejected; the online search's own blocks are DetectionState.blocked_until)
    rejected_until: np.ndarray
    # (n, h, w) float32 the pass's filtered frames, for their robust noise (NOISE phase);
    # None between passes
    zs: np.ndarray | None = None
    phase: int = IDLE
    noise_row: int = 0  # next grid row of the NOISE phase
    cursor: int = 0  # next entry of frames / slots to read
    n_read: int = 0  # frames that entered the images
    head: int = 0
    started_at: int = -(2**40)
    threshold: float = math.inf
    n_passes: int = 0
    n_queued: int = 0  # candidates queued over all passes
    n_evaluated: int = 0
    n_accepted: int = 0


def make_reseed_state(det: DetectionState) -> ReseedState:
    """Scratch of a pass on the online search's grid (``det.z``'s shape)."""
    shape = det.z.shape
    f = lambda: np.zeros(shape, np.float32)  # noqa: E731
    return ReseedState(
        pos=np.zeros((5, *shape), np.float32), neg=np.zeros((5, *shape), np.float32),
        nvar=f(), z=f(), z_frame=f(), tmp=f(), small=f(), r_small=f(), vimg=f(), zero=f(),
        frames=np.zeros(0, np.int64), slots=np.zeros(0, np.int64),
        queue=np.zeros((0, 2), np.int64), noise_var=f(),
        rejected_until=np.zeros(shape, np.int64),
    )  # fmt: skip


def due(rs: ReseedState, t: int, params: CNMFEParams) -> bool:
    """A new pass starts: enabled, none reading the buffer, ``detection.reseed_period_s``
    since the last one started."""
    period_s = params.detection.reseed_period_s
    if period_s <= 0 or rs.phase != IDLE:
        return False
    return t - rs.started_at >= math.ceil(params.data.frame_rate_hz * period_s)


def start(rs: ReseedState, det: DetectionState, residual_frame: np.ndarray, t: int) -> None:
    """Begin a pass over the buffer's filled slots (oldest frame first)."""
    order = np.argsort(residual_frame, kind="stable")
    order = order[residual_frame[order] >= 0]
    rs.slots = order.astype(np.int64)
    rs.frames = residual_frame[order].astype(np.int64)
    rs.cursor = rs.n_read = 0  # the previous pass's queue is still evaluated meanwhile
    rs.pos[:] = 0.0
    rs.neg[:] = 0.0
    rs.nvar[:] = det.nvar  # the search's current noise of z (fixed for the pass)
    rs.zs = np.zeros((rs.slots.size, *rs.z.shape), np.float32)
    rs.noise_row = 0
    rs.phase = IMAGES
    rs.started_at = t
    rs.n_passes += 1


def read_frames(
    rs: ReseedState, det: DetectionState, view, dims: tuple[int, int], geo: Geometry, n: int
) -> int:
    """Add the next ``n`` buffer frames to the pass's images; returns how many were read.

    A slot the ring has overwritten since the pass started (its frame index changed) is
    skipped: the images then hold one frame fewer, never a frame twice.
    """
    Hf, Wf = dims
    read = 0
    while read < n and rs.cursor < rs.slots.size:
        slot, frame = int(rs.slots[rs.cursor]), int(rs.frames[rs.cursor])
        rs.cursor += 1
        if int(view.residual_frame[slot]) != frame:
            continue
        r = np.ascontiguousarray(view.residual[slot], np.float32).reshape(Hf, Wf)
        if det.ds > 1:
            kdet.block_mean(r, det.ds, rs.r_small)
            r = rs.r_small
        if geo.smooth > 0:  # the matched temporal filter, restarted at the pass's first frame
            kdet.band_pass(r, geo.half_small, geo.half_large, rs.tmp, rs.small, rs.z_frame)
            kdet.smooth_update(rs.z_frame, geo.smooth if rs.n_read else 0.0, rs.z)
        else:
            kdet.band_pass(r, geo.half_small, geo.half_large, rs.tmp, rs.small, rs.z)
        kdet.detection_images_update(
            rs.z, rs.pos, rs.neg, rs.nvar, 1.0 / (rs.n_read + 1), 0.0, 1.0, K_SIGMA
        )  # equal weights over the buffer, a max that does not decay, the noise fixed
        rs.zs[rs.n_read] = rs.z
        rs.n_read += 1
        read += 1
    return read


def robust_variance(x: np.ndarray) -> np.ndarray:
    """``(1.4826 MAD)^2`` of each column of ``x`` (n, m): the median of the absolute
    deviations from the column's median, by sorting pixel-major rows (an order of magnitude
    faster than ``np.median(axis=0)`` on the strided columns; the same values)."""
    rows = np.ascontiguousarray(x.T, np.float32)
    n = rows.shape[1]
    rows.sort(axis=1)
    med = 0.5 * (rows[:, (n - 1) // 2] + rows[:, n // 2])
    np.abs(rows - med[:, None], out=rows)
    rows.sort(axis=1)
    mad = 0.5 * (rows[:, (n - 1) // 2] + rows[:, n // 2])
    return (1.4826 * mad) ** 2


def estimate_noise(rs: ReseedState, n_values: int) -> bool:
    """Robust noise of the pass's filtered frames, a band of grid rows per call (about
    ``n_values`` values): ``(1.4826 MAD)^2`` per pixel over the frames read. Returns True once
    every row is done (the frames are then released).

    The online search's noise (``DetectionState.nvar``, the negative half of z) is inflated
    where the model's neurons leave errors and around a missing cell (the band-pass's negative
    surround), so it ranks cells under structure; the MAD of all of a pixel's values is not
    moved by the few frames of a transient. The null (``-z``) is measured with the same noise.
    """
    h, w = rs.noise_var.shape
    if rs.n_read < 2:  # nothing to measure: finish_images queues nothing
        rs.zs = None
        return True
    zs = rs.zs[: rs.n_read]
    rows = max(1, n_values // max(1, rs.n_read * w))
    r0, r1 = rs.noise_row, min(h, rs.noise_row + rows)
    rs.noise_var[r0:r1] = robust_variance(zs[:, r0:r1].reshape(rs.n_read, -1)).reshape(-1, w)
    rs.noise_row = r1
    if r1 < h:
        return False
    rs.zs = None
    return True


def finish_images(
    rs: ReseedState, det: DetectionState, geo: Geometry, params: CNMFEParams, t: int
) -> None:
    """Calibrate the pass's threshold on its null image and queue the candidate peaks (the
    previous pass's unevaluated ones are dropped: the new ranking is on fresher frames, and a
    peak still strong is in it again)."""
    rs.phase = IDLE
    rs.head = 0
    if rs.n_read < 2:
        rs.queue = np.zeros((0, 2), np.int64)
        return
    kdet.corr_pnr_image(rs.neg, rs.noise_var, rs.vimg)
    null = peak_values(rs.vimg, peak_window(geo, det.ds))
    h, w = rs.vimg.shape
    rate = rate_for_frame(params.detection.false_seeds_per_fov, h * w * det.ds * det.ds)
    if null.size < MIN_NULL_PEAKS:
        rs.threshold = math.inf
        rs.queue = np.zeros((0, 2), np.int64)
        return
    threshold = rs.threshold = threshold_at_rate(null, float(null.size), rate).threshold
    # rs.zero as the frame: no "still rising" test, the whole transient is in the buffer
    blocked = np.maximum(det.blocked_until, rs.rejected_until)
    n = kdet.detection_candidates(
        rs.zero, rs.pos, rs.noise_var, blocked, t, threshold, rs.vimg,
        det.cand_idx, det.cand_score,
    )  # fmt: skip
    cap = params.detection.reseed_max_candidates
    if n == 0:
        rs.queue = np.zeros((0, 2), np.int64)
    else:
        rows, cols = np.divmod(det.cand_idx[:n], w)
        order = np.argsort(-det.cand_score[:n], kind="stable")
        keep = np.zeros(cap, np.int64)
        nk = kdet.nms_greedy(
            rows.astype(np.float64), cols.astype(np.float64), order, geo.nms_radius / det.ds,
            cap, keep,
        )  # fmt: skip
        out = np.stack([rows[keep[:nk]], cols[keep[:nk]]], axis=1) * det.ds + det.ds // 2
        limit = np.array([h * det.ds - 1, w * det.ds - 1])
        rs.queue = np.minimum(out, limit).astype(np.int64)
    rs.n_queued += int(rs.queue.shape[0])
    logger.debug(
        "re-seeding pass %d at frame %d: %d buffer frames, corr x PNR >= %.2f (%d null peaks), "
        "%d peaks above it, %d queued",
        rs.n_passes, t, rs.n_read, threshold, null.size, n, rs.queue.shape[0],
    )  # fmt: skip


def reject(rs: ReseedState, det: DetectionState, row: int, col: int, geo: Geometry, until: int):
    """A queued peak the candidate tests rejected: not queued again within d / 2 before frame
    ``until`` (the online search may still evaluate the spot: its own block is 2 s)."""
    det_mod.block_disk(rs.rejected_until, det.ds, row, col, geo.diameter / 2, until)


def next_candidates(rs: ReseedState, det: DetectionState, t: int, n: int) -> np.ndarray:
    """Up to ``n`` queued peaks (row, col) whose spot is not blocked now."""
    out = []
    while len(out) < n and rs.head < rs.queue.shape[0]:
        row, col = (int(v) for v in rs.queue[rs.head])
        rs.head += 1
        i, j = row // det.ds, col // det.ds
        if det.blocked_until[i, j] > t or rs.rejected_until[i, j] > t:
            continue  # a birth, or a rejected evaluation, there since it was queued
        out.append((row, col))
    return np.asarray(out, np.int64).reshape(-1, 2)
