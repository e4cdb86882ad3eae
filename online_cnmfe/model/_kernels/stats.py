"""Slow-path kernels: footprint sufficient statistics with forgetting and their HALS update.

Symbols: c (K,) denoised traces of one frame, r (n_pixels,) residual ``(I - UWD)(y - A c - b0)``,
so that the background-subtracted frame is ``y - B = r + A c``. Every neuron owns a *slot* (a
row of the padded arrays) holding its allowed region ``sup_idx[s, :sup_n[s]]`` (pixel indices,
a dilation of its footprint support, so footprints may grow), its footprint values on that
region ``a_sup`` (the slow path's mirror of A) and ``CY`` on that region:

    CY[k, p] <- lam CY[k, p] + (1 - lam) c_k (r_p + (A c)_p)      p in region(k)
    CC       <- lam CC + (1 - lam) c c^T,   cbar <- lam cbar + (1 - lam) c

``slot_of[k]`` maps model neuron k to its slot. HALS for one neuron with the others fixed is
exact in one step: ``a_k = max((CY[k] - sum_{j != k} A_j CC[j, k]) / CC[k, k], 0)``.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def scatter_ac(c, slot_of, sup_idx, sup_n, a_sup, out):
    """``out[p] += sum_k a_sup[slot_of[k]] c_k`` over each region; out (n_pixels,) written."""
    for k in range(c.shape[0]):
        ck = c[k]
        if ck == 0.0:
            continue
        s = slot_of[k]
        for i in range(sup_n[s]):
            v = a_sup[s, i]
            if v != 0.0:
                out[sup_idx[s, i]] += v * ck


@numba.njit(**_JIT)
def clear_regions(slot_of, sup_idx, sup_n, out):
    """Zero ``out`` on every region (restores an all-zero scratch after :func:`scatter_ac`)."""
    for k in range(slot_of.shape[0]):
        s = slot_of[k]
        for i in range(sup_n[s]):
            out[sup_idx[s, i]] = 0.0


@numba.njit(**_JIT)
def suffstat_update(c, resid, slot_of, sup_idx, sup_n, a_sup, cy, CC, cbar, lam, scratch):
    """One frame of ``CY``, ``CC`` and ``cbar`` with forgetting factor ``lam``.

    c (K,), resid (n_pixels,), slot_of (K,) int32, sup_idx (S, M) int32, sup_n (S,) int32,
    a_sup/cy (S, M), CC (S, S), cbar (S,), scratch (n_pixels,) all-zero float32.
    ``cy``, ``CC``, ``cbar`` are updated in place; ``scratch`` is returned all-zero.
    """
    K = c.shape[0]
    w = np.float32(1.0 - lam)
    lam32 = np.float32(lam)
    scatter_ac(c, slot_of, sup_idx, sup_n, a_sup, scratch)
    for k in range(K):
        s = slot_of[k]
        wc = w * c[k]
        for i in range(sup_n[s]):
            p = sup_idx[s, i]
            cy[s, i] = lam32 * cy[s, i] + wc * (resid[p] + scratch[p])
    clear_regions(slot_of, sup_idx, sup_n, scratch)
    for k in range(K):
        sk = slot_of[k]
        wc = w * c[k]
        cbar[sk] = lam32 * cbar[sk] + wc
        for j in range(K):
            sj = slot_of[j]
            CC[sk, sj] = lam32 * CC[sk, sj] + wc * c[j]


@numba.njit(**_JIT)
def hals_neuron(k, slot_of, sup_idx, sup_n, a_sup, cy, CC, neighbours, scratch, out):
    """Exact one-neuron HALS step on the sufficient statistics, over neuron k's region.

    ``out[i] = max((cy[s_k, i] - sum_{j in neighbours, j != k} A_j[p_i] CC[s_j, s_k]) /
    CC[s_k, s_k], 0)`` for p_i = sup_idx[s_k, i]. neighbours (n,) int64 model indices whose
    regions may overlap k's; scratch (n_pixels,) all-zero, returned all-zero; out (M,) written
    (entries past ``sup_n[s_k]`` untouched).
    """
    sk = slot_of[k]
    ckk = CC[sk, sk]
    for m in range(neighbours.shape[0]):
        j = neighbours[m]
        if j == k:
            continue
        sj = slot_of[j]
        w = CC[sj, sk]
        if w == 0.0:
            continue
        for i in range(sup_n[sj]):
            v = a_sup[sj, i]
            if v != 0.0:
                scratch[sup_idx[sj, i]] += v * w
    for i in range(sup_n[sk]):
        p = sup_idx[sk, i]
        if ckk > 0.0:
            v = (cy[sk, i] - scratch[p]) / ckk
            out[i] = v if v > 0.0 else 0.0
        else:
            out[i] = 0.0
    for m in range(neighbours.shape[0]):
        j = neighbours[m]
        sj = slot_of[j]
        for i in range(sup_n[sj]):
            scratch[sup_idx[sj, i]] = 0.0


@numba.njit(**_JIT)
def buffer_cy(cnew, resid_rows, frames_ok, pix, ac_rows, out):
    """``out[i] = mean_t cnew[t] (resid_rows[t, pix[i]] + ac_rows[t, i])`` over valid frames.

    cnew (T,), resid_rows (T, n_pixels), frames_ok (T,) bool, pix (m,) int32, ac_rows (T, m);
    out (m,) written. Seeds CY on pixels that join a region (growth, birth) from the buffer.
    """
    m = pix.shape[0]
    n = 0
    for i in range(m):
        out[i] = 0.0
    for t in range(cnew.shape[0]):
        if not frames_ok[t]:
            continue
        n += 1
        ct = cnew[t]
        if ct == 0.0:
            continue
        for i in range(m):
            out[i] += ct * (resid_rows[t, pix[i]] + ac_rows[t, i])
    if n > 0:
        for i in range(m):
            out[i] /= n


@numba.njit(**_JIT)
def predict_cy(k, pix, slot_of, sup_idx, sup_n, a_sup, CC, neighbours, scratch, out):
    """Model prediction of CY for neuron k on pixels ``pix``: ``sum_j A_j[p] CC[s_j, s_k]``.

    Used for CY entries that were never accumulated (a region that grows or merges): at the
    HALS fixed point the statistics equal this prediction. neighbours (n,) int64 includes k;
    scratch (n_pixels,) all-zero, returned all-zero; out (len(pix),) written.
    """
    sk = slot_of[k]
    for m in range(neighbours.shape[0]):
        sj = slot_of[neighbours[m]]
        w = CC[sj, sk]
        if w == 0.0:
            continue
        for i in range(sup_n[sj]):
            v = a_sup[sj, i]
            if v != 0.0:
                scratch[sup_idx[sj, i]] += v * w
    for i in range(pix.shape[0]):
        out[i] = scratch[pix[i]]
    for m in range(neighbours.shape[0]):
        sj = slot_of[neighbours[m]]
        for i in range(sup_n[sj]):
            scratch[sup_idx[sj, i]] = 0.0


@numba.njit(**_JIT)
def weighted_ring_gram(X, weights, offsets, XXt, Xx, start):
    """Ring statistics of grid pixels ``start .. start + XXt.shape[0]`` from weighted samples.

    ``XXt[m] = sum_t w_t x_ring x_ring^T``, ``Xx[m] = sum_t w_t x_ring x_p`` (out-of-grid ring
    entries 0). X (T, hb, wb), weights (T,) (0 skips a sample), offsets (R, 2) int32;
    XXt (n, R, R) and Xx (n, R) float32 overwritten. Each pixel gathers its ring values once
    into V (T, R) scaled by sqrt(w) and forms V^T V with one BLAS product.
    """
    T, hb, wb = X.shape
    R = offsets.shape[0]
    n = XXt.shape[0]
    V = np.zeros((T, R), dtype=np.float32)
    xp = np.zeros(T, dtype=np.float32)
    sw = np.sqrt(np.maximum(weights, 0)).astype(np.float32)
    for m in range(n):
        p = start + m
        i = p // wb
        j = p - i * wb
        for t in range(T):
            s = sw[t]
            xp[t] = s * X[t, i, j]
            for k in range(R):
                ii = i + offsets[k, 0]
                jj = j + offsets[k, 1]
                if ii >= 0 and ii < hb and jj >= 0 and jj < wb:
                    V[t, k] = s * X[t, ii, jj]
                else:
                    V[t, k] = 0.0
        XXt[m] = np.dot(V.T, V)
        Xx[m] = np.dot(V.T, xp)


@numba.njit(**_JIT)
def buffer_regression(ck, resid, ok, pix, out):
    """``out[i] = sum_t ck[t] resid[t, pix[i]]`` over frames with ok[t] (rows read in order).

    ck (T,), resid (T, n_pixels), ok (T,) bool, pix (m,) int32; out (m,) written.
    """
    for i in range(pix.shape[0]):
        out[i] = 0.0
    for t in range(ck.shape[0]):
        c = ck[t]
        if not ok[t] or c == 0.0:
            continue
        for i in range(pix.shape[0]):
            out[i] += c * resid[t, pix[i]]


@numba.njit(**_JIT)
def bbox_hits(bbox, slot_of, q, out):
    """Model indices whose region box ``bbox[slot_of[k]]`` (row0, row1, col0, col1; half-open)
    meets box q; written to out, count returned."""
    n = 0
    for k in range(slot_of.shape[0]):
        b = bbox[slot_of[k]]
        if b[0] < q[1] and q[0] < b[1] and b[2] < q[3] and q[2] < b[3]:
            out[n] = k
            n += 1
    return n


@numba.njit(**_JIT)
def main_component(pix, a, W, keep):
    """Mark (keep[i] = True) the 8-connected component of ``a > 0`` (over pixels ``pix``,
    flat indices on a W-wide image) with the largest sum of a; keep (m,) bool written."""
    m = pix.shape[0]
    r0 = 1 << 30
    c0 = 1 << 30
    r1 = -1
    c1 = -1
    for i in range(m):
        r = pix[i] // W
        c = pix[i] - r * W
        r0 = min(r0, r)
        r1 = max(r1, r)
        c0 = min(c0, c)
        c1 = max(c1, c)
    h = r1 - r0 + 1
    w = c1 - c0 + 1
    pos = np.full(h * w, -1, np.int64)  # crop cell -> index into pix (only a > 0)
    for i in range(m):
        keep[i] = False
        if a[i] > 0:
            r = pix[i] // W
            pos[(r - r0) * w + (pix[i] - r * W - c0)] = i
    label = np.full(m, -1, np.int64)
    stack = np.empty(m, np.int64)
    best, best_sum, n_lab = -1, -1.0, 0
    for i0 in range(m):
        if a[i0] <= 0 or label[i0] >= 0:
            continue
        total = 0.0
        label[i0] = n_lab
        top = 0
        stack[0] = i0
        top = 1
        while top > 0:
            top -= 1
            i = stack[top]
            total += a[i]
            r = pix[i] // W - r0
            c = pix[i] - (pix[i] // W) * W - c0
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    rr = r + dr
                    cc = c + dc
                    if rr < 0 or rr >= h or cc < 0 or cc >= w:
                        continue
                    j = pos[rr * w + cc]
                    if j >= 0 and label[j] < 0:
                        label[j] = n_lab
                        stack[top] = j
                        top += 1
        if total > best_sum:
            best_sum = total
            best = n_lab
        n_lab += 1
    for i in range(m):
        keep[i] = label[i] == best and best >= 0
