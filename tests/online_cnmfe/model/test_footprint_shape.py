"""Footprint size from a Gaussian fit (initialisation acceptance and online candidates)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.footprint_shape import (
    column_box,
    gaussian_scale,
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


def test_a_footprint_cut_by_the_frame_edge_stays_well_above_the_limit():
    d = 12.0
    dims = (40, 40)
    inside = _blob(dims, (20.0, 20.0), 3.0)
    at_edge = _blob(dims, (0.0, 20.0), 3.0)  # half of it outside the frame
    blurred = _blob(dims, (20.0, 20.0), 6.0)
    A = scipy.sparse.csc_array(np.stack([inside, at_edge, blurred], axis=1))
    s_in, s_edge, s_blur = sharpness(A, dims, d)
    assert s_edge > 0.9 * s_in > 0.8 * s_in > s_blur


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
