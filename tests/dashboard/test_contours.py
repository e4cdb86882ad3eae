"""Contours and ownership land on the right pixels (row-major, (row, col) coordinates)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from dashboard.contours import contour_segments, footprint_masks, owner_map

DIMS = (16, 32)  # H != W so a transposition cannot pass


def csc_of(images: list[np.ndarray]):
    A = scipy.sparse.csc_array(np.stack([im.ravel() for im in images], axis=1).astype(np.float32))
    A.sort_indices()
    return A.data, A.indices, A.indptr


def corners(segments: np.ndarray) -> set[tuple[float, float]]:
    return {tuple(p) for p in segments.reshape(-1, 2).tolist()}


def test_single_pixel_at_row5_col20_is_outlined_by_its_square():
    img = np.zeros(DIMS, np.float32)
    img[5, 20] = 1.0
    c = contour_segments(*csc_of([img]), DIMS)
    assert c.segments.shape == (4, 2, 2)
    assert corners(c.segments) == {(5.0, 20.0), (5.0, 21.0), (6.0, 20.0), (6.0, 21.0)}
    # every segment is one pixel long and axis-aligned
    d = np.abs(c.segments[:, 1] - c.segments[:, 0])
    assert np.all(d.sum(axis=1) == 1.0)


def test_rectangle_outline_bounds_exactly_its_pixels():
    img = np.zeros(DIMS, np.float32)
    img[3:7, 18:23] = 1.0  # rows 3..6, cols 18..22
    c = contour_segments(*csc_of([img]), DIMS)
    pts = c.segments.reshape(-1, 2)
    assert pts[:, 0].min() == 3 and pts[:, 0].max() == 7
    assert pts[:, 1].min() == 18 and pts[:, 1].max() == 23
    assert c.segments.shape[0] == 2 * (4 + 5)  # perimeter in pixel edges


def test_threshold_is_relative_to_each_footprint_max():
    a = np.zeros(DIMS, np.float32)
    a[5, 20], a[5, 21] = 10.0, 1.0  # the dim pixel is below 25 % of the max
    b = np.zeros(DIMS, np.float32)
    b[10, 2], b[10, 3] = 0.1, 0.09  # both above 25 % of this small footprint's max
    keep, column, norm = footprint_masks(*csc_of([a, b]), DIMS, threshold=0.25)
    assert keep.tolist() == [True, False, True, True]
    assert column.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(norm, [1.0, 0.1, 1.0, 0.9], rtol=1e-6)
    c = contour_segments(*csc_of([a, b]), DIMS)
    assert corners(c.of(0)) == {(5.0, 20.0), (5.0, 21.0), (6.0, 20.0), (6.0, 21.0)}
    assert max(p[1] for p in corners(c.of(1))) == 4.0


def test_owner_map_prefers_the_stronger_footprint_and_is_row_major():
    a = np.zeros(DIMS, np.float32)
    a[5, 19:22] = [0.5, 1.0, 0.9]
    b = np.zeros(DIMS, np.float32)
    b[5, 21:23] = [1.0, 0.4]  # pixel (5, 21): b normalised 1.0 beats a's 0.9
    owner = owner_map(*csc_of([a, b]), DIMS)
    assert owner.shape == DIMS
    assert owner[5, 19] == 0 and owner[5, 20] == 0
    assert owner[5, 21] == 1 and owner[5, 22] == 1
    assert (owner >= 0).sum() == 4
    assert owner[20 % DIMS[0], 5] == -1


def test_empty_and_zero_columns():
    data, indices, indptr = np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(3, np.int32)
    c = contour_segments(data, indices, indptr, DIMS)
    assert c.segments.shape == (0, 2, 2)
    assert (owner_map(data, indices, indptr, DIMS) == -1).all()


def test_bad_csc_raises_value_error():
    with pytest.raises(ValueError, match="pixel indices"):
        contour_segments([1.0], [DIMS[0] * DIMS[1]], [0, 1], DIMS)
    with pytest.raises(ValueError, match="threshold"):
        footprint_masks([1.0], [0], [0, 1], DIMS, threshold=0.0)


def reference_segments(mask: np.ndarray) -> set[tuple[float, float, float, float]]:
    """Slow, obvious outline: every pixel side facing a pixel outside the mask."""
    h, w = mask.shape
    out = set()
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            if r == 0 or not mask[r - 1, c]:
                out.add((r, c, r, c + 1))
            if r == h - 1 or not mask[r + 1, c]:
                out.add((r + 1, c, r + 1, c + 1))
            if c == 0 or not mask[r, c - 1]:
                out.add((r, c, r + 1, c))
            if c == w - 1 or not mask[r, c + 1]:
                out.add((r, c + 1, r + 1, c + 1))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_outlines_match_the_reference_on_random_overlapping_masks(seed):
    rng = np.random.default_rng(seed)
    images = [(rng.random(DIMS) < 0.3) * rng.random(DIMS).astype(np.float32) for _ in range(5)]
    images[0][0, :] = 1.0  # touches the image border
    c = contour_segments(*csc_of(images), DIMS, threshold=1e-6, peak_component=False)
    for k, img in enumerate(images):
        got = {tuple(s) for s in c.of(k).reshape(-1, 4).tolist()}
        assert got == reference_segments(img > 0), f"neuron {k}, seed {seed}"
    assert np.all(np.diff(c.neuron) >= 0)


def test_stray_islands_are_dropped_keeping_the_part_with_the_peak():
    img = np.zeros(DIMS, np.float32)
    img[5:8, 20:23] = 0.8
    img[6, 21] = 1.0  # the peak
    img[12, 2] = 0.9  # a bright stray pixel far away
    img[5, 24] = 0.7  # diagonal to (6, 23)? no: two columns away, not connected
    other = np.zeros(DIMS, np.float32)
    other[12, 3] = 1.0  # another neuron touching the stray pixel: stays separate
    keep, column, _ = footprint_masks(*csc_of([img, other]), DIMS)
    data, indices, _ = csc_of([img, other])
    kept0 = set(indices[keep & (column == 0)].tolist())
    assert kept0 == {r * DIMS[1] + c for r in range(5, 8) for c in range(20, 23)}
    assert set(indices[keep & (column == 1)].tolist()) == {12 * DIMS[1] + 3}
    c = contour_segments(*csc_of([img, other]), DIMS)
    pts = c.of(0).reshape(-1, 2)
    assert pts[:, 0].min() == 5 and pts[:, 0].max() == 8 and pts[:, 1].max() == 23
    keep_all, _, _ = footprint_masks(*csc_of([img, other]), DIMS, peak_component=False)
    assert keep_all.sum() == 9 + 2 + 1
