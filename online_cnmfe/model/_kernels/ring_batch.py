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

from online_cnmfe.model._kernels.ring import ring_gram_from_lags

_LANES = 8  # grid pixels solved side by side (their float operations vectorised across pixels)


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


@numba.njit(cache=True, nogil=True)
def _solve_lanes(G, x, lam, L, y):
    """Cholesky ridge solves of ``_LANES`` pixels at once: ``y[:, l] = (G[:, :, l] +
    lam[l] I)^-1 x[:, l]``. The same float64 operations in the same order per pixel as
    :func:`.ring.ring_solve` (so the same results), the innermost loop over the pixels.

    G (R, R, _LANES) float64 (lower triangle read), x (R, _LANES), lam (_LANES,);
    L (R, R, _LANES) and y (R, _LANES) float64 scratch, y the result.
    """
    R = G.shape[0]
    s = np.empty(_LANES, np.float64)
    for a in range(R):
        for b in range(a + 1):
            for m in range(_LANES):
                s[m] = G[a, b, m]
            if a == b:
                for m in range(_LANES):
                    s[m] += lam[m]
            for k in range(b):
                for m in range(_LANES):
                    s[m] -= L[a, k, m] * L[b, k, m]
            if a == b:
                for m in range(_LANES):
                    L[a, a, m] = np.sqrt(s[m]) if s[m] > 0 else 1e-30
            else:
                for m in range(_LANES):
                    L[a, b, m] = s[m] / L[b, b, m]
    for a in range(R):
        for m in range(_LANES):
            s[m] = x[a, m]
        for k in range(a):
            for m in range(_LANES):
                s[m] -= L[a, k, m] * y[k, m]
        for m in range(_LANES):
            y[a, m] = s[m] / L[a, a, m]
    for a in range(R - 1, -1, -1):
        for m in range(_LANES):
            s[m] = y[a, m]
        for k in range(a + 1, R):
            for m in range(_LANES):
                s[m] -= L[k, a, m] * y[k, m]
        for m in range(_LANES):
            y[a, m] = s[m] / L[a, a, m]


@numba.njit(cache=True, nogil=True, parallel=True)
def ring_gram_solve(lagprod, hb, wb, offsets, pair_index, ridge, W_out):
    """Ring statistics and ridge solve of every grid pixel in one pass, pixels in parallel.

    The per-pixel ``XXt``/``Xx`` of :func:`.ring.ring_gram_from_lags` are assembled for
    ``_LANES`` pixels at a time into thread-local buffers (never stored for all pixels) and
    solved side by side by :func:`_solve_lanes`: per pixel the float operations of
    :func:`.ring.ring_solve`, so the same W. lagprod (n_bg, n_lags) float32 from
    ``ring_lag_products``; W_out (n_bg, R) float32 written in place.
    """
    n = hb * wb
    R = offsets.shape[0]
    n_chunks = min(n, 256)
    for c in numba.prange(n_chunks):
        a = (n * c) // n_chunks
        b = (n * (c + 1)) // n_chunks
        XXt = np.empty((_LANES, R, R), np.float32)
        Xx = np.empty((_LANES, R), np.float32)
        G = np.empty((R, R, _LANES), np.float64)
        x = np.empty((R, _LANES), np.float64)
        lam = np.empty(_LANES, np.float64)
        L = np.zeros((R, R, _LANES), np.float64)
        y = np.zeros((R, _LANES), np.float64)
        for p0 in range(a, b, _LANES):
            m_n = min(_LANES, b - p0)
            ring_gram_from_lags(lagprod, hb, wb, offsets, pair_index, XXt[:m_n], Xx[:m_n], p0)
            for m in range(m_n):
                tr = 0.0
                for i in range(R):
                    tr += XXt[m, i, i]
                lam[m] = ridge * (tr / R + 1e-12) + 1e-12
                for i in range(R):
                    x[i, m] = Xx[m, i]
                    for j in range(i + 1):
                        G[i, j, m] = XXt[m, i, j]
            for m in range(m_n, _LANES):  # unused lanes: an identity system
                lam[m] = 0.0
                for i in range(R):
                    x[i, m] = 0.0
                    for j in range(i + 1):
                        G[i, j, m] = 1.0 if i == j else 0.0
            _solve_lanes(G, x, lam, L, y)
            for m in range(m_n):
                for i in range(R):
                    W_out[p0 + m, i] = y[i, m] if XXt[m, i, i] > 0 else 0.0


@numba.njit(cache=True, nogil=True)
def _median_inplace(v, h):
    """Median of the float32 vector v (reordered), ``h = len(v) // 2``: the middle element,
    or the float32 mean of the two middle ones (``np.median``'s numbers)."""
    v[:] = np.partition(v, h)
    if v.size % 2:
        return v[h]
    lo = v[0]
    for i in range(1, h):
        lo = max(lo, v[i])
    return (lo + v[h]) / np.float32(2.0)


@numba.njit(cache=True, nogil=True, parallel=True)
def clip_above_prediction(X, P, k, step, out):
    """The ring fit's outlier clipping: ``out = where(E > k sigma, P, X)`` with ``E = X - P``.

    Per grid pixel p, ``sigma_p = 1.4826 median|e - median(e)| + 1e-12`` over the frames
    ``e = E[p, ::step]`` (the robust scale of the residual), in float32 as NumPy computes
    ``np.median`` along axis 1 of the float32 arrays (the same numbers). X, P, out (n_bg, T)
    float32 (out written; grid pixels in parallel threads). Returns the number of clipped
    entries.
    """
    n, T = X.shape
    m = (T + step - 1) // step
    h = m // 2
    kk = np.float32(k)
    counts = np.zeros(n, np.int64)
    for p in numba.prange(n):
        e = np.empty(m, np.float32)
        for i in range(m):
            e[i] = X[p, i * step] - P[p, i * step]
        med = _median_inplace(e.copy(), h)
        for i in range(m):
            e[i] = abs(e[i] - med)
        mad = _median_inplace(e, h)
        limit = kk * (np.float32(1.4826) * mad + np.float32(1e-12))
        c = 0
        for t in range(T):
            x = X[p, t]
            if x - P[p, t] > limit:
                out[p, t] = P[p, t]
                c += 1
            else:
                out[p, t] = x
        counts[p] = c
    return counts.sum()
