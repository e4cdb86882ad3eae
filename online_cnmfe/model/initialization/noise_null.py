"""The seeding threshold of the initialisation, calibrated on the recording's own noise.

Symbols: Y (T, H, W) frames, ``v = corr x PNR`` the seeding statistic of
:func:`.summary_images.summary_images` (PNR = max of the filtered frame minus its mean, over the
high-frequency noise ``sn``; corr = local correlation of the filtered movie thresholded at
``2 sn``), a *peak* a local maximum of v over a square of the seeding window.

How high does v reach on noise alone? The sign-flipped movie cannot say, because every active
neuron is in it (a neuron active most of the time has "negative transients" when it falls
silent, and the mean-centred filter gives every transient a negative surround). So the null is
simulated: a noise movie with the recording's own *spatial* noise structure (the power
spectrum of its frame-to-frame differences, a median over frame pairs, which sparse transient
rises do not move; it carries sensor correlations, line noise, or the smoothing of a
preprocessed movie), white in time for single-frame images; with the matched temporal filter
(``tau_frames``), which amplifies whatever is slow, it also gets the movie's own *temporal*
spectrum (a low percentile over pixels of the spatially filtered movie's power spectrum,
:func:`temporal_spectrum`: white for sensor noise, red where structured background
fluctuations survive the spatial filter). Of the same length T, it is put through exactly the
same filters and images. Its peaks give the null (:mod:`..null_threshold`): the threshold is where
``detection.false_seeds_per_fov`` noise peaks are expected in the field of view. PNR and corr
are scale-free, so only the noise's structure matters, not its level.

The simulation is Gaussian with the measured spectra; a recording's noise may reach less far
(minian's median-filtered, quantised CA1 movie: the data's own peaks sit 0.4 below the
simulated null's although its cells can only raise them). :func:`data_floor` then lowers the
threshold to the *empirical null*'s, the Gumbel fitted to the quartiles of the data's own
peaks (most peaks are noise), at the same rate; never higher than the simulated one.

The re-seeding on the residual (the frames minus the fitted model) faces more than noise: the
fit's errors (a footprint slightly off its cell, crosstalk between neighbours) leave
structure that is as often negative as positive, while a missing cell is positive only. Its
threshold is therefore the larger of the noise threshold and the one calibrated on the
*sign-flipped residual* (:func:`residual_threshold`), at the same rate: here the sign flip is
a fair null, since the cells it would mistake are already in the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft

from online_cnmfe.model.initialization.seeding import seed_statistic, seed_window
from online_cnmfe.model.initialization.summary_images import (
    SummaryImages,
    center_psf_kernel,
    corr_pnr_images,
    filter_frames,
    summary_images,
)
from online_cnmfe.model.null_threshold import NullThreshold, peak_values, threshold_at_rate

logger = logging.getLogger(__name__)

NULL_PATCH_PX = 128  # side of the simulated noise patch (or the frame, if smaller)
TEMPORAL_PERCENTILE = 10  # of the pixels' power per frequency (see temporal_spectrum)
SPECTRUM_PAIRS = 64  # frame pairs whose differences give the noise spectrum
NULL_SEED = 20261204  # fixed: the same movie always gets the same threshold
MIN_SPECTRUM_PX = 16  # smaller frames: white noise (too few pixels for a spectrum)
WANTED_NULL_PEAKS = 200  # more noise patches are simulated until this many null peaks
MAX_PATCHES = 8
MIN_EMPIRICAL_PEAKS = 200  # fewer data peaks than this leave the simulated null alone


@dataclass(frozen=True, slots=True)
class SeedingNull:
    """The calibrated seeding threshold with the null's summary (for logs and tests).

    Attributes
    ----------
    calibration : NullThreshold
    null_pnr, null_corr : ndarray of shape (3,)
        50th / 99th / 99.9th percentiles of the PNR and corr images of the noise movie.
    """

    calibration: NullThreshold
    null_pnr: np.ndarray
    null_corr: np.ndarray

    @property
    def threshold(self) -> float:
        return self.calibration.threshold


def noise_spectrum(Y: np.ndarray, side: int) -> np.ndarray:
    """Amplitude spectrum (side, side // 2 + 1) of the noise in a central ``side`` square.

    The spatial power spectrum of frame-to-frame differences ``Y[2i+1] - Y[2i]`` (each
    demeaned), the median over up to :data:`SPECTRUM_PAIRS` pairs per frequency: robust to the
    few pairs that hold a transient's rise.
    """
    T, H, W = Y.shape
    r0, c0 = (H - side) // 2, (W - side) // 2
    n = max(1, min(SPECTRUM_PAIRS, T // 2))
    idx = np.linspace(0, T // 2 - 1, n).astype(int) * 2 if T >= 2 else np.zeros(1, int)
    a = Y[idx, r0 : r0 + side, c0 : c0 + side].astype(np.float32)
    b = Y[np.minimum(idx + 1, T - 1), r0 : r0 + side, c0 : c0 + side].astype(np.float32)
    D = b - a
    D -= D.mean(axis=(1, 2), keepdims=True)
    P = np.abs(scipy.fft.rfft2(D, axes=(1, 2))) ** 2
    amp = np.sqrt(np.median(P, axis=0))
    amp[0, 0] = 0.0
    if not np.any(amp > 0):  # a constant difference (e.g. a frozen source): white noise
        amp[:] = 1.0
        amp[0, 0] = 0.0
    return amp.astype(np.float32)


def temporal_spectrum(Y: np.ndarray, side: int, sigma: float) -> np.ndarray:
    """Relative amplitude spectrum (T // 2 + 1,) of the noise in time, 1 on average.

    A low percentile (:data:`TEMPORAL_PERCENTILE`) over the pixels of a central ``side``
    square of the power spectrum of the spatially filtered
    (:func:`.summary_images.center_psf_kernel`) movie: the smooth background is gone, and the
    pixels a cell's transients redden are the upper part of each frequency's distribution
    (in a dense field a median would move). The power at one frequency is exponentially
    distributed across noise pixels, so a percentile is a fixed fraction of the mean at every
    frequency and the normalised shape is unbiased. Frequency 0 is set to 0.
    """
    T, H, W = Y.shape
    r0, c0 = (H - side) // 2, (W - side) // 2
    f = filter_frames(Y[:, r0 : r0 + side, c0 : c0 + side], center_psf_kernel(sigma))
    f -= f.mean(axis=0, keepdims=True)
    P = np.abs(scipy.fft.rfft(f.reshape(T, -1), axis=0)) ** 2
    amp = np.sqrt(np.percentile(P, TEMPORAL_PERCENTILE, axis=1))
    amp[0] = 0.0
    norm = float(np.sqrt(np.mean(amp[1:] ** 2))) if T > 1 else 0.0
    if not norm > 0:
        return np.ones(T // 2 + 1, np.float32)
    return (amp / norm).astype(np.float32)


def noise_movie(
    amp: np.ndarray,
    side: int,
    n_frames: int,
    seed: int = NULL_SEED,
    temporal: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussian noise (n_frames, side, side) with the spatial spectrum ``amp`` and the
    temporal amplitude spectrum ``temporal`` (length ``n_frames // 2 + 1``; None: white)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_frames, side, side), np.float32)
    for s in range(0, n_frames, 64):
        e = min(n_frames, s + 64)
        w = rng.standard_normal((e - s, side, side), dtype=np.float32)
        out[s:e] = scipy.fft.irfft2(scipy.fft.rfft2(w, axes=(1, 2)) * amp, s=(side, side))
    if temporal is not None and n_frames > 2:
        spec = scipy.fft.rfft(out, axis=0)
        spec *= np.asarray(temporal, np.float32)[:, None, None]
        out[:] = scipy.fft.irfft(spec, n=n_frames, axis=0)
    return out


def seeding_threshold(
    Y: np.ndarray,
    sigma: float,
    gsiz: int,
    rate: float,
    thresh: float = 2.0,
    tau_frames: float = 0.0,
) -> SeedingNull:
    """Threshold on ``corr x PNR`` peaks for ``rate`` false seeds in the frame.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W)
        The frames the seeding runs on (only their noise structure and T are used).
    sigma : float
        Gaussian sigma of the seeding filter (px).
    gsiz : int
        Neuron diameter (px) as the seeding uses it (:func:`.seeding.seed_window`).
    rate : float
        Expected false seeds in the frame (``detection.false_seeds_per_fov`` scaled to the
        frame's area, :func:`..null_threshold.rate_for_frame`).
    thresh : float
        Correlation-image threshold in units of sn (as for the data's images).
    tau_frames : float
        The matched temporal filter of the data's images (:func:`.summary_images.summary_images`).

    Returns
    -------
    SeedingNull
    """
    T, H, W = Y.shape
    win = seed_window(gsiz)
    side = int(min(H, W, NULL_PATCH_PX))
    temporal = None
    if side >= max(MIN_SPECTRUM_PX, 4 * win):
        amp = noise_spectrum(Y, side)
        if tau_frames > 0:  # averaging over time amplifies whatever is slow in the noise
            temporal = temporal_spectrum(Y, side, sigma)
    else:  # a tiny frame: white noise on a patch big enough for a few dozen peaks
        side = max(32, 8 * win)
        amp = np.ones((side, side // 2 + 1), np.float32)
        amp[0, 0] = 0.0
    border = min(side // 4, int(2 * sigma) + 1)  # the patch edge sees the filter's padding
    mask = np.zeros((side, side), bool)
    mask[border : side - border, border : side - border] = True
    peaks, pnr, corr = [], [], []
    for r in range(MAX_PATCHES):
        noise = noise_movie(amp, side, T, NULL_SEED + r, temporal)
        _, im = summary_images(noise, sigma, thresh, tau_frames=tau_frames)
        stat = seed_statistic(im.corr * im.pnr, gsiz)  # exactly what the seeding thresholds
        peaks.append(peak_values(stat, win, mask))
        pnr.append(im.pnr[mask])
        corr.append(im.corr[mask])
        if sum(p.size for p in peaks) >= WANTED_NULL_PEAKS:
            break
    null = np.concatenate(peaks)
    area = float(mask.sum()) * len(peaks)
    cal = threshold_at_rate(null, null.size * H * W / area, rate)
    return SeedingNull(
        calibration=cal,
        null_pnr=np.percentile(np.concatenate(pnr), [50, 99, 99.9]),
        null_corr=np.percentile(np.concatenate(corr), [50, 99, 99.9]),
    )


def residual_threshold(
    R: np.ndarray,
    sigma: float,
    gsiz: int,
    rate: float,
    noise: SeedingNull,
    thresh: float = 2.0,
    tau_frames: float = 0.0,
    filtered: np.ndarray | None = None,
) -> SeedingNull:
    """Seeding threshold for a residual ``R`` (T, H, W): the noise null's, or higher where the
    sign-flipped residual says the fit's errors reach further (see the module docstring).

    ``R`` is negated in place for the computation and restored before returning. With
    ``filtered`` (``R`` filtered as the seeding does, :func:`.summary_images.filter_frames`)
    that is negated instead and ``R`` is not filtered again: the filter is linear and
    negation exact, so the images are the same to the bit.
    """
    reuse = filtered is not None and tau_frames <= 0  # the matched filter smooths in place
    target = filtered if reuse else R
    np.negative(target, out=target)
    try:
        if not reuse:
            _, im = summary_images(R, sigma, thresh, tau_frames=tau_frames)
            pnr, corr = im.pnr, im.corr
        else:
            _, _, pnr, corr = corr_pnr_images(filtered, thresh)
    finally:
        np.negative(target, out=target)
    flipped = peak_values(seed_statistic(corr * pnr, gsiz), seed_window(gsiz))
    if flipped.size < 20:
        return noise
    cal = threshold_at_rate(flipped, flipped.size, rate, floor=noise.threshold)
    return SeedingNull(
        calibration=cal,
        null_pnr=np.percentile(pnr, [50, 99, 99.9]),
        null_corr=np.percentile(corr, [50, 99, 99.9]),
    )


def log_calibration(null: SeedingNull, images: SummaryImages, what: str) -> None:
    """One INFO line: the calibrated threshold and the PNR / corr percentiles (data, null)."""
    p_pnr = np.percentile(images.pnr, [50, 99, 99.9])
    p_corr = np.percentile(images.corr, [50, 99, 99.9])
    c = null.calibration
    logger.info(
        "%s: seeds where corr x PNR >= %.2f (%.3g false seeds expected in the frame; "
        "noise peaks Gumbel mu %.2f, beta %.2f). PNR 50/99/99.9th percentiles: data "
        "%.1f/%.1f/%.1f, noise %.1f/%.1f/%.1f; corr: data %.2f/%.2f/%.2f, noise %.2f/%.2f/%.2f",
        what, c.threshold, c.rate, c.mu, c.beta, *p_pnr, *null.null_pnr, *p_corr,
        *null.null_corr,
    )  # fmt: skip


def data_floor(null: SeedingNull, stat: np.ndarray, gsiz: int, rate: float) -> SeedingNull:
    """The simulated null's threshold, or lower where the recording's own peaks say its
    noise reaches less far (an *empirical null*).

    ``stat`` is the data's seeding statistic (:func:`.seeding.seed_statistic` of corr x PNR,
    zero where no seed may be). Most of its local maxima are noise (cells are a few per
    cent of them in all but the densest fields), so the Gumbel fitted to their quartiles
    (:func:`..null_threshold.gumbel_fit`), which a minority of cell peaks does not move, is
    a null of the recording itself, and cells can only raise it. When it calls for a lower
    threshold than the simulation, the simulated noise is not this recording's (e.g. a
    median-filtered, quantised movie whose noise is less peaky than Gaussian noise of the
    same spectra): the data's own threshold at the same rate is used. Never higher than the
    simulated one (a dense field's cells raise the empirical quartiles).
    """
    peaks = peak_values(stat, seed_window(gsiz))
    if peaks.size < MIN_EMPIRICAL_PEAKS:
        return null
    emp = threshold_at_rate(peaks, peaks.size, rate)
    if emp.threshold >= null.threshold:
        return null
    logger.info(
        "seeding threshold %.2f from the recording's own peaks (Gumbel mu %.2f, beta %.2f of "
        "%d peaks) instead of %.2f from the simulated noise (mu %.2f, beta %.2f)",
        emp.threshold, emp.mu, emp.beta, peaks.size, null.threshold, null.calibration.mu,
        null.calibration.beta,
    )  # fmt: skip
    return SeedingNull(calibration=emp, null_pnr=null.null_pnr, null_corr=null.null_corr)
