"""HALS kernels: footprints on sufficient statistics, traces by block-coordinate descent.

Footprints (Cichocki HALS, as CaImAn ``HALS4shapes``) on a sparse *pattern*: every neuron k has
an allowed pixel set; the pattern is stored pixel-major (CSR: ``row_ptr``, ``row_nrn``, one
value slot per (pixel, neuron) entry) and neuron-major (``col_ptr``, ``col_pix``, ``col_pos``
= the CSR slot of each entry). For each neuron k and allowed pixel p::

    a[p, k] <- max(0, a[p, k] + (CY[k, p] - sum_j CC[k, j] a[p, j]) / CC[k, k])

Traces (CaImAn ``HALS4activity``)::

    c_k <- max(0, c_k + (AtY_k - AtA[k] C) / AtA[k, k])
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def hals_footprints_pattern(
    row_ptr, row_nrn, col_ptr, col_pix, col_pos, a, cy, CC, comps, n_sweeps
):
    """HALS sweeps over the neurons ``comps`` on a pattern; ``a`` (nnz,) updated in place.

    row_ptr (n_pixels+1,), row_nrn (nnz,) neuron of each CSR slot; col_ptr (K+1,), col_pix,
    col_pos (nnz,); a, cy (nnz,) float32 in CSR slot order; CC (K, K) float32; comps int64.
    """
    for _ in range(n_sweeps):
        for ci in range(comps.shape[0]):
            k = comps[ci]
            ckk = CC[k, k]
            for e in range(col_ptr[k], col_ptr[k + 1]):
                pos = col_pos[e]
                if ckk <= 0:
                    a[pos] = 0.0
                    continue
                p = col_pix[e]
                s = np.float32(0.0)
                for q in range(row_ptr[p], row_ptr[p + 1]):
                    s += CC[k, row_nrn[q]] * a[q]
                v = a[pos] + (cy[pos] - s) / ckk
                a[pos] = v if v > 0 else 0.0


@numba.njit(**_JIT)
def pattern_cy(col_ptr, col_pix, col_pos, C, Yt, cy):
    """``cy[slot(p, k)] = C[k] . Yt[p]``: C (K, T), Yt (n_pixels, T) float32; cy written."""
    K = col_ptr.shape[0] - 1
    T = C.shape[1]
    for k in range(K):
        for e in range(col_ptr[k], col_ptr[k + 1]):
            p = col_pix[e]
            acc = np.float32(0.0)
            for t in range(T):
                acc += C[k, t] * Yt[p, t]
            cy[col_pos[e]] = acc


@numba.njit(**_JIT)
def hals_traces(AtY, AtA, C, n_sweeps):
    """Block-coordinate descent on traces; C (K, T) float32 updated in place.

    AtY (K, T), AtA (K, K) float32. Neurons with ``AtA[k, k] <= 0`` get a zero trace.
    """
    K, T = C.shape
    r = np.empty(T, dtype=np.float32)
    for _ in range(n_sweeps):
        for k in range(K):
            akk = AtA[k, k]
            if akk <= 0:
                C[k, :] = 0.0
                continue
            for t in range(T):
                r[t] = AtY[k, t]
            for j in range(K):
                w = AtA[k, j]
                if w != 0.0:
                    for t in range(T):
                        r[t] -= w * C[j, t]
            for t in range(T):
                v = C[k, t] + r[t] / akk
                C[k, t] = v if v > 0 else 0.0


@numba.njit(**_JIT)
def trace_residuals(AtY, AtA, C, out):
    """``out[k] = (AtY[k] - AtA[k] C) / AtA[k, k]`` (the YrA of CaImAn); out (K, T) written."""
    K, T = C.shape
    for k in range(K):
        akk = AtA[k, k]
        for t in range(T):
            out[k, t] = AtY[k, t]
        for j in range(K):
            w = AtA[k, j]
            if w != 0.0:
                for t in range(T):
                    out[k, t] -= w * C[j, t]
        if akk > 0:
            for t in range(T):
                out[k, t] /= akk
        else:
            for t in range(T):
                out[k, t] = 0.0
