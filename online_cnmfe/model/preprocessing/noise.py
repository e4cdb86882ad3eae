"""Per-pixel noise of (preprocessed) frames from the high-frequency part of their spectrum."""

from __future__ import annotations

import numpy as np

from online_cnmfe.model.initialization.summary_images import noise_psd

NOISE_BAND = (0.25, 0.5)  # normalised temporal frequencies (cycles per frame)


def pixel_noise(frames: np.ndarray, freq_range: tuple[float, float] = NOISE_BAND) -> np.ndarray:
    """Noise standard deviation of every pixel from its temporal power spectrum.

    ``sn = sqrt(mean_{f in (lo, hi]} |X_f|^2 / T)`` over the normalised frequencies
    ``freq_range`` (CaImAn ``get_noise_fft``, 'mean'): calcium transients and background live
    at low frequencies, so the top half of the spectrum is noise. Computed on frames after the
    row/column offsets are removed (``preprocess_movie``), it is the noise the detector's
    thresholds must be calibrated on: line noise no longer inflates it, and what remains
    correlated between pixels is handled by measuring the noise of the *filtered* movie in the
    same way (``summary_images.corr_pnr_images``).

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
        T >= 4 frames.
    freq_range : (float, float)
        Band of normalised frequencies in (0, 0.5].

    Returns
    -------
    ndarray of shape (H, W), float32

    Raises
    ------
    ValueError
        Fewer than 4 frames or an empty band.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sn = pixel_noise(rng.normal(0, 2.0, (400, 4, 4)).astype(np.float32))
    >>> bool(np.all(np.abs(sn - 2.0) < 0.3))
    True
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 4:
        raise ValueError(f"frames must be (T, H, W) with T >= 4; got shape {frames.shape}")
    lo, hi = freq_range
    if not 0 <= lo < hi <= 0.5:
        raise ValueError(f"freq_range={freq_range!r}; expected 0 <= lo < hi <= 0.5")
    return noise_psd(frames, (lo, hi)).astype(np.float32)
