"""Compiled kernels of the initialisation's greedy corr x PNR seed search.

Symbols as in ``initialization/seeding.py``: ``filtered`` (H, W, T) the pixel-major,
mean-centred, spatially filtered movie; ``raw`` (H, W, T) the pixel-major data the footprints
are regressed on; ``sn`` the filtered movie's noise, ``cn`` / ``pnr`` its local correlation and
peak-to-noise images, ``v = cn * pnr`` (zero under the threshold), ``searched`` the pixels no
longer tried as seeds; a box ``[r0, r1) x [c0, c1)`` around a seed, its pixels row-major;
``ai`` a footprint in its box, ``ci`` its trace (T,).

:func:`extract_footprint` is ``seeding.extract_ac`` (CaImAn ``extract_ac``) on a box of the
movies; :func:`seed_round` runs one round of the search over candidates in descending order:
extract, subtract ``ai ci`` from ``raw`` and ``filter(ai) ci`` from ``filtered``, recompute
``pnr``, ``cn`` and ``v`` where they changed, mark the footprint's core as searched. Sums run in
float64 (the NumPy version's float32 BLAS products round differently: the same neurons, values
equal to float32 rounding).
"""

from __future__ import annotations

import numba
import numpy as np

from online_cnmfe.model._kernels.summary import (
    local_corr_accumulate_pixel_major,
    local_corr_finalize,
)

_JIT = {"cache": True, "nogil": True}

MIN_CORR_NEURON = 0.9  # box pixels correlated above this with the seed make its trace
MAX_CORR_BG = 0.3  # ... and below this, its local background
FOOTPRINT_REL_THRESHOLD = 0.1  # footprint values under this x its maximum are cut
MAX_BG_PIXELS = 64  # about this many evenly spread background pixels give its median
MIN_BG_PIXELS = 10  # with at most this many, no background column


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot(x, y):
    """``sum_t x[t] y[t]`` in float64, the terms added in any order (vectorised)."""
    s = 0.0
    for t in range(x.shape[0]):
        s += np.float64(x[t]) * np.float64(y[t])
    return s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _peak(x):
    """``max(x)`` of a float32 series without NaN (vectorised)."""
    m = x[0]
    for t in range(1, x.shape[0]):
        m = max(m, x[t])
    return m


@numba.njit(**_JIT)
def _solve_first_row(G, m):
    """Row 0 of ``G^-1`` (m x m, symmetric) by Gaussian elimination with partial pivoting
    (``G`` is overwritten)."""
    b = np.zeros(m)
    b[0] = 1.0
    for k in range(m):
        p = k
        for i in range(k + 1, m):
            if abs(G[i, k]) > abs(G[p, k]):
                p = i
        if p != k:
            for j in range(m):
                G[k, j], G[p, j] = G[p, j], G[k, j]
            b[k], b[p] = b[p], b[k]
        for i in range(k + 1, m):
            f = G[i, k] / G[k, k]
            for j in range(k, m):
                G[i, j] -= f * G[k, j]
            b[i] -= f * b[k]
    z = np.zeros(m)
    for k in range(m - 1, -1, -1):
        s = b[k]
        for j in range(k + 1, m):
            s -= G[k, j] * z[j]
        z[k] = s / G[k, k]
    return z  # G symmetric: G^-1 e0 is its first row


@numba.njit(**_JIT)
def _keep_seed_component(a, h, w, ctr):
    """Zero ``a`` (h * w,) outside the 8-connected part of ``a > 0`` holding ``ctr``;
    False when ``a[ctr]`` is 0."""
    if a[ctr] <= 0:
        return False
    n = h * w
    keep = np.zeros(n, np.bool_)
    stack = np.empty(n, np.int64)
    keep[ctr] = True
    stack[0] = ctr
    top = 1
    while top > 0:
        top -= 1
        p = stack[top]
        i, j = p // w, p % w
        for di in range(-1, 2):
            for dj in range(-1, 2):
                ii, jj = i + di, j + dj
                if ii < 0 or ii >= h or jj < 0 or jj >= w:
                    continue
                q = ii * w + jj
                if not keep[q] and a[q] > 0:
                    keep[q] = True
                    stack[top] = q
                    top += 1
    for p in range(n):
        if not keep[p]:
            a[p] = 0.0
    return True


@numba.njit(**_JIT)
def _background_median(raw, r0, c0, w, corr, n, out):
    """Per frame, the median of ``raw`` over the box pixels with ``corr < MAX_CORR_BG`` (every
    ``max(1, count // MAX_BG_PIXELS)``-th of them); False (out untouched) with at most
    ``MIN_BG_PIXELS`` of them. ``out`` (T,) float32."""
    nb = 0
    for i in range(n):
        if corr[i] < MAX_CORR_BG:
            nb += 1
    if nb <= MIN_BG_PIXELS:
        return False
    step = max(1, nb // MAX_BG_PIXELS)
    idx = np.empty((nb + step - 1) // step, np.int64)
    k = 0
    seen = 0
    for i in range(n):
        if corr[i] < MAX_CORR_BG:
            if seen % step == 0:
                idx[k] = i
                k += 1
            seen += 1
    T = out.shape[0]
    vals = np.empty((k, T), np.float32)
    for q in range(k):
        vals[q] = raw[r0 + idx[q] // w, c0 + idx[q] % w]
    # the values of rank k // 2 (and k // 2 - 1) in each frame: a value's rank is the count
    # of smaller ones plus the equal ones listed before it (ties ranked in order), counted for
    # all frames at once (no data-dependent branches: vectorised over the frames)
    mid = k // 2
    rank = np.empty(T, np.int64)
    lo = np.empty(T, np.float32)
    for q in range(k):
        rank[:] = 0
        xq = vals[q]
        for p in range(k):
            xp = vals[p]
            if p < q:
                for t in range(T):
                    rank[t] += xp[t] <= xq[t]
            else:
                for t in range(T):
                    rank[t] += xp[t] < xq[t]
        for t in range(T):
            if rank[t] == mid:
                out[t] = xq[t]
            elif rank[t] == mid - 1:
                lo[t] = xq[t]
    if k % 2 == 0:
        half = np.float32(2.0)
        for t in range(T):
            out[t] = (lo[t] + out[t]) / half
    return True


@numba.njit(**_JIT)
def extract_footprint(filtered, raw, r0, r1, c0, c1, ctr, min_pixel, max_halfmax_area,
                      max_kappa, ai, ci):  # fmt: skip
    """Footprint ``ai`` (h * w,) float64 and trace ``ci`` (T,) float32 of the seed at box
    pixel ``ctr`` (both written); returns False when the seed is rejected.

    ``ci`` = mean filtered trace of the box pixels correlated > 0.9 with the seed; ``ai`` = the
    coefficient of ``ci`` when regressing each raw pixel on ``[ci, background, 1]`` (background:
    the median raw trace of pixels correlated < 0.3, when more than 10), clipped at 0, cut
    under 0.1 x its maximum and to the 8-connected part holding the seed. Rejected: ``ci``
    never positive, ``ai`` all zero, the raw-to-filtered ratio along ``ci`` above
    ``max_kappa``, fewer than ``min_pixel`` pixels, more than ``max_halfmax_area`` at or above
    half the maximum.
    """
    h, w = r1 - r0, c1 - c0
    n = h * w
    T = filtered.shape[2]
    fc = filtered[r0 + ctr // w, c0 + ctr % w]
    nc = np.sqrt(_dot(fc, fc)) + 1e-12
    corr = np.empty(n)
    acc = np.zeros(T)
    m = 0
    for i in range(n):
        f = filtered[r0 + i // w, c0 + i % w]
        corr[i] = _dot(f, fc) / ((np.sqrt(_dot(f, f)) + 1e-12) * nc)
        if corr[i] > MIN_CORR_NEURON or i == ctr:
            for t in range(T):
                acc[t] += f[t]
            m += 1
    positive = False
    for t in range(T):
        ci[t] = np.float32(acc[t] / m)
        positive = positive or ci[t] > 0
    if not positive:
        return False
    bg = np.empty(T, np.float32)
    n_cols = 3 if _background_median(raw, r0, c0, w, corr, n, bg) else 2
    X = np.ones((T, n_cols))
    for t in range(T):
        X[t, 0] = ci[t]
        if n_cols == 3:
            X[t, 1] = bg[t]
    G = np.zeros((n_cols, n_cols))
    for t in range(T):
        for a in range(n_cols):
            for b in range(n_cols):
                G[a, b] += X[t, a] * X[t, b]
    tr = 0.0
    for j in range(n_cols):
        tr += G[j, j]
    for j in range(n_cols):
        G[j, j] += 1e-9 * tr
    z = _solve_first_row(G, n_cols)
    u = np.zeros(T)  # the coefficient of ci in a pixel's fit is raw_pixel . (X G^-1 e0)
    for t in range(T):
        for j in range(n_cols):
            u[t] += X[t, j] * z[j]
    amax = 0.0
    for i in range(n):
        ai[i] = max(_dot(raw[r0 + i // w, c0 + i % w], u), 0.0)
        amax = max(amax, ai[i])
    if amax <= 0:
        return False
    if max_kappa < np.inf:
        mean = 0.0
        for t in range(T):
            mean += ci[t]
        mean /= T
        num = 0.0
        den = 0.0
        rc = raw[r0 + ctr // w, c0 + ctr % w]
        for t in range(T):
            d = ci[t] - mean
            num += rc[t] * d
            den += fc[t] * d
        if num / max(den, 1e-12) > max_kappa:
            return False
    for i in range(n):
        if ai[i] < FOOTPRINT_REL_THRESHOLD * amax:
            ai[i] = 0.0
    if not _keep_seed_component(ai, h, w, ctr):
        return False
    nz = 0
    amax = 0.0
    for i in range(n):
        if ai[i] > 0:
            nz += 1
        amax = max(amax, ai[i])
    n_half = 0
    for i in range(n):
        if ai[i] >= 0.5 * amax:
            n_half += 1
    return nz >= min_pixel and n_half <= max_halfmax_area


@numba.njit(**_JIT)
def _update_images(filtered, sn, cn, pnr, v, g0, g1, h0, h1, thresh, min_v):
    """Recompute pnr, cn and v on rows [g0, g1) x cols [h0, h1) (cn with a one-pixel
    margin), as ``seeding._local_images``."""
    H, W, T = filtered.shape
    a0, a1 = max(0, g0 - 1), min(H, g1 + 1)
    b0, b1 = max(0, h0 - 1), min(W, h1 + 1)
    hh, ww = a1 - a0, b1 - b0
    S1 = np.zeros((hh, ww))
    S2 = np.zeros((hh, ww))
    Sx = np.zeros((hh, ww, 4))
    thr = np.empty((hh, ww), np.float32)
    th32 = np.float32(thresh)
    for i in range(hh):
        for j in range(ww):
            thr[i, j] = th32 * sn[a0 + i, b0 + j]
    local_corr_accumulate_pixel_major(filtered[a0:a1, b0:b1], thr, S1, S2, Sx)
    c_loc = np.empty((hh, ww), np.float32)
    local_corr_finalize(S1, S2, Sx, float(T), c_loc)
    zero = np.float32(0.0)
    for i in range(g0, g1):
        for j in range(h0, h1):
            p = max(_peak(filtered[i, j]), zero) / sn[i, j]
            c = c_loc[i - a0, j - b0]
            pnr[i, j] = p
            cn[i, j] = c
            vv = c * p
            v[i, j] = zero if vv < min_v else vv


@numba.njit(**_JIT)
def seed_round(filtered, raw, sn, cn, pnr, v, searched, rows, cols, kernel, gsiz, win,
               min_v, thresh, min_pixel, max_halfmax_area, max_kappa, boxes, foot, traces,
               centers):  # fmt: skip
    """One round of the greedy search over the candidate seeds ``rows``, ``cols`` (n,) int64,
    in that order; returns the number of neurons found (at most ``boxes.shape[0]``).

    Written in place: ``filtered``, ``raw`` (H, W, T) float32 (found neurons subtracted),
    ``cn``, ``pnr``, ``v`` (H, W) float32 (recomputed around them), ``searched`` (H, W) bool,
    and per found neuron k: ``boxes[k]`` = (r0, r1, c0, c1), ``foot[k, :r1 - r0, :c1 - c0]``
    float32 its footprint, ``traces[k]`` (T,) float32, ``centers[k]`` = (row, col).
    ``kernel`` (k, k) float32 is the spatial filter of ``filtered``; ``min_v`` float32 the
    threshold on v; a candidate already searched or under it is skipped, a rejected one marks
    its ``win // 2`` neighbourhood as searched.
    """
    H, W, T = filtered.shape
    kr = kernel.shape[0] // 2
    half = win // 2
    B = 2 * gsiz + 1
    ai = np.empty(B * B)
    ci = np.empty(T, np.float32)
    k = 0
    for q in range(rows.shape[0]):
        if k >= boxes.shape[0]:
            break
        r, c = rows[q], cols[q]
        if searched[r, c] or v[r, c] < min_v:
            searched[r, c] = True
            continue
        searched[r, c] = True
        r0, r1 = max(0, r - gsiz), min(H, r + gsiz + 1)
        c0, c1 = max(0, c - gsiz), min(W, c + gsiz + 1)
        h, w = r1 - r0, c1 - c0
        ctr = (r - r0) * w + (c - c0)
        ok = extract_footprint(filtered, raw, r0, r1, c0, c1, ctr, min_pixel,
                               max_halfmax_area, max_kappa, ai, ci)  # fmt: skip
        if not ok:  # nothing neuron-like here: not the seed's immediate neighbours again
            searched[max(0, r - half) : min(H, r + half + 1),
                     max(0, c - half) : min(W, c + half + 1)] = True  # fmt: skip
            continue
        a2 = foot[k]
        a2[:] = 0
        amax = np.float32(0.0)
        for i in range(h):
            for j in range(w):
                a = np.float32(ai[i * w + j])
                a2[i, j] = a
                amax = max(amax, a)
                if a != 0:
                    rr = raw[r0 + i, c0 + j]
                    for t in range(T):
                        rr[t] -= a * ci[t]
        # the filtered movie's change: filter(ai) on the box grown by the kernel radius,
        # scattered from the footprint's nonzero pixels (correlation: out[p] = sum a[p + d] k[d])
        g0, g1 = max(0, r0 - kr), min(H, r1 + kr)
        h0, h1 = max(0, c0 - kr), min(W, c1 + kr)
        fa = np.zeros((g1 - g0, h1 - h0))
        for i in range(h):
            for j in range(w):
                a = np.float64(a2[i, j])
                if a == 0:
                    continue
                for u in range(kernel.shape[0]):
                    ii = r0 + i - u + kr - g0
                    if ii < 0 or ii >= g1 - g0:
                        continue
                    for x in range(kernel.shape[1]):
                        jj = c0 + j - x + kr - h0
                        if 0 <= jj < h1 - h0:
                            fa[ii, jj] += a * kernel[u, x]
        for i in range(g1 - g0):
            for j in range(h1 - h0):
                f32 = np.float32(fa[i, j])
                if f32 != 0:
                    ff = filtered[g0 + i, h0 + j]
                    for t in range(T):
                        ff[t] -= f32 * ci[t]
        _update_images(filtered, sn, cn, pnr, v, g0, g1, h0, h1, thresh, min_v)
        hm = amax / np.float32(2.0)
        for i in range(h):
            for j in range(w):
                if a2[i, j] > hm:
                    searched[r0 + i, c0 + j] = True
        boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3] = r0, r1, c0, c1
        traces[k] = ci
        centers[k, 0], centers[k, 1] = r, c
        k += 1
    return k
