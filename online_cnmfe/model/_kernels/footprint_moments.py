"""Per-column weighted moments of sparse footprints (the sanity check's shape figures).

Symbols: a = |A[:, k]| over the column's pixels (r, c) (row-major flat index p = r·W + c),
w = Σ a, (mr, mc) = Σ a (r, c) / w, and the centred second moments
srr = Σ a (r − mr)² / w, scc = Σ a (c − mc)² / w, src = Σ a (r − mr)(c − mc) / w; plus
Σ a² (the effective area is w² / Σ a²). Sums run over the column's entries in storage order in
float64, as ``np.bincount`` over the entries does (same results).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def footprint_moments(indptr, indices, data, width, out):
    """Moments of every column of a CSC matrix (indptr (K+1,), indices, data (nnz,)).

    Written in place: out (K, 5) float64 = (w, srr, scc, src, Σ a²) per column, with w
    floored at 1e-30 in the divisions (w itself is stored unfloored).
    """
    K = indptr.shape[0] - 1
    for k in range(K):
        w = 0.0
        sr = 0.0
        sc = 0.0
        s2 = 0.0
        for q in range(indptr[k], indptr[k + 1]):
            a = abs(np.float64(data[q]))
            p = np.int64(indices[q])
            w += a
            sr += a * np.float64(p // width)
            sc += a * np.float64(p % width)
            s2 += a * a
        ws = max(w, 1e-30)
        mr = sr / ws
        mc = sc / ws
        srr = 0.0
        scc = 0.0
        src = 0.0
        for q in range(indptr[k], indptr[k + 1]):
            a = abs(np.float64(data[q]))
            p = np.int64(indices[q])
            dr = np.float64(p // width) - mr
            dc = np.float64(p % width) - mc
            srr += a * dr * dr
            scc += a * dc * dc
            src += a * dr * dc
        out[k, 0] = w
        out[k, 1] = srr / ws
        out[k, 2] = scc / ws
        out[k, 3] = src / ws
        out[k, 4] = s2
