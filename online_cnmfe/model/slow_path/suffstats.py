"""Footprint sufficient statistics of the slow path, and the footprint refresh built on them.

Symbols: A footprints, c traces, r residual ``(I - UWD)(y - A c - b0)``, so ``y - B = r + A c``.
``CY = E_lam[c (y - B)^T]`` restricted to each neuron's *allowed region* (its footprint
support dilated by ``OnlineParams.footprint_growth_px``), ``CC = E_lam[c c^T]``, ``cbar =
E_lam[c]``, where ``E_lam`` is an exponentially weighted mean with forgetting factor
``lam = 1 - 1 / (frame_rate_hz * stats_forgetting_time_s)``.

Storage (:class:`FootprintStats`): padded per-*slot* rows (``max_region`` pixels each), so a
birth, merge or removal never copies the whole table: model neuron k lives in slot
``slot_of[k]``. ``a_sup`` mirrors the model's footprint on the region (the model's A is always
the nonzeros of ``a_sup``, because every change of A comes from the slow path).

Footprint growth: after a HALS refresh the region is re-derived from the new support; pixels
joining it get CY seeded from the residual buffer (``mean_t c_k(t) (r_t + A c_t)``), so a
truncated footprint extends by up to ``footprint_growth_px`` per refresh and keeps growing
while its boundary carries weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels import stats as kst


@dataclass(slots=True)
class FootprintStats:
    """Per-neuron CY / CC statistics and the footprint mirror (arrays only; HDF5-friendly).

    Attributes
    ----------
    dims : ndarray of shape (2,), int64
    slot_of : ndarray of shape (K,), int32
        Slot of each model neuron.
    used : ndarray of shape (n_slots,), bool
    sup_idx : ndarray of shape (n_slots, max_region), int32
        Allowed-region pixels (sorted) of each slot; ``sup_n`` (n_slots,) int32 their count.
    a_sup, cy : ndarray of shape (n_slots, max_region), float32
    cc : ndarray of shape (n_slots, n_slots), float32; cbar (n_slots,) float32
    bbox : ndarray of shape (n_slots, 4), int32
        Region bounding box (row0, row1, col0, col1), half-open.
    noise : ndarray of shape (n_slots,), float32
        Trace noise (activity threshold). last_active (n_slots,) int64: last frame with
        c > 4 noise. birth (n_slots,) int64.
    scratch : ndarray of shape (n_pixels,), float32
        All-zero work array.
    pixel_noise : ndarray of shape (n_pixels,), float32
        Noise of each pixel of ``y - B``; with ``n_eff`` (effective number of frames in the
        statistics) it gives the noise of a footprint value, ``pixel_noise / sqrt(n_eff CC_kk)``,
        below which footprint pixels are dropped (so supports do not creep into noise).
    max_radius : float
        Region pixels farther than this from the footprint's centroid are dropped (0 = no
        limit), so a footprint cannot sprawl over background structure.
    max_support : int
        At most this many footprint pixels (the largest values) are kept (0 = no limit).
    cursor : int
        Round-robin position of the footprint refresh.
    n_refused : int
        Refreshes refused because the new footprint differed too much from the old one.
    """

    dims: np.ndarray
    slot_of: np.ndarray
    used: np.ndarray
    sup_idx: np.ndarray
    sup_n: np.ndarray
    a_sup: np.ndarray
    cy: np.ndarray
    cc: np.ndarray
    cbar: np.ndarray
    bbox: np.ndarray
    noise: np.ndarray
    last_active: np.ndarray
    birth: np.ndarray
    scratch: np.ndarray
    pixel_noise: np.ndarray
    n_eff: float = 1.0
    max_radius: float = 0.0
    max_support: int = 0
    cursor: int = 0
    n_refused: int = 0

    @property
    def n_components(self) -> int:
        return int(self.slot_of.shape[0])


def max_region_pixels(neuron_diameter_px: float, growth_px: int) -> int:
    """Capacity of a region: the square around the disk of radius ``0.8 d + growth`` that
    bounds a refreshed region (see ``FootprintStats.max_radius``), with one pixel to spare."""
    side = 2 * math.ceil(0.8 * neuron_diameter_px + growth_px) + 3
    return int(side * side)


def region_from_support(
    support: np.ndarray, dims: tuple[int, int], growth: int, max_pixels: int
) -> np.ndarray:
    """Sorted pixel indices of ``support`` dilated by ``growth`` (3x3 steps), capped.

    Beyond ``max_pixels`` the dilation's pixels farthest from the support centroid are
    dropped; the support's own pixels go last (an elongated footprint's ends are its farthest
    pixels: dropping them lost footprint weight, and a caller joining the support back in
    overflowed the slot), the farthest of them first only when the support alone exceeds
    the cap.
    """
    H, W = dims
    support = np.asarray(support, dtype=np.int64)
    if support.size == 0:
        return np.zeros(0, np.int32)
    rows, cols = np.divmod(support, W)
    r0, r1 = max(rows.min() - growth, 0), min(rows.max() + growth + 1, H)
    c0, c1 = max(cols.min() - growth, 0), min(cols.max() + growth + 1, W)
    mask = np.zeros((r1 - r0, c1 - c0), bool)
    mask[rows - r0, cols - c0] = True
    for _ in range(growth):  # 3x3 dilation, separable (rows then columns); ~10x scipy's
        g = mask.copy()
        g[1:] |= mask[:-1]
        g[:-1] |= mask[1:]
        mask = g.copy()
        mask[:, 1:] |= g[:, :-1]
        mask[:, :-1] |= g[:, 1:]
    rr, cc = np.nonzero(mask)
    if rr.size > max_pixels:
        own = np.zeros(mask.shape, bool)
        own[rows - r0, cols - c0] = True
        d2 = (rr + r0 - rows.mean()) ** 2 + (cc + c0 - cols.mean()) ** 2
        order = np.lexsort((d2, ~own[rr, cc]))  # support first, then by distance
        keep = np.sort(order[:max_pixels])
        rr, cc = rr[keep], cc[keep]
    return ((rr + r0) * W + (cc + c0)).astype(np.int32)


def empty_stats(dims: tuple[int, int], n_slots: int, max_region: int) -> FootprintStats:
    """Statistics with ``n_slots`` free slots and no neuron."""
    H, W = dims
    return FootprintStats(
        dims=np.array(dims, np.int64),
        slot_of=np.zeros(0, np.int32),
        used=np.zeros(n_slots, bool),
        sup_idx=np.zeros((n_slots, max_region), np.int32),
        sup_n=np.zeros(n_slots, np.int32),
        a_sup=np.zeros((n_slots, max_region), np.float32),
        cy=np.zeros((n_slots, max_region), np.float32),
        cc=np.zeros((n_slots, n_slots), np.float32),
        cbar=np.zeros(n_slots, np.float32),
        bbox=np.zeros((n_slots, 4), np.int32),
        noise=np.zeros(n_slots, np.float32),
        last_active=np.zeros(n_slots, np.int64),
        birth=np.zeros(n_slots, np.int64),
        scratch=np.zeros(H * W, np.float32),
        pixel_noise=np.ones(H * W, np.float32),
    )


def _grow_slots(fs: FootprintStats, need: int) -> None:
    n_old = fs.used.shape[0]
    n_new = max(need, 2 * n_old, 8)
    M = fs.sup_idx.shape[1]

    def pad(x, shape):
        out = np.zeros(shape, x.dtype)
        out[tuple(slice(0, s) for s in x.shape)] = x
        return out

    fs.used = pad(fs.used, (n_new,))
    fs.sup_idx = pad(fs.sup_idx, (n_new, M))
    fs.sup_n = pad(fs.sup_n, (n_new,))
    fs.a_sup = pad(fs.a_sup, (n_new, M))
    fs.cy = pad(fs.cy, (n_new, M))
    fs.cc = pad(fs.cc, (n_new, n_new))
    fs.cbar = pad(fs.cbar, (n_new,))
    fs.bbox = pad(fs.bbox, (n_new, 4))
    fs.noise = pad(fs.noise, (n_new,))
    fs.last_active = pad(fs.last_active, (n_new,))
    fs.birth = pad(fs.birth, (n_new,))


def alloc_slot(fs: FootprintStats) -> int:
    """A free slot (the tables grow by doubling when full); its CC row/column is zeroed."""
    free = np.flatnonzero(~fs.used)
    if free.size == 0:
        _grow_slots(fs, fs.used.shape[0] + 1)
        free = np.flatnonzero(~fs.used)
    s = int(free[0])
    fs.used[s] = True
    fs.cc[s, :] = 0.0
    fs.cc[:, s] = 0.0
    fs.cbar[s] = 0.0
    fs.sup_n[s] = 0
    return s


def set_region(fs: FootprintStats, s: int, pix: np.ndarray, a: np.ndarray, cy: np.ndarray):
    """Write slot ``s``: region pixels (sorted int32), footprint and CY on them."""
    n = pix.shape[0]
    W = int(fs.dims[1])
    fs.sup_n[s] = n
    fs.sup_idx[s, :n] = pix
    fs.a_sup[s, :n] = a
    fs.cy[s, :n] = cy
    fs.a_sup[s, n:] = 0.0
    fs.cy[s, n:] = 0.0
    if n:
        rows, cols = np.divmod(pix, W)
        fs.bbox[s] = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    else:
        fs.bbox[s] = 0


def footprint_column(fs: FootprintStats, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices, values) of the nonzeros of neuron k's footprint."""
    return footprint_column_slot(fs, int(fs.slot_of[k]))


def footprint_column_slot(fs: FootprintStats, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices, values) of the nonzeros of the footprint in slot s."""
    n = fs.sup_n[s]
    vals = fs.a_sup[s, :n]
    nz = vals > 0
    return fs.sup_idx[s, :n][nz].astype(np.int64), vals[nz].copy()


def neighbours(fs: FootprintStats, k: int | None, box: np.ndarray | None = None) -> np.ndarray:
    """Model indices whose region bounding box meets neuron k's (or ``box``), k included."""
    q = fs.bbox[fs.slot_of[k]] if box is None else np.asarray(box, np.int32)
    out = np.empty(fs.slot_of.shape[0], np.int64)
    n = kst.bbox_hits(fs.bbox, fs.slot_of, q, out)
    return out[:n]


def stats_from_footprints(
    A: scipy.sparse.csc_array,
    C: np.ndarray,
    YB: np.ndarray | None,
    dims: tuple[int, int],
    growth: int,
    max_region: int,
    noise: np.ndarray,
    t0: int,
    pixel_noise: np.ndarray | None = None,
) -> FootprintStats:
    """Initial statistics from footprints A, traces C (K, T) and ``YB = Y - B`` (T, n_pixels).

    With ``YB=None`` CY is set to its HALS fixed point ``A CC`` (the statistics then agree
    with A until data arrive).
    """
    A = scipy.sparse.csc_array(A, dtype=np.float32)
    K = A.shape[1]
    T = C.shape[1]
    fs = empty_stats(dims, K + max(16, K // 4), max_region)  # headroom: births rarely regrow
    fs.slot_of = np.arange(K, dtype=np.int32)
    fs.used[:K] = True
    C = np.asarray(C, np.float32)
    fs.cc[:K, :K] = C @ C.T / T
    fs.cbar[:K] = C.mean(axis=1)
    fs.noise[:K] = noise
    fs.last_active[:K] = t0
    fs.birth[:K] = -(2**40)  # initial neurons count as established
    fs.n_eff = float(T)
    if pixel_noise is not None:
        fs.pixel_noise[:] = np.maximum(np.asarray(pixel_noise, np.float32).ravel(), 1e-6)
    for k in range(K):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        supp, vals = A.indices[lo:hi], A.data[lo:hi]
        pix = region_from_support(supp[vals > 0], dims, growth, max_region)
        a = np.zeros(pix.shape[0], np.float32)
        pos = np.searchsorted(pix, supp)
        ok = (pos < pix.size) & (pix[np.minimum(pos, pix.size - 1)] == supp)
        a[pos[ok]] = vals[ok]
        cy = (C[k] @ YB[:, pix]) / T if YB is not None else np.zeros_like(a)
        set_region(fs, k, pix, a, cy)
    if YB is None:
        out = np.zeros(max_region, np.float32)
        for k in range(K):
            n = fs.sup_n[k]
            kst.predict_cy(
                k, fs.sup_idx[k, :n], fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cc,
                neighbours(fs, k), fs.scratch, out,
            )  # fmt: skip
            fs.cy[k, :n] = out[:n]
    return fs


def ac_rows(fs: FootprintStats, pix: np.ndarray, nbrs: np.ndarray, cbuf: np.ndarray):
    """``(A c_t)[pix]`` for every buffer frame: (T, len(pix)) from neighbours' footprints."""
    out = np.zeros((cbuf.shape[1], pix.shape[0]), np.float32)
    for j in nbrs:
        s = fs.slot_of[j]
        n = fs.sup_n[s]
        ridx = fs.sup_idx[s, :n]
        pos = np.searchsorted(ridx, pix)
        ok = (pos < n) & (ridx[np.minimum(pos, max(n - 1, 0))] == pix)
        if not ok.any():
            continue
        vals = np.zeros(pix.shape[0], np.float32)
        vals[ok] = fs.a_sup[s, pos[ok]]
        out += np.outer(cbuf[j], vals)
    return out


def refresh_footprint(fs: FootprintStats, k: int, growth: int, buffer, young=True) -> bool:
    """HALS-refresh neuron k in place and re-derive its region (growth). Returns False when
    the footprint collapsed to zero (the caller removes the neuron).

    A result with cosine < 0.7 to the current footprint is refused (a jump driven by bad
    statistics, not a refinement); for an established (not ``young``) neuron a result with
    cosine < 0.95 is only followed by a damped step (30 %), so noise or background leaking
    into the statistics cannot drag a good footprint away, while steady evidence still moves it.

    ``buffer`` is ``(residual (T, n_pixels), c (K, T), ok (T,) bool)`` of the recent frames,
    used to seed CY on pixels that join the region.
    """
    s = int(fs.slot_of[k])
    n = int(fs.sup_n[s])
    if n == 0:  # no pixel left in its region: nothing to measure it on (the caller removes it)
        return False
    nbrs = neighbours(fs, k)
    out = np.zeros(fs.sup_idx.shape[1], np.float32)
    kst.hals_neuron(
        k, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cy, fs.cc, nbrs, fs.scratch, out
    )
    a = out[:n]
    peak = float(a.max()) if n else 0.0
    old_pix = fs.sup_idx[s, :n].copy()
    sd = fs.pixel_noise[old_pix] / math.sqrt(max(fs.n_eff * float(fs.cc[s, s]), 1e-12))
    if peak <= 0.0 and float(np.median(sd)) < 0.1 * float(fs.a_sup[s, :n].max()):
        fs.a_sup[s, :n] = 0.0  # well measured and explained by the others: collapsed
        return False
    a[(a < _REL_THRESHOLD * peak) | (a < _NOISE_Z * sd)] = 0.0
    if fs.max_support > 0 and np.count_nonzero(a) > fs.max_support:
        a[a < np.partition(a, n - fs.max_support)[n - fs.max_support]] = 0.0  # keep the largest
    if not a.any():
        fs.n_refused += 1  # too little activity to measure the footprint: keep it
        return True
    a_prev = fs.a_sup[s, :n]
    same_support = np.array_equal(a > 0, a_prev > 0)
    if not same_support:
        a[~_main_component(old_pix, a, int(fs.dims[1]))] = 0.0
    cos = float(a @ a_prev) / math.sqrt(max(float(a @ a) * float(a_prev @ a_prev), 1e-30))
    if cos < _TRUST_COS:
        fs.n_refused += 1  # a jump, not a refinement: keep the footprint (stats keep moving)
        return True
    if not young and cos < _DAMP_COS:  # established cells move by damped steps
        a = (a_prev + _DAMP_STEP * (a - a_prev)).astype(np.float32)
        same_support = np.array_equal(a > 0, a_prev > 0)
    old_cy = fs.cy[s, :n].copy()
    if same_support:  # region unchanged: only the margin is re-estimated
        margin = a == 0
        if margin.any():
            seed, informed = _seed_cy(fs, k, old_pix[margin], nbrs, buffer)
            fs.cy[s, :n][margin] = np.where(informed, seed, old_cy[margin])
        fs.a_sup[s, :n] = a
        return True
    new_pix = region_from_support(old_pix[a > 0], tuple(fs.dims), growth, fs.sup_idx.shape[1])
    if fs.max_radius > 0:
        W = int(fs.dims[1])
        r, c = np.divmod(old_pix, W)
        cr, cc = float((r * a).sum() / a.sum()), float((c * a).sum() / a.sum())
        nr, nc = np.divmod(new_pix, W)
        new_pix = new_pix[(nr - cr) ** 2 + (nc - cc) ** 2 <= fs.max_radius**2]
        new_pix = np.union1d(new_pix, old_pix[a > 0]).astype(np.int32)
    pos = np.searchsorted(old_pix, new_pix)
    known = (pos < n) & (old_pix[np.minimum(pos, n - 1)] == new_pix)
    a_new = np.zeros(new_pix.shape[0], np.float32)
    cy_new = np.zeros(new_pix.shape[0], np.float32)
    a_new[known] = a[pos[known]]
    cy_new[known] = old_cy[pos[known]]
    # margin (region pixels outside the support): CY there barely moves under slow forgetting,
    # so it is re-estimated from the buffer at each refresh (a new pixel takes the estimate, a
    # known one the larger of both); this is what lets a footprint grow.
    margin = a_new == 0
    if margin.any():
        seed, informed = _seed_cy(fs, k, new_pix[margin], nbrs, buffer)
        cy_new[margin] = np.where(known[margin] & ~informed, cy_new[margin], seed)
    set_region(fs, s, new_pix, a_new, cy_new)
    return True


_REL_THRESHOLD = 0.05  # footprint values below this fraction of the peak are dropped
_NOISE_Z = 3.0  # ... and below this many standard errors of their estimate
_SEED_Z = 4.0  # a buffer estimate of a margin pixel is used above this many standard errors
_SEED_MIN_FRAMES = 20  # ... and only from a buffer of at least this many frames
_TRUST_COS = 0.7  # a refresh whose footprint has a lower cosine with the old one is refused
_DAMP_COS = 0.95  # below this cosine an established footprint moves by a damped step
_DAMP_STEP = 0.3


def _main_component(pix: np.ndarray, a: np.ndarray, W: int) -> np.ndarray:
    """Mask of the 8-connected component of ``a > 0`` with the largest sum (drops islands)."""
    keep = np.zeros(pix.shape[0], bool)
    kst.main_component(pix, np.ascontiguousarray(a, np.float32), W, keep)
    return keep


def _seed_cy(fs: FootprintStats, k: int, pix: np.ndarray, nbrs: np.ndarray, buffer):
    """CY of neuron k on margin pixels (where a_k = 0), and where the buffer was informative.

    ``CY[k, p] = a_k[p] CC_kk + sum_{j != k} A_j[p] CC_jk`` at the fixed point; the second term
    is the model prediction, and a_k[p] is estimated by regressing the buffer residual on c_k:
    ``sum_t c_k r_t[p] / sum_t c_k^2``, kept only where it exceeds ``_SEED_Z`` standard errors.
    """
    out = np.zeros(pix.shape[0], np.float32)
    informed = np.zeros(pix.shape[0], bool)
    kst.predict_cy(k, pix, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cc, nbrs, fs.scratch, out)
    if buffer is not None and int(buffer[2].sum()) >= _SEED_MIN_FRAMES:
        resid, cbuf, ok = buffer
        ck = cbuf[k, ok]
        cc = float(ck @ ck)
        s = fs.slot_of[k]
        n = fs.sup_n[s]
        peak = float(fs.a_sup[s, :n].max()) if n else 0.0
        if cc > 0 and peak > 0:
            a_hat = np.empty(pix.shape[0], np.float32)
            kst.buffer_regression(
                np.ascontiguousarray(cbuf[k], np.float32), resid, ok, pix.astype(np.int32), a_hat
            )
            a_hat /= cc
            informed = a_hat > _SEED_Z * fs.pixel_noise[pix] / math.sqrt(cc)
            a_hat = np.minimum(a_hat, peak)  # a margin pixel never exceeds the current peak
            out[informed] += a_hat[informed].astype(np.float32) * fs.cc[s, s]
    return out, informed
