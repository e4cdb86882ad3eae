"""Kernels that keep the demixing products exact when footprints or ring rows change.

Symbols: A footprints (CSC n_pixels × K), DA = D A (grid CSC, block averages), N block pixel
counts (n_bg,), S = Uᵀ A = N ∘ DA (block sums), G = W D A (grid CSC; its support is
*structural*: every grid pixel whose ring touches supp(DA_k), zeros kept, so W rows can change
in place), Q = ÃᵀÃ with Ã = A − U G:

  Q_jk = A_jᵀ A_k − S_jᵀ G_k − G_jᵀ S_k + G_jᵀ N G_k.

They run between frames on the few columns or rows a slow-path update touches.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def g_column(da_idx, da_val, W, ring_idx, offsets, hb, wb, scratch, mark, tag):
    """G_k = W (D A_k) on its structural support; returns (indices int64 sorted, values f32).

    da_idx, da_val: support and values of D A_k. Scratch (n_bg + 1,) float32 zeros on entry and
    exit; mark (n_bg,) int64 (entries equal to ``tag`` are taken as visited; use a fresh tag).
    """
    n = da_idx.shape[0]
    R = offsets.shape[0]
    for m in range(n):
        scratch[da_idx[m]] = da_val[m]
    buf = np.empty(n * R, np.int64)
    cnt = 0
    for m in range(n):
        qr = da_idx[m] // wb
        qc = da_idx[m] - qr * wb
        for j in range(R):
            pr = qr - offsets[j, 0]
            pc = qc - offsets[j, 1]
            if 0 <= pr < hb and 0 <= pc < wb:
                p = pr * wb + pc
                if mark[p] != tag:
                    mark[p] = tag
                    buf[cnt] = p
                    cnt += 1
    idx = np.sort(buf[:cnt])
    val = np.empty(cnt, np.float32)
    for m in range(cnt):
        p = idx[m]
        acc = np.float32(0.0)
        for j in range(R):
            acc += W[p, j] * scratch[ring_idx[p, j]]
        val[m] = acc
    for m in range(n):
        scratch[da_idx[m]] = 0.0
    return idx, val


@njit(cache=True, nogil=True)
def gram_column(k, cand, a_s, a_e, a_ix, a_d, da_s, da_e, da_ix, da_d, g_s, g_e, g_ix, g_d, nblk,
                sa, sg, ss, out):  # fmt: skip
    """out[i] = Q[cand[i], k] (slotted CSC: column j = entries s[j]:e[j]).

    Scratch sa (n_pixels,), sg, ss (n_bg,) float32 zero in and out.
    """
    for q in range(a_s[k], a_e[k]):
        sa[a_ix[q]] = a_d[q]
    for q in range(g_s[k], g_e[k]):
        sg[g_ix[q]] = g_d[q]
    for q in range(da_s[k], da_e[k]):
        ss[da_ix[q]] = nblk[da_ix[q]] * da_d[q]
    for i in range(cand.shape[0]):
        j = cand[i]
        v = 0.0
        for q in range(a_s[j], a_e[j]):
            v += a_d[q] * sa[a_ix[q]]
        for q in range(da_s[j], da_e[j]):
            v -= nblk[da_ix[q]] * da_d[q] * sg[da_ix[q]]
        for q in range(g_s[j], g_e[j]):
            p = g_ix[q]
            v += g_d[q] * (nblk[p] * sg[p] - ss[p])
        out[i] = v
    for q in range(a_s[k], a_e[k]):
        sa[a_ix[q]] = 0.0
    for q in range(g_s[k], g_e[k]):
        sg[g_ix[q]] = 0.0
    for q in range(da_s[k], da_e[k]):
        ss[da_ix[q]] = 0.0


@njit(cache=True, nogil=True)
def gather_columns(cols, src, s_start, s_stop, s_idx, s_data, pos, o_start, o_stop, o_idx, o_data):
    """Copy column ``src[i]`` of slotted matrix s into column ``cols[i]`` of slotted matrix o,
    packed from entry ``pos`` on; returns the next free entry of o.

    Written in place: o_start, o_stop, o_idx, o_data (which must hold the columns).
    """
    for i in range(cols.shape[0]):
        k = cols[i]
        j = src[i]
        o_start[k] = pos
        for q in range(s_start[j], s_stop[j]):
            o_idx[pos] = s_idx[q]
            o_data[pos] = s_data[q]
            pos += 1
        o_stop[k] = pos
    return pos


@njit(cache=True, nogil=True)
def _find(ix, lo, hi, p):
    while lo < hi:
        mid = (lo + hi) // 2
        if ix[mid] < p:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def w_rows_update(start, stop, w_rows, ring_idx, affected, da_s, da_e, da_ix, da_d, g_s, g_e,
                  g_ix, g_d, nblk, gram, scratch):  # fmt: skip
    """After W rows [start, stop) became ``w_rows`` (stop - start, R): refresh G there and
    update Q exactly (in place).

    ``affected``: neurons whose G support may contain those rows. Written in place: g_d, gram.
    scratch (n_bg + 1,) float32 zeros in and out.
    """
    na = affected.shape[0]
    nr = stop - start
    go = np.zeros((na, nr))
    gn = np.zeros((na, nr))
    sv = np.zeros((na, nr))
    for a in range(na):
        k = affected[a]
        for q in range(da_s[k], da_e[k]):
            scratch[da_ix[q]] = da_d[q]
        for r in range(nr):
            p = start + r
            pos = _find(g_ix, g_s[k], g_e[k], p)
            if pos < g_e[k] and g_ix[pos] == p:
                acc = np.float32(0.0)
                for j in range(w_rows.shape[1]):
                    acc += w_rows[r, j] * scratch[ring_idx[p, j]]
                go[a, r] = g_d[pos]
                gn[a, r] = acc
                g_d[pos] = acc
            sv[a, r] = nblk[p] * scratch[p]
        for q in range(da_s[k], da_e[k]):
            scratch[da_ix[q]] = 0.0
    for a in range(na):
        for b in range(a, na):
            d = 0.0
            for r in range(nr):
                n = nblk[start + r]
                d -= sv[a, r] * (gn[b, r] - go[b, r]) + (gn[a, r] - go[a, r]) * sv[b, r]
                d += n * (gn[a, r] * gn[b, r] - go[a, r] * go[b, r])
            if d != 0.0:
                ka = affected[a]
                kb = affected[b]
                gram[ka, kb] += d
                if ka != kb:
                    gram[kb, ka] += d


@njit(cache=True, nogil=True)
def csr_from_pattern(pattern, gram, indptr, indices, data, diag):
    """CSR (neighbours + diagonal) of the dense Gram on a boolean pattern; returns nnz.

    indptr (K + 1,), indices/data (≥ nnz,), diag (K,) written in place.
    """
    K = gram.shape[0]
    n = 0
    indptr[0] = 0
    for i in range(K):
        for j in range(K):
            if pattern[i, j] or i == j:
                indices[n] = j
                data[n] = gram[i, j]
                n += 1
        indptr[i + 1] = n
        diag[i] = gram[i, i]
    return n
