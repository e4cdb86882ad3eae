"""Greedy corr x PNR seeding of neurons (CNMF-E ``init_neurons_corr_pnr``).

Symbols: ``filtered`` the mean-subtracted, mean-centred-Gaussian-filtered movie (T, H, W);
``raw`` the data the footprints are regressed on (T, H, W); ``sn`` the per-pixel noise of the
filtered movie; ``cn`` local correlation image, ``pnr`` peak-to-noise image, ``v = cn * pnr``.

Per round, seeds are the local maxima of the median-blurred ``v`` (:func:`seed_statistic`,
over a :func:`seed_window` square) above one ``threshold``, calibrated on the movie's noise
(:mod:`.noise_null`: the level noise peaks reach ``detection.false_seeds_per_fov`` times per
field of view), taken in descending order. For each seed (``extract_ac``): pixels of a
``+-gSiz`` box whose filtered trace correlates with the seed's above 0.9 give the trace ``ci``
(their mean), pixels correlating below 0.3 give a local background trace (their median raw
trace), and the footprint ``ai`` is the coefficient of ``ci`` when regressing each raw pixel on
``[ci, background, 1]``; it is thresholded, cut to the connected component holding the seed
and kept if it has at least ``min_pixel`` pixels. ``ai ci`` is then subtracted from ``raw`` and
``filter(ai) ci`` from ``filtered``, and ``pnr``, ``cn`` and ``v`` are recomputed where they
changed; the area where ``ai > max(ai) / 2`` is excluded from further seeds. The per-seed work
is compiled (``_kernels/seeding.py``, float64 sums); :func:`extract_ac` is its NumPy version,
used for the few reference seeds (:func:`reference_seeds`) and as the tests' oracle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from online_cnmfe.model._kernels.seeding import (
    FOOTPRINT_REL_THRESHOLD,
    MAX_CORR_BG,
    MIN_CORR_NEURON,
    seed_round,
)
from online_cnmfe.model.initialization.layout import pixel_major

logger = logging.getLogger(__name__)

MAX_EMPTY_ROUNDS = 3  # rounds without a new neuron before the search stops
REFERENCE_SEEDS = 30  # strongest seeds whose out-of-focus ratio and size calibrate the tests


@dataclass(slots=True)
class SeedResult:
    """Seeded neurons.

    Attributes
    ----------
    footprints : list of (rows slice, cols slice, ndarray (h, w) float32)
        Footprint of each neuron inside its box.
    traces : ndarray of shape (K, T), float32
        Seed traces (filtered scale).
    centers : ndarray of shape (K, 2), int
    """

    footprints: list
    traces: np.ndarray
    centers: np.ndarray

    @property
    def n_components(self) -> int:
        return len(self.footprints)

    def sparse_footprints(self, dims: tuple[int, int]) -> scipy.sparse.csc_array:
        """Footprints as a (n_pixels, K) float32 csc array (row-major pixels, zeros dropped),
        built from the boxes: the same matrix as ``csc_array(dense_footprints(dims))`` without
        the dense (n_pixels, K) intermediate (740 MB at 608x608 with 500 neurons)."""
        indices, data, indptr = [], [], [0]
        for rs, cs, a in self.footprints:
            rr, cc = np.nonzero(a)  # row-major order: sorted pixel indices
            indices.append(((rr + rs.start) * dims[1] + cc + cs.start).astype(np.int64))
            data.append(a[rr, cc].astype(np.float32))
            indptr.append(indptr[-1] + rr.size)
        n = len(self.footprints)
        return scipy.sparse.csc_array(
            (
                np.concatenate(data) if n else np.zeros(0, np.float32),
                np.concatenate(indices) if n else np.zeros(0, np.int64),
                np.asarray(indptr, np.int64),
            ),
            shape=(dims[0] * dims[1], n),
        )

    def dense_footprints(self, dims: tuple[int, int]) -> np.ndarray:
        """Footprints as a dense (n_pixels, K) float32 array (row-major pixels)."""
        out = np.zeros((dims[0] * dims[1], len(self.footprints)), np.float32)
        for k, (rs, cs, a) in enumerate(self.footprints):
            img = np.zeros(dims, np.float32)
            img[rs, cs] = a
            out[:, k] = img.ravel()
        return out


def seed_window(gsiz: int) -> int:
    """Side of the square over which a seed must be the local maximum of the statistic."""
    return max(1, int(round(gsiz / 4)))


def seed_statistic(v: np.ndarray, gsiz: int) -> np.ndarray:
    """The image whose local maxima are seeds: ``v = corr x PNR`` after a 3x3 median (which
    removes isolated pixels; skipped for neurons under 8 px, whom it would erase), plus
    ``v / 100`` to break ties. The noise null (:mod:`.noise_null`) uses the same function."""
    vb = scipy.ndimage.median_filter(v, size=3, mode="nearest") if gsiz >= 8 else v.copy()
    return vb + v / 100.0


def _box(r: int, c: int, half: int, dims: tuple[int, int]) -> tuple[slice, slice]:
    return (
        slice(max(0, r - half), min(dims[0], r + half + 1)),
        slice(max(0, c - half), min(dims[1], c + half + 1)),
    )


def _column_median(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)`` of a finite 2-D array, by a sort along axis 0 (several times
    faster than the partition NumPy does along a strided axis; same values: the middle
    element, or the mean of the two middle ones computed in x's dtype)."""
    s = np.sort(x, axis=0)
    m = s.shape[0]
    if m % 2:
        return s[m // 2]
    return (s[m // 2 - 1] + s[m // 2]) / s.dtype.type(2)


def seed_trace(fbox: np.ndarray, ctr: int):
    """The seed's trace: mean filtered trace of the box pixels correlated > MIN_CORR_NEURON
    with the seed pixel ``ctr`` (fbox (n, T)); returns (trace, correlations)."""
    norms = np.sqrt(np.einsum("ij,ij->i", fbox, fbox)) + 1e-12
    corr = (fbox @ fbox[ctr]) / (norms * norms[ctr])
    neuron = corr > MIN_CORR_NEURON
    neuron[ctr] = True
    return fbox[neuron].mean(axis=0), corr


def seed_kappa(fbox: np.ndarray, rbox: np.ndarray, ctr: int, ci: np.ndarray) -> float:
    """Raw-to-filtered amplitude ratio of the seed pixel's signal along its trace ``ci``."""
    cc0 = ci - ci.mean()
    return float(rbox[ctr] @ cc0) / max(float(fbox[ctr] @ cc0), 1e-12)


@dataclass(frozen=True, slots=True)
class SeedReference:
    """How the strongest seeds of a recording look (:func:`reference_seeds`).

    Attributes
    ----------
    kappa : float
        Median raw-to-filtered ratio (nan without seeds).
    halfmax_area : float
        Median number of footprint pixels at or above half the maximum (nan without seeds).
    n : int
        Seeds measured.
    """

    kappa: float
    halfmax_area: float
    n: int


def reference_seeds(
    filtered_pm, raw_pm, v, gsiz: int, threshold: float, n_top: int = REFERENCE_SEEDS
) -> SeedReference:
    """Out-of-focus ratio and size of the ``n_top`` strongest seeds, one per neuron-sized box.

    ``filtered_pm`` and ``raw_pm`` are pixel-major (H, W, T) as the greedy search uses them.
    In a background-removed movie the strongest seeds of the statistic are in-focus cells, so
    they say how the cells of *this* recording respond to the filter and how large they are,
    e.g. larger than ``neuron_diameter_px`` after a preprocessing median filter.
    """
    H, W, T = filtered_pm.shape
    vb = seed_statistic(v, gsiz)
    mx = scipy.ndimage.maximum_filter(vb, size=max(3, gsiz), mode="nearest")
    rr, cc = np.nonzero((vb == mx) & (vb >= threshold))
    order = np.argsort(-vb[rr, cc], kind="stable")[:n_top]
    kappas, areas = [], []
    for idx in order:
        r, c = int(rr[idx]), int(cc[idx])
        rs, cs = _box(r, c, gsiz, (H, W))
        h, w = rs.stop - rs.start, cs.stop - cs.start
        fbox = filtered_pm[rs, cs].reshape(-1, T)
        rbox = raw_pm[rs, cs].reshape(-1, T)
        ctr = (r - rs.start) * w + (c - cs.start)
        ai, ci = extract_ac(fbox, rbox, ctr, (h, w), 3)
        if ai is None:
            continue
        kappas.append(seed_kappa(fbox, rbox, ctr, ci))
        areas.append(np.count_nonzero(ai >= 0.5 * ai.max()))
    if not kappas:
        return SeedReference(float("nan"), float("nan"), 0)
    return SeedReference(float(np.median(kappas)), float(np.median(areas)), len(kappas))


def extract_ac(
    fbox: np.ndarray,
    rbox: np.ndarray,
    ctr: int,
    box_shape,
    min_pixel: int,
    max_halfmax_area: float = np.inf,
    max_kappa: float = np.inf,
):
    """Footprint and trace of the neuron at pixel ``ctr`` of a box (CaImAn ``extract_ac``).

    Parameters
    ----------
    fbox, rbox : ndarray of shape (n, T)
        Filtered (mean-subtracted) and raw traces of the box pixels (row-major).
    ctr : int
        Index of the seed pixel in the box.
    box_shape : (h, w)
    min_pixel : int
    max_halfmax_area : float
        Footprints with more pixels above half their maximum are rejected as out-of-focus
        structure (neuropil, background blobs) rather than in-focus neurons.
    max_kappa : float
        Seeds whose raw signal at the seed pixel exceeds ``max_kappa`` times its filtered
        signal are out-of-focus structure (a neuron of the expected size gives about
        ``1 / (kernel * gaussian)(0)``, about 10 at diameter 13).

    Returns
    -------
    ai : ndarray of shape (n,) float32 or None when rejected
    ci : ndarray of shape (T,) float32
    """
    ci, corr = seed_trace(fbox, ctr)
    if not np.any(ci > 0):
        return None, ci
    bg = corr < MAX_CORR_BG
    T = fbox.shape[1]
    cols = [ci, np.ones(T, np.float32)]
    bg_idx = np.flatnonzero(bg)
    if bg_idx.size > 10:
        # median of (at most ~64 evenly spread) uncorrelated pixels: the local background
        bg_idx = bg_idx[:: max(1, bg_idx.size // 64)]
        cols.insert(1, _column_median(rbox[bg_idx]))
    X = np.stack(cols, axis=1).astype(np.float64)
    G = X.T @ X
    G += 1e-9 * np.trace(G) * np.eye(G.shape[0])
    coef = np.linalg.solve(G, (rbox @ X.astype(np.float32)).T.astype(np.float64))
    ai = np.maximum(coef[0], 0).reshape(box_shape)
    if ai.max() <= 0:
        return None, ci
    if max_kappa < np.inf:
        # out-of-focus test: raw-to-filtered amplitude ratio of the seed pixel's signal; the
        # mean-centred filter attenuates broad (out-of-focus) sources much more than neurons
        if seed_kappa(fbox, rbox, ctr, ci) > max_kappa:
            return None, ci
    ai[ai < FOOTPRINT_REL_THRESHOLD * ai.max()] = 0
    labels, _ = scipy.ndimage.label(ai > 0, structure=np.ones((3, 3)))
    lab = labels.ravel()[ctr]
    if lab == 0:
        return None, ci
    ai[labels != lab] = 0
    if (
        np.count_nonzero(ai) < min_pixel
        or np.count_nonzero(ai >= 0.5 * ai.max()) > max_halfmax_area
    ):
        return None, ci
    return ai.ravel().astype(np.float32), ci.astype(np.float32)


def seed_neurons(
    filtered,
    raw,
    sn,
    cn,
    pnr,
    *,
    gsiz: int,
    threshold: float,
    kernel: np.ndarray,
    max_neurons: int,
    thresh: float = 2.0,
    min_pixel: int = 3,
    max_halfmax_area: float = np.inf,
    max_kappa: float = np.inf,
    progress=None,
) -> SeedResult:
    """Greedy corr x PNR seeding; ``cn`` and ``pnr`` are updated in place.

    Parameters
    ----------
    filtered : ndarray of shape (T, H, W), float32
        Mean-subtracted filtered movie (not modified: the search works on a pixel-major copy,
        see :func:`seed_neurons_pixel_major`).
    raw : ndarray of shape (T, H, W), float32
        Data the footprints are regressed on (not modified).
    sn : ndarray of shape (H, W), float32
        Noise of the filtered movie.
    cn, pnr : ndarray of shape (H, W), float32
        Correlation and PNR images (modified: recomputed where neurons were removed).
    gsiz : int
        Neuron diameter in pixels (box half-size).
    threshold : float
        Seeds are local maxima of ``corr x PNR`` (:func:`seed_statistic`) at least this high.
    kernel : ndarray (k, k)
        The spatial filter used for ``filtered``.
    max_neurons : int
    thresh : float
        Correlation-image threshold in units of sn.
    min_pixel : int
    max_halfmax_area, max_kappa : float
        Out-of-focus tests, see :func:`extract_ac`.
    progress : callable(int) or None
        Called with the number of neurons found so far after each round of the search.

    Returns
    -------
    SeedResult
    """
    return seed_neurons_pixel_major(
        pixel_major(filtered), pixel_major(raw), sn, cn, pnr, gsiz=gsiz, threshold=threshold,
        kernel=kernel, max_neurons=max_neurons, thresh=thresh, min_pixel=min_pixel,
        max_halfmax_area=max_halfmax_area, max_kappa=max_kappa, progress=progress,
    )  # fmt: skip


def seed_neurons_pixel_major(
    filtered,
    raw,
    sn,
    cn,
    pnr,
    *,
    gsiz: int,
    threshold: float,
    kernel: np.ndarray,
    max_neurons: int,
    thresh: float = 2.0,
    min_pixel: int = 3,
    max_halfmax_area: float = np.inf,
    max_kappa: float = np.inf,
    progress=None,
) -> SeedResult:
    """:func:`seed_neurons` on pixel-major movies (H, W, T), which it updates in place.

    Every box the search reads or updates is then a few contiguous runs of memory instead of
    one short run per frame (about 10x faster boxes at 608x608). Each round's candidates are
    found here; the seeds are tried, extracted and subtracted by the compiled
    :func:`online_cnmfe.model._kernels.seeding.seed_round` (the GIL released).

    Parameters
    ----------
    filtered : ndarray of shape (H, W, T), float32, C-contiguous
        Mean-subtracted filtered movie, pixel-major (modified: found neurons are subtracted).
    raw : ndarray of shape (H, W, T), float32, C-contiguous
        Data the footprints are regressed on, pixel-major (modified likewise).
    sn, cn, pnr, gsiz, threshold, kernel, max_neurons, thresh, min_pixel, max_halfmax_area, \
max_kappa, progress
        As for :func:`seed_neurons`.

    Returns
    -------
    SeedResult
    """
    H, W, T = filtered.shape
    checks = (("filtered", filtered, (H, W, T)), ("raw", raw, (H, W, T)), ("sn", sn, (H, W)),
              ("cn", cn, (H, W)), ("pnr", pnr, (H, W)))  # fmt: skip
    for name, x, shape in checks:
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.shape != shape:
            raise ValueError(
                f"{name} must be a C-contiguous float32 array of shape {shape}; got "
                f"{x.dtype} {x.shape}"
            )
    min_v = np.float32(threshold)  # v is float32: compared as NumPy compares it
    v = cn * pnr
    v[v < min_v] = 0
    searched = v <= 0
    win = seed_window(gsiz)
    kern = np.ascontiguousarray(kernel, np.float32)
    B = 2 * gsiz + 1
    footprints, traces, centers = [], [], []
    n_empty_rounds = 0
    while len(footprints) < max_neurons:
        # a 3x3 median removes isolated pixels; it would erase neurons only a few pixels wide
        vb = seed_statistic(v, gsiz)
        vb[searched] = 0
        vmax = scipy.ndimage.maximum_filter(vb, size=win, mode="nearest")
        cand = (vb == vmax) & (vb >= min_v) & ~searched
        rr, cc = np.nonzero(cand)
        if len(rr) == 0:
            break
        order = np.argsort(-vb[rr, cc], kind="stable")
        cap = min(len(order), max_neurons - len(footprints))
        boxes = np.zeros((cap, 4), np.int64)
        foot = np.zeros((cap, B, B), np.float32)
        tr = np.zeros((cap, T), np.float32)
        ctr = np.zeros((cap, 2), np.int64)
        n_new = seed_round(
            filtered, raw, sn, cn, pnr, v, searched, rr[order].astype(np.int64),
            cc[order].astype(np.int64), kern, int(gsiz), int(win), min_v, float(thresh),
            int(min_pixel), float(max_halfmax_area), float(max_kappa), boxes, foot, tr, ctr,
        )  # fmt: skip
        for k in range(n_new):
            r0, r1, c0, c1 = (int(x) for x in boxes[k])
            footprints.append((slice(r0, r1), slice(c0, c1), foot[k, : r1 - r0, : c1 - c0].copy()))
            traces.append(tr[k])
            centers.append((int(ctr[k, 0]), int(ctr[k, 1])))
        if progress is not None and n_new:
            progress(len(footprints))
        if n_new == 0:
            n_empty_rounds += 1
            if n_empty_rounds >= MAX_EMPTY_ROUNDS:
                break
    tr = np.array(traces, np.float32).reshape(len(traces), T)
    logger.debug("seeding found %d neurons", len(footprints))
    return SeedResult(
        footprints=footprints, traces=tr, centers=np.array(centers, int).reshape(-1, 2)
    )
