"""Out-of-focus test: raw-to-filtered amplitude ratio (``kappa``).

The mean-centred Gaussian filter of the seeding attenuates a neuron of the expected size
(Gaussian of sigma d / 4) by ``filter_response(kernel, d / 4)`` (about 0.1 at d = 13) and a broad
out-of-focus cell (sigma 9-15 px) 4-7x more. The ratio ``kappa`` of a signal's raw amplitude to
its filtered amplitude is therefore about ``1 / filter_response`` for neurons and several times
more for out-of-focus cells; seeds and fitted components above ``init.out_of_focus_ratio`` x
that are rejected.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def filter_response(kernel: np.ndarray, sigma: float, ssub: int = 1) -> float:
    """Peak of the filtered image of a unit-peak Gaussian of ``sigma`` (full-resolution) pixels,
    block-averaged by ``ssub`` before filtering, relative to the averaged Gaussian's peak."""
    r = kernel.shape[0] // 2
    half = (r + 1) * ssub + int(4 * sigma)
    yy, xx = np.mgrid[-half : half + ssub, -half : half + ssub] + 0.5 * (ssub - 1)
    g = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    n = g.shape[0] // ssub
    g = g[: n * ssub, : n * ssub].reshape(n, ssub, n, ssub).mean(axis=(1, 3))
    c = int(np.argmax(g.max(axis=1)))
    c2 = int(np.argmax(g[c]))
    win = g[c - r : c + r + 1, c2 - r : c2 + r + 1]
    return float((kernel * win).sum() / g[c, c2])


def own_peaks(A) -> np.ndarray:
    """Largest pixel that each component owns: the maximum of ``A_k`` over the pixels where it
    carries at least as much as all other components together (its footprint's peak when no
    pixel qualifies).

    For a component alone it is its footprint's peak. A fitted footprint can carry its
    largest pixel on a neighbour's core (HALS's split of the shared pixels); measured there,
    the ratio is the neighbour's residual over a filtered value near zero (kappa 109 for a
    PNR 6.6 cell of the held-out bursty movie, 6.6 px from its neighbour, against a limit of
    25: the cell was pruned and never found again online; 24.5 at the largest pixel it owns).
    Only such components move: measured instead where a component is most itself (its
    footprint weighted by its share), broad flat neuropil components were measured on an
    arbitrary pixel of their flank and two were kept on held-out heavy_neuropil.

    Parameters
    ----------
    A : sparse (n_pixels, K), non-negative

    Returns
    -------
    ndarray of shape (K,), int64: flat pixel indices
    """
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    total = np.asarray(A.sum(axis=1)).ravel()
    peaks = np.zeros(K, np.int64)
    for k in range(K):
        idx = A.indices[A.indptr[k] : A.indptr[k + 1]]
        if idx.size == 0:
            continue
        a = A.data[A.indptr[k] : A.indptr[k + 1]].astype(np.float64)
        owned = a >= total[idx] - a
        peaks[k] = idx[np.argmax(np.where(owned, a, -np.inf))] if owned.any() else idx[np.argmax(a)]
    return peaks


def component_ratios(Y, A, C, full, kernel) -> np.ndarray:
    """Raw-to-filtered amplitude ratio of each component at its own peak (:func:`own_peaks`).

    ``kappa_k = cov(r, c_k) / cov(f, c_k)`` with r the frames and f the filtered frames at
    the component's own peak, both without the other components. A neuron of the expected size
    gives about ``1 / (kernel * gaussian(d / 4))(0)``; broad out-of-focus cells give several
    times more (the mean-centred filter removes them). Single-pixel estimates are noisy for
    weak neurons under a strong background (even negative), so only the upper side is used.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32
    A : sparse (n_pixels, K)
    C : ndarray of shape (K, T)
        Traces above their baselines.
    full : ndarray of shape (K, T)
        Traces with their baselines (what A multiplies in the data).
    kernel : ndarray (k, k)
        The seeding filter.

    Returns
    -------
    ndarray of shape (K,)
    """
    K = C.shape[0]
    if K == 0:
        return np.zeros(0)
    T, H, W = Y.shape
    kr = kernel.shape[0] // 2
    A = scipy.sparse.csc_array(A)
    peaks = own_peaks(A)
    pr, pc = np.divmod(peaks, W)
    # kernel windows around the peaks as rows of a sparse (K, n_pixels) matrix
    rows, cols, vals, f_own = [], [], [], np.empty((K, T))
    for k in range(K):
        r0, r1 = max(0, pr[k] - kr), min(H, pr[k] + kr + 1)
        c0, c1 = max(0, pc[k] - kr), min(W, pc[k] + kr + 1)
        kw = kernel[r0 - pr[k] + kr : r1 - pr[k] + kr, c0 - pc[k] + kr : c1 - pc[k] + kr]
        # borders: the kernel is cut at the image edge (no replication)
        f_own[k] = np.tensordot(Y[:, r0:r1, c0:c1], kw, axes=([1, 2], [0, 1]))
        pix = (np.arange(r0, r1)[:, None] * W + np.arange(c0, c1)[None]).ravel()
        rows.append(np.full(pix.size, k))
        cols.append(pix)
        vals.append(kw.ravel())
    Kmat = scipy.sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(K, H * W),
    )
    AF = (Kmat @ A).toarray()  # filtered footprints of all components at each peak
    AP = A[peaks].toarray()  # footprints of all components at each peak
    np.fill_diagonal(AF, 0.0)
    np.fill_diagonal(AP, 0.0)
    f = f_own - AF @ full
    r = Y.reshape(T, -1)[:, peaks].T - AP @ full
    c = C - C.mean(axis=1, keepdims=True)
    num = np.einsum("kt,kt->k", r, c)
    den = np.einsum("kt,kt->k", f, c)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), -np.inf)
