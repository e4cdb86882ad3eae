"""Compiled kernels of the summary images (local correlation, PNR helpers).

The local correlation image is built from streaming moments so that it can be accumulated frame
by frame: per pixel ``S1 = sum x``, ``S2 = sum x^2`` and, for the four forward neighbours
(right, down-left, down, down-right), ``Sx[k] = sum x_p x_q``. Values below a per-pixel threshold
are zeroed first (CaImAn ``correlation_pnr``: ``x < thresh * sn -> 0``).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}

# forward neighbours (d_row, d_col): right, down-left, down, down-right
_NB = np.array([[0, 1], [1, -1], [1, 0], [1, 1]], dtype=np.int64)


@numba.njit(**_JIT)
def local_corr_accumulate(X, center, thr, S1, S2, Sx):
    """Accumulate thresholded moments of frames X.

    ``x = X[t] - center``; ``x[x < thr] = 0``; ``S1 += x``, ``S2 += x^2`` and
    ``Sx[:, :, k] += x_p x_{p + nb_k}`` for the 4 forward neighbours.
    X (T, H, W) float32; center, thr (H, W) float32; S1, S2 (H, W) float64 and
    Sx (H, W, 4) float64 updated in place.
    """
    T, H, W = X.shape
    buf = np.empty((2, W), dtype=np.float64)
    for t in range(T):
        for i in range(H):
            cur = i % 2
            for j in range(W):
                v = X[t, i, j] - center[i, j]
                if v < thr[i, j]:
                    v = 0.0
                buf[cur, j] = v
                S1[i, j] += v
                S2[i, j] += v * v
            if i > 0:
                prv = 1 - cur
                for j in range(W):
                    u = buf[prv, j]
                    if u == 0.0:
                        continue
                    if j > 0:
                        Sx[i - 1, j, 1] += u * buf[cur, j - 1]
                    Sx[i - 1, j, 2] += u * buf[cur, j]
                    if j < W - 1:
                        Sx[i - 1, j, 3] += u * buf[cur, j + 1]
            for j in range(W - 1):
                Sx[i, j, 0] += buf[cur, j] * buf[cur, j + 1]


_BAND = 16  # image rows per thread task of local_corr_accumulate_bands


@numba.njit(cache=True, nogil=True, parallel=True)
def local_corr_accumulate_bands(X, center, thr, S1, S2, Sx):
    """:func:`local_corr_accumulate` with bands of ``_BAND`` image rows in parallel threads.

    Each band thresholds its rows and the first row below it (its down-neighbours) per frame
    and adds every pixel's sums in frame order, as the serial kernel does: the same S1, S2 and
    Sx bit for bit. Arguments as :func:`local_corr_accumulate` (S1, S2, Sx updated in place).
    """
    T, H, W = X.shape
    n_bands = (H + _BAND - 1) // _BAND
    for b in numba.prange(n_bands):
        i0 = b * _BAND
        i1 = min(H, i0 + _BAND)
        i_last = min(H - 1, i1)  # the row below the band (its neighbours), if any
        buf = np.empty((i_last - i0 + 1, W), dtype=np.float64)
        for t in range(T):
            for i in range(i0, i_last + 1):
                for j in range(W):
                    v = X[t, i, j] - center[i, j]
                    if v < thr[i, j]:
                        v = 0.0
                    buf[i - i0, j] = v
            for i in range(i0, i1):
                r = i - i0
                for j in range(W):
                    v = buf[r, j]
                    S1[i, j] += v
                    S2[i, j] += v * v
                if i + 1 < H:
                    for j in range(W):
                        u = buf[r, j]
                        if u == 0.0:
                            continue
                        if j > 0:
                            Sx[i, j, 1] += u * buf[r + 1, j - 1]
                        Sx[i, j, 2] += u * buf[r + 1, j]
                        if j < W - 1:
                            Sx[i, j, 3] += u * buf[r + 1, j + 1]
                for j in range(W - 1):
                    Sx[i, j, 0] += buf[r, j] * buf[r, j + 1]


@numba.njit(**_JIT)
def local_corr_finalize(S1, S2, Sx, n, out):
    """Mean Pearson correlation of each pixel with its (up to 8) neighbours from moments.

    Pixels with zero variance have correlation 0 with everyone. out (H, W) float32 written.
    """
    H, W = S1.shape
    sd = np.empty((H, W), dtype=np.float64)
    for i in range(H):
        for j in range(W):
            m = S1[i, j] / n
            var = S2[i, j] / n - m * m
            sd[i, j] = np.sqrt(var) if var > 1e-12 * (S2[i, j] / n + 1e-30) else 0.0
    acc = np.zeros((H, W), dtype=np.float64)
    cnt = np.zeros((H, W), dtype=np.float64)
    for i in range(H):
        for j in range(W):
            for k in range(4):
                di = 0 if k == 0 else 1
                dj = 1 if k == 0 else k - 2
                ii = i + di
                jj = j + dj
                if ii >= H or jj < 0 or jj >= W:
                    continue
                cnt[i, j] += 1.0
                cnt[ii, jj] += 1.0
                if sd[i, j] == 0.0 or sd[ii, jj] == 0.0:
                    continue
                cov = Sx[i, j, k] / n - (S1[i, j] / n) * (S1[ii, jj] / n)
                r = cov / (sd[i, j] * sd[ii, jj])
                acc[i, j] += r
                acc[ii, jj] += r
    for i in range(H):
        for j in range(W):
            out[i, j] = acc[i, j] / cnt[i, j] if cnt[i, j] > 0 else 0.0


@numba.njit(**_JIT)
def max_minus_center(X, center, out):
    """``out = max_t (X[t] - center)``; X (T, H, W), center and out (H, W) float32."""
    T, H, W = X.shape
    for i in range(H):
        for j in range(W):
            out[i, j] = -np.inf
    for t in range(T):
        for i in range(H):
            for j in range(W):
                v = X[t, i, j] - center[i, j]
                if v > out[i, j]:
                    out[i, j] = v


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def local_corr_accumulate_pixel_major(X, thr, S1, S2, Sx):
    """:func:`local_corr_accumulate` (with ``center = 0``) for a pixel-major box.

    X (h, w, T) float32, each pixel's series contiguous; thr (h, w) float32; S1, S2 (h, w)
    and Sx (h, w, 4) float64 updated in place with the same sums as the frame-major kernel.
    The seeding calls it after every neuron it finds, so its terms are added in any order
    (vectorised: equal to float64 rounding, not to the bit) and the thresholded values are
    not stored (each is read by at most 5 sums).
    """
    h, w, T = X.shape
    zero = np.float32(0.0)
    for i in range(h):
        for j in range(w):
            # the pixel's two moments and its 4 forward products in one pass over the frames
            # (a neighbour outside the box reads the pixel itself, its sum is not stored)
            down = i + 1 < h
            ir, jr = i, j + 1 if j + 1 < w else j
            idl, jdl = (i + 1, j - 1) if down and j > 0 else (i, j)
            idn = i + 1 if down else i
            idr, jdr = (i + 1, j + 1) if down and j + 1 < w else (i, j)
            th, thr_r, thr_dl = thr[i, j], thr[ir, jr], thr[idl, jdl]
            thr_d, thr_dr = thr[idn, j], thr[idr, jdr]
            s1, s2 = 0.0, 0.0
            a0, a1, a2, a3 = 0.0, 0.0, 0.0, 0.0
            for t in range(T):
                z = X[i, j, t]
                z = zero if z < th else z
                zr = X[ir, jr, t]
                zr = zero if zr < thr_r else zr
                zdl = X[idl, jdl, t]
                zdl = zero if zdl < thr_dl else zdl
                zd = X[idn, j, t]
                zd = zero if zd < thr_d else zd
                zdr = X[idr, jdr, t]
                zdr = zero if zdr < thr_dr else zdr
                vd = np.float64(z)
                s1 += vd
                s2 += vd * vd
                a0 += vd * np.float64(zr)
                a1 += vd * np.float64(zdl)
                a2 += vd * np.float64(zd)
                a3 += vd * np.float64(zdr)
            S1[i, j] += s1
            S2[i, j] += s2
            if j + 1 < w:
                Sx[i, j, 0] += a0
            if down and j > 0:
                Sx[i, j, 1] += a1
            if down:
                Sx[i, j, 2] += a2
            if down and j + 1 < w:
                Sx[i, j, 3] += a3
