"""Summary images of a batch of frames: filtered movie, noise, peak-to-noise and correlation.

Follows CaImAn ``summary_images.correlation_pnr`` / ``init_neurons_corr_pnr`` (CNMF-E seeding):

* the frames are filtered with a mean-centred Gaussian (``center_psf``): a Gaussian of sigma
  ``gSig`` on a ``2 * int(2 * gSig) + 1`` square, mean subtracted over the disk where it is at
  least its value at the middle of the top row, zero outside (a difference-of-Gaussians-like
  high-pass that removes the smooth background); borders replicate the edge pixels;
* ``sn`` per pixel: the noise from the power spectrum averaged over normalised frequencies
  (0.25, 0.5] (``get_noise_fft``, method 'mean');
* optionally (``tau_frames > 0``) a *matched temporal filter*: a causal exponential average
  with the indicator's decay time, ``f_t <- a f_{t-1} + (1 - a) f_t`` with
  ``a = exp(-1 / tau_frames)``, and ``sn`` scaled by its white-noise gain
  ``sqrt((1 - a) / (1 + a))``: a transient decaying with time constant tau stands out of white
  noise ``sqrt((1 + a) / (1 - a))`` times more than in one frame (at 10 Hz and 0.4 s decay
  1.6x); CaImAn thresholds single frames;
* ``pnr = max_t(filtered - mean_t) / sn``;
* ``corr``: mean correlation with the 8 neighbours of the mean-subtracted filtered movie with
  values below ``thresh * sn`` zeroed.

All are computed in chunks of frames (FFT filtering, moment accumulation) so that memory stays
at one float32 copy of the movie; the moments can also be accumulated frame by frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

from online_cnmfe.model._kernels.summary import (
    local_corr_accumulate_bands,
    local_corr_finalize,
    max_minus_center,
)

logger = logging.getLogger(__name__)

_CHUNK = 64


def center_psf_kernel(sigma: float) -> np.ndarray:
    """The mean-centred truncated Gaussian kernel of CaImAn's ``center_psf=True`` filter.

    Parameters
    ----------
    sigma : float
        Gaussian sigma in pixels (``gSig``), > 0.

    Returns
    -------
    ndarray of shape (k, k), float32 with ``k = 2 * int(2 * sigma) + 1``; sums to 0.

    Examples
    --------
    >>> k = center_psf_kernel(3.0)
    >>> k.shape, abs(float(k.sum())) < 1e-5
    ((13, 13), True)
    """
    if not sigma > 0:
        raise ValueError(f"gaussian sigma must be > 0 pixels, got {sigma}")
    ks = 2 * int(2 * sigma) + 1
    x = np.arange(ks) - ks // 2
    g1 = np.exp(-(x.astype(np.float64) ** 2) / (2 * sigma**2))
    g1 /= g1.sum()
    psf = np.outer(g1, g1)
    support = psf >= psf[0].max()
    psf = psf - psf[support].mean()
    psf[~support] = 0
    return psf.astype(np.float32)


def filter_frames(frames: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None):
    """Correlate every frame with ``kernel`` (edge-replicated borders) by FFT, in chunks.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
    kernel : ndarray of shape (k, k), k odd
    out : ndarray of shape (T, H, W), float32, optional
        Written in place (may be ``frames`` itself when that is float32).

    Returns
    -------
    ndarray of shape (T, H, W), float32
    """
    T, H, W = frames.shape
    if out is None:
        out = np.empty((T, H, W), np.float32)
    r = kernel.shape[0] // 2
    shape = (
        scipy.fft.next_fast_len(H + 2 * r, real=True),
        scipy.fft.next_fast_len(W + 2 * r, real=True),
    )
    kpad = np.zeros(shape, np.float32)
    # correlation = convolution with the flipped kernel; centre it at (0, 0)
    kf = kernel[::-1, ::-1]
    kpad[: kf.shape[0], : kf.shape[1]] = kf
    kpad = np.roll(kpad, (-r, -r), axis=(0, 1))
    kfft = scipy.fft.rfft2(kpad)
    # the edge-padded chunk, zero-filled up to the FFT shape, built in one reused buffer (the
    # same input as np.pad + rfft2(s=shape), without their two copies of every chunk)
    buf = np.zeros((min(T, _CHUNK), *shape), np.float32)
    for s in range(0, T, _CHUNK):
        e = min(T, s + _CHUNK)
        block = buf[: e - s]
        _edge_pad_into(frames[s:e], r, block)
        f = scipy.fft.rfft2(block, axes=(1, 2), workers=2)
        f *= kfft
        res = scipy.fft.irfft2(f, s=shape, axes=(1, 2), workers=2)
        out[s:e] = res[:, r : r + H, r : r + W]
    return out


def _edge_pad_into(frames: np.ndarray, r: int, out: np.ndarray) -> None:
    """``out[:, :H + 2r, :W + 2r] = np.pad(frames, r, mode="edge")`` per frame (the rest of
    ``out`` is left as it is: zeros)."""
    _, H, W = frames.shape
    out[:, r : r + H, r : r + W] = frames
    if r:
        out[:, r : r + H, :r] = out[:, r : r + H, r : r + 1]
        out[:, r : r + H, r + W : 2 * r + W] = out[:, r : r + H, r + W - 1 : r + W]
        out[:, :r, : 2 * r + W] = out[:, r : r + 1, : 2 * r + W]
        out[:, r + H : 2 * r + H, : 2 * r + W] = out[:, r + H - 1 : r + H, : 2 * r + W]


def noise_psd(x: np.ndarray, freq_range: tuple[float, float] = (0.25, 0.5)) -> np.ndarray:
    """Noise standard deviation of each pixel's time series from its power spectrum.

    ``sn = sqrt(mean_{f in (lo, hi]} |X_f|^2 / T)`` (CaImAn ``get_noise_fft``, 'mean').

    Parameters
    ----------
    x : ndarray of shape (T, ...)
        Time along axis 0.

    Returns
    -------
    ndarray of shape x.shape[1:], float32
    """
    T = x.shape[0]
    flat = x.reshape(T, -1)
    ff = np.arange(T // 2 + 1) / T
    sel = (ff > freq_range[0]) & (ff <= freq_range[1])
    out = np.empty(flat.shape[1], np.float32)
    step = 8192
    for s in range(0, flat.shape[1], step):
        e = min(flat.shape[1], s + step)
        f = scipy.fft.rfft(flat[:, s:e], axis=0, workers=2)[sel]
        psd = (f.real**2 + f.imag**2).mean(axis=0) / T
        out[s:e] = np.sqrt(psd)
    return out.reshape(x.shape[1:])


def smoothing_coefficient(tau_frames: float) -> float:
    """``a`` of the matched temporal filter for an indicator decay of ``tau_frames`` (0: off).

    Examples
    --------
    >>> smoothing_coefficient(0.0), round(smoothing_coefficient(4.0), 3)
    (0.0, 0.779)
    """
    if not tau_frames >= 0:
        raise ValueError(f"tau_frames must be >= 0, got {tau_frames}")
    return float(np.exp(-1.0 / tau_frames)) if tau_frames > 0 else 0.0


def noise_gain(a: float) -> float:
    """Standard deviation of white unit noise after the filter of coefficient ``a``."""
    return float(np.sqrt((1.0 - a) / (1.0 + a)))


def smooth_in_time(x: np.ndarray, a: float, axis: int = 0, block: int = 32) -> None:
    """``x[t] = a x[t-1] + (1 - a) x[t]`` along ``axis`` (time), in place; a = 0: no-op.

    The recursion starts from the mean of the first ``ceil(3 / (1 - a))`` frames (the filter's
    memory), so the first frames are not noisier than the rest. Frame-major (T, H, W) movies
    use ``axis=0``, pixel-major (H, W, T) ones ``axis=-1``; ``scipy.signal.lfilter`` runs on
    ``block`` rows of the first other axis at a time (its float64 output stays small).

    Examples
    --------
    >>> x = np.array([[1.0], [0.0], [0.0]], np.float32)
    >>> smooth_in_time(x, 0.5); np.round(x.ravel().astype(float), 4).tolist()
    [0.6667, 0.3333, 0.1667]
    """
    if a <= 0:
        return
    t_axis = axis % x.ndim
    m = min(x.shape[t_axis], int(np.ceil(3.0 / (1.0 - a))))
    other = 1 if t_axis == 0 and x.ndim > 1 else 0
    head = [slice(None)] * x.ndim
    head[t_axis] = slice(0, m)
    n_rows = x.shape[other] if x.ndim > 1 else 1
    for r0 in range(0, n_rows, block):
        sel = [slice(None)] * x.ndim
        if x.ndim > 1:
            sel[other] = slice(r0, r0 + block)
        blk = x[tuple(sel)]
        zi = a * blk[tuple(head)].mean(axis=t_axis, dtype=np.float64, keepdims=True)
        out, _ = scipy.signal.lfilter([1.0 - a], [1.0, -a], blk, axis=t_axis, zi=zi)
        blk[...] = out


def correlation_image(centered_input: np.ndarray, center: np.ndarray, thr: np.ndarray):
    """Local (8-neighbour) correlation image of ``frames - center`` with values < thr zeroed.

    Parameters
    ----------
    centered_input : ndarray of shape (T, H, W), float32
    center, thr : ndarray of shape (H, W), float32

    Returns
    -------
    ndarray of shape (H, W), float32
    """
    T, H, W = centered_input.shape
    S1 = np.zeros((H, W))
    S2 = np.zeros((H, W))
    Sx = np.zeros((H, W, 4))
    center = np.ascontiguousarray(center, np.float32)
    thr = np.ascontiguousarray(thr, np.float32)
    for s in range(0, T, _CHUNK):
        local_corr_accumulate_bands(centered_input[s : s + _CHUNK], center, thr, S1, S2, Sx)
    out = np.empty((H, W), np.float32)
    local_corr_finalize(S1, S2, Sx, float(T), out)
    return out


@dataclass(slots=True)
class SummaryImages:
    """Summary images of a batch (all (H, W) float32).

    Attributes
    ----------
    mean : mean of the raw frames
    filtered_mean : temporal mean of the filtered frames
    noise : ``sn`` of the filtered frames
    pnr : peak-to-noise image
    corr : local correlation image
    """

    mean: np.ndarray
    filtered_mean: np.ndarray
    noise: np.ndarray
    pnr: np.ndarray
    corr: np.ndarray

    def display(self) -> dict[str, np.ndarray]:
        """Images for the dashboard: mean, correlation, PNR and their product."""
        return {
            "mean": self.mean,
            "corr": self.corr,
            "pnr": self.pnr,
            "corr_pnr": (self.corr * self.pnr).astype(np.float32),
        }


def corr_pnr_images(filtered: np.ndarray, thresh: float = 2.0, a: float = 0.0):
    """Noise, PNR and correlation images of a filtered movie.

    Parameters
    ----------
    filtered : ndarray of shape (T, H, W), float32
        With ``a > 0`` it is smoothed in time in place (:func:`smooth_in_time`) after its
        noise is measured; the returned ``sn`` is the smoothed movie's.
    thresh : float
        Values below ``thresh * sn`` are zeroed for the correlation image.
    a : float
        Matched temporal filter coefficient (:func:`smoothing_coefficient`), 0 for none.

    Returns
    -------
    center, sn, pnr, corr : ndarrays of shape (H, W), float32
    """
    center = filtered.mean(axis=0, dtype=np.float64).astype(np.float32)
    T = filtered.shape[0]
    # noise of the mean-subtracted movie: the mean only affects frequency 0, outside the band
    sn = noise_psd(filtered)
    sn = np.maximum(sn, np.float32(1e-12) * max(float(sn.max()), 1e-30)).astype(np.float32)
    if a > 0:
        smooth_in_time(filtered, a)
        center = filtered.mean(axis=0, dtype=np.float64).astype(np.float32)
        sn *= np.float32(noise_gain(a))
    peak = np.empty_like(center)
    max_minus_center(filtered, center, peak)
    pnr = np.maximum(peak, 0) / sn
    corr = correlation_image(filtered, center, (thresh * sn).astype(np.float32))
    logger.debug("summary images over %d frames: max pnr %.1f", T, float(pnr.max()))
    return center, sn, pnr.astype(np.float32), corr


def remove_global_fluctuation(filtered: np.ndarray, frames: np.ndarray) -> None:
    """Regress the movie's mean-intensity fluctuation out of every filtered pixel, in place.

    A global (e.g. illumination or bleaching) fluctuation g(t) multiplies the static texture,
    so after the spatial filter every textured pixel varies as ``g(t) * filter(texture)``:
    neighbours correlate and PNR grows everywhere. ``f_p -= beta_p (g - mean g)`` with the
    least-squares ``beta_p`` removes it; sparse neural activity barely moves the mean.
    """
    T = frames.shape[0]
    g = frames.reshape(T, -1).mean(axis=1, dtype=np.float64)
    g -= g.mean()
    gg = float(g @ g)
    if gg <= 0:
        return
    gf = g.astype(np.float32)
    beta = np.tensordot(gf, filtered, axes=(0, 0)) / np.float32(gg)
    for t in range(T):
        filtered[t] -= gf[t] * beta


def summary_images(
    frames: np.ndarray,
    sigma: float,
    thresh: float = 2.0,
    remove_global: bool = False,
    tau_frames: float = 0.0,
    filtered: np.ndarray | None = None,
):
    """Filter a batch and compute its summary images.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
    sigma : float
        Gaussian sigma (``gSig``) in pixels.
    thresh : float
        Correlation threshold in units of ``sn``.
    remove_global : bool
        Regress the global mean-intensity fluctuation out of the filtered movie first
        (:func:`remove_global_fluctuation`).
    tau_frames : float
        Indicator decay in frames for the matched temporal filter (0: none; the returned
        ``filtered`` movie and ``noise`` are then the smoothed ones).
    filtered : ndarray of shape (T, H, W), float32, optional
        ``filter_frames(frames, center_psf_kernel(sigma))`` when already computed (it is
        used, and returned, in place of a new one).

    Returns
    -------
    filtered : ndarray of shape (T, H, W), float32
    images : SummaryImages
    """
    if filtered is None:
        filtered = filter_frames(frames, center_psf_kernel(sigma))
    elif filtered.shape != frames.shape:
        raise ValueError(f"filtered {filtered.shape} does not match frames {frames.shape}")
    if remove_global:
        remove_global_fluctuation(filtered, frames)
    center, sn, pnr, corr = corr_pnr_images(filtered, thresh, smoothing_coefficient(tau_frames))
    mean = frames.mean(axis=0, dtype=np.float64).astype(np.float32)
    return filtered, SummaryImages(mean=mean, filtered_mean=center, noise=sn, pnr=pnr, corr=corr)
