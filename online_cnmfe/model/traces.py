"""Trace demixing with the ring background folded in: operators and the per-frame solve.

Exact formulation (reference/algorithm.md §6): with ỹ = (I − UWD)(y − b0) and
Ã = (I − UWD) A, the traces solve min_{c ≥ 0} ‖ỹ − Ã c‖². Ã is never needed per frame:
Ã = A − U G with G = W D A on the background grid, so

  Ãᵀ ỹ = Aᵀ ỹ − Gᵀ (Uᵀ ỹ),   and the Gram Q = ÃᵀÃ is precomputed (sparse: neurons interact
  only when their ring-dilated supports overlap).

Symbols: D (n_bg × n_pixels) block average by ``ssub``, U (n_pixels × n_bg) nearest upsample,
W ring coefficients (n_bg × R) with gather table ``ring_idx``; A footprints (n_pixels × K).
Everything here except :func:`demix_frame` runs when footprints or W change, not per frame.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels import demix as _k
from online_cnmfe.model._kernels import model_update as _ku


def grid_shape(dims: tuple[int, int], ssub: int) -> tuple[int, int]:
    """Background grid (hb, wb) = (ceil(H / ssub), ceil(W / ssub))."""
    return (-(-dims[0] // ssub), -(-dims[1] // ssub))


def grid_operators(dims: tuple[int, int], ssub: int):
    """Sparse block-average D (n_bg × n_pixels) and nearest upsample U (n_pixels × n_bg)."""
    H, Wd = dims
    hb, wb = grid_shape(dims, ssub)
    rows, cols = np.divmod(np.arange(H * Wd), Wd)
    block = (rows // ssub) * wb + cols // ssub
    counts = np.bincount(block, minlength=hb * wb).astype(np.float32)
    ones = np.ones(H * Wd, dtype=np.float32)
    U = scipy.sparse.csr_array((ones, (np.arange(H * Wd), block)), shape=(H * Wd, hb * wb))
    D = scipy.sparse.csr_array(
        (ones / counts[block], (block, np.arange(H * Wd))), shape=(hb * wb, H * Wd)
    )
    return D, U


def ring_matrix(W: np.ndarray, ring_idx: np.ndarray) -> scipy.sparse.csr_array:
    """W as a sparse (n_bg × n_bg) matrix (out-of-grid ring entries dropped)."""
    n_bg, R = W.shape
    rows = np.repeat(np.arange(n_bg), R)
    cols = ring_idx.ravel()
    keep = (cols < n_bg) & (W.ravel() != 0)
    return scipy.sparse.csr_array(
        (W.ravel()[keep], (rows[keep], cols[keep])), shape=(n_bg, n_bg), dtype=np.float32
    )


def background_columns(A, Wsp, D, U):
    """G = W D A (grid, CSC) and Ã = A − U G (CSC), both float32."""
    G = scipy.sparse.csc_array(Wsp @ (D @ A), dtype=np.float32)
    G.eliminate_zeros()
    Atilde = scipy.sparse.csc_array(A - U @ G, dtype=np.float32)
    Atilde.eliminate_zeros()
    return G, Atilde


def gram_from_dense(gram: np.ndarray):
    """CSR arrays (indptr, indices, data), the diagonal and the group order of a dense Gram.

    Group order: neurons sorted by greedy colour of the interaction graph, so a sweep runs
    through groups of non-interacting neurons.
    """
    K = gram.shape[0]
    mask = gram != 0
    np.fill_diagonal(mask, True)
    indptr = np.zeros(K + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    rows, cols = np.nonzero(mask)
    data = np.ascontiguousarray(gram[rows, cols], dtype=np.float32)
    indices = cols.astype(np.int64)
    labels = np.empty(K, dtype=np.int64)
    _k.greedy_groups(indptr, indices, labels, np.empty(K + 1, dtype=np.int64))
    order = np.argsort(labels, kind="stable").astype(np.int64)
    diag = np.ascontiguousarray(np.diag(gram), dtype=np.float32)
    return indptr, indices, data, diag, order


def dense_gram(Atilde) -> np.ndarray:
    """Q = ÃᵀÃ as a dense float32 (K × K) array."""
    Q = (Atilde.T @ Atilde).toarray()
    return np.ascontiguousarray(Q, dtype=np.float32)


def column_box(da_idx: np.ndarray, g_idx: np.ndarray, wb: int) -> np.ndarray:
    """Grid bounding box (rmin, rmax, cmin, cmax) of supp(D A_k) ∪ supp(G_k) ⊇ supp(Ã_k)."""
    idx = np.concatenate([da_idx, g_idx])
    if idx.size == 0:
        return np.array([1, 0, 1, 0], np.int64)  # empty: overlaps nothing
    r, c = np.divmod(idx, wb)
    return np.array([r.min(), r.max(), c.min(), c.max()], np.int64)


def box_overlap(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Which of ``boxes`` (K, 4) intersect ``box`` (4,)."""
    return (
        (boxes[:, 0] <= box[1])
        & (boxes[:, 1] >= box[0])
        & (boxes[:, 2] <= box[3])
        & (boxes[:, 3] >= box[2])
    )


def refresh_csr(st) -> None:
    """Q's CSR on its pattern, diagonal and group sweep order (after any change of Q)."""
    st.q_indptr, st.q_indices, st.q_data, st.q_diag, st.order = csr_arrays(st.gram, st.pattern)


def csr_arrays(gram: np.ndarray, pattern: np.ndarray) -> tuple:
    """(indptr, indices, data, diag, order): the CSR of ``gram`` on ``pattern`` (neighbours
    and diagonal) and its group sweep order. Reads its arguments only (any thread)."""
    K = gram.shape[0]
    nnz_max = int(pattern.sum()) + K
    indptr = np.zeros(K + 1, np.int64)
    indices = np.zeros(nnz_max, np.int64)
    data = np.zeros(nnz_max, np.float32)
    diag = np.zeros(K, np.float32)
    n = _ku.csr_from_pattern(pattern, gram, indptr, indices, data, diag)
    labels = np.empty(K, np.int64)
    _k.greedy_groups(indptr, indices[:n], labels, np.empty(K + 1, np.int64))
    order = np.argsort(labels, kind="stable").astype(np.int64)
    return indptr, indices[:n], data[:n], diag, order


def csc_parts(M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64, indices int64, data float32) contiguous copies for the kernels."""
    M = scipy.sparse.csc_array(M)
    M.sort_indices()
    return (
        np.ascontiguousarray(M.indptr, dtype=np.int64),
        np.ascontiguousarray(M.indices, dtype=np.int64),
        np.ascontiguousarray(M.data, dtype=np.float32),
    )
