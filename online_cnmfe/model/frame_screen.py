"""Screening of the initialisation frames: the frames the model is fitted on must be sane.

After initialisation the model refuses any frame far outside the range of its initialisation
frames (``ModelState.pixel_limits``); before it, there is no such range yet, so the buffered
frames are judged against each other: a frame with NaN/inf pixels, or with a pixel more than
``excursion`` × the typical frame range outside the typical [min, max] (medians over the
frames), is left out of the fit (and the limits) with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from online_cnmfe.model._kernels.frame_check import finite_range


def screen_frames(frames: Sequence[np.ndarray], excursion: float) -> dict[int, str]:
    """Indices of ``frames`` to leave out of an initialisation, with the reason.

    Parameters
    ----------
    frames : sequence of ndarray of shape (H, W)
    excursion : float
        ``online.max_pixel_excursion_ranges`` (0: only NaN/inf frames are left out).

    Returns
    -------
    dict of int to str
    """
    stats = np.zeros((len(frames), 3))
    for i, frame in enumerate(frames):
        finite_range(np.ascontiguousarray(frame, np.float32).ravel(), stats[i])
    out = {int(i): "frame contains NaN or infinite pixels" for i in np.flatnonzero(stats[:, 2])}
    good = stats[stats[:, 2] == 0]
    if excursion <= 0 or good.shape[0] < 3:
        return out
    lo, hi = float(np.median(good[:, 0])), float(np.median(good[:, 1]))
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
    low, high = lo - excursion * span, hi + excursion * span
    for i in np.flatnonzero((stats[:, 2] == 0) & ((stats[:, 0] < low) | (stats[:, 1] > high))):
        worst = stats[i, 0] if stats[i, 0] < low else stats[i, 1]
        out[int(i)] = (
            f"pixel value {worst:.4g} outside [{low:.4g}, {high:.4g}] (online."
            "max_pixel_excursion_ranges x the typical range of the initialisation frames)"
        )
    return out
