"""Online search for new neurons in the residual (slow path).

Symbols: r residual ``(I - UWD)(y - A c - b0)`` of each frame, z its band-pass (box means,
see ``_kernels/detection.py``), a footprint, c trace, d neuron diameter (px).

Per frame (:func:`observe_residual`, O(n_pixels)), on a grid block-averaged by
``ds = max(1, diameter // 6)`` (a neuron stays >= 6 px across; 4x cheaper at diameter 13):
running moments of z (local correlation),
its noise from the negative half, and a decaying max (CaImAn keeps a cumulative max that
never forgets). Per slow step (:func:`search`): pixels with PNR >= ``min_pnr`` and
corr >= ``min_corr``, greedy non-maximum suppression on corr x PNR, at most
``max_candidates_per_frame``. Each candidate (:func:`evaluate`) gets a rank-1 NMF on the
residual buffer in a box around it and must pass:

* spatial: centroid near the peak, effective area ``(sum a)^2 / sum a^2`` within
  ``[min_size_ratio, max_size_ratio]`` x the disk of diameter d, ``min_compactness`` of its
  energy within 0.75 d of the centroid, corr(a, mean active frame) >= ``min_space_corr``;
* temporal: events = rises of the N-frame mean of its projected trace above ``min_event_snr``
  (noise from the MAD of the first differences, baseline from the 25th percentile, both
  robust to a neuron active much of the buffer; a rise needs a dip to half its height since
  the last event);
* duplicate: no existing neuron with footprint cosine > ``duplicate_overlap`` (the same
  spot: a footprint error that HALS will fix, not a new cell), nor one with cosine >
  ``duplicate_overlap / 2`` and trace correlation > ``duplicate_corr`` (the same cell,
  shifted), nor an overlapping one whose trace correlates above ``merge_corr_threshold`` (a
  piece of a cell whose footprint is too small).

Passing candidates enter a *pool* keyed by position (centroids within 0.35 d: a real cell's
centroid is stable across visits, noise structure wanders); distinct event frames accumulate there
and a candidate is promoted once it has ``confirm_events`` separate events (in one buffer or
over several visits). Pool entries unseen for ``pool_expiry_s`` are forgotten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from online_cnmfe.model._kernels import detection as kdet
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.params import CNMFEParams

REASONS = (
    "accepted",
    "empty",
    "off_centre",
    "size",
    "compactness",
    "space_corr",
    "no_event",
    "duplicate",
)
_MAX_EVENTS = 8
_MATCH_RADIUS = 0.35  # a candidate revisits a pool entry if its centroid is this close (x d)


@dataclass(slots=True)
class DetectionState:
    """Detection images, scratch, candidate pool and counters (arrays/scalars only)."""

    m1: np.ndarray
    m2: np.ndarray
    mr: np.ndarray
    md: np.ndarray
    nvar: np.ndarray
    mx: np.ndarray
    blocked_until: np.ndarray  # (H, W) int64
    z: np.ndarray
    tmp: np.ndarray
    small: np.ndarray
    cand_idx: np.ndarray
    cand_score: np.ndarray
    pool_rc: np.ndarray  # (P, 2) float64 centroid
    pool_events: np.ndarray  # (P, _MAX_EVENTS) int64
    pool_n: np.ndarray  # (P,) int32
    pool_last: np.ndarray  # (P,) int64
    pool_used: np.ndarray  # (P,) bool
    reason_counts: np.ndarray  # (len(REASONS),) int64
    r_small: np.ndarray  # (hd, wd) residual on the detection grid
    ds: int = 1  # detection grid = image block-averaged by ds
    n_frames: int = 0


def make_detection_state(dims: tuple[int, int], pool_size: int, ds: int = 1) -> DetectionState:
    """Detection images on the grid ``ceil(dims / ds)`` (ds = :attr:`Geometry.ds`)."""
    H, W = -(-dims[0] // ds), -(-dims[1] // ds)
    f = lambda: np.zeros((H, W), np.float32)  # noqa: E731
    return DetectionState(
        m1=f(), m2=f(), mr=f(), md=f(), nvar=f(), mx=f(),
        blocked_until=np.zeros((H, W), np.int64), z=f(), tmp=f(), small=f(),
        cand_idx=np.zeros(4096, np.int64), cand_score=np.zeros(4096, np.float32),
        pool_rc=np.zeros((pool_size, 2)), pool_events=np.full((pool_size, _MAX_EVENTS), -1),
        pool_n=np.zeros(pool_size, np.int32), pool_last=np.zeros(pool_size, np.int64),
        pool_used=np.zeros(pool_size, bool), reason_counts=np.zeros(len(REASONS), np.int64),
        r_small=f(), ds=ds,
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
    )


def observe_residual(det: DetectionState, resid: np.ndarray, geo: Geometry) -> None:
    """Per-frame update of the detection images from the residual (H, W) float32."""
    if det.ds > 1:
        kdet.block_mean(resid, det.ds, det.r_small)
        resid = det.r_small
    kdet.band_pass(resid, geo.half_small, geo.half_large, det.tmp, det.small, det.z)
    alpha = max(geo.alpha, 1.0 / (det.n_frames + 1))
    alpha_n = max(geo.alpha_noise, 1.0 / (det.n_frames + 1))
    kdet.detection_images_update(
        det.z, det.m1, det.m2, det.mr, det.md, det.nvar, det.mx, alpha, alpha_n, geo.rho
    )
    det.n_frames += 1


def search(det: DetectionState, t: int, params: CNMFEParams, geo: Geometry) -> np.ndarray:
    """Candidate peaks (n, 2) int64 (row, col), best first, after NMS and the per-frame cap."""
    p = params.detection
    if det.n_frames < 20:
        return np.zeros((0, 2), np.int64)
    n = kdet.detection_candidates(
        det.mx, det.nvar, det.m1, det.m2, det.mr, det.md, det.z, det.blocked_until, t,
        p.min_pnr, p.min_corr, det.cand_idx, det.cand_score,
    )  # fmt: skip
    if n == 0:
        return np.zeros((0, 2), np.int64)
    W = det.mx.shape[1]
    rows, cols = np.divmod(det.cand_idx[:n], W)
    order = np.argsort(-det.cand_score[:n], kind="stable")
    keep = np.zeros(p.max_candidates_per_frame, np.int64)
    nk = kdet.nms_greedy(
        rows.astype(np.float64), cols.astype(np.float64), order, geo.nms_radius / det.ds,
        p.max_candidates_per_frame, keep,
    )  # fmt: skip
    out = np.stack([rows[keep[:nk]], cols[keep[:nk]]], axis=1) * det.ds + det.ds // 2
    H, Wf = det.ds * np.array(det.mx.shape)
    return np.minimum(out, [H - 1, Wf - 1]) if det.ds > 1 else out


def block(det: DetectionState, row: float, col: float, radius: float, until: int) -> None:
    """Suppress candidates within ``radius`` of (row, col) (image px) until frame ``until``."""
    H, W = det.mx.shape
    row, col, radius = row / det.ds, col / det.ds, radius / det.ds
    r0, r1 = max(int(row - radius), 0), min(int(row + radius) + 1, H)
    c0, c1 = max(int(col - radius), 0), min(int(col + radius) + 1, W)
    rr, cc = np.ogrid[r0:r1, c0:c1]
    disk = (rr - row) ** 2 + (cc - col) ** 2 <= radius * radius
    sub = det.blocked_until[r0:r1, c0:c1]
    sub[disk] = np.maximum(sub[disk], until)


def _events(z: np.ndarray, thr: float, sep: int) -> np.ndarray:
    """Indices of rises of z above thr, each after a dip to half its height (time order)."""
    if z.size < 3:
        return np.zeros(0, np.int64)
    peaks = np.flatnonzero((z[1:-1] >= z[:-2]) & (z[1:-1] > z[2:]) & (z[1:-1] >= thr)) + 1
    out: list[int] = []
    for q in peaks:
        if out and (q - out[-1] < sep or z[out[-1] : q].min() > 0.5 * z[q]):
            if z[q] > z[out[-1]] and q - out[-1] < sep:
                out[-1] = int(q)
            continue
        out.append(int(q))
    return np.asarray(out, np.int64)


def evaluate(fs, view, row: int, col: int, params: CNMFEParams, geo: Geometry):
    """Rank-1 NMF around (row, col) on the residual buffer and the acceptance tests.

    Returns ``(reason, result)``: reason indexes :data:`REASONS`; result (a dict with
    ``pix``, unit-norm footprint ``a``, raw trace ``trace`` over ``frames``, ``noise``,
    ``events`` (frame indices), ``centroid``) is given for accepted candidates.
    """
    H, W = (int(v) for v in fs.dims)
    d, hs = geo.diameter, geo.box_half
    r0, r1, c0, c1 = max(row - hs, 0), min(row + hs + 1, H), max(col - hs, 0), min(col + hs + 1, W)
    bw = c1 - c0
    rr, cc = np.mgrid[r0:r1, c0:c1]
    pix = (rr * W + cc).ravel()
    order = np.argsort(view.residual_frame, kind="stable")
    order = order[view.residual_frame[order] >= 0]
    frames = view.residual_frame[order]
    L = view.residual.shape[0]  # the box as slices, then the frames: copies only the box
    Y = view.residual.reshape(L, H, W)[:, r0:r1, c0:c1][order].reshape(order.size, -1)
    Y = Y.astype(np.float32)
    Y -= Y.mean(axis=0)
    border = ((rr == r0) | (rr == r1 - 1) | (cc == c0) | (cc == c1 - 1)).ravel()
    Y -= Y[:, border].mean(axis=1, keepdims=True)
    centre = Y[:, (row - r0) * bw + (col - c0)]
    top = centre >= np.quantile(centre, 0.9)
    a = np.ascontiguousarray(np.maximum(Y[top].mean(axis=0), 0), np.float32)
    c = np.zeros(Y.shape[0], np.float32)
    kdet.rank1_nmf(np.ascontiguousarray(Y), a, c, 20)
    aa = float(a @ a)
    if aa <= 0 or c.max() <= 0:
        return 1, None
    tot = float(a.sum())
    cr = float((rr.ravel() * a).sum() / tot)
    ccn = float((cc.ravel() * a).sum() / tot)
    if math.hypot(cr - row, ccn - col) > 0.35 * d:
        return 2, None
    ratio = tot * tot / aa / (math.pi * d * d / 4)
    if not params.detection.min_size_ratio <= ratio <= params.detection.max_size_ratio:
        return 3, None
    near = ((rr.ravel() - cr) ** 2 + (cc.ravel() - ccn) ** 2) <= (0.75 * d) ** 2
    if float((a[near] ** 2).sum()) / aa < params.detection.min_compactness:
        return 4, None
    active = c > 0.5 * c.max()
    if np.corrcoef(a, Y[active].mean(axis=0))[0, 1] < params.detection.min_space_corr:
        return 5, None
    cp = Y @ a / aa
    sig = 1.4826 * float(np.median(np.abs(np.diff(cp)))) / math.sqrt(2) + 1e-12
    base = float(np.percentile(cp, 25)) + 0.674 * sig  # robust to a long active fraction
    N = geo.window
    sm = np.convolve(cp - base, np.ones(N) / N, mode="same")
    z = sm / (sig / math.sqrt(N))
    ev = _events(z, params.detection.min_event_snr, geo.separation)
    if ev.size == 0:
        return 6, None
    if _is_duplicate(fs, view, a, pix, cp, order, (r0, r1, c0, c1), params):
        return 7, None
    na = math.sqrt(aa)
    result = dict(
        pix=pix.astype(np.int64), a=(a / na).astype(np.float32),
        trace=((cp - base) * na).astype(np.float32), frames=frames.astype(np.int64),
        noise=np.float32(sig * na), events=frames[ev].astype(np.int64), centroid=(cr, ccn),
    )  # fmt: skip
    return 0, result


def _is_duplicate(fs, view, a, pix, cp, order, box, params) -> bool:
    if fs.n_components == 0:
        return False
    nbrs = suffstats.neighbours(fs, None, box=np.asarray(box, np.int32))
    if nbrs.size == 0:
        return False
    dp = params.detection
    scratch = fs.scratch
    scratch[pix] = a
    na = float(np.sqrt(a @ a))
    dup = False
    cpc = cp - cp.mean()
    ncp = float(np.sqrt(cpc @ cpc))
    cjs = view.c_buffer[nbrs][:, order]  # neighbours' traces over the same frames (one gather)
    cjs = cjs - cjs.mean(axis=1, keepdims=True)
    ncj = np.sqrt((cjs * cjs).sum(axis=1))
    rs = (cjs @ cpc) / np.maximum(ncj * ncp, 1e-30)
    for m, j in enumerate(nbrs):
        s = fs.slot_of[j]
        n = fs.sup_n[s]
        aj = fs.a_sup[s, :n]
        nj = float(np.sqrt(aj @ aj))
        if nj <= 0:
            continue
        cos = float(aj @ scratch[fs.sup_idx[s, :n]]) / (na * nj)
        if cos <= 0.0:
            continue
        r = float(rs[m]) if ncj[m] > 0 and ncp > 0 else 0.0
        if cos > dp.duplicate_overlap:
            dup = True  # the same spot as a cell: its footprint error, not a new cell
            break
        if cos > 0.5 * dp.duplicate_overlap and r > dp.duplicate_corr:
            dup = True  # the same cell again, shifted
            break
        if r > dp.merge_corr_threshold:
            dup = True  # a missing piece of an existing cell (its footprint will grow)
            break
    scratch[pix] = 0.0
    return dup


def pool_record(det: DetectionState, res: dict, t: int, geo: Geometry) -> tuple[int, int]:
    """Add the candidate's events to its pool entry (matched by centroid within 0.35 d).

    Returns (entry, number of distinct events). Expired entries are freed first; when the pool
    is full the least recently seen entry is replaced.
    """
    det.pool_used &= t - det.pool_last <= geo.expiry
    cr, cc = res["centroid"]
    dist = np.hypot(det.pool_rc[:, 0] - cr, det.pool_rc[:, 1] - cc)
    dist[~det.pool_used] = np.inf
    e = int(np.argmin(dist))
    if not dist[e] <= _MATCH_RADIUS * geo.diameter:
        free = np.flatnonzero(~det.pool_used)
        e = int(free[0]) if free.size else int(np.argmin(det.pool_last))
        det.pool_used[e] = True
        det.pool_n[e] = 0
        det.pool_events[e] = -1
    n = int(det.pool_n[e])
    for f in res["events"]:
        if n < _MAX_EVENTS and np.all(np.abs(det.pool_events[e, :n] - f) >= geo.separation):
            det.pool_events[e, n] = f
            n += 1
    det.pool_n[e] = n
    det.pool_last[e] = t
    det.pool_rc[e] = (cr, cc)
    return e, n


def forget_entry(det: DetectionState, e: int) -> None:
    det.pool_used[e] = False
    det.pool_n[e] = 0
    det.pool_events[e] = -1


def after_birth(det: DetectionState, res: dict, t: int, geo: Geometry, L: int) -> None:
    """Clear the decaying max around a promoted neuron and block the spot for a buffer."""
    cr, cc = res["centroid"]
    block(det, cr, cc, geo.diameter, t + L)
    H, W = det.mx.shape
    cr, cc, rad = cr / det.ds, cc / det.ds, geo.diameter / det.ds
    r0, r1 = max(int(cr - rad), 0), min(int(cr + rad) + 1, H)
    c0, c1 = max(int(cc - rad), 0), min(int(cc + rad) + 1, W)
    det.mx[r0:r1, c0:c1] = 0.0
