"""Thresholds from a null distribution (shared by the initialisation and the online search)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model.null_threshold import (
    MIN_NULL_PEAKS,
    gumbel_exceedance,
    gumbel_fit,
    peak_values,
    rate_for_frame,
    threshold_at_rate,
)


@settings(max_examples=25, deadline=None)
@given(mu=st.floats(-5, 5), beta=st.floats(0.05, 3), seed=st.integers(0, 2**31))
def test_gumbel_fit_recovers_location_and_scale(mu, beta, seed):
    x = np.random.default_rng(seed).gumbel(mu, beta, 20000)
    m, b = gumbel_fit(x)
    assert abs(m - mu) < 0.05 * beta + 1e-9 and abs(b / beta - 1) < 0.06


@pytest.mark.parametrize("seed", range(4))
def test_peak_values_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((23, 31))
    w = 5
    h = w // 2
    ref = []
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            r0, c0 = max(i - h, 0), max(j - h, 0)  # 'nearest' padding repeats edge values,
            box = v[r0 : i + h + 1, c0 : j + h + 1]  # which never exceed the box's own max
            if v[i, j] > 0 and v[i, j] == box.max():
                ref.append(v[i, j])
    np.testing.assert_array_equal(peak_values(v, w), np.sort(ref)[::-1])


def test_threshold_gives_the_rate_on_its_own_null():
    rng = np.random.default_rng(0)
    n_fov = 500  # peaks per field of view
    null = rng.gumbel(2.0, 0.4, 4000)
    th = threshold_at_rate(null, n_fov, rate=2.0)
    assert th.expected_false(th.threshold) == pytest.approx(2.0, rel=1e-6)
    # empirical: fresh fields of view of the same null exceed it 2 times on average
    counts = [(rng.gumbel(2.0, 0.4, n_fov) > th.threshold).sum() for _ in range(2000)]
    assert np.mean(counts) == pytest.approx(2.0, rel=0.1)
    # a higher rate gives a lower threshold; the floor is respected
    assert threshold_at_rate(null, n_fov, 20.0).threshold < th.threshold
    assert threshold_at_rate(null, n_fov, 2.0, floor=99.0).threshold == 99.0


def test_quartile_fit_ignores_a_contaminated_tail():
    rng = np.random.default_rng(1)
    null = rng.gumbel(2.0, 0.4, 2000)
    dirty = np.concatenate([null, rng.uniform(8, 20, 100)])  # 5 % real cells in the null
    a, b = threshold_at_rate(null, 500, 2.0), threshold_at_rate(dirty, 500, 2.0)
    assert abs(b.threshold / a.threshold - 1) < 0.08  # 4.20 -> 4.42
    # while the empirical tail (the quantile at 2 of 500 peaks) would jump into the cells
    assert np.quantile(dirty, 1 - 2.0 / 500) > 8


def test_rate_scales_with_area_and_bad_inputs_say_why():
    assert rate_for_frame(3.0, 512 * 512) == 12.0
    assert rate_for_frame(3.0, 128 * 128) == 0.75
    with pytest.raises(ValueError, match="rate must be > 0"):
        threshold_at_rate(np.ones(100), 10, 0.0)
    with pytest.raises(ValueError, match="too few to calibrate"):
        threshold_at_rate(np.ones(MIN_NULL_PEAKS - 1), 10, 1.0)
    assert gumbel_exceedance(math.inf, 0.0, 1.0) == 0.0


def test_peak_values_mask():
    v = scipy.ndimage.gaussian_filter(np.random.default_rng(2).random((40, 40)), 2)
    mask = np.zeros((40, 40), bool)
    mask[:20] = True
    assert peak_values(v, 3, mask).size <= peak_values(v, 3).size
