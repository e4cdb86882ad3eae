"""Footprint updates by HALS on sufficient statistics (batch init and online refresh).

Symbols: A (n_pixels, K) footprints, csc float32, pixels flattened row-major; C (K, T) traces;
Y - B the background-subtracted frames; ``CC = C C^T`` (K, K); ``CY = C (Y - B)^T``.

**Storage of CY** (shared with the slow path): ``CY`` is kept *transposed*, as a
``scipy.sparse.csc_array`` of shape (n_pixels, K) -- the same layout as A -- whose stored entries
(explicit zeros included) are each neuron's *allowed support*: the pixels its footprint may
occupy, normally its current support dilated by a few pixels so that footprints can grow.
Column k holds ``sum_t (Y - B)[p, t] C[k, t]`` for the allowed pixels p of neuron k. Scaling
(sums versus means, forgetting) is free as long as CY and CC share it.

HALS (CaImAn ``HALS4shapes``) for each neuron k and allowed pixel p:
``a[p, k] <- max(0, a[p, k] + (CY[p, k] - sum_j A[p, j] CC[j, k]) / CC[k, k])``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from online_cnmfe.model._kernels.hals import hals_footprints_pattern, pattern_cy

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Pattern:
    """A sparse (n_pixels, K) pattern in both orders (see ``_kernels/hals.py``)."""

    shape: tuple[int, int]
    col_ptr: np.ndarray
    col_pix: np.ndarray
    col_pos: np.ndarray  # CSR slot of each CSC entry
    row_ptr: np.ndarray
    row_nrn: np.ndarray
    csr_to_csc: np.ndarray  # CSC entry of each CSR slot

    @classmethod
    def from_csc(cls, P) -> Pattern:
        P = scipy.sparse.csc_array(P)
        P.sort_indices()
        nnz = P.indices.size
        tagged = scipy.sparse.csc_array(
            (np.arange(1, nnz + 1, dtype=np.float64), P.indices, P.indptr), shape=P.shape
        )
        R = tagged.tocsr()
        R.sort_indices()
        csr_to_csc = (R.data - 1).astype(np.int64)
        col_pos = np.empty(nnz, np.int64)
        col_pos[csr_to_csc] = np.arange(nnz)
        return cls(
            shape=P.shape,
            col_ptr=P.indptr.astype(np.int64),
            col_pix=P.indices.astype(np.int64),
            col_pos=col_pos,
            row_ptr=R.indptr.astype(np.int64),
            row_nrn=R.indices.astype(np.int64),
            csr_to_csc=csr_to_csc,
        )

    def keys(self) -> np.ndarray:
        col = np.repeat(np.arange(self.shape[1], dtype=np.int64), np.diff(self.col_ptr))
        return col * self.shape[0] + self.col_pix

    def values_of(self, M) -> np.ndarray:
        """Values of sparse M on the pattern, in CSC entry order (0 where M has no entry)."""
        M = scipy.sparse.csc_array(M)
        M.sum_duplicates()
        col = np.repeat(np.arange(M.shape[1], dtype=np.int64), np.diff(M.indptr))
        mkeys = col * self.shape[0] + M.indices
        keys = self.keys()
        out = np.zeros(keys.size, np.float32)
        if keys.size == 0 or mkeys.size == 0:
            return out
        idx = np.clip(np.searchsorted(keys, mkeys), 0, keys.size - 1)
        hit = keys[idx] == mkeys
        out[idx[hit]] = M.data[hit]
        return out

    def to_csc(self, values_csc_order: np.ndarray, drop_zeros: bool = True):
        M = scipy.sparse.csc_array(
            (values_csc_order.astype(np.float32), self.col_pix.copy(), self.col_ptr.copy()),
            shape=self.shape,
        )
        if drop_zeros:
            M.eliminate_zeros()
        return M


def search_regions(A, dims: tuple[int, int], grow_px: int, max_radius_px: float | None = None):
    """Allowed supports: each footprint's support dilated by a disk of ``grow_px`` pixels,
    optionally cut to a disk of ``max_radius_px`` around the footprint's weighted centroid.

    Parameters
    ----------
    A : sparse (n_pixels, K)
    dims : (H, W)
    grow_px : int
    max_radius_px : float, optional

    Returns
    -------
    scipy.sparse.csc_array of shape (n_pixels, K), bool
    """
    A = scipy.sparse.csc_array(A)
    H, W = dims
    g = int(grow_px)
    yy, xx = np.mgrid[-g : g + 1, -g : g + 1]
    disk = (yy**2 + xx**2) <= g * g
    indices, indptr = [], [0]
    for k in range(A.shape[1]):
        vals = A.data[A.indptr[k] : A.indptr[k + 1]]
        pix = A.indices[A.indptr[k] : A.indptr[k + 1]][vals > 0]
        vals = vals[vals > 0]
        if pix.size == 0:
            indptr.append(indptr[-1])
            continue
        r, c = np.divmod(pix, W)
        r0, r1 = max(0, r.min() - g), min(H, r.max() + g + 1)
        c0, c1 = max(0, c.min() - g), min(W, c.max() + g + 1)
        m = np.zeros((r1 - r0, c1 - c0), bool)
        m[r - r0, c - c0] = True
        if g > 0:
            m = scipy.ndimage.binary_dilation(m, structure=disk)
        rr, cc = np.nonzero(m)
        if max_radius_px is not None:
            w = vals / vals.sum()
            cr, ccen = (w * r).sum() - r0, (w * c).sum() - c0
            inside = (rr - cr) ** 2 + (cc - ccen) ** 2 <= max_radius_px**2
            rr, cc = rr[inside], cc[inside]
        idx = np.sort((rr + r0) * W + (cc + c0))
        indices.append(idx)
        indptr.append(indptr[-1] + idx.size)
    ind = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    return scipy.sparse.csc_array(
        (np.ones(ind.size, bool), ind, np.array(indptr)), shape=(H * W, A.shape[1])
    )


def compute_cy(allowed, C: np.ndarray, Yt: np.ndarray):
    """CY (transposed, on the allowed pattern) from traces and background-subtracted data.

    Parameters
    ----------
    allowed : sparse (n_pixels, K), the allowed supports
    C : ndarray of shape (K, T), float32
    Yt : ndarray of shape (n_pixels, T), float32
        Background-subtracted frames, pixel-major.

    Returns
    -------
    scipy.sparse.csc_array of shape (n_pixels, K), float32 (explicit zeros kept)
    """
    pat = Pattern.from_csc(allowed)
    cy = np.zeros(pat.col_pix.size, np.float32)
    pattern_cy(pat.col_ptr, pat.col_pix, pat.col_pos, np.ascontiguousarray(C, np.float32), Yt, cy)
    return pat.to_csc(cy[pat.col_pos], drop_zeros=False)


def hals_footprints(A, CY, CC: np.ndarray, components=None, support=None, n_sweeps: int = 5):
    """HALS update of footprints on the sufficient statistics.

    Parameters
    ----------
    A : scipy.sparse csc of shape (n_pixels, K), float32
    CY : scipy.sparse csc of shape (n_pixels, K), float32
        ``(Y - B) C^T`` on each neuron's allowed support (see module docstring).
    CC : ndarray of shape (K, K)
    components : array of int, optional
        Neurons to update (default all); the others are kept and used as fixed.
    support : sparse (n_pixels, K) bool, optional
        Allowed supports; default the stored pattern of CY.
    n_sweeps : int

    Returns
    -------
    scipy.sparse.csc_array of shape (n_pixels, K), float32
        Updated footprints (zeros dropped). The footprints of updated neurons are confined to
        their allowed support.
    """
    A = scipy.sparse.csc_array(A, dtype=np.float32)
    K = A.shape[1]
    if CY.shape != A.shape or CC.shape != (K, K):
        raise ValueError(
            f"CY {CY.shape} and CC {CC.shape} do not match A {A.shape}; expected CY "
            f"{A.shape} and CC ({K}, {K})"
        )
    allowed = scipy.sparse.csc_array(support if support is not None else CY, dtype=bool)
    allowed = scipy.sparse.csc_array(
        (np.ones(allowed.indices.size, bool), allowed.indices, allowed.indptr), shape=A.shape
    )
    union = scipy.sparse.csc_array(allowed.astype(np.float32) + (A != 0).astype(np.float32))
    pat = Pattern.from_csc(union)
    a = pat.values_of(A)[pat.csr_to_csc]
    cy = pat.values_of(CY)[pat.csr_to_csc]
    comps = np.arange(K) if components is None else np.asarray(components, np.int64)
    hals_footprints_pattern(
        pat.row_ptr,
        pat.row_nrn,
        pat.col_ptr,
        pat.col_pix,
        pat.col_pos,
        a,
        cy,
        np.ascontiguousarray(CC, np.float32),
        comps,
        int(n_sweeps),
    )
    return pat.to_csc(a[pat.col_pos])


def clean_footprints(A, dims: tuple[int, int], rel_threshold: float = 0.05):
    """Zero entries below ``rel_threshold * max`` and keep the connected part holding the max.

    Returns
    -------
    scipy.sparse.csc_array of shape (n_pixels, K), float32
    """
    A = scipy.sparse.csc_array(A, dtype=np.float32)
    A.sort_indices()
    H, W = dims
    data = A.data.copy()
    for k in range(A.shape[1]):
        s, e = A.indptr[k], A.indptr[k + 1]
        if e == s:
            continue
        v = data[s:e]
        vmax = v.max()
        if vmax <= 0:
            data[s:e] = 0
            continue
        v[v < rel_threshold * vmax] = 0
        pix = A.indices[s:e]
        r, c = np.divmod(pix, W)
        r0, c0 = r.min(), c.min()
        m = np.zeros((r.max() - r0 + 1, c.max() - c0 + 1), bool)
        m[r - r0, c - c0] = v > 0
        lab, n = scipy.ndimage.label(m, structure=np.ones((3, 3)))
        if n > 1:
            keep = lab[r - r0, c - c0] == lab[r[v.argmax()] - r0, c[v.argmax()] - c0]
            v[~keep] = 0
        data[s:e] = v
    out = scipy.sparse.csc_array((data, A.indices.copy(), A.indptr.copy()), shape=A.shape)
    out.eliminate_zeros()
    return out
