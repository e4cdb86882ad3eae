"""An estimate of the neuron diameter from the data (:func:`estimate_diameter`).

The movie is high-passed in time (minus its running mean over one second: the slow background
and out-of-focus blobs go), divided by each pixel's noise, and only events above
``EVENT_Z`` are kept; their mean over time is an image of where cells fire. Blobs in it are
measured with the scale-normalised Laplacian of Gaussian: for a Gaussian spot of standard
deviation s, ``-sigma^2 LoG_sigma`` peaks at sigma = s, and a footprint of diameter d has s
about d / 4. The scale with the strongest mean response over the 20 strongest local maxima
gives ``d = 4 sigma``.

Experimental: measured in BENCHMARKS.md ("Preprocessing (issue 13)"), it finds 5.6 px for
simulated 8 px cells but saturates at the top of its range for 13 and 20 px cells (broad
neuropil events win) and at the bottom on the real recordings (noise events win). It is only
logged, never applied.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

EVENT_Z = 3.0
TOP_PEAKS = 20
DIAMETER_RANGE_PX = (3.0, 40.0)


def estimate_diameter(frames: np.ndarray, frame_rate_hz: float, fov=None) -> float:
    """Neuron diameter (pixels) suggested by the spatial scale of the calcium events.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
        Preprocessed frames (T >= 20).
    frame_rate_hz : float
    fov : ndarray of shape (H, W), bool, optional
        Events outside are ignored.

    Returns
    -------
    float
        In ``DIAMETER_RANGE_PX``; NaN when the movie is too short or shows no event.
    """
    Y = np.asarray(frames, np.float32)
    if Y.ndim != 3 or Y.shape[0] < 20:
        return float("nan")
    w = max(3, int(round(frame_rate_hz)))
    X = Y - ndi.uniform_filter1d(Y, w, axis=0, mode="nearest")
    sn = 1.4826 * np.median(np.abs(np.diff(X, axis=0)), axis=0) / np.sqrt(2.0) + 1e-9
    Z = X / sn
    Z[Z < EVENT_Z] = 0.0
    image = Z.mean(axis=0)
    if fov is not None:
        image[~np.asarray(fov, bool)] = 0.0
    if not image.any():
        return float("nan")
    lo, hi = DIAMETER_RANGE_PX
    sigmas = np.exp(np.linspace(np.log(lo / 4), np.log(hi / 4), 30))
    response = np.zeros(sigmas.size)
    for i, s in enumerate(sigmas):
        L = -s * s * ndi.gaussian_laplace(image, s, mode="nearest")
        peaks = L[(L == ndi.maximum_filter(L, size=max(3, int(2 * s) + 1))) & (L > 0)]
        if peaks.size:
            response[i] = np.sort(peaks)[::-1][:TOP_PEAKS].mean()
    return float(np.clip(4.0 * sigmas[int(np.argmax(response))], lo, hi))
