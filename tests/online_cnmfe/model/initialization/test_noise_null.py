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


def _red_noise(rng, T, side, tau):
    """Noise correlated in time (AR(1) of coefficient exp(-1/tau)), as slow fluctuations that
    survive the spatial filter in raw clips."""
    x = rng.standard_normal((T, side, side)).astype(np.float32)
    a = np.float32(np.exp(-1.0 / tau))
    for t in range(1, T):
        x[t] += a * x[t - 1]
    return 100 + x


def _false_seeds_tau(Y, threshold, tau):
    _, im = summary_images(Y, SIGMA, tau_frames=tau)
    st = seed_statistic(im.corr * im.pnr, D)
    return int((peak_values(st, seed_window(D)) >= threshold).sum())


def test_red_noise_keeps_the_false_seed_rate_with_the_matched_filter():
    """Noise correlated in time, averaged by the matched filter: the null carries the movie's
    temporal spectrum, so the rate holds (a white null would give many more false seeds)."""
    tau = 4.0
    rng = np.random.default_rng(3)
    counts, white_counts = [], []
    for _ in range(4):
        Y = _red_noise(rng, 100, 96, 3.0)
        null = seeding_threshold(Y, SIGMA, D, 4.0, tau_frames=tau)
        counts.append(_false_seeds_tau(Y, null.threshold, tau))
        white = seeding_threshold(_noise(rng, 100, 96, 0.0), SIGMA, D, 4.0, tau_frames=tau)
        white_counts.append(_false_seeds_tau(Y, white.threshold, tau))
    assert np.mean(counts) <= 8, counts
    assert np.mean(white_counts) > 2 * max(np.mean(counts), 1), (counts, white_counts)


def test_temporal_spectrum_is_flat_for_white_noise_and_red_for_ar1():
    from online_cnmfe.model.initialization.noise_null import temporal_spectrum

    rng = np.random.default_rng(4)
    flat = temporal_spectrum(_noise(rng, 128, 64, 0.0), 64, SIGMA)
    red = temporal_spectrum(_red_noise(rng, 128, 64, 3.0), 64, SIGMA)
    assert flat.shape == red.shape == (65,)
    assert 0.8 < flat[1:10].mean() / flat[-10:].mean() < 1.25
    assert red[1:10].mean() / red[-10:].mean() > 3


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
