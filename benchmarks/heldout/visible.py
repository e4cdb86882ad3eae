"""Visible cells of a real recording (no ground truth) and how a set of footprints covers them.

The finder is deliberately **not** the project's detector (no corr x PNR seeding, no ring
model, no NMF). It mimics what a person does with a max projection:

1. high-pass every frame with a difference of Gaussians at the neuron scale,
   ``D_t = G(sigma_in) * Y_t - G(sigma_out) * Y_t`` with ``sigma_in = diameter / 6`` (smooths
   pixel noise, keeps a soma) and ``sigma_out = diameter / 1.5`` (removes everything broader
   than a cell), then subtract each pixel's temporal median (static texture is not activity);
2. two summary images of D: its max projection P (where something lit up) and the local
   temporal correlation image Cn (mean correlation of each pixel with its 8 neighbours: a
   cell's pixels rise together, noise does not);
3. the score ``S = P * max(Cn, 0)``; visible cells are the local maxima of S (window
   ``min_separation x diameter``) above ``median(S) + k * 1.4826 * MAD(S)`` (k explicit,
   default 5) whose Cn is at least ``median(Cn) + corr_k_mad * 1.4826 * MAD(Cn)`` (relative,
   because a preprocessed movie's spatial filtering correlates neighbouring noise).

Coverage of footprints A (n_pixels x K, pixels row-major): each footprint's contour is its
region >= 0.2 x its max; a visible cell is *covered* if its pixel lies inside a contour, a
contour *sits on nothing* if no visible cell lies inside it, and a cell *has two contours*
if it lies inside two or more. A covered cell has *its own contour* if some contour holding it
has no other visible cell nearer to the footprint's centroid (value-weighted): wide contours
also cover the neighbours of the cell they belong to, and a cell covered only that way was not
found (on minian's CA1 fixture 19 of the 99 cells minian's result covers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from online_cnmfe.results.stream import centroids


@dataclass(frozen=True, slots=True, kw_only=True)
class FinderParams:
    """Parameters of :func:`find_visible_cells` (see the module docstring)."""

    diameter_px: float
    k_mad: float = 5.0
    corr_k_mad: float = 1.0
    min_separation: float = 0.8
    inner_frac: float = 1 / 6
    outer_frac: float = 1 / 1.5

    def __post_init__(self) -> None:
        if not 3 <= self.diameter_px <= 100:
            raise ValueError(f"diameter_px={self.diameter_px} is out of range; [3, 100]")
        if self.k_mad <= 0:
            raise ValueError(f"k_mad={self.k_mad} is out of range; > 0")


@dataclass(slots=True)
class VisibleCells:
    rows: np.ndarray  # (n,) int
    cols: np.ndarray  # (n,) int
    score: np.ndarray  # (n,) S at the cell
    max_projection: np.ndarray  # (H, W) raw max projection (for pictures)
    peak_image: np.ndarray  # P
    corr_image: np.ndarray  # Cn
    score_image: np.ndarray  # S
    threshold: float
    corr_threshold: float
    params: dict


def highpass(Y: np.ndarray, p: FinderParams, smooth: bool = True) -> np.ndarray:
    """DoG of every frame minus each pixel's temporal median: (T, H, W) float32. Without
    ``smooth`` the inner Gaussian is left out (pixel noise stays independent, for Cn)."""
    Y = np.asarray(Y, np.float32)
    s_in, s_out = p.inner_frac * p.diameter_px, p.outer_frac * p.diameter_px
    D = scipy.ndimage.gaussian_filter(Y, (0, s_in, s_in), mode="nearest") if smooth else Y.copy()
    D -= scipy.ndimage.gaussian_filter(Y, (0, s_out, s_out), mode="nearest")
    D -= np.median(D, axis=0)
    return D


def local_correlation(D: np.ndarray) -> np.ndarray:
    """Mean Pearson correlation of each pixel's trace with its 8 neighbours: (H, W)."""
    Z = D - D.mean(axis=0)
    sd = np.sqrt((Z * Z).mean(axis=0))
    Z /= np.where(sd > 0, sd, np.inf)
    T, H, W = Z.shape
    Zp = np.pad(Z, ((0, 0), (1, 1), (1, 1)))
    acc = np.zeros((H, W), np.float64)
    cnt = np.zeros((H, W), np.float64)
    ones = np.pad(np.ones((H, W)), 1)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            nb = Zp[:, 1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
            acc += np.einsum("thw,thw->hw", Z, nb, optimize=True) / T
            cnt += ones[1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
    return (acc / cnt).astype(np.float32)


def find_visible_cells(Y: np.ndarray, p: FinderParams) -> VisibleCells:
    """Visible cells of a movie (T, H, W): see the module docstring."""
    D = highpass(Y, p)
    P = D.max(axis=0)
    Cn = local_correlation(highpass(Y, p, smooth=False))
    S = P * np.clip(Cn, 0, None)
    med = float(np.median(S))
    mad = float(np.median(np.abs(S - med)))
    threshold = med + p.k_mad * 1.4826 * mad
    size = max(3, int(round(p.min_separation * p.diameter_px)) | 1)
    peaks = (S == scipy.ndimage.maximum_filter(S, size=size)) & (S > threshold)
    c_med = float(np.median(Cn))
    corr_threshold = c_med + p.corr_k_mad * 1.4826 * float(np.median(np.abs(Cn - c_med)))
    peaks &= Cn >= corr_threshold
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-S[rows, cols])
    rows, cols = rows[order], cols[order]
    return VisibleCells(
        rows=rows,
        cols=cols,
        score=S[rows, cols],
        max_projection=np.asarray(Y).max(axis=0).astype(np.float32),
        peak_image=P,
        corr_image=Cn,
        score_image=S,
        threshold=threshold,
        corr_threshold=corr_threshold,
        params=asdict(p),
    )


# ---- coverage ------------------------------------------------------------------------------
def contour_masks(A, dims, threshold: float = 0.2) -> scipy.sparse.csc_array:
    """Binary masks (n_pixels x K, bool CSC): each footprint >= threshold x its max."""
    A = scipy.sparse.csc_array(A, dtype=np.float64)
    A.sum_duplicates()
    k = A.shape[1]
    col = np.repeat(np.arange(k), np.diff(A.indptr))
    colmax = np.zeros(k)
    np.maximum.at(colmax, col, A.data)
    keep = (A.data > 0) & (A.data >= threshold * colmax[col])
    return scipy.sparse.csc_array((keep, A.indices, A.indptr), shape=A.shape)


def coverage(cells: VisibleCells, A, dims, threshold: float = 0.2) -> dict:
    """How footprints A cover the visible cells (counts and per-cell / per-contour flags)."""
    masks = contour_masks(A, dims, threshold)
    k = masks.shape[1]
    pix = cells.rows * dims[1] + cells.cols
    hits = masks[pix, :] if len(pix) and k else scipy.sparse.csr_array((len(pix), k), dtype=bool)
    hits = scipy.sparse.csr_array(hits, dtype=np.int32)
    per_cell = np.asarray(hits.sum(axis=1)).ravel() if len(pix) else np.zeros(0, int)
    per_contour = np.asarray(hits.sum(axis=0)).ravel() if k else np.zeros(0, int)
    empty = np.asarray(masks.sum(axis=0)).ravel() == 0 if k else np.zeros(0, bool)
    n_cells = len(pix)
    own = own_contour_cells(cells, A, hits, dims)
    return {
        "n_visible": n_cells,
        "n_components": k,
        "n_covered": int((per_cell >= 1).sum()),
        "covered_fraction": float((per_cell >= 1).mean()) if n_cells else None,
        "n_two_contours": int((per_cell >= 2).sum()),
        "n_own_contour": int(own.sum()),
        "n_contours_on_nothing": int(((per_contour == 0) & ~empty).sum()),
        "n_empty_footprints": int(empty.sum()),
        "cells_per_contour": per_cell.tolist(),
        "contour_cells": per_contour.tolist(),
    }


def own_contour_cells(cells: VisibleCells, A, hits, dims) -> np.ndarray:
    """Boolean (n_cells,): the cells that some contour holds as the nearest of its cells to
    the footprint's weighted centroid (``hits``: n_cells x K, nonzero where the cell lies
    inside the contour)."""
    centre = centroids(scipy.sparse.csc_array(A), tuple(dims))
    hits = scipy.sparse.csc_array(hits)
    own = np.zeros(len(cells.rows), bool)
    for k in range(hits.shape[1]):
        lo, hi = hits.indptr[k], hits.indptr[k + 1]
        inside = hits.indices[lo:hi][hits.data[lo:hi] != 0]  # explicit zeros: outside
        if inside.size:
            dist = np.hypot(cells.rows[inside] - centre[k, 0], cells.cols[inside] - centre[k, 1])
            own[inside[np.argmin(dist)]] = True
    return own
