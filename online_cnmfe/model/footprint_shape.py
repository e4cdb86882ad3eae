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
