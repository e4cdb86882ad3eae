"""Detection thresholds from a null distribution: how high noise alone reaches.

Used by the initialisation's seeding (:mod:`.initialization.noise_null`) and the online search
(:mod:`.slow_path.detection`), so both decide "is this a cell?" the same way: a candidate is a
local maximum of the statistic ``v = corr x PNR`` and the threshold ``u`` is where the
*expected number of noise peaks* equals the user's ``detection.false_seeds_per_fov``, counted
per field of view of 256 x 256 pixels (:func:`rate_for_frame` scales it by the frame's area, so
a cell is as detectable in a small crop as in a full Miniscope frame).

The null sample is the set of local maxima (peaks) of the same statistic computed on noise (a
noise movie with the recording's own noise structure, or the sign-flipped residual). Peak
values of a max-type statistic have a Gumbel-like upper tail, so the tail is extrapolated
from the bulk of the null peaks (their quartiles, which a few contaminated peaks do not move)
rather than from its few largest values::

    beta = (q75 - q25) / (g(0.75) - g(0.25)),  mu = q25 - beta g(0.25),  g(p) = -ln(-ln p)
    P(peak > u) = 1 - exp(-exp(-(u - mu) / beta))
    u = mu - beta ln(-ln(1 - rate / n_peaks))      (n_peaks peaks per field of view)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

REFERENCE_FOV_PX = 256 * 256  # the field of view that false_seeds_per_fov refers to
_G25 = -math.log(-math.log(0.25))
_G75 = -math.log(-math.log(0.75))
MIN_NULL_PEAKS = 20  # fewer null peaks than this: the fit is not trusted


@dataclass(frozen=True, slots=True)
class NullThreshold:
    """A calibrated threshold and the null it came from.

    Attributes
    ----------
    threshold : float
        ``u``: a peak of the statistic above it is a candidate.
    mu, beta : float
        Gumbel location and scale fitted to the null peaks.
    n_peaks : float
        Noise peaks expected in the whole field of view.
    rate : float
        Target: expected noise peaks above ``threshold`` per field of view.
    n_null : int
        Null peaks the fit used.
    """

    threshold: float
    mu: float
    beta: float
    n_peaks: float
    rate: float
    n_null: int

    def expected_false(self, u: float) -> float:
        """Expected number of noise peaks above ``u`` in the field of view."""
        return gumbel_exceedance(u, self.mu, self.beta) * self.n_peaks


def rate_for_frame(false_seeds_per_fov: float, n_pixels: int) -> float:
    """Expected false seeds in a frame of ``n_pixels``: the per-256x256 rate scaled by area.

    Examples
    --------
    >>> rate_for_frame(3.0, 512 * 512)
    12.0
    """
    return float(false_seeds_per_fov) * n_pixels / REFERENCE_FOV_PX


def peak_values(v: np.ndarray, window: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Values of the local maxima of an image (maximum over a ``window`` square), > 0.

    Parameters
    ----------
    v : ndarray of shape (H, W)
    window : int
        Side of the square neighbourhood (>= 1).
    mask : ndarray of shape (H, W), bool, optional
        Only peaks where ``mask`` is True are returned.

    Returns
    -------
    ndarray of shape (n_peaks,), float64, descending.

    Examples
    --------
    >>> v = np.zeros((5, 5)); v[1, 1] = 2.0; v[3, 4] = 1.0
    >>> peak_values(v, 3).tolist()
    [2.0, 1.0]
    """
    v = np.asarray(v, np.float64)
    mx = scipy.ndimage.maximum_filter(v, size=max(1, int(window)), mode="nearest")
    ok = (v == mx) & (v > 0)
    if mask is not None:
        ok &= mask
    return np.sort(v[ok])[::-1]


def gumbel_fit(values: np.ndarray) -> tuple[float, float]:
    """Gumbel (location, scale) from the quartiles of ``values``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mu, beta = gumbel_fit(rng.gumbel(2.0, 0.5, 20000))
    >>> round(mu, 1), round(beta, 1)
    (2.0, 0.5)
    """
    values = np.asarray(values, np.float64)
    if values.size < 2:
        raise ValueError(f"a Gumbel fit needs at least 2 values, got {values.size}")
    q25, q75 = np.percentile(values, [25, 75])
    beta = max(float(q75 - q25) / (_G75 - _G25), 1e-12)
    return float(q25 - beta * _G25), beta


def gumbel_exceedance(u: float, mu: float, beta: float) -> float:
    """``P(X > u)`` for a Gumbel(mu, beta) variable."""
    return float(-np.expm1(-math.exp(-(u - mu) / beta)))


def threshold_at_rate(
    null_peaks: np.ndarray, n_peaks_fov: float, rate: float, floor: float = 0.0
) -> NullThreshold:
    """Threshold at which ``rate`` noise peaks per field of view are expected.

    Parameters
    ----------
    null_peaks : ndarray
        Peak values of the statistic on noise (:func:`peak_values`).
    n_peaks_fov : float
        Number of noise peaks in a whole field of view (the null's count scaled to its area).
    rate : float
        Expected false peaks above the threshold, per field of view (> 0).
    floor : float
        The threshold is never below this.

    Returns
    -------
    NullThreshold

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_NULL_PEAKS` null peaks, or a rate <= 0.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> null = rng.gumbel(2.0, 0.3, 1000)
    >>> th = threshold_at_rate(null, n_peaks_fov=1000, rate=1.0)
    >>> round(th.threshold, 1), round(th.expected_false(th.threshold), 2)
    (4.1, 1.0)
    """
    null_peaks = np.asarray(null_peaks, np.float64)
    if not rate > 0:
        raise ValueError(f"the false-seed rate must be > 0, got {rate}")
    if null_peaks.size < MIN_NULL_PEAKS:
        raise ValueError(
            f"{null_peaks.size} null peaks are too few to calibrate a threshold "
            f"(need {MIN_NULL_PEAKS}); the field of view is too small for the neuron diameter"
        )
    mu, beta = gumbel_fit(null_peaks)
    n = max(float(n_peaks_fov), float(rate) * 1.0001)
    u = mu - beta * math.log(-math.log1p(-rate / n))
    return NullThreshold(
        threshold=max(float(u), float(floor)), mu=mu, beta=beta, n_peaks=n, rate=float(rate),
        n_null=int(null_peaks.size),
    )  # fmt: skip
