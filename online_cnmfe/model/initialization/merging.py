"""Merging of duplicated components in the batch fit (CaImAn ``merge_components``).

Two components are merge candidates when their footprints overlap by at least
``overlap_threshold`` (shared support pixels over the smaller support) and their demixed traces
(``C_raw``) correlate above ``corr_threshold x min(1, (1 - cos) / 0.5)``, cos the footprints'
cosine: the more alike two footprints, the less trace correlation it takes. Footprints with
cosine 0.8 are one cell fitted twice (e.g. a residual re-seed on a cell whose first footprint
was cut too small) whose traces the demixing cannot separate, so their correlation is a poor
guide (0.4-0.7 measured on such pairs of a held-out 256² simulation); distinct neighbours at the
closest spacing of the simulators (1.1 sigma, cosine ~0.74) would need > 0.36. Candidate pairs
are grouped into connected components; each group is replaced by the rank-1 non-negative
factorisation of ``sum_i a_i c_i`` on the union of the supports (a few alternating least-squares
steps).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

logger = logging.getLogger(__name__)


def merge_candidates(A, C_raw: np.ndarray, corr_threshold: float, overlap_threshold: float):
    """Boolean (K, K) upper-triangular matrix of pairs to merge."""
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    mask = (A > 0).astype(np.float32)
    inter = (mask.T @ mask).toarray()
    size = np.diag(inter).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        overlap = inter / np.minimum(size[:, None], size[None, :])
    overlap[~np.isfinite(overlap)] = 0
    np.fill_diagonal(overlap, 0)
    pairs = np.triu(overlap >= overlap_threshold, 1)
    if not pairs.any():
        return pairs
    X = C_raw - C_raw.mean(axis=1, keepdims=True)
    sd = np.sqrt((X * X).sum(axis=1)) + 1e-12
    ii, jj = np.nonzero(pairs)
    corr = np.einsum("kt,kt->k", X[ii], X[jj]) / (sd[ii] * sd[jj])
    norms = np.sqrt(np.asarray(A.multiply(A).sum(axis=0)).ravel()) + 1e-30
    dots = np.asarray((A[:, ii].multiply(A[:, jj])).sum(axis=0)).ravel()
    cosine = dots / (norms[ii] * norms[jj])
    ok = corr >= corr_threshold * np.minimum(1.0, (1.0 - cosine) / 0.5)
    out = np.zeros((K, K), bool)
    out[ii[ok], jj[ok]] = True
    return out


def rank1_merge(A_group, C_group: np.ndarray, n_iter: int = 10):
    """Rank-1 NMF of ``A_group @ C_group`` on its support: returns (a (n_pixels,), c (T,))."""
    A_group = scipy.sparse.csc_array(A_group)
    rows = np.unique(A_group.indices)
    Asub = A_group[rows].toarray()
    M = Asub @ C_group
    w = np.linalg.norm(Asub, axis=0) * np.abs(C_group).max(axis=1)
    c = np.maximum(C_group[int(np.argmax(w))], 0).astype(np.float64)
    a = np.maximum(Asub @ np.ones(Asub.shape[1]), 0).astype(np.float64)
    for _ in range(n_iter):
        cc = c @ c
        if cc <= 0:
            break
        a = np.maximum(M @ c / cc, 0)
        aa = a @ a
        if aa <= 0:
            break
        c = np.maximum(a @ M / aa, 0)
    full = np.zeros(A_group.shape[0], np.float64)
    full[rows] = a
    return full, c


def merge_components(
    A, C: np.ndarray, C_raw: np.ndarray, corr_threshold: float, overlap_threshold: float
):
    """Merge duplicated components.

    Parameters
    ----------
    A : sparse (n_pixels, K)
    C, C_raw : ndarray of shape (K, T)
        Denoised traces (used for the merged footprint and trace) and demixed traces (used for
        the correlation test).
    corr_threshold, overlap_threshold : float

    Returns
    -------
    None when nothing merges, else (A_new csc, C_new (K', T), keep (K',) indices of the
    original component each new column descends from, n_merged).
    """
    A = scipy.sparse.csc_array(A, dtype=np.float32)
    K = A.shape[1]
    pairs = merge_candidates(A, C_raw, corr_threshold, overlap_threshold)
    if not pairs.any():
        return None
    n_groups, labels = scipy.sparse.csgraph.connected_components(
        scipy.sparse.csr_array(pairs | pairs.T), directed=False
    )
    sizes = np.bincount(labels, minlength=n_groups)
    keep = []
    cols = []
    traces = []
    n_merged = 0
    for k in range(K):
        lab = labels[k]
        if sizes[lab] == 1:
            keep.append(k)
            cols.append(A[:, [k]])
            traces.append(C[k])
            continue
        members = np.flatnonzero(labels == lab)
        if k != members[0]:
            continue
        a, c = rank1_merge(A[:, members], C[members])
        norm = np.linalg.norm(a)
        if norm <= 0:
            continue
        best = members[int(np.argmax(np.abs(C[members]).max(axis=1)))]
        keep.append(int(best))
        cols.append(scipy.sparse.csc_array((a / norm).astype(np.float32)[:, None]))
        traces.append((c * norm).astype(np.float32))
        n_merged += members.size - 1
    A_new = scipy.sparse.hstack(cols, format="csc").astype(np.float32)
    logger.debug("merged %d components into %d groups", n_merged, int((sizes > 1).sum()))
    return A_new, np.array(traces, np.float32), np.array(keep, np.int64), n_merged
