"""Per-frame residual of the ring model and the baseline update.

Symbols: ỹ = (I − UWD)(y − b0) (from ``demix.background_subtract``), A footprints (CSC,
n_pixels × K), G = W D A (CSC, n_bg × K), c traces (K,), α = 1 / (forgetting time in frames).

  r  = (I − UWD)(y − A c − b0) = ỹ − A c + U (G c)
  b0 ← b0 + α (y − A c − b0)          (exponential forgetting; α = 0 freezes b0)
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def residual_update(
    a_start,
    a_stop,
    a_indices,
    a_data,
    g_start,
    g_stop,
    g_indices,
    g_data,
    c,
    ytilde,
    y,
    alpha,
    dims,
    ac,
    gc,
    b0,
    res,
):
    """Residual into ``res`` and baseline update in place.

    A, G in slotted CSC (column k = entries start[k]:stop[k]); dims = (height, width, ssub)
    int64. Written in place: ac (n_pixels,) scratch = A c,
    gc (n_bg,) scratch = G c, b0 (n_pixels,), res (n_pixels,).
    """
    height = dims[0]
    width = dims[1]
    ssub = dims[2]
    wb = (width + ssub - 1) // ssub
    for p in range(ac.shape[0]):
        ac[p] = 0.0
    for p in range(gc.shape[0]):
        gc[p] = 0.0
    for k in range(c.shape[0]):
        ck = c[k]
        if ck == 0.0:
            continue
        for q in range(a_start[k], a_stop[k]):
            ac[a_indices[q]] += a_data[q] * ck
        for q in range(g_start[k], g_stop[k]):
            gc[g_indices[q]] += g_data[q] * ck
    a = np.float32(alpha)
    for i in range(height):
        rb = (i // ssub) * wb
        base = i * width
        for j in range(width):
            p = base + j
            res[p] = ytilde[p] - ac[p] + gc[rb + j // ssub]
            b0[p] += a * (y[p] - ac[p] - b0[p])
