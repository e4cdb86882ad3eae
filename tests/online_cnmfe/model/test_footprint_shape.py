"""Footprint size from a Gaussian fit (initialisation acceptance and online candidates)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.footprint_shape import gaussian_scale, size_ratios


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
