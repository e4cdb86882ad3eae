"""Slow, obvious NumPy/SciPy versions of the compiled kernels (the test oracles).

Each engineer adds the references of their kernels here with small targeted edits.
"""

from __future__ import annotations

import numpy as np

# ---- ring background (online_cnmfe/model/_kernels/ring.py) ------------------------------------


def ring_matrix_dense(W: np.ndarray, offsets: np.ndarray, hb: int, wb: int) -> np.ndarray:
    """Dense (n_bg, n_bg) matrix of the ring model built entry by entry."""
    n = hb * wb
    M = np.zeros((n, n), dtype=np.float64)
    for p in range(n):
        i, j = divmod(p, wb)
        for k, (di, dj) in enumerate(offsets):
            ii, jj = i + di, j + dj
            if 0 <= ii < hb and 0 <= jj < wb:
                M[p, ii * wb + jj] += W[p, k]
    return M


def downsample_mean_ref(x: np.ndarray, factor: int) -> np.ndarray:
    """Block average with partial edge blocks averaged over their real pixels."""
    H, Wd = x.shape
    hb, wb = -(-H // factor), -(-Wd // factor)
    out = np.zeros((hb, wb))
    for bi in range(hb):
        for bj in range(wb):
            out[bi, bj] = x[bi * factor : (bi + 1) * factor, bj * factor : (bj + 1) * factor].mean()
    return out


def ring_stats_ref(X: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """XXt (n_bg, R, R) and Xx (n_bg, R) from frames X (T, hb, wb), out-of-grid entries 0."""
    T, hb, wb = X.shape
    R = len(offsets)
    XXt = np.zeros((hb * wb, R, R))
    Xx = np.zeros((hb * wb, R))
    Xf = X.astype(np.float64)
    for p in range(hb * wb):
        i, j = divmod(p, wb)
        ring = np.zeros((R, T))
        for k, (di, dj) in enumerate(offsets):
            ii, jj = i + di, j + dj
            if 0 <= ii < hb and 0 <= jj < wb:
                ring[k] = Xf[:, ii, jj]
        XXt[p] = ring @ ring.T
        Xx[p] = ring @ Xf[:, i, j]
    return XXt, Xx


def ring_solve_ref(XXt: np.ndarray, Xx: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge solution per pixel via numpy lstsq on the augmented system."""
    n, R, _ = XXt.shape
    out = np.zeros((n, R))
    for p in range(n):
        G = XXt[p].astype(np.float64)
        valid = np.diag(G) > 0
        lam = ridge * (np.trace(G) / R + 1e-12) + 1e-12
        A = G + lam * np.eye(R)
        sol = np.linalg.lstsq(A, Xx[p].astype(np.float64), rcond=None)[0]
        out[p] = np.where(valid, sol, 0.0)
    return out


# ---- online critical path (online_cnmfe/model/_kernels/{demix,oasis_online,residual}.py) -------


def background_operator_dense(W, offsets, dims, ssub) -> np.ndarray:
    """Dense (n_pixels, n_pixels) matrix of I − U W D, built from its definition."""
    H, Wd = dims
    hb, wb = -(-H // ssub), -(-Wd // ssub)
    n = H * Wd
    D = np.zeros((hb * wb, n))
    U = np.zeros((n, hb * wb))
    for i in range(H):
        for j in range(Wd):
            q = (i // ssub) * wb + j // ssub
            U[i * Wd + j, q] = 1.0
            D[q, i * Wd + j] = 1.0
    D /= D.sum(axis=1, keepdims=True)
    return np.eye(n) - U @ ring_matrix_dense(W, offsets, hb, wb) @ D


def demix_nnls_ref(A_dense, W, offsets, dims, ssub, y, b0) -> np.ndarray:
    """argmin_{c ≥ 0} ‖(I − UWD)(y − b0 − A c)‖² by scipy.optimize.nnls on dense matrices."""
    import scipy.optimize

    M = background_operator_dense(W, offsets, dims, ssub)
    return scipy.optimize.nnls(M @ A_dense, M @ (y - b0), maxiter=10_000)[0]


def residual_ref(A_dense, W, offsets, dims, ssub, y, b0, c) -> np.ndarray:
    """(I − UWD)(y − A c − b0), dense."""
    M = background_operator_dense(W, offsets, dims, ssub)
    return M @ (y - A_dense @ c - b0)


def oasis_ar1_ref(y, g, lam=0.0, s_min=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Batch OASIS AR(1) (Friedrich et al. 2017, Algorithm 1) written with Python lists.

    Returns (c, s) with s[0] = 0 (c[0] is the initial calcium, not a spike).
    """
    pools = []  # [value, weight, start, length]
    for t, yt in enumerate(y):
        pools.append([yt - lam * (1 - g), 1.0, t, 1])
        while len(pools) > 1 and pools[-2][0] * g ** pools[-2][3] + s_min > pools[-1][0]:
            v2, w2, _, l2 = pools.pop()
            v1, w1, t1, l1 = pools[-1]
            gl = g**l1
            w = w1 + gl * gl * w2
            pools[-1] = [(w1 * v1 + gl * w2 * v2) / w, w, t1, l1 + l2]
    c = np.zeros(len(y))
    for v, _, t0, n in pools:
        c[t0 : t0 + n] = max(v, 0.0) * g ** np.arange(n)
    s = np.zeros(len(y))
    s[1:] = c[1:] - g * c[:-1]
    return c, s


def ar1_qp_ref(y, g) -> np.ndarray:
    """Exact min ½‖y − c‖² s.t. c_0 ≥ 0, c_t − g c_{t−1} ≥ 0 (c = K s, NNLS on s)."""
    import scipy.optimize

    T = len(y)
    t = np.arange(T)
    K = np.tril(g ** (t[:, None] - t[None, :]).clip(0)) * (t[:, None] >= t[None, :])
    s = scipy.optimize.nnls(K, np.asarray(y, np.float64), maxiter=10_000)[0]
    return K @ s


# ---- slow path (footprint statistics, detection) ---------------------------------------------


def suffstat_ref(C, R, A, lam, CY0, CC0):
    """Forgetting statistics over frames: CY <- lam CY + (1-lam) c (r + A c)^T (dense)."""
    CY, CC = CY0.astype(np.float64).copy(), CC0.astype(np.float64).copy()
    for t in range(C.shape[1]):
        c = C[:, t].astype(np.float64)
        yb = R[t].astype(np.float64) + A.astype(np.float64) @ c
        CY = lam * CY + (1 - lam) * np.outer(c, yb)
        CC = lam * CC + (1 - lam) * np.outer(c, c)
    return CY, CC


def hals_one_ref(A, CY, CC, k, region):
    """Exact one-neuron HALS: a_k = max((CY_k - sum_{j!=k} A_j CC_jk) / CC_kk, 0) on region."""
    other = A @ CC[:, k] - A[:, k] * CC[k, k]
    out = np.maximum((CY[k] - other) / CC[k, k], 0)
    return out[region]


def rank1_nmf_ref(Y, a, n_iter):
    """Rank-1 NMF by alternating nonnegative least squares (plain loop)."""
    a = a.astype(np.float64).copy()
    c = np.zeros(Y.shape[0])
    for _ in range(n_iter):
        c = np.maximum(Y @ a / (a @ a), 0)
        a = np.maximum(Y.T @ c / (c @ c), 0)
    return a, c


def nms_ref(points, scores, radius, max_keep):
    """Brute-force NMS: a point is kept iff no better kept point lies within radius."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(np.hypot(*(points[i] - points[j])) > radius for j in kept):
            kept.append(i)
        if len(kept) == max_keep:
            break
    return kept


def weighted_ring_gram_ref(X, weights, offsets):
    """Per-pixel weighted ring Gram XXt (n_bg, R, R) and Xx (n_bg, R), dense loops."""
    T, hb, wb = X.shape
    R = len(offsets)
    XXt = np.zeros((hb * wb, R, R))
    Xx = np.zeros((hb * wb, R))
    for p in range(hb * wb):
        i, j = divmod(p, wb)
        for t in range(T):
            v = np.zeros(R)
            for k, (di, dj) in enumerate(offsets):
                if 0 <= i + di < hb and 0 <= j + dj < wb:
                    v[k] = X[t, i + di, j + dj]
            XXt[p] += weights[t] * np.outer(v, v)
            Xx[p] += weights[t] * v * X[t, i, j]
    return XXt, Xx


# ---- initialisation (summary images, HALS footprints) -------------------------------------


def local_correlation_ref(X: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Mean Pearson correlation with the 8 neighbours of (X - mean_t X) thresholded at thr."""
    Z = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    Z[Z < thr[None]] = 0
    T, H, W = Z.shape
    Z = Z - Z.mean(axis=0)
    sd = Z.std(axis=0)
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            vals = []
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = i + di, j + dj
                    if (di or dj) and 0 <= ii < H and 0 <= jj < W:
                        if sd[i, j] > 0 and sd[ii, jj] > 0:
                            vals.append(
                                (Z[:, i, j] * Z[:, ii, jj]).mean() / (sd[i, j] * sd[ii, jj])
                            )
                        else:
                            vals.append(0.0)
            out[i, j] = np.mean(vals)
    return out


def noise_psd_ref(y: np.ndarray) -> float:
    """CaImAn get_noise_fft ('mean'): sqrt of the mean PSD over normalised frequency (0.25, 0.5]."""
    T = len(y)
    ff = np.arange(T // 2 + 1) / T
    xdft = np.fft.rfft(np.asarray(y, np.float64))
    psd = np.abs(xdft) ** 2 / T
    return float(np.sqrt(psd[(ff > 0.25) & (ff <= 0.5)].mean()))


def hals_footprints_ref(A, CY, CC, allowed, comps, n_sweeps):
    """Dense HALS loop: a[p, k] <- max(0, a[p, k] + (CY[p, k] - A[p] CC[:, k]) / CC[k, k])."""
    A = np.array(A, np.float64)
    for _ in range(n_sweeps):
        for k in comps:
            for p in np.flatnonzero(allowed[:, k]):
                if CC[k, k] <= 0:
                    A[p, k] = 0.0
                    continue
                A[p, k] = max(0.0, A[p, k] + (CY[p, k] - A[p] @ CC[:, k]) / CC[k, k])
    return A


# ---- preprocessing (online_cnmfe/model/_kernels/preprocess.py) ---------------------------------


def _upper_median(x: np.ndarray) -> float:
    s = np.sort(np.asarray(x, np.float64))
    return float(s[s.size // 2])


def sample_start(n: int, step: int) -> int:
    """First sampled index of a strided median: the samples are centred in the row/column."""
    return (n - 1 - ((n - 1) // step) * step) // 2


def frame_gain_ref(y, template, mask, dark, step) -> tuple[float, float]:
    """Least-squares gain of y - dark on template - dark over mask pixels of the step grid."""
    sel = np.zeros(y.shape, bool)
    sel[step // 2 :: step, step // 2 :: step] = True
    sel &= mask.astype(bool)
    t = template[sel].astype(np.float64) - dark
    v = y[sel].astype(np.float64) - dark
    s = float(v @ t / (t @ t)) if (t @ t) > 0 else 1.0
    return s, float(y[sel].astype(np.float64).mean()) if sel.any() else 0.0


def robust_location_ref(x: np.ndarray, scale: float) -> float:
    """Upper median, then one Huber step (threshold 1.5 scale) unless scale <= 0."""
    m = _upper_median(x)
    if scale <= 0 or x.size == 0:
        return m
    c = 1.5 * scale
    return m + float(np.clip(np.asarray(x, np.float64) - m, -c, c).mean())


def row_offsets_ref(y, template, dark, gain, col_step, scale=0.0):
    """(row offsets, row roughness): robust location of the sampled columns of y - scaled
    template; mean |horizontal difference| of each row."""
    H, W = y.shape
    cols = np.arange(sample_start(W, col_step), W, col_step)
    d = y.astype(np.float64) - dark - gain * (template.astype(np.float64) - dark)
    off = np.array([robust_location_ref(d[r, cols], scale) for r in range(H)])
    rough = np.abs(np.diff(y.astype(np.float64), axis=1)).mean(axis=1)
    return off, rough


def column_offsets_ref(y, template, dark, gain, row_off, row_step, scale=0.0) -> np.ndarray:
    H, W = y.shape
    rows = np.arange(sample_start(H, row_step), H, row_step)
    d = y.astype(np.float64) - row_off[:, None] - dark - gain * (template - dark)
    return np.array([robust_location_ref(d[rows, c], scale) for c in range(W)])


def apply_corrections_ref(y, row_off, col_off, dark, inv_gain, template, alpha, mask):
    """(corrected frame, new template, mean of v over the mask)."""
    v = y.astype(np.float64) - row_off[:, None] - col_off[None, :]
    tpl = template.astype(np.float64)
    if alpha > 0:
        tpl = tpl + alpha * (v - tpl)
    m = mask.astype(bool)
    return dark + (v - dark) * inv_gain, tpl, float(v[m].mean()) if m.any() else 0.0


def count_broken_rows_ref(rough, base, ratio, floor, max_padding) -> tuple[int, int]:
    high = rough > ratio * np.maximum(base, floor)
    low = (base > floor) & (rough * ratio < base) & ~high
    n_low = int(low.sum())
    H = rough.size
    flat = (base > floor) & (rough * ratio < base)
    top = 0
    while top < H and flat[top]:
        top += 1
    bottom = 0
    while bottom < H - top and flat[H - 1 - bottom]:
        bottom += 1
    for run in (top, bottom):
        if 0 < run <= max_padding:
            n_low -= run
    return int(high.sum()), n_low


# ---- greedy seed search (online_cnmfe/model/_kernels/seeding.py) -----------------------------


def _local_images_ref(filtered, sn, rs, cs, thresh):
    """pnr and cn of the region (rs, cs) of the pixel-major ``filtered`` (H, W, T), cn with a
    one-pixel margin (the moments' kernels are tested against local_correlation_ref)."""
    from online_cnmfe.model._kernels.summary import (
        local_corr_accumulate_pixel_major,
        local_corr_finalize,
    )

    H, W, T = filtered.shape
    r0, r1 = max(0, rs.start - 1), min(H, rs.stop + 1)
    c0, c1 = max(0, cs.start - 1), min(W, cs.stop + 1)
    sub = filtered[r0:r1, c0:c1]
    h, w = r1 - r0, c1 - c0
    S1, S2, Sx = np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w, 4))
    thr = np.ascontiguousarray(thresh * sn[r0:r1, c0:c1], dtype=np.float32)
    local_corr_accumulate_pixel_major(sub, thr, S1, S2, Sx)
    cn = np.empty((h, w), np.float32)
    local_corr_finalize(S1, S2, Sx, float(T), cn)
    ir = slice(rs.start - r0, rs.start - r0 + rs.stop - rs.start)
    ic = slice(cs.start - c0, cs.start - c0 + cs.stop - cs.start)
    pnr = np.maximum(sub[ir, ic].max(axis=2), 0) / sn[rs, cs]
    return pnr, cn[ir, ic]


def seed_search_ref(
    filtered, raw, sn, cn, pnr, *, gsiz, threshold, kernel, max_neurons, thresh=2.0,
    min_pixel=3, max_halfmax_area=np.inf, max_kappa=np.inf,
):  # fmt: skip
    """The greedy corr x PNR search in NumPy (the code the compiled ``seed_round`` replaced):
    ``seeding.seed_neurons_pixel_major``'s arguments, the same in-place updates; returns
    (footprints as (rs, cs, a2) boxes, traces (K, T), centers (K, 2))."""
    import scipy.ndimage
    import scipy.signal

    from online_cnmfe.model.initialization.seeding import (
        MAX_EMPTY_ROUNDS,
        _box,
        extract_ac,
        seed_statistic,
        seed_window,
    )

    H, W, T = filtered.shape
    dims = (H, W)
    kr = kernel.shape[0] // 2
    min_v = float(threshold)
    v = cn * pnr
    v[v < min_v] = 0
    searched = v <= 0
    win = seed_window(gsiz)
    footprints, traces, centers = [], [], []
    n_empty_rounds = 0
    while len(footprints) < max_neurons:
        vb = seed_statistic(v, gsiz)
        vb[searched] = 0
        vmax = scipy.ndimage.maximum_filter(vb, size=win, mode="nearest")
        rr, cc = np.nonzero((vb == vmax) & (vb >= min_v) & ~searched)
        if len(rr) == 0:
            break
        order = np.argsort(-vb[rr, cc], kind="stable")
        n_before = len(footprints)
        for idx in order:
            r, c = int(rr[idx]), int(cc[idx])
            if searched[r, c] or v[r, c] < min_v:
                searched[r, c] = True
                continue
            searched[r, c] = True
            rs, cs = _box(r, c, gsiz, dims)
            h, w = rs.stop - rs.start, cs.stop - cs.start
            fbox = filtered[rs, cs].reshape(-1, T)
            rbox = raw[rs, cs].reshape(-1, T)
            ctr = (r - rs.start) * w + (c - cs.start)
            ai, ci = extract_ac(fbox, rbox, ctr, (h, w), min_pixel, max_halfmax_area, max_kappa)
            if ai is None:
                searched[_box(r, c, win // 2, dims)] = True
                continue
            a2 = ai.reshape(h, w)
            raw[rs, cs] -= a2[:, :, None] * ci[None, None, :]
            grs = slice(max(0, rs.start - kr), min(H, rs.stop + kr))
            gcs = slice(max(0, cs.start - kr), min(W, cs.stop + kr))
            big = np.zeros((grs.stop - grs.start, gcs.stop - gcs.start), np.float32)
            big[rs.start - grs.start : rs.stop - grs.start,
                cs.start - gcs.start : cs.stop - gcs.start] = a2  # fmt: skip
            fa = scipy.signal.correlate(np.pad(big, kr, mode="constant"), kernel, mode="valid")
            filtered[grs, gcs] -= fa.astype(np.float32)[:, :, None] * ci[None, None, :]
            p_loc, c_loc = _local_images_ref(filtered, sn, grs, gcs, thresh)
            pnr[grs, gcs] = p_loc
            cn[grs, gcs] = c_loc
            v_loc = c_loc * p_loc
            v_loc[v_loc < min_v] = 0
            v[grs, gcs] = v_loc
            searched[rs, cs] |= a2 > a2.max() / 2
            footprints.append((rs, cs, a2.astype(np.float32)))
            traces.append(ci)
            centers.append((r, c))
            if len(footprints) >= max_neurons:
                break
        if len(footprints) == n_before:
            n_empty_rounds += 1
            if n_empty_rounds >= MAX_EMPTY_ROUNDS:
                break
    return footprints, np.array(traces, np.float32).reshape(-1, T), np.array(centers).reshape(-1, 2)
