"""Kernels of the batch ring-background fit in pixel-major layout (initialisation).

Symbols as in :mod:`.ring`: frames flattened row-major to ``n_pixels = H * W``; the background
grid (hb, wb) = (ceil(H / ssub), ceil(W / ssub)) with ``n_bg = hb * wb``; ``Yt`` (n_pixels, T)
and ``Xt`` (n_bg, T) hold each pixel's time series contiguously (pixel-major), the layout the
lag products, HALS statistics and trace updates of the fit use, so no movie is transposed
between them. ``W`` (n_bg, R) ring weights with ``offsets`` (R, 2).

Every kernel does the same float operations in the same order as the frame-by-frame kernels
of :mod:`.ring` it replaces (``downsample_mean``, ``ring_gram_from_lags`` + ``ring_solve``,
``upsample_nearest``), except :func:`ring_apply_pixel_major` (no FMA contraction), so results
agree to float rounding. Outputs are caller-owned and written in place.
"""

from __future__ import annotations

import numba
import numpy as np

from online_cnmfe.model._kernels.ring import ring_gram_from_lags, ring_solve


@numba.njit(cache=True, nogil=True, parallel=True)
def grid_residual_pixel_major(Yt, ACt, b0, row0, W, ssub, out):
    """``out = D (Y - A C - b0)`` for a band of image rows, pixel-major.

    Yt, ACt (n_band_pixels, T) float32: the frames and ``A C`` of image rows
    ``row0 .. row0 + n_band_pixels / W`` (row0 a multiple of ssub); b0 (n_pixels,) float32;
    out (n_bg, T) float32: its grid rows covering the band are written (block means over the
    block's real pixels, summed row by row like ``downsample_mean``).
    """
    n, T = Yt.shape
    n_rows = n // W
    wb = (W + ssub - 1) // ssub
    g0 = row0 // ssub
    n_grid_rows = (n_rows + ssub - 1) // ssub
    for g in numba.prange(n_grid_rows):
        acc = np.empty(T, np.float32)
        i_lo = g * ssub
        i_hi = min(n_rows, i_lo + ssub)
        for bj in range(wb):
            j_lo = bj * ssub
            j_hi = min(W, j_lo + ssub)
            acc[:] = 0.0
            for i in range(i_lo, i_hi):
                for j in range(j_lo, j_hi):
                    p = i * W + j
                    b = b0[(row0 + i) * W + j]
                    for t in range(T):
                        acc[t] += (Yt[p, t] - ACt[p, t]) - b
            cnt = (i_hi - i_lo) * (j_hi - j_lo)
            q = (g0 + g) * wb + bj
            for t in range(T):
                out[q, t] = acc[t] / cnt


@numba.njit(cache=True, nogil=True, parallel=True)
def ring_gram_solve(lagprod, hb, wb, offsets, pair_index, ridge, W_out):
    """Ring statistics and ridge solve of every grid pixel in one pass, pixels in parallel.

    The per-pixel ``XXt``/``Xx`` of :func:`.ring.ring_gram_from_lags` are assembled into a
    thread-local buffer and solved at once by :func:`.ring.ring_solve` (never stored for all
    pixels). lagprod (n_bg, n_lags) float32 from ``ring_lag_products``; W_out (n_bg, R)
    float32 written in place.
    """
    n = hb * wb
    R = offsets.shape[0]
    n_chunks = min(n, 256)
    for c in numba.prange(n_chunks):
        a = (n * c) // n_chunks
        b = (n * (c + 1)) // n_chunks
        XXt = np.empty((1, R, R), np.float32)
        Xx = np.empty((1, R), np.float32)
        for p in range(a, b):
            ring_gram_from_lags(lagprod, hb, wb, offsets, pair_index, XXt, Xx, p)
            ring_solve(XXt, Xx, ridge, W_out, p, p + 1)


@numba.njit(cache=True, nogil=True, parallel=True)
def ring_apply_pixel_major(W, offsets, Xt, hb, wb, out):
    """``out[p, t] = sum_j W[p, j] Xt[p + offsets[j], t]`` (out-of-grid terms skipped).

    Xt and out (n_bg, T) float32 (out written); grid pixels in parallel threads, each ring
    term a contiguous multiply-add over the frames.
    """
    n, T = Xt.shape
    R = offsets.shape[0]
    for p in numba.prange(n):
        i = p // wb
        j = p - i * wb
        for t in range(T):
            out[p, t] = 0.0
        for k in range(R):
            ii = i + offsets[k, 0]
            jj = j + offsets[k, 1]
            if ii >= 0 and ii < hb and jj >= 0 and jj < wb:
                q = ii * wb + jj
                w = W[p, k]
                for t in range(T):
                    out[p, t] += w * Xt[q, t]


@numba.njit(cache=True, nogil=True, parallel=True)
def subtract_background_pixel_major(Yt, b0, P, ssub, W, out):
    """``out[p] = (Yt[p] - b0[p]) - P[grid(p)]``: the frames minus ``b0 + U W X``.

    Yt and out (n_pixels, T) float32 (out written; may be Yt itself), b0 (n_pixels,) float32,
    P (n_bg, T) float32 the grid prediction ``W X``; ``grid(p)`` the block holding pixel p.
    """
    n, T = Yt.shape
    wb = (W + ssub - 1) // ssub
    for p in numba.prange(n):
        i = p // W
        j = p - i * W
        q = (i // ssub) * wb + j // ssub
        b = b0[p]
        for t in range(T):
            out[p, t] = (Yt[p, t] - b) - P[q, t]
