"""Testing a candidate of the online search (:mod:`.detection`) and its pool (slow path).

Symbols: Y the residual buffer in a box around the candidate (frames x box pixels, centred),
a footprint, c trace, d neuron diameter (px), z an event's significance.

:func:`evaluate` fits a rank-1 NMF ``Y ~ c a^T`` in a box of +-0.9 d and asks:

* spatial: centroid near the peak, size ``(s / (d / 4))^2`` within ``[min_size_ratio,
  max_size_ratio x size_scale]`` (``size_scale``: the initial components' typical size, at
  least 1, ``SlowPathState.size_scale``), s the sigma of the Gaussian that best fits the footprint
  (:func:`..footprint_shape.gaussian_scale`; a Gaussian of sigma d / 4 fills the disk of
  diameter d), ``min_compactness`` of its energy within 0.75 d of the centroid,
  corr(a, mean active frame) >= ``min_space_corr``;
* in focus (:func:`_out_of_focus`, the initialisation's test): the event image's mean within
  d / 8 of the centroid over its band-passed value (that mean minus the mean within 0.9 d)
  must not exceed ``init.out_of_focus_ratio`` x that of a neuron of the expected size: the
  band-pass attenuates broad out-of-focus cells several times more than neurons (the box's
  border is *not* subtracted for this test, it would make a broad blob look compact);
* sharp (only when a ``sharpness_limit`` is given: the re-seeding's candidates,
  :mod:`.reseed`): the footprint's :func:`..footprint_shape.sharpness_of` at least the
  initialisation's limit (``SlowPathState.sharpness_limit``), the test its acceptance
  applies and that removes a grown online birth later;
* temporal: events = rises of the N-frame mean of its projected trace above ``min_event_snr``
  (noise from the MAD of the first differences, baseline from the 25th percentile, both
  robust to a neuron active much of the buffer; a rise needs a dip to half its height since
  the last event);
* not a neuron the model has (:func:`_duplicate_of`): the neighbours' contributions are added
  back to the box and the box is demixed jointly into them and the candidate; a candidate
  whose demixed trace has no event left (the neighbours explain it) or follows a neighbour's
  (correlation > ``duplicate_corr x min(1, (1 - cos) / 0.5)``, cos the footprints' cosine: the
  more alike the footprints, the less correlation it takes, as in the initialisation's merge
  rule) is that neighbour's footprint error, not a cell; unless the neighbour is settled (born
  more than three footprint-refresh periods ago) and carries under 0.35 x the candidate's share
  of the shared signal (``||a_j|| ||x_j||`` against ``||a|| ||x_new||``): then the neighbour's
  footprint has partly absorbed a newcomer and its trace follows the newcomer's leak (held-out
  ``late_born``: newcomers rejected 10-20 times in a row, for up to 40 s, by a settled
  neighbour with footprint cosine 0.1-0.4). Judging by the joint fit, not by the
  neighbours' own traces, matters: a new cell overlapping a known one leaks into its trace, so
  the two *model* traces correlate (0.8-0.95 measured on a late-born neuron of the held-out
  simulation, rejected 18 times) although the cells are independent.

Passing candidates enter a *pool* keyed by position (centroids within 0.35 d: a real cell's
centroid is stable across visits, noise structure wanders); distinct event frames accumulate
there. A candidate is promoted once it has ``confirm_events`` separate events, or at once when
one event reaches ``promote_event_snr`` (one clear transient whose frames show the footprint:
the spatial tests ran on them); the birth's footprint averages the entry's accepted
footprints weighted by their event signal (:func:`best_result`). Entries unseen for
``pool_expiry_s`` are forgotten.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from online_cnmfe.model._kernels import detection as kdet
from online_cnmfe.model.footprint_shape import gaussian_scale, mirror_at_frame, sharpness_of
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.model.slow_path.detection import MAX_EVENTS, DetectionState, Geometry
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
    "out_of_focus",
    "blurred",
)
_MATCH_RADIUS = 0.35  # a candidate revisits a pool entry if its centroid is this close (x d)
_SAME_FOOTPRINT = 0.9  # cosine above which the joint demixing is degenerate: the same spot
# a candidate that follows a settled neighbour is a newcomer that neighbour partly absorbed,
# not its footprint error, when the neighbour's share of the box's shared signal is under
# this fraction of the candidate's (measured, held-out late_born: newcomers 0.04-0.7, half
# under 0.35; a footprint off by 1 sigma gives 0.8, by 0.5 sigma 2.1). At 0.5 the held-out
# lens_motion / corrupt_frames gained 3 / 1 false components (F1 -0.009 / -0.007); at 0.35
# -0.004 / -0.004, late_born unchanged (a newcomer passes on another visit)
_NEWCOMER_SHARE = 0.35


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


def evaluate(fs, view, row: int, col: int, params: CNMFEParams, geo: Geometry,
             size_scale: float = 1.0, sharpness_limit: float = 0.0):  # fmt: skip
    """Rank-1 NMF around (row, col) on the residual buffer and the acceptance tests.

    Returns ``(reason, result)``: reason indexes :data:`REASONS`; result (a dict with
    ``pix``, unit-norm footprint ``a``, raw trace ``trace`` over ``frames``, ``noise``,
    ``events`` (frame indices), ``zmax`` (the strongest event's z), ``energy`` (sum of its
    events' z^2: how much signal shaped the footprint), ``centroid``) is given for
    accepted candidates.
    """
    H, W = (int(v) for v in fs.dims)
    d, hs = geo.diameter, geo.box_half
    dp = params.detection
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
    offset = Y[:, border].mean(axis=1, keepdims=True)  # the box's local background per frame
    Y -= offset
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
    dr, dc = rr.ravel() - cr, cc.ravel() - ccn
    ratio = (gaussian_scale(a, dr * dr + dc * dc, d) / (d / 4)) ** 2
    if not dp.min_size_ratio <= ratio <= dp.max_size_ratio * size_scale:
        return 3, None
    near = ((rr.ravel() - cr) ** 2 + (cc.ravel() - ccn) ** 2) <= (0.75 * d) ** 2
    if float((a[near] ** 2).sum()) / aa < dp.min_compactness:
        return 4, None
    active = c > 0.5 * c.max()
    img = Y[active].mean(axis=0)
    if np.corrcoef(a, img)[0, 1] < dp.min_space_corr:
        return 5, None
    if _out_of_focus(img + float(offset[active].mean()), dr * dr + dc * dc, geo, params):
        return 8, None
    cut = (r0 == 0, r1 == H, c0 == 0, c1 == W)
    if sharpness_limit > 0 and _sharpness(a, rr.shape, cut, d) < sharpness_limit:
        return 9, None
    cp = Y @ a / aa
    z, sig, base = _event_z(cp, geo.window)
    ev = _events(z, dp.min_event_snr, geo.separation)
    if ev.size == 0:
        return 6, None
    if _duplicate_of(fs, view, a, pix, Y, order, (r0, r1, c0, c1), params, geo):
        return 7, None
    na = math.sqrt(aa)
    result = dict(
        pix=pix.astype(np.int64), a=(a / na).astype(np.float32),
        trace=((cp - base) * na).astype(np.float32), frames=frames.astype(np.int64),
        noise=np.float32(sig * na), events=frames[ev].astype(np.int64),
        zmax=float(z[ev].max()), energy=float((z[ev] ** 2).sum()), centroid=(cr, ccn),
    )  # fmt: skip
    return 0, result


def _sharpness(a: np.ndarray, box_shape: tuple[int, int], cut, d: float) -> float:
    """:func:`..footprint_shape.sharpness_of` of the box's footprint ``a``, mirrored on the
    sides where the frame's edge cuts the box (``cut`` = top, bottom, left, right) and padded
    by d on every side, as the neurons' own check (``footprint_shape.sharpness_box``)."""
    box = np.pad(mirror_at_frame(a.reshape(box_shape), cut), math.ceil(d))
    return sharpness_of(box, d)


def _band_ratio(img: np.ndarray, d2: np.ndarray, d: float) -> float:
    """Raw over band-passed amplitude of an event image at its centre: mean within d / 8,
    over that minus the mean within 0.9 d (d2: squared distance of each pixel to the centre)."""
    inner = img[d2 <= max(1.0, d / 8) ** 2].mean()
    outer = img[d2 <= (0.9 * d) ** 2].mean()
    band = inner - outer
    return float(inner / band) if band > 0 else math.inf


@functools.lru_cache(maxsize=16)
def _neuron_band_ratio(d: float) -> float:
    """:func:`_band_ratio` of a Gaussian neuron of sigma d / 4 (the expected one)."""
    h = math.ceil(0.9 * d)
    rr, cc = np.mgrid[-h : h + 1, -h : h + 1]
    d2 = (rr * rr + cc * cc).ravel().astype(np.float64)
    return _band_ratio(np.exp(-d2 / (2 * (d / 4) ** 2)), d2, d)


def _out_of_focus(img: np.ndarray, d2: np.ndarray, geo: Geometry, params: CNMFEParams) -> bool:
    """Broader than a neuron by the initialisation's out-of-focus test (see the module)."""
    limit = params.init.out_of_focus_ratio * _neuron_band_ratio(float(geo.diameter))
    return _band_ratio(img, d2, geo.diameter) > limit


def _event_z(cp: np.ndarray, N: int) -> tuple[np.ndarray, float, float]:
    """Event significance of a trace: its N-frame running mean above a robust baseline, in
    units of its noise (MAD of first differences; baseline: 25th percentile + 0.674 noise,
    robust to a neuron active much of the time). Returns (z, noise, baseline)."""
    sig = 1.4826 * float(np.median(np.abs(np.diff(cp)))) / math.sqrt(2) + 1e-12
    base = float(np.percentile(cp, 25)) + 0.674 * sig
    sm = np.convolve(cp - base, np.ones(N) / N, mode="same")
    return sm / (sig / math.sqrt(N)), sig, base


def _duplicate_of(fs, view, a, pix, Y, order, box, params, geo) -> bool:
    """Whether the candidate (footprint ``a`` on the box pixels ``pix``) is a known neuron.

    The neighbours' contributions ``a_j c_j`` are added back to the box ``Y`` and the box is
    fitted by least squares on ``[a_1 .. a_n, a, 1]``; the candidate is a duplicate when its
    demixed trace has no event above ``min_event_snr`` left, or correlates with a neighbour's
    above ``duplicate_corr x min(1, (1 - cos) / 0.5)`` -- unless that neighbour is settled and
    its share of the signal, ``||a_j|| ||x_j||``, is under :data:`_NEWCOMER_SHARE` x the
    candidate's (a newcomer the neighbour partly absorbed) -- or when its footprint is nearly
    a neighbour's (cosine > :data:`_SAME_FOOTPRINT`: the fit is then degenerate).
    """
    if fs.n_components == 0:
        return False
    nbrs = suffstats.neighbours(fs, None, box=np.asarray(box, np.int32))
    if nbrs.size == 0:
        return False
    scratch = fs.scratch
    na = float(np.sqrt(a @ a))
    cols, js, coss = [], [], []
    for j in nbrs:
        s = fs.slot_of[j]
        n = fs.sup_n[s]
        sup = fs.sup_idx[s, :n]
        scratch[sup] = fs.a_sup[s, :n]
        aj = scratch[pix].copy()
        scratch[sup] = 0.0
        nj = float(np.sqrt(aj @ aj))
        if nj <= 0:
            continue
        if float(aj @ a) / (na * nj) > _SAME_FOOTPRINT:
            return True
        cols.append(aj)
        js.append(int(j))
        coss.append(float(aj @ a) / (na * nj))
    if not cols:
        return False
    Aj = np.stack(cols, axis=1)  # (box pixels, n)
    cj = view.c_buffer[js][:, order].astype(np.float32)
    cj -= cj.mean(axis=1, keepdims=True)
    D = Y + cj.T @ Aj.T  # the box with the neighbours put back (frames x pixels)
    M = np.concatenate([Aj, a[:, None], np.ones((a.size, 1), np.float32)], axis=1)
    X, *_ = np.linalg.lstsq(M.astype(np.float64), D.T.astype(np.float64), rcond=None)
    x_new = X[len(js)] - X[len(js)].mean()
    n_new = float(np.sqrt(x_new @ x_new))
    if n_new <= 0:
        return True
    z, _, _ = _event_z(x_new, geo.window)
    if _events(z, params.detection.min_event_snr, geo.separation).size == 0:
        return True  # the neighbours explain the candidate's transient
    signal_new = na * n_new  # the candidate's share of the box's signal, ||a|| ||x_new||
    settled = int(view.t) - 3 * params.online.footprint_update_period_frames
    for m in range(len(js)):
        xm = X[m] - X[m].mean()
        nm = float(np.sqrt(xm @ xm))
        limit = params.detection.duplicate_corr * min(1.0, (1.0 - coss[m]) / 0.5)
        if nm > 0 and float(xm @ x_new) / (nm * n_new) > limit:
            # a footprint error is the smaller part of its neuron's signal in the box; a new
            # cell that a settled neighbour's footprint has partly absorbed is the larger part
            # (the neighbour's trace follows the newcomer's leak). A young neighbour's
            # footprint is still growing: what follows it is its own unfinished part.
            young = int(fs.birth[fs.slot_of[js[m]]]) > settled
            if young or float(np.linalg.norm(Aj[:, m])) * nm >= _NEWCOMER_SHARE * signal_new:
                return True
    return False


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
        det.pool_zmax[e] = 0.0
        det.pool_best[e] = None
    n = int(det.pool_n[e])
    for f in res["events"]:
        if n < MAX_EVENTS and np.all(np.abs(det.pool_events[e, :n] - f) >= geo.separation):
            det.pool_events[e, n] = f
            n += 1
    det.pool_n[e] = n
    det.pool_last[e] = t
    det.pool_rc[e] = (cr, cc)
    seen = det.pool_best[e] if det.pool_best[e] is not None else []
    det.pool_best[e] = (seen + [res])[-MAX_EVENTS:]  # the accepted evaluations, newest last
    det.pool_zmax[e] = max(float(det.pool_zmax[e]), float(res["zmax"]))
    return e, n


def best_result(det: DetectionState, entry: int, res: dict, view, geo: Geometry) -> dict:
    """The evaluation result a birth from ``entry`` uses (``res``: this step's, the last one).

    The footprint is the sum of the entry's accepted footprints, each weighted by the square
    root of its event signal (sum of its events' z^2), on the union of their boxes: one weak
    event gives a noisy footprint, and the evaluations of separate events average it out
    (cosine to the truth 0.70 from the strongest single event, 0.8+ combined, on a cell of
    1.7 sigma per pixel). The trace is re-projected on the current buffer.
    """
    seen = det.pool_best[entry] or [res]
    if len(seen) == 1:
        return seen[0]
    pix = np.unique(np.concatenate([r["pix"] for r in seen]))
    a = np.zeros(pix.size, np.float64)
    for r in seen:
        a[np.searchsorted(pix, r["pix"])] += math.sqrt(max(float(r["energy"]), 0.0)) * r["a"]
    a = (a / (np.linalg.norm(a) + 1e-30)).astype(np.float32)
    order = np.argsort(view.residual_frame, kind="stable")
    order = order[view.residual_frame[order] >= 0]
    # the footprint's columns only (residual[order] would copy the whole buffer first: 148 MB
    # and ~300 ms of the slow path's thread at 608², on the frame of a birth)
    Y = view.residual[np.ix_(order, pix)].astype(np.float32)
    Y -= Y.mean(axis=0)
    cp = Y @ a  # unit-norm footprint: the trace in its units
    _, sig, base = _event_z(cp, geo.window)
    out = dict(max(seen, key=lambda r: float(r["energy"])))  # its centroid and events
    out.update(
        pix=pix.astype(np.int64), a=a, trace=(cp - base).astype(np.float32),
        frames=view.residual_frame[order].astype(np.int64), noise=np.float32(sig),
    )  # fmt: skip
    return out


def confirmed(det: DetectionState, entry: int, params: CNMFEParams) -> bool:
    """Promote the pool entry: enough separate events, or one strong enough on its own."""
    dp = params.detection
    return bool(
        det.pool_n[entry] >= dp.confirm_events or det.pool_zmax[entry] >= dp.promote_event_snr
    )


def forget_entry(det: DetectionState, e: int) -> None:
    det.pool_used[e] = False
    det.pool_n[e] = 0
    det.pool_events[e] = -1
    det.pool_zmax[e] = 0.0
    det.pool_best[e] = None
