"""Footprint size from a Gaussian fit, shared by the initialisation and the online search.

Symbols: a footprint values on a box of pixels, d2 their squared distances to its centroid,
d the expected neuron diameter (px). A Gaussian of sigma d / 4 fills the disk of diameter d,
so the *size ratio* ``(s / (d / 4))^2`` of the best-fitting Gaussian's sigma s is 1 for the
expected neuron. On the held-out 256² simulations (BENCHMARKS.md "Detection") cells measured
0.6-1.6 (90 % below 1.6) and out-of-focus neuropil fitted as components 2-5.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
from scipy import ndimage

SCALES = np.geomspace(0.25, 4.0, 25)  # Gaussian sigmas tried, x d / 4
BOX = 0.9  # the box around the centroid: +-BOX x d


def gaussian_scale(a: np.ndarray, d2: np.ndarray, d: float) -> float:
    """Sigma of the isotropic Gaussian plus offset that best fits the footprint.

    Least squares over a grid of sigmas (:data:`SCALES` x d / 4), amplitude and offset solved
    for each: a size that the positive noise of the box's many pixels does not inflate, as it
    does ``(sum a)^2 / sum a^2``.

    Parameters
    ----------
    a : ndarray of shape (n,)
        Footprint values on the box's pixels.
    d2 : ndarray of shape (n,)
        Squared distance of each pixel to the footprint's centre.
    d : float
        Expected neuron diameter (px).

    Returns
    -------
    float
        The best sigma (px); inf when no positive Gaussian fits.

    Examples
    --------
    >>> rr, cc = np.mgrid[-10:11, -10:11]
    >>> d2 = (rr**2 + cc**2).ravel().astype(float)
    >>> round(gaussian_scale(np.exp(-d2 / (2 * 3.0**2)), d2, 12.0), 1)
    3.0
    """
    best, best_s = math.inf, math.inf
    aa = float(a @ a)
    n = float(a.size)
    sa = float(a.sum())
    for f in SCALES:
        s = f * d / 4
        g = np.exp(-d2 / (2 * s * s))
        gg, sg, ga = float(g @ g), float(g.sum()), float(g @ a)
        det = gg * n - sg * sg
        if det <= 1e-12:
            continue
        amp = (ga * n - sg * sa) / det
        off = (gg * sa - sg * ga) / det
        if amp <= 0:
            continue
        sse = aa - amp * ga - off * sa  # residual sum of squares at the optimum
        if sse < best:
            best, best_s = sse, s
    return float(best_s)


def size_ratios(A, dims: tuple[int, int], d: float) -> np.ndarray:
    """Size ratio ``(s / (d / 4))^2`` of every column of ``A`` (n_pixels, K), s fitted by
    :func:`gaussian_scale` on the box of +-0.9 d around the column's centroid (inf for an
    empty column)."""
    A = scipy.sparse.csc_array(A)
    H, W = dims
    hs = int(math.ceil(BOX * d))
    out = np.full(A.shape[1], np.inf)
    for k in range(A.shape[1]):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        idx, val = A.indices[lo:hi], A.data[lo:hi].astype(np.float64)
        tot = float(val.sum())
        if tot <= 0:
            continue
        rows, cols = np.divmod(idx, W)
        cr, cc = float(rows @ val) / tot, float(cols @ val) / tot
        r0, c0 = max(int(round(cr)) - hs, 0), max(int(round(cc)) - hs, 0)
        r1, c1 = min(int(round(cr)) + hs + 1, H), min(int(round(cc)) + hs + 1, W)
        box = np.zeros((r1 - r0, c1 - c0))
        inside = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
        box[rows[inside] - r0, cols[inside] - c0] = val[inside]
        rr, cc_ = np.mgrid[r0:r1, c0:c1]
        d2 = ((rr - cr) ** 2 + (cc_ - cc) ** 2).ravel()
        out[k] = (gaussian_scale(box.ravel(), d2, d) / (d / 4)) ** 2
    return out


# ---- sharpness: the share of a footprint's energy at the cell's scale ----------------------
SHARP_REFERENCE = 30  # the strongest components whose median sharpness is the reference


def sharpness_of(box: np.ndarray, d: float) -> float:
    """Share of a footprint's L2 norm in the cell band: ``||G(d/8) a - G(d/2) a|| / ||a||``.

    A difference of Gaussians (sigmas d / 8 and d / 2, zero outside the box) keeps the
    structure of a cell's size and drops what is broader. For an isotropic Gaussian footprint
    of sigma s (d / 4 for the expected neuron) it is 0.59 / 0.63 / 0.60 / 0.56 / 0.52 / 0.48 /
    0.37 at s = 0.5 / 0.67 / 1 / 1.17 / 1.33 / 1.5 / 2 x d / 4: nearly flat over the sizes of
    cells, falling for the blurred footprints of out-of-focus neuropil. Give a footprint cut
    by the frame's edge with its mirror image there (:func:`sharpness_box`); zero-padded, a
    cell centred on the edge scores 7 % less than inside and a cut blur much more than whole.

    Parameters
    ----------
    box : ndarray of shape (h, w)
        The footprint on a box around it, padded by >= d on every side where the frame allows.
    d : float
        Expected neuron diameter (px).

    Returns
    -------
    float
        In [0, 1); 0 for an all-zero box.

    Examples
    --------
    >>> rr, cc = np.mgrid[-30:31, -30:31]
    >>> round(sharpness_of(np.exp(-(rr**2 + cc**2) / (2 * 3.0**2)), 12.0), 2)
    0.6
    """
    a = np.asarray(box, np.float64)
    norm = float(np.linalg.norm(a))
    if norm == 0.0:
        return 0.0
    band = ndimage.gaussian_filter(a, d / 8, mode="constant")
    band -= ndimage.gaussian_filter(a, d / 2, mode="constant")
    return float(np.linalg.norm(band)) / norm


def column_box(idx: np.ndarray, val: np.ndarray, dims: tuple[int, int], pad: float) -> np.ndarray:
    """A footprint's pixels (flat indices, values) on the box spanning them plus ``pad`` px
    on each side (clipped to the frame)."""
    H, W = dims
    rows, cols = np.divmod(np.asarray(idx, np.int64), W)
    p = int(math.ceil(pad))
    r0, c0 = max(int(rows.min()) - p, 0), max(int(cols.min()) - p, 0)
    r1, c1 = min(int(rows.max()) + p + 1, H), min(int(cols.max()) + p + 1, W)
    box = np.zeros((r1 - r0, c1 - c0))
    box[rows - r0, cols - c0] = val
    return box


def mirror_at_frame(box: np.ndarray, cut: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """The box with its mirror image appended on every side the frame's edge cut it
    (``cut`` = top, bottom, left, right): the unseen part of a footprint cut by the frame,
    modelled as the seen part reflected. Without it the cut is a step to zero that the cell
    band takes for structure, and a broad out-of-focus blob cut by the frame scores as sharp
    as a cell; reflected, a cell centred on the edge is a whole cell again and the blob a
    whole blob."""
    top, bottom, left, right = cut
    rows = [box[::-1]] * top + [box] + [box[::-1]] * bottom
    box = np.concatenate(rows, axis=0) if len(rows) > 1 else box
    cols = [box[:, ::-1]] * left + [box] + [box[:, ::-1]] * right
    return np.concatenate(cols, axis=1) if len(cols) > 1 else box


def sharpness_box(idx: np.ndarray, val: np.ndarray, dims: tuple[int, int], d: float):
    """A footprint's box for :func:`sharpness_of`: :func:`column_box` padded by ``d``, then
    :func:`mirror_at_frame` on the sides where the footprint reaches the frame's edge."""
    H, W = dims
    rows, cols = np.divmod(np.asarray(idx, np.int64), W)
    cut = (rows.min() == 0, rows.max() == H - 1, cols.min() == 0, cols.max() == W - 1)
    return mirror_at_frame(column_box(idx, val, dims, d), tuple(bool(c) for c in cut))


def sharpness(A, dims: tuple[int, int], d: float) -> np.ndarray:
    """:func:`sharpness_of` every column of ``A`` (n_pixels, K) on its :func:`sharpness_box`;
    0 for an empty column."""
    A = scipy.sparse.csc_array(A)
    out = np.zeros(A.shape[1])
    for k in range(A.shape[1]):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        if hi > lo:
            box = sharpness_box(A.indices[lo:hi], A.data[lo:hi].astype(np.float64), dims, d)
            out[k] = sharpness_of(box, d)
    return out


def sharpness_limit(sharp: np.ndarray, strength: np.ndarray, factor: float) -> float:
    """``factor`` x the median sharpness of the :data:`SHARP_REFERENCE` strongest components
    (by ``strength``, e.g. their transient z-score): the movie's own cells set the scale, so
    the test follows cells larger or smaller than declared. 0 when disabled or empty."""
    sharp = np.asarray(sharp, np.float64)
    if factor <= 0 or sharp.size == 0:
        return 0.0
    top = np.argsort(-np.asarray(strength, np.float64), kind="stable")[:SHARP_REFERENCE]
    return float(factor * np.median(sharp[top]))
