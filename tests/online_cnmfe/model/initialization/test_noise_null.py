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


def _stat(Y):
    _, im = summary_images(Y, SIGMA)
    return seed_statistic(im.corr * im.pnr, D)


def test_data_floor_corrects_a_null_that_overstates_the_noise():
    """A simulated null that overstates how far the noise reaches (here: calibrated on
    smoother noise than the movie's, which needs a higher threshold) is lowered by the
    recording's own peaks to about the rate asked for; with the simulated threshold the
    movie gets almost no seed at all."""
    from online_cnmfe.model.initialization.noise_null import data_floor

    rng = np.random.default_rng(11)
    rate = 4.0
    counts, sim_counts, lowered = [], [], []
    for _ in range(4):
        Y = _noise(rng, 80, 96, 0.0)
        null = seeding_threshold(_noise(rng, 80, 96, 1.5), SIGMA, D, rate)
        stat = _stat(Y)
        floored = data_floor(null, stat, D, rate)
        lowered.append(null.threshold - floored.threshold)
        peaks = peak_values(stat, seed_window(D))
        counts.append(int((peaks >= floored.threshold).sum()))
        sim_counts.append(int((peaks >= null.threshold).sum()))
    assert min(lowered) > 0.3, lowered
    assert 0.25 * rate <= np.mean(counts) <= 2.5 * rate, counts
    assert np.mean(sim_counts) < 0.5 * np.mean(counts), (counts, sim_counts)


def test_data_floor_is_not_moved_by_a_minority_of_cell_peaks_and_never_raises():
    """The empirical null is fitted to the quartiles of the data's peaks: 5 % of peaks far
    above the noise (cells) move it little; and it only ever lowers the simulated one."""
    from online_cnmfe.model.initialization.noise_null import data_floor

    rng = np.random.default_rng(12)
    Y = _noise(rng, 80, 96, 0.0)
    null = seeding_threshold(Y, SIGMA, D, 4.0)
    stat = _stat(Y)
    high = dataclasses_replace_threshold(null, 100.0)
    clean = data_floor(high, stat, D, 4.0)
    assert clean.threshold < 100.0  # the data's own threshold
    win = seed_window(D)
    is_peak = stat == scipy.ndimage.maximum_filter(stat, size=win, mode="nearest")
    rr, cc = np.nonzero(is_peak)
    pick = rng.choice(rr.size, rr.size // 20, replace=False)
    with_cells = stat.copy()
    with_cells[rr[pick], cc[pick]] += 20.0
    assert abs(data_floor(high, with_cells, D, 4.0).threshold - clean.threshold) < 0.5
    # the simulated null's threshold when it is the lower one: unchanged
    low = dataclasses_replace_threshold(null, 0.5)
    assert data_floor(low, with_cells, D, 4.0) is low


def test_data_floor_needs_enough_peaks():
    from online_cnmfe.model.initialization.noise_null import MIN_EMPIRICAL_PEAKS, data_floor

    rng = np.random.default_rng(13)
    null = seeding_threshold(_noise(rng, 80, 96, 0.0), SIGMA, D, 4.0)
    null = dataclasses_replace_threshold(null, 100.0)
    stat = np.zeros((40, 40))
    stat[5::6, 5::6] = rng.uniform(1, 3, stat[5::6, 5::6].shape)  # 36 peaks
    assert peak_values(stat, seed_window(D)).size < MIN_EMPIRICAL_PEAKS
    assert data_floor(null, stat, D, 4.0) is null


def dataclasses_replace_threshold(null, threshold):
    """``null`` with its threshold set to ``threshold`` (its Gumbel figures kept)."""
    import dataclasses

    return dataclasses.replace(
        null, calibration=dataclasses.replace(null.calibration, threshold=threshold)
    )


def test_real_minian_movie_reaches_less_far_than_its_simulated_null(shared_data):
    """minian's median-filtered, quantised CA1 movie at the cells' size (21 px, the matched
    filter on, as the fit runs it after adapting the diameter): its own peaks, cells
    included, sit below the Gaussian null simulated with its spectra, so the data's floor
    lowers the threshold (the fit: 6.86 -> 6.46, BENCHMARKS.md)."""
    import tifffile

    from online_cnmfe.model.initialization.noise_null import data_floor

    Y = tifffile.imread(shared_data / "minian_ca1_fixture_preproc_100x480x752_u8.tif")
    Y = Y[:99].astype(np.float32)
    d, tau = 21, 4.0
    sigma = d / 4.0
    rate = 3.0 * Y.shape[1] * Y.shape[2] / 256**2
    null = seeding_threshold(Y, sigma, d, rate, tau_frames=tau)
    _, im = summary_images(Y, sigma, tau_frames=tau)
    floored = data_floor(null, seed_statistic(im.corr * im.pnr, d), d, rate)
    assert floored.threshold < null.threshold - 0.2, (null.threshold, floored.threshold)
    assert floored.calibration.mu < null.calibration.mu
