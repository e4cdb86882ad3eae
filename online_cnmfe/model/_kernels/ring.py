"""Ring background kernels (CNMF-E ring model on a downsampled grid).

Symbols: the background grid has shape (hb, wb) = (ceil(H/ssub), ceil(W/ssub)); ``D`` is the
block average onto it (:func:`downsample_mean`) and ``U`` the nearest-neighbour upsample back
(:func:`upsample_nearest`). ``W`` (n_bg, R) holds, for each grid pixel p (flattened row-major),
the weights of the R ring pixels ``p + ring_offsets[j]``; ring pixels outside the grid have
weight 0. The fluctuating background of a frame is ``U W D (y - A c - b0)``.

Ring statistics for fitting W: ``XXt[p] = sum_t x_ring(p, t) x_ring(p, t)^T`` (R, R) and
``Xx[p] = sum_t x_ring(p, t) x_p(t)`` (R,), with out-of-grid ring entries 0. W is their ridge
solution (:func:`ring_solve`). For a batch of frames the statistics are cheaper to build from
lagged products (:func:`ring_lag_products`, :func:`ring_gram_from_lags`): every product
``x_q . x_{q+delta}`` for the distinct ring differences ``delta`` is computed once and shared by
all pixels whose rings contain that pair (about 6x fewer multiply-adds than the direct sum).

All kernels take float32 C-contiguous arrays and write into caller-owned outputs.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


def ring_offsets(radius: int) -> np.ndarray:
    """Offsets (d_row, d_col) of a one-pixel-wide ring: disk(radius + 1) minus disk(radius).

    Same geometry as CaImAn (``ring = disk(r+1); ring[1:-1, 1:-1] -= disk(r)``, skimage disks
    ``x^2 + y^2 <= r^2``), so radius 9 gives 64 offsets.

    Parameters
    ----------
    radius : int
        Ring radius on the background grid, >= 1.

    Returns
    -------
    ndarray of shape (R, 2), int32
        Offsets sorted row-major.

    Examples
    --------
    >>> ring_offsets(9).shape
    (64, 2)
    """
    radius = int(radius)
    if radius < 1:
        raise ValueError(f"ring radius must be >= 1 grid pixel, got {radius}")
    r1 = radius + 1
    d = np.arange(-r1, r1 + 1)
    rr, cc = np.meshgrid(d, d, indexing="ij")
    dist2 = rr**2 + cc**2
    mask = (dist2 <= r1 * r1) & (dist2 > radius * radius)
    return np.ascontiguousarray(np.stack([rr[mask], cc[mask]], axis=1).astype(np.int32))


@numba.njit(**_JIT)
def downsample_mean(x, factor, out):
    """Block average ``out = D x``; partial edge blocks are averaged over their real pixels.

    x (H, W) float32, out (ceil(H/factor), ceil(W/factor)) float32, written in place.
    """
    H, Wd = x.shape
    hb, wb = out.shape
    out[:] = 0.0
    for i in range(H):
        bi = i // factor
        for j in range(Wd):
            out[bi, j // factor] += x[i, j]
    for bi in range(hb):
        nr = min(factor, H - bi * factor)
        for bj in range(wb):
            nc = min(factor, Wd - bj * factor)
            out[bi, bj] /= nr * nc


@numba.njit(**_JIT)
def upsample_nearest(x, factor, out):
    """Nearest-neighbour upsample ``out = U x``: x (hb, wb), out (H, W), written in place."""
    H, Wd = out.shape
    for i in range(H):
        bi = i // factor
        for j in range(Wd):
            out[i, j] = x[bi, j // factor]


@numba.njit(cache=True, nogil=True, fastmath=True)
def ring_apply(W, offsets, x, out):
    """``out[p] = sum_j W[p, j] x[p + offsets[j]]`` on the grid; out-of-grid terms skipped.

    W (n_bg, R) float32, offsets (R, 2) int32, x and out (hb, wb) float32 C-contiguous (out
    written). Interior pixels (whole ring inside the grid) use flat unsigned indices without
    bounds or wrap-around checks (2-3x faster).
    """
    hb, wb = x.shape
    R = offsets.shape[0]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    m = 0
    df = np.empty(R, np.int64)
    for k in range(R):
        m = max(m, abs(offsets[k, 0]), abs(offsets[k, 1]))
        df[k] = offsets[k, 0] * wb + offsets[k, 1]
    for i in range(hb):
        inner_row = i >= m and i < hb - m
        for j in range(wb):
            p = i * wb + j
            acc = np.float32(0.0)
            if inner_row and j >= m and j < wb - m:
                for k in range(R):
                    acc += W[p, k] * xf[numba.uint64(p + df[k])]
            else:
                for k in range(R):
                    ii = i + offsets[k, 0]
                    jj = j + offsets[k, 1]
                    if ii >= 0 and ii < hb and jj >= 0 and jj < wb:
                        acc += W[p, k] * x[ii, jj]
            of[p] = acc


@numba.njit(cache=True, nogil=True, parallel=True)
def ring_apply_frames(W, offsets, X, out):
    """:func:`ring_apply` on every frame of X (T, hb, wb) into out (T, hb, wb), frames in
    parallel threads (batch use only; the per-frame path calls :func:`ring_apply`)."""
    for t in numba.prange(X.shape[0]):
        ring_apply(W, offsets, X[t], out[t])


@numba.njit(**_JIT)
def ring_gram_accumulate_range(X, offsets, XXt, Xx, decay, weight, start):
    """Like :func:`ring_gram_accumulate` for grid pixels ``start .. start + XXt.shape[0]``.

    X (T, hb, wb) float32; XXt (n, R, R) and Xx (n, R) float32 updated in place.
    """
    T, hb, wb = X.shape
    R = offsets.shape[0]
    n = XXt.shape[0]
    vals = np.zeros(R, dtype=np.float32)
    ok = np.zeros(R, dtype=np.bool_)
    acc = np.zeros((R, R), dtype=np.float32)
    accx = np.zeros(R, dtype=np.float32)
    for m in range(n):
        p = start + m
        i = p // wb
        j = p - i * wb
        for k in range(R):
            ii = i + offsets[k, 0]
            jj = j + offsets[k, 1]
            ok[k] = ii >= 0 and ii < hb and jj >= 0 and jj < wb
        acc[:] = 0.0
        accx[:] = 0.0
        for t in range(T):
            for k in range(R):
                if ok[k]:
                    vals[k] = X[t, i + offsets[k, 0], j + offsets[k, 1]]
                else:
                    vals[k] = 0.0
            xp = X[t, i, j]
            for a in range(R):
                va = vals[a]
                if va != 0.0:
                    accx[a] += va * xp
                    for b in range(a, R):
                        acc[a, b] += va * vals[b]
        for a in range(R):
            Xx[m, a] = decay * Xx[m, a] + weight * accx[a]
            for b in range(a, R):
                v = decay * XXt[m, a, b] + weight * acc[a, b]
                XXt[m, a, b] = v
                XXt[m, b, a] = v


@numba.njit(**_JIT)
def ring_gram_accumulate(X, offsets, XXt, Xx, decay, weight):
    """Accumulate ring statistics over the frames of X with exponential forgetting.

    ``XXt <- decay XXt + weight sum_t x_ring x_ring^T``;
    ``Xx <- decay Xx + weight sum_t x_ring x_p``.

    X (T, hb, wb) float32; offsets (R, 2) int32; XXt (n_bg, R, R), Xx (n_bg, R) float32,
    updated in place. Out-of-grid ring entries are 0.
    """
    ring_gram_accumulate_range(X, offsets, XXt, Xx, decay, weight, 0)


def ring_lag_table(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ring differences and the lookup of each (a, b) pair into them.

    Returns
    -------
    lags : ndarray of shape (n_lags, 2), int32
        Distinct differences ``offsets[b] - offsets[a]`` that are lexicographically >= 0, plus
        the ring offsets themselves (pairs with the centre pixel) and (0, 0).
    pair_index : ndarray of shape (R + 1, R + 1), int32
        ``pair_index[a, b]`` is the index of ``+-(o_b - o_a)`` in ``lags``, with a negative
        index ``-(k + 1)`` when the stored lag is ``o_a - o_b`` (then the product is taken at
        ``p + o_b``). Index R stands for the centre pixel (offset 0).
    """
    off = np.concatenate([offsets.astype(np.int64), np.zeros((1, 2), np.int64)], axis=0)
    diff = off[None, :, :] - off[:, None, :]  # diff[a, b] = o_b - o_a
    flip = (diff[..., 0] < 0) | ((diff[..., 0] == 0) & (diff[..., 1] < 0))
    canon = np.where(flip[..., None], -diff, diff)
    keys = canon[..., 0] * 4096 + canon[..., 1]
    uniq, inv = np.unique(keys.ravel(), return_inverse=True)
    lags = np.stack([(uniq + 2048) // 4096, uniq - ((uniq + 2048) // 4096) * 4096], axis=1)
    idx = inv.reshape(keys.shape).astype(np.int32)
    pair_index = np.where(flip, -(idx + 1), idx).astype(np.int32)
    return np.ascontiguousarray(lags.astype(np.int32)), np.ascontiguousarray(pair_index)


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def ring_lag_products(Xt, hb, wb, lags, out):
    """``out[q, k] = Xt[q] . Xt[q + lags[k]]`` (0 when q + lag is outside the grid).

    Xt (n_bg, T) float32 (pixel-major, each pixel's time series contiguous), lags (n_lags, 2)
    int32, out (n_bg, n_lags) float32 written in place. Pixels in parallel threads.
    """
    n_lags = lags.shape[0]
    T = Xt.shape[1]
    for q in numba.prange(hb * wb):
        i = q // wb
        j = q - i * wb
        for k in range(n_lags):
            ii = i + lags[k, 0]
            jj = j + lags[k, 1]
            if ii >= 0 and ii < hb and jj >= 0 and jj < wb:
                r = ii * wb + jj
                acc = np.float32(0.0)
                for t in range(T):
                    acc += Xt[q, t] * Xt[r, t]
                out[q, k] = acc
            else:
                out[q, k] = 0.0


@numba.njit(**_JIT)
def ring_gram_from_lags(lagprod, hb, wb, offsets, pair_index, XXt, Xx, start):
    """Assemble ``XXt``/``Xx`` for grid pixels ``start .. start + XXt.shape[0]`` from lags.

    lagprod (n_bg, n_lags) from :func:`ring_lag_products`; pair_index from
    :func:`ring_lag_table`; XXt (n, R, R) and Xx (n, R) float32 written in place (out-of-grid
    ring entries 0).
    """
    R = offsets.shape[0]
    n = XXt.shape[0]
    for m in range(n):
        p = start + m
        i = p // wb
        j = p - i * wb
        for a in range(R + 1):
            if a < R:
                ia = i + offsets[a, 0]
                ja = j + offsets[a, 1]
            else:
                ia = i
                ja = j
            ok_a = ia >= 0 and ia < hb and ja >= 0 and ja < wb
            for b in range(a, R + 1):
                if b == R and a == R:
                    continue
                if b < R:
                    ib = i + offsets[b, 0]
                    jb = j + offsets[b, 1]
                else:
                    ib = i
                    jb = j
                ok_b = ib >= 0 and ib < hb and jb >= 0 and jb < wb
                v = np.float32(0.0)
                if ok_a and ok_b:
                    k = pair_index[a, b]
                    if k >= 0:
                        v = lagprod[ia * wb + ja, k]
                    else:
                        v = lagprod[ib * wb + jb, -k - 1]
                if b == R:
                    Xx[m, a] = v
                else:
                    XXt[m, a, b] = v
                    XXt[m, b, a] = v


@numba.njit(**_JIT)
def ring_solve(XXt, Xx, ridge, W_out, start, stop):
    """Ridge solve of the ring weights of grid pixels ``start .. stop`` (Cholesky).

    ``W_out[p] = (XXt[p] + ridge (trace(XXt[p]) / R + eps) I)^-1 Xx[p]`` with entries whose
    ring pixel has zero variance (outside the grid) forced to 0. XXt (n, R, R) and Xx (n, R)
    indexed by ``p - start`` when ``XXt.shape[0] == stop - start``, else by ``p``.
    W_out (n_bg, R) float32, rows start..stop written in place.
    """
    R = XXt.shape[1]
    local = XXt.shape[0] == stop - start
    L = np.zeros((R, R), dtype=np.float64)
    y = np.zeros(R, dtype=np.float64)
    for p in range(start, stop):
        m = p - start if local else p
        tr = 0.0
        for a in range(R):
            tr += XXt[m, a, a]
        lam = ridge * (tr / R + 1e-12) + 1e-12
        # Cholesky of XXt + lam I (float64 for stability), rows of L lower-triangular
        for a in range(R):
            for b in range(a + 1):
                s = np.float64(XXt[m, a, b])
                if a == b:
                    s += lam
                for k in range(b):
                    s -= L[a, k] * L[b, k]
                if a == b:
                    L[a, a] = np.sqrt(s) if s > 0 else 1e-30
                else:
                    L[a, b] = s / L[b, b]
        for a in range(R):
            s = np.float64(Xx[m, a])
            for k in range(a):
                s -= L[a, k] * y[k]
            y[a] = s / L[a, a]
        for a in range(R - 1, -1, -1):
            s = y[a]
            for k in range(a + 1, R):
                s -= L[k, a] * y[k]
            y[a] = s / L[a, a]
        for a in range(R):
            W_out[p, a] = y[a] if XXt[m, a, a] > 0 else 0.0


@numba.njit(cache=True, nogil=True, parallel=True)
def ring_solve_parallel(XXt, Xx, ridge, W_out, start, stop):
    """:func:`ring_solve` with the pixels split into chunks solved in parallel threads (batch
    use; XXt/Xx indexed like :func:`ring_solve`). W_out rows start..stop written in place."""
    n = stop - start
    local = XXt.shape[0] == n
    n_chunks = min(n, 64)
    for c in numba.prange(n_chunks):
        a = start + (n * c) // n_chunks
        b = start + (n * (c + 1)) // n_chunks
        if b <= a:
            continue
        if local:
            ring_solve(XXt[a - start : b - start], Xx[a - start : b - start], ridge, W_out, a, b)
        else:
            ring_solve(XXt, Xx, ridge, W_out, a, b)
