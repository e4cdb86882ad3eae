"""New-neuron detection kernels on the residual stream.

Symbols: r (H, W) residual of one frame, z its spatial high-pass (difference of two box means,
an O(1)-per-pixel band-pass keeping neuron-sized structure), sigma = sqrt(nvar) its noise,
nvar = E[z^2 | z < 0] (from the negative half, blind to transients). As the initialisation's
correlation image, the local correlation is computed on z *thresholded* at ``k sigma``
(``zt = z`` where ``z > k sigma``, else 0), so smooth noise does not look correlated: with
exponential weights m1 = E[zt], m2 = E[zt^2], mr = E[zt zt_right], md = E[zt zt_down]; the
local correlation is the mean Pearson correlation with the 4 neighbours. ``mx <- max(z, rho
mx)`` is a *decaying* max, PNR = mx / sigma, the statistic v = corr x PNR.

The *null* images n1, n2, nr, nd, mxn are the same on ``-z`` (the sign-flipped residual: the
neurons the model has are gone from it, its errors are as often negative as positive), and
give the calibrated threshold on v (``online_cnmfe.model.null_threshold``). Candidates are
pixels with v above it, thinned by greedy non-maximum suppression on v.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}  # fastmath without nnan/ninf


@numba.njit(**_JIT)
def box_mean(x, half, tmp, out):
    """Edge-aware box mean of width ``2 half + 1``; x, tmp, out (H, W) float32, tmp/out written.

    Running sums along rows, then running column sums swept down the rows (row-major access).
    """
    H, Wd = x.shape
    for i in range(H):
        acc = np.float32(0.0)
        for j in range(min(half, Wd)):
            acc += x[i, j]
        for j in range(Wd):
            jn = j + half
            if jn < Wd:
                acc += x[i, jn]
            jo = j - half - 1
            if jo >= 0:
                acc -= x[i, jo]
            tmp[i, j] = acc / np.float32(min(Wd - 1, j + half) - max(0, j - half) + 1)
    colsum = np.zeros(Wd, np.float32)
    for i in range(min(half, H)):
        for j in range(Wd):
            colsum[j] += tmp[i, j]
    for i in range(H):
        i_n = i + half
        if i_n < H:
            for j in range(Wd):
                colsum[j] += tmp[i_n, j]
        io = i - half - 1
        if io >= 0:
            for j in range(Wd):
                colsum[j] -= tmp[io, j]
        inv = np.float32(1.0 / (min(H - 1, i + half) - max(0, i - half) + 1))
        for j in range(Wd):
            out[i, j] = colsum[j] * inv


@numba.njit(**_JIT)
def block_mean(x, f, out):
    """``out = D x``: mean over f x f blocks (partial edge blocks over their real pixels).

    x (H, W) float32, out (ceil(H/f), ceil(W/f)) float32, written in place.
    """
    H, Wd = x.shape
    hb, wb = out.shape
    for bi in range(hb):
        r0 = bi * f
        r1 = min(r0 + f, H)
        for bj in range(wb):
            out[bi, bj] = 0.0
        for i in range(r0, r1):
            for bj in range(wb):
                c0 = bj * f
                c1 = min(c0 + f, Wd)
                acc = np.float32(0.0)
                for j in range(c0, c1):
                    acc += x[i, j]
                out[bi, bj] += acc
        for bj in range(wb):
            out[bi, bj] /= np.float32((r1 - r0) * (min(bj * f + f, Wd) - bj * f))


@numba.njit(**_JIT)
def band_pass(x, half_small, half_large, tmp, small, out):
    """``out = box(x, half_small) - box(x, half_large)``; tmp, small, out (H, W) written."""
    box_mean(x, half_small, tmp, small)
    box_mean(x, half_large, tmp, out)
    H, Wd = x.shape
    for i in range(H):
        for j in range(Wd):
            out[i, j] = small[i, j] - out[i, j]


@numba.njit(**_JIT)
def smooth_update(x, a, out):
    """``out <- a out + (1 - a) x`` (the matched temporal filter); x, out (H, W) float32."""
    H, Wd = x.shape
    af = np.float32(a)
    b = np.float32(1.0 - a)
    for i in range(H):
        for j in range(Wd):
            out[i, j] = af * out[i, j] + b * x[i, j]


@numba.njit(**_JIT)
def detection_images_update(z, pos, neg, nvar, alpha, alpha_noise, rho, k_sigma):
    """Update the detection images with frame ``z`` (H, W); all arrays written in place.

    ``pos`` and ``neg`` are (5, H, W) float32 stacks (m1, m2, mr, md, mx) of ``z`` and of
    ``-z``: ``m <- (1 - alpha) m + alpha f(zt)`` for the thresholded value ``zt`` (0 unless
    above ``k_sigma sqrt(nvar)``) and ``mx <- max(value, rho mx)``. ``nvar`` moves toward
    z^2 at rate ``alpha_noise`` where z < 0.
    """
    H, Wd = z.shape
    a = np.float32(alpha)
    b = np.float32(1.0 - alpha)
    an = np.float32(alpha_noise)
    rh = np.float32(rho)
    k2 = np.float32(k_sigma * k_sigma)
    for sgn in range(2):
        st = pos if sgn == 0 else neg
        f = np.float32(1.0) if sgn == 0 else np.float32(-1.0)
        for i in range(H):
            for j in range(Wd):
                v = f * z[i, j]
                thr2 = k2 * nvar[i, j]
                vt = v if (v > 0.0 and v * v > thr2) else np.float32(0.0)
                st[0, i, j] = b * st[0, i, j] + a * vt
                st[1, i, j] = b * st[1, i, j] + a * vt * vt
                if j + 1 < Wd:
                    w = f * z[i, j + 1]
                    wt = w if (w > 0.0 and w * w > k2 * nvar[i, j + 1]) else np.float32(0.0)
                    st[2, i, j] = b * st[2, i, j] + a * vt * wt
                if i + 1 < H:
                    w = f * z[i + 1, j]
                    wt = w if (w > 0.0 and w * w > k2 * nvar[i + 1, j]) else np.float32(0.0)
                    st[3, i, j] = b * st[3, i, j] + a * vt * wt
                d = rh * st[4, i, j]
                st[4, i, j] = v if v > d else d
    for i in range(H):
        for j in range(Wd):
            v = z[i, j]
            if v < 0.0:
                nvar[i, j] += an * (v * v - nvar[i, j])


@numba.njit(**_JIT)
def _pair_corr(m1, m2, mxy, i, j, i2, j2):
    va = m2[i, j] - m1[i, j] * m1[i, j]
    vb = m2[i2, j2] - m1[i2, j2] * m1[i2, j2]
    if va <= 0.0 or vb <= 0.0:
        return 0.0
    return (mxy - m1[i, j] * m1[i2, j2]) / np.sqrt(va * vb)


@numba.njit(**_JIT)
def local_corr(m1, m2, mr, md, i, j):
    """Mean correlation of pixel (i, j) with its 4 neighbours from the running moments."""
    H, Wd = m1.shape
    acc = 0.0
    n = 0
    if j + 1 < Wd:
        acc += _pair_corr(m1, m2, mr[i, j], i, j, i, j + 1)
        n += 1
    if j > 0:
        acc += _pair_corr(m1, m2, mr[i, j - 1], i, j, i, j - 1)
        n += 1
    if i + 1 < H:
        acc += _pair_corr(m1, m2, md[i, j], i, j, i + 1, j)
        n += 1
    if i > 0:
        acc += _pair_corr(m1, m2, md[i - 1, j], i, j, i - 1, j)
        n += 1
    return acc / n if n > 0 else 0.0


@numba.njit(**_JIT)
def corr_pnr_image(st, nvar, out):
    """``out = corr x PNR`` (H, W) of one stack ``st`` (5, H, W) (:func:`detection_images_update`),
    0 where the noise is unknown. out is written in place."""
    H, Wd = nvar.shape
    for i in range(H):
        for j in range(Wd):
            nv = nvar[i, j]
            if nv <= 0.0 or st[4, i, j] <= 0.0:
                out[i, j] = 0.0
                continue
            pnr = st[4, i, j] / np.sqrt(nv)
            out[i, j] = max(local_corr(st[0], st[1], st[2], st[3], i, j), 0.0) * pnr


@numba.njit(**_JIT)
def detection_candidates(z, st, nvar, blocked_until, t, threshold, v, out_idx, out_score):
    """Local maxima of ``v = corr x PNR`` (stack ``st`` = the positive images) at or above
    ``threshold`` among the eligible pixels: not ``blocked_until > t`` and not still rising
    (``z > 0.7 mx``: the transient is evaluated once it is in the buffer).

    A pixel is a candidate when no eligible pixel of its 3 x 3 neighbourhood has a higher v
    (the slopes of a blob are not candidates: a cell gives one or two, not the dozens of
    pixels above the threshold around its peak). When more than the capacity qualify, the
    highest v are kept, wherever they lie in the frame (a raster-order cut would keep the
    top rows only). ``v`` (H, W) float32 scratch (v where it can reach the threshold, -1
    elsewhere).

    Writes flat indices and scores (v) into out_idx/out_score (capacity = their length) and
    returns how many were written (at most the capacity).
    """
    H, Wd = z.shape
    for i in range(H):
        for j in range(Wd):
            v[i, j] = -1.0
            mx = st[4, i, j]
            nv = nvar[i, j]
            if mx <= 0.0 or nv <= 0.0 or blocked_until[i, j] > t or z[i, j] > 0.7 * mx:
                continue
            pnr = mx / np.sqrt(nv)
            if pnr < threshold:  # corr <= 1, so v <= PNR: under the threshold, so under
                continue  # any candidate (left at -1)
            v[i, j] = local_corr(st[0], st[1], st[2], st[3], i, j) * pnr
    cap = out_idx.shape[0]
    n = 0
    lowest = 0  # position of the smallest kept score once the buffer is full
    for i in range(H):
        for j in range(Wd):
            x = v[i, j]
            if x < threshold:
                continue
            peak = True
            for a in range(max(i - 1, 0), min(i + 2, H)):
                for b in range(max(j - 1, 0), min(j + 2, Wd)):
                    if v[a, b] > x:
                        peak = False
            if not peak:
                continue
            if n < cap:
                out_idx[n] = i * Wd + j
                out_score[n] = x
                n += 1
                if n == cap:
                    for m in range(cap):
                        if out_score[m] < out_score[lowest]:
                            lowest = m
            elif x > out_score[lowest]:
                out_idx[lowest] = i * Wd + j
                out_score[lowest] = x
                for m in range(cap):
                    if out_score[m] < out_score[lowest]:
                        lowest = m
    return n


@numba.njit(**_JIT)
def nms_greedy(rows, cols, order, radius, max_keep, out_keep):
    """Greedy non-maximum suppression: walk ``order`` (best first), keep a point unless a kept
    point lies within ``radius`` (Euclidean); stop at ``max_keep``. Returns the count kept;
    out_keep receives positions into rows/cols."""
    r2 = radius * radius
    n_keep = 0
    for m in range(order.shape[0]):
        q = order[m]
        ok = True
        for u in range(n_keep):
            k = out_keep[u]
            dr = rows[q] - rows[k]
            dc = cols[q] - cols[k]
            if dr * dr + dc * dc <= r2:
                ok = False
                break
        if ok:
            out_keep[n_keep] = q
            n_keep += 1
            if n_keep >= max_keep:
                break
    return n_keep


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def rank1_nmf(Y, a, c, n_iter):
    """Rank-1 NMF ``Y ~ c a^T`` by alternating exact nonnegative least squares.

    Y (T, m) float32; a (m,) initial footprint, updated in place; c (T,) written.
    Each iteration: ``c = max(Y a / |a|^2, 0)`` then ``a = max(Y^T c / |c|^2, 0)``
    (both passes walk Y row by row).
    """
    T, m = Y.shape
    acc_a = np.zeros(m, np.float32)
    for _ in range(n_iter):
        aa = np.float32(0.0)
        for i in range(m):
            aa += a[i] * a[i]
        if aa <= 0.0:
            c[:] = 0.0
            return
        cc = np.float32(0.0)
        acc_a[:] = 0.0
        for t in range(T):
            acc = np.float32(0.0)
            for i in range(m):
                acc += Y[t, i] * a[i]
            ct = max(acc / aa, np.float32(0.0))
            c[t] = ct
            cc += ct * ct
            if ct > 0.0:
                for i in range(m):
                    acc_a[i] += Y[t, i] * ct
        if cc <= 0.0:
            a[:] = 0.0
            return
        for i in range(m):
            a[i] = max(acc_a[i] / cc, np.float32(0.0))
