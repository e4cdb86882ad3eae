"""Footprint size from a Gaussian fit (initialisation acceptance and online candidates)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.footprint_shape import (
    column_box,
    gaussian_scale,
    mirror_at_frame,
    sharpness,
    sharpness_limit,
    sharpness_of,
    size_ratios,
)


def _blob(dims, centre, sigma):
    rr, cc = np.mgrid[0 : dims[0], 0 : dims[1]]
    return np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma**2)).ravel()


@pytest.mark.parametrize("factor", [0.75, 1.0, 1.5, 2.0, 3.0])
def test_size_ratio_of_gaussians(factor):
    d = 12.0
    dims = (60, 60)
    a = _blob(dims, (30.3, 29.6), factor * d / 4)
    ratio = size_ratios(scipy.sparse.csc_array(a[:, None]), dims, d)[0]
    assert ratio == pytest.approx(factor**2, rel=0.3)


def test_size_ignores_an_offset_and_noise_and_an_empty_column_is_inf():
    d = 12.0
    rr, cc = np.mgrid[-11:12, -11:12]
    d2 = (rr**2 + cc**2).ravel().astype(float)
    rng = np.random.default_rng(0)
    a = np.exp(-d2 / (2 * 3.0**2)) + 0.2 + 0.05 * rng.random(d2.size)
    assert gaussian_scale(a, d2, d) == pytest.approx(3.0, rel=0.15)
    A = scipy.sparse.csc_array((100, 2))
    assert np.all(np.isinf(size_ratios(A, (10, 10), d)))


def test_size_near_the_border_uses_the_pixels_inside():
    d = 12.0
    dims = (40, 40)
    a = _blob(dims, (2.0, 20.0), 3.0)
    assert size_ratios(scipy.sparse.csc_array(a[:, None]), dims, d)[0] == pytest.approx(1, rel=0.3)


def _dog_reference(a, d):
    """Slow reference of the cell band: explicit zero-padded convolutions with sampled,
    normalised Gaussian kernels (4 sigma wide)."""
    from scipy.signal import convolve2d

    def blur(x, s):
        r = int(4 * s + 0.5)
        t = np.arange(-r, r + 1)
        g = np.exp(-(t**2) / (2 * s * s))
        g /= g.sum()
        return convolve2d(convolve2d(x, g[None, :], mode="same"), g[:, None], mode="same")

    return np.linalg.norm(blur(a, d / 8) - blur(a, d / 2)) / np.linalg.norm(a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharpness_matches_explicit_convolutions(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((41, 37)) * _blob((41, 37), (20, 18), 4.0).reshape(41, 37)
    assert sharpness_of(a, 14.0) == pytest.approx(_dog_reference(a, 14.0), rel=1e-3)


def test_sharpness_is_flat_over_cell_sizes_and_falls_for_blurred_footprints():
    d = 16.0
    rr, cc = np.mgrid[-70:71, -70:71]

    def gauss(s):
        return np.exp(-(rr**2 + cc**2) / (2 * s * s))

    cells = [sharpness_of(gauss(f * d / 4), d) for f in (0.6, 0.8, 1.0, 1.2)]
    blurred = [sharpness_of(gauss(f * d / 4), d) for f in (1.6, 2.0, 3.0)]
    assert max(cells) - min(cells) < 0.1
    assert max(blurred) < 0.8 * np.median(cells)
    assert np.all(np.diff(blurred) < 0)
    assert sharpness_of(np.zeros((5, 5)), d) == 0.0


def test_mirror_at_frame_appends_the_reflection_on_the_cut_sides_only():
    box = np.arange(6.0).reshape(2, 3)
    assert mirror_at_frame(box, (False, False, False, False)) is box
    top = mirror_at_frame(box, (True, False, False, False))
    assert top.tolist() == [[3, 4, 5], [0, 1, 2], [0, 1, 2], [3, 4, 5]]
    right = mirror_at_frame(box, (False, False, False, True))
    assert right.tolist() == [[0, 1, 2, 2, 1, 0], [3, 4, 5, 5, 4, 3]]
    corner = mirror_at_frame(box, (True, True, True, False))
    assert corner.shape == (6, 6) and np.array_equal(corner[2:4, 3:], box)
    assert np.array_equal(corner[0:2, 0:3], box[::-1, ::-1])  # the corner: point-reflected


def test_sharpness_at_the_edge_equals_the_whole_symmetric_footprint():
    """Slow reference: a footprint centred half a pixel outside the frame is symmetric about
    the frame's edge, so the mirrored cut footprint is exactly the whole one."""
    d = 12.0
    dims = (40, 100)  # wide enough for the box's padding of d on the left and right
    whole_dims = (80, 100)  # the frame plus the 40 rows above it
    for sigma in (3.0, 7.0):
        cut = _blob(dims, (-0.5, 50.0), sigma)
        whole = _blob(whole_dims, (39.5, 50.0), sigma).reshape(whole_dims)
        cut[cut < 1e-3] = 0  # the support reaches the top edge only
        whole[whole < 1e-3] = 0
        got = sharpness(scipy.sparse.csc_array(cut[:, None]), dims, d)[0]
        assert got == pytest.approx(sharpness_of(np.pad(whole, 2 * int(d)), d), rel=1e-6)


@pytest.mark.parametrize("centre", [(0.0, 60.0), (0.0, 0.0), (119.0, 60.0), (60.0, 119.0)])
def test_a_cell_cut_by_the_frame_keeps_its_sharpness_and_a_cut_blur_does_not_gain(centre):
    """A cell centred on the frame's edge or corner scores as inside; an out-of-focus blob
    cut there scores as blurred as inside, under the limit (0.75 x the cells'), where the
    zero-padded box had made the cut a sharp step: at the corner the blob scored above it."""
    d = 16.0
    dims = (120, 120)

    def footprint(c, sigma):
        a = _blob(dims, c, sigma)
        a[a < 1e-3] = 0  # a support as the model's: the inner blob does not reach the edges
        return a

    cells = [footprint((60.0, 60.0), d / 4), footprint(centre, d / 4)]
    blobs = [footprint((60.0, 60.0), 2.5 * d / 4), footprint(centre, 2.5 * d / 4)]
    s_cell_in, s_cell_cut, s_blob_in, s_blob_cut = sharpness(
        scipy.sparse.csc_array(np.stack(cells + blobs, axis=1)), dims, d
    )
    limit = 0.75 * s_cell_in
    assert s_cell_cut == pytest.approx(s_cell_in, rel=0.03)
    assert s_blob_cut < 1.05 * s_blob_in < limit
    if centre == (0.0, 0.0):  # the premise: without the mirror the cut blob passed
        idx = np.flatnonzero(blobs[1])
        assert sharpness_of(column_box(idx, blobs[1][idx], dims, d), d) > limit


def test_column_box_places_the_pixels_and_pads_within_the_frame():
    dims = (20, 30)
    idx = np.array([5 * 30 + 7, 6 * 30 + 9])
    box = column_box(idx, np.array([1.0, 2.0]), dims, 3)
    assert box.shape == (2 + 6, 3 + 6)
    assert box[3, 3] == 1.0 and box[4, 5] == 2.0 and box.sum() == 3.0
    assert column_box(np.array([0]), np.array([1.0]), dims, 3).shape == (4, 4)


def test_sharpness_limit_follows_the_strongest_components():
    sharp = np.array([0.6, 0.62, 0.58, 0.3, 0.35])
    strength = np.array([10.0, 9.0, 8.0, 1.0, 2.0])
    assert sharpness_limit(sharp, strength, 0.8) == pytest.approx(0.8 * np.median(sharp))
    many = np.r_[np.full(30, 0.6), np.full(40, 0.2)]  # 40 weak blurred ones do not move it
    strong_first = np.r_[np.full(30, 5.0), np.full(40, 1.0)]
    assert sharpness_limit(many, strong_first, 0.8) == pytest.approx(0.48)
    assert sharpness_limit(sharp, strength, 0.0) == 0.0
    assert sharpness_limit(np.zeros(0), np.zeros(0), 0.8) == 0.0
