"""Contours and pixel ownership of CSC footprints, Qt-free.

Footprints A arrive as a CSC matrix of shape (n_pixels, n_components) whose pixel index is
row-major: ``pixel = row * W + col`` (docs/protocol.md). Everything here returns coordinates
as (row, col), never x/y; the views turn them into pyqtgraph's (x=col, y=row).

A neuron's mask is the set of its pixels with ``a >= threshold * max(a)``. Its contour is the
outline of that mask along pixel edges, returned as straight segments between pixel
corners: pixel (r, c) covers the square [r, r+1] x [c, c+1], so a neuron made of the single
pixel (5, 20) has the four segments of the square with corners (5, 20), (5, 21), (6, 21),
(6, 20). Pixel-edge outlines are exact (no interpolation) and draw as one line item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

__all__ = ["Contours", "contour_segments", "contours_and_owner", "footprint_masks", "owner_map"]

DEFAULT_THRESHOLD = 0.25


@dataclass(frozen=True, slots=True)
class Contours:
    """Outlines of every neuron.

    Attributes
    ----------
    segments : ndarray of shape (n_segments, 2, 2), float32
        ``segments[i] = [[row0, col0], [row1, col1]]`` in pixel-corner coordinates.
    neuron : ndarray of shape (n_segments,), int32
        Column (0..K-1) of the neuron each segment belongs to.
    """

    segments: np.ndarray
    neuron: np.ndarray

    def of(self, column: int) -> np.ndarray:
        """Segments of one neuron (by column), shape (n, 2, 2)."""
        return self.segments[self.neuron == column]


def _check_csc(data, indices, indptr, dims) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.asarray(data, dtype=np.float32)
    indices = np.asarray(indices, dtype=np.int64)
    indptr = np.asarray(indptr, dtype=np.int64)
    n_pixels = int(dims[0]) * int(dims[1])
    if data.shape != indices.shape or indptr.ndim != 1 or indptr.size < 1:
        raise ValueError(
            f"CSC arrays are inconsistent: data {data.shape}, indices {indices.shape}, "
            f"indptr {indptr.shape}; expected data and indices of equal length and indptr (K+1,)"
        )
    if indptr[0] != 0 or indptr[-1] != data.size or np.any(np.diff(indptr) < 0):
        raise ValueError(f"CSC indptr must rise from 0 to nnz={data.size}; got {indptr[:5]}...")
    if indices.size and (indices.min() < 0 or indices.max() >= n_pixels):
        raise ValueError(
            f"CSC pixel indices span [{indices.min()}, {indices.max()}]; dims {tuple(dims)} "
            f"have {n_pixels} pixels"
        )
    return data, indices, indptr


def _neighbour_index(pix, col, dims, dr: int, dc: int) -> np.ndarray:
    """For each entry (pixel ``pix`` of neuron ``col``), the index of the entry of the same
    neuron at pixel (row + dr, col + dc), or -1 when there is none."""
    h, w = int(dims[0]), int(dims[1])
    n_pixels = h * w
    key = col.astype(np.int64) * n_pixels + pix
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    r, c = pix // w + dr, pix % w + dc
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    want = col.astype(np.int64) * n_pixels + np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)
    if sorted_keys.size == 0:
        return np.full(pix.size, -1, np.int64)
    pos = np.clip(np.searchsorted(sorted_keys, want), 0, sorted_keys.size - 1)
    found = inside & (sorted_keys[pos] == want)
    return np.where(found, order[pos], -1)


def _peak_component(pix, col, norm, dims) -> np.ndarray:
    """Which mask entries are 4-connected to their neuron's brightest pixel."""
    n = pix.size
    if n == 0:
        return np.zeros(0, bool)
    src, dst = [], []
    for dr, dc in ((0, 1), (1, 0)):
        j = _neighbour_index(pix, col, dims, dr, dc)
        ok = j >= 0
        src.append(np.flatnonzero(ok))
        dst.append(j[ok])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = scipy.sparse.coo_array((np.ones(src.size, np.int8), (src, dst)), shape=(n, n))
    _, label = scipy.sparse.csgraph.connected_components(graph, directed=False)
    order = np.lexsort((-norm, col))  # by neuron, brightest first
    first = np.r_[True, col[order][1:] != col[order][:-1]]
    peak_label = np.full(int(col.max()) + 1, -1, np.int64)
    peak_label[col[order][first]] = label[order][first]
    return label == peak_label[col]


def footprint_masks(
    data, indices, indptr, dims, threshold: float = DEFAULT_THRESHOLD, peak_component=True
):
    """Pixels of each neuron above ``threshold`` times its own maximum.

    Parameters
    ----------
    data, indices, indptr : ndarray
        CSC arrays of A (n_pixels x K), pixels flattened row-major.
    dims : (int, int)
        (H, W).
    threshold : float
        Fraction of each footprint's maximum, in (0, 1].
    peak_component : bool
        Keep only the pixels 4-connected to the footprint's brightest pixel (drops stray
        islands, which would otherwise draw as separate outlines).

    Returns
    -------
    keep : ndarray of shape (nnz,), bool
        Which stored entries belong to the mask.
    column : ndarray of shape (nnz,), int32
        The neuron (column) of each stored entry.
    norm : ndarray of shape (nnz,), float32
        Each entry divided by its column's maximum (0 for an all-zero column).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} is out of range; allowed: (0, 1]")
    data, indices, indptr = _check_csc(data, indices, indptr, dims)
    counts = np.diff(indptr)
    column = np.repeat(np.arange(counts.size, dtype=np.int32), counts)
    col_max = np.zeros(counts.size, dtype=np.float32)
    if data.size:
        np.maximum.at(col_max, column, data)
    scale = np.where(col_max > 0, col_max, 1.0).astype(np.float32)
    norm = data / scale[column]
    keep = (norm >= threshold) & (data > 0)
    if peak_component and keep.any():
        kept = np.flatnonzero(keep)
        keep[kept] = _peak_component(indices[kept], column[kept], norm[kept], dims)
    return keep, column, norm


def _edges(pix: np.ndarray, col: np.ndarray, dims) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge outlines of all masks at once.

    ``pix`` are the row-major pixel indices of every mask entry and ``col`` their neuron. An
    edge of pixel (r, c) is on the outline when the neighbour across it is outside the image
    or not in the same neuron's mask; membership is a search in the sorted (neuron, pixel)
    keys, so there is no loop over neurons.
    """
    w = int(dims[1])
    r, c = pix // w, pix % w

    def member(dr: int, dc: int) -> np.ndarray:
        return _neighbour_index(pix, col, dims, dr, dc) >= 0

    parts, owners = [], []
    # (neighbour offset, segment start (row, col) offset, segment end offset)
    for (dr, dc), (r0, c0), (r1, c1) in (
        ((-1, 0), (0, 0), (0, 1)),  # top edge
        ((1, 0), (1, 0), (1, 1)),  # bottom edge
        ((0, -1), (0, 0), (1, 0)),  # left edge
        ((0, 1), (0, 1), (1, 1)),  # right edge
    ):
        on = ~member(dr, dc)
        seg = np.empty((int(on.sum()), 2, 2), np.float32)
        seg[:, 0, 0], seg[:, 0, 1] = r[on] + r0, c[on] + c0
        seg[:, 1, 0], seg[:, 1, 1] = r[on] + r1, c[on] + c1
        parts.append(seg)
        owners.append(col[on].astype(np.int32))
    segments, neuron = np.concatenate(parts), np.concatenate(owners)
    order = np.argsort(neuron, kind="stable")
    return segments[order], neuron[order]


def contour_segments(
    data, indices, indptr, dims, threshold: float = DEFAULT_THRESHOLD, peak_component=True
) -> Contours:
    """Pixel-edge outlines of every footprint's mask (see the module docstring).

    Parameters
    ----------
    data, indices, indptr : ndarray
        CSC arrays of A (n_pixels x K), pixels flattened row-major.
    dims : (int, int)
        (H, W) of the image.
    threshold : float
        Mask threshold as a fraction of each footprint's maximum.
    peak_component : bool
        Outline only the part connected to the brightest pixel (see :func:`footprint_masks`).

    Returns
    -------
    Contours
        Segments grouped by neuron (column order).

    Examples
    --------
    >>> import numpy as np
    >>> c = contour_segments([1.0], [5 * 32 + 20], [0, 1], (16, 32))
    >>> c.segments.shape
    (4, 2, 2)
    >>> sorted({tuple(p) for p in c.segments.reshape(-1, 2).tolist()})
    [(5.0, 20.0), (5.0, 21.0), (6.0, 20.0), (6.0, 21.0)]
    """
    keep, column, _ = footprint_masks(data, indices, indptr, dims, threshold, peak_component)
    pix = np.asarray(indices, dtype=np.int64)[keep]
    segments, neuron = _edges(pix, column[keep], dims)
    return Contours(segments, neuron)


def _owner(keep, column, norm, indices, dims) -> np.ndarray:
    h, w = int(dims[0]), int(dims[1])
    owner = np.full(h * w, -1, dtype=np.int32)
    pix = np.asarray(indices, dtype=np.int64)[keep]
    if pix.size:
        order = np.lexsort((norm[keep], pix))  # by pixel, then by value ascending
        pix_sorted = pix[order]
        last = np.r_[pix_sorted[1:] != pix_sorted[:-1], True]  # largest value of each pixel
        owner[pix_sorted[last]] = column[keep][order][last]
    return owner.reshape(h, w)


def owner_map(
    data, indices, indptr, dims, threshold: float = DEFAULT_THRESHOLD, peak_component=True
) -> np.ndarray:
    """For each pixel, the neuron (column) whose mask has the largest normalised value there.

    Returns
    -------
    ndarray of shape (H, W), int32
        Column index, or -1 where no mask covers the pixel.
    """
    keep, column, norm = footprint_masks(data, indices, indptr, dims, threshold, peak_component)
    return _owner(keep, column, norm, indices, dims)


def contours_and_owner(
    data, indices, indptr, dims, threshold: float = DEFAULT_THRESHOLD
) -> tuple[Contours, np.ndarray]:
    """:func:`contour_segments` and :func:`owner_map` from one computation of the masks."""
    keep, column, norm = footprint_masks(data, indices, indptr, dims, threshold)
    pix = np.asarray(indices, dtype=np.int64)[keep]
    segments, neuron = _edges(pix, column[keep], dims)
    return Contours(segments, neuron), _owner(keep, column, norm, indices, dims)
