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

from online_cnmfe._kernels import demix as _k


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


def update_gram_columns(gram: np.ndarray, Atilde, columns: np.ndarray) -> None:
    """Recompute rows and columns ``columns`` of the dense Gram in place."""
    if len(columns) == 0:
        return
    block = (Atilde.T @ Atilde[:, columns]).toarray().astype(np.float32)
    gram[:, columns] = block
    gram[columns, :] = block.T


def csc_parts(M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64, indices int64, data float32) contiguous copies for the kernels."""
    M = scipy.sparse.csc_array(M)
    M.sort_indices()
    return (
        np.ascontiguousarray(M.indptr, dtype=np.int64),
        np.ascontiguousarray(M.indices, dtype=np.int64),
        np.ascontiguousarray(M.data, dtype=np.float32),
    )
