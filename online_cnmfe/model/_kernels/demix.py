"""Per-frame trace demixing with the ring background folded in (exact formulation).

Symbols: y frame (n_pixels,), b0 baseline (n_pixels,), D block average onto the background
grid (hb, wb) by ``ssub``, U nearest-neighbour upsample back, W ring coefficients
(n_bg, R) stored with a gather table ``ring_idx`` (n_bg, R) of flat grid indices (index
``n_bg`` points at a zero pad, used for ring pixels outside the grid); per frame the ring
product reads Wt = Wᵀ (R, n_bg) against the grid padded by the ring's reach (``ring_layout``),
so each ring offset is one contiguous, vectorised pass over a grid row.
A footprints (CSC), G = W D A (background grid, CSC), Ã = (I − U W D) A = A − U G.

Per frame:
  x = y − b0, ỹ = (I − UWD) x                       (``background_subtract``)
  rhs = Ãᵀ ỹ = Aᵀ ỹ − Gᵀ (Uᵀ ỹ)                    (``demix_rhs``)
  c = argmin_{c ≥ 0} ‖ỹ − Ã c‖²                       (``nnls_cd``, Gram = ÃᵀÃ in CSR)

All kernels write into caller-owned arrays and allocate nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def ring_gather_index(ring_offsets: np.ndarray, hb: int, wb: int) -> np.ndarray:
    """Flat grid index of each ring pixel of each grid pixel; ``hb * wb`` when outside.

    Plain numpy, computed once per model (not per frame).
    """
    rows, cols = np.divmod(np.arange(hb * wb, dtype=np.int64), wb)
    rr = rows[:, None] + ring_offsets[None, :, 0].astype(np.int64)
    cc = cols[:, None] + ring_offsets[None, :, 1].astype(np.int64)
    inside = (rr >= 0) & (rr < hb) & (cc >= 0) & (cc < wb)
    idx = np.where(inside, rr * wb + cc, hb * wb)
    return np.ascontiguousarray(idx, dtype=np.int32)


def ring_layout(ring_offsets: np.ndarray, hb: int, wb: int) -> tuple[np.ndarray, int, int]:
    """(flat offsets (R,) int64, pad, padded size) of the ring on the grid padded by ``pad``.

    ``pad`` = the ring's reach (largest |offset|); grid pixel (i, j) sits at
    ``(i + pad) * (wb + 2 pad) + j + pad`` of the padded grid, and its ring pixel k at that
    plus ``flat[k]``. Plain numpy, computed once per model (not per frame).
    """
    off = np.asarray(ring_offsets, np.int64).reshape(-1, 2)
    pad = int(np.abs(off).max(initial=0))
    wp = wb + 2 * pad
    flat = np.ascontiguousarray(off[:, 0] * wp + off[:, 1], dtype=np.int64)
    return flat, pad, (hb + 2 * pad) * wp


@njit(cache=True, nogil=True)
def background_subtract(y, b0, Wt, ring_flat, pad, height, width, ssub, xd, bg, ytilde, zsum):
    """ỹ = (I − UWD)(y − b0) and zsum = Uᵀ ỹ (block sums of ỹ).

    y, b0, ytilde : (n_pixels,) float32. Wt : (R, n_bg) float32, the ring coefficients
    transposed. ring_flat (R,) int64, pad: the ring on the padded grid (``ring_layout``).
    Written in place: xd (padded size,) scratch (grid average of y − b0, zero around it),
    bg (n_bg,) scratch (ring prediction), ytilde (n_pixels,), zsum (n_bg,).

    Each grid pixel's ring sum is taken over the ring in order (k = 0 … R−1), as a per-pixel
    loop over ``ring_idx`` would (bit for bit the same); the loop runs over the grid row
    innermost, where it vectorises (4× faster than per pixel).
    """
    n_bg = bg.shape[0]
    wb = (width + ssub - 1) // ssub
    hb = n_bg // wb
    wp = wb + 2 * pad
    for p in range(xd.shape[0]):
        xd[p] = 0.0
    for i in range(height):
        rb = (i // ssub + pad) * wp + pad
        base = i * width
        first = 0
        if ssub == 2:  # the usual grid: pixel pairs, no division per pixel
            first = width - width % 2
            for bj in range(width // 2):
                j = base + 2 * bj
                xd[rb + bj] = (xd[rb + bj] + (y[j] - b0[j])) + (y[j + 1] - b0[j + 1])
        for j in range(first, width):
            xd[rb + j // ssub] += y[base + j] - b0[base + j]
    for bi in range(hb):
        nr = min(ssub, height - bi * ssub)
        rp = (bi + pad) * wp + pad
        for bj in range(wb):
            nc = min(ssub, width - bj * ssub)
            xd[rp + bj] /= nr * nc
    R = Wt.shape[0]
    for bi in range(hb):
        rp = (bi + pad) * wp + pad
        row = bg[bi * wb : (bi + 1) * wb]
        for bj in range(wb):
            row[bj] = 0.0
        for k in range(R):
            w = Wt[k, bi * wb : (bi + 1) * wb]
            x = xd[rp + ring_flat[k] : rp + ring_flat[k] + wb]
            for bj in range(wb):
                row[bj] = row[bj] + w[bj] * x[bj]
    for p in range(n_bg):
        zsum[p] = 0.0
    for i in range(height):
        rb = (i // ssub) * wb
        base = i * width
        first = 0
        if ssub == 2:
            first = width - width % 2
            for bj in range(width // 2):
                j = base + 2 * bj
                v0 = y[j] - b0[j] - bg[rb + bj]
                v1 = y[j + 1] - b0[j + 1] - bg[rb + bj]
                ytilde[j] = v0
                ytilde[j + 1] = v1
                zsum[rb + bj] = (zsum[rb + bj] + v0) + v1
        for j in range(first, width):
            q = rb + j // ssub
            v = y[base + j] - b0[base + j] - bg[q]
            ytilde[base + j] = v
            zsum[q] += v


@njit(cache=True, nogil=True)
def demix_rhs(a_start, a_stop, a_indices, a_data, g_start, g_stop, g_indices, g_data, ytilde,
              zsum, rhs):  # fmt: skip
    """rhs = Aᵀ ỹ − Gᵀ zsum (= Ãᵀ ỹ).

    A (n_pixels × K) and G (n_bg × K) in slotted CSC: column k is entries
    ``start[k]:stop[k]`` of ``indices``/``data``. Written in place: rhs (K,) float32.
    """
    K = rhs.shape[0]
    for k in range(K):
        acc = np.float32(0.0)
        for q in range(a_start[k], a_stop[k]):
            acc += a_data[q] * ytilde[a_indices[q]]
        for q in range(g_start[k], g_stop[k]):
            acc -= g_data[q] * zsum[g_indices[q]]
        rhs[k] = acc


@njit(cache=True, nogil=True)
def nnls_cd(gram_indptr, gram_indices, gram_data, gram_diag, rhs, order, n_sweeps, c):
    """Block-coordinate descent for min_{c ≥ 0} ½ cᵀ Q c − rhsᵀ c, warm-started from ``c``.

    Q = ÃᵀÃ in CSR (rows include the diagonal). ``order`` lists the neurons group by
    group (a group holds neurons with Q[i, j] = 0 between them, so updating a group in
    sequence equals updating it jointly). Update: c_k ← max(0, c_k + (rhs_k − Q_k c)/Q_kk).
    Written in place: c (K,) float32.
    """
    for _ in range(n_sweeps):
        for n in range(order.shape[0]):
            k = order[n]
            d = gram_diag[k]
            if d <= 0.0:
                c[k] = 0.0
                continue
            acc = rhs[k]
            for q in range(gram_indptr[k], gram_indptr[k + 1]):
                acc -= gram_data[q] * c[gram_indices[q]]
            v = c[k] + acc / d
            c[k] = v if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def greedy_groups(gram_indptr, gram_indices, labels, used):
    """Greedy colouring: group label per neuron so that neurons of a group do not interact.

    Run when the footprints change (not per frame). Written in place: labels (K,) int64
    (−1 on entry is not required), used (K + 1,) int64 scratch.
    """
    n = labels.shape[0]
    for k in range(n):
        labels[k] = -1
    for k in range(used.shape[0]):
        used[k] = -1
    for k in range(n):
        for q in range(gram_indptr[k], gram_indptr[k + 1]):
            j = gram_indices[q]
            if j != k and labels[j] >= 0:
                used[labels[j]] = k
        g = 0
        while used[g] == k:
            g += 1
        labels[k] = g
