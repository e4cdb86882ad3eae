"""Still tissue: when the initialisation frames' measured shifts are only the registration's
noise, the motion stage does not correct by them (``register.correct_frame`` keeps the
correction at 0 until a real movement, ``MotionState.still_limit_px``).

Correcting a still movie by its noise resamples every frame by a random sub-pixel shift: the
cells jitter and the pixels are smoothed by chance (held-out ``lens_margin``, 0.32 px RMS of
jitter inside the lens: −0.009 to −0.014 F1 against no correction).
"""

from __future__ import annotations

import numpy as np

# the tissue stood still over the initialisation when the unflagged frames' shifts spread by
# at most STILL_RMS_PX (RMS about their median) and none lies STILL_MAX_PX or more away: what
# the registration's noise gives on a still movie (0.12-0.35 px RMS measured, the larger on
# the smaller area inside a lens), far under any movement worth correcting (a walk of std
# 3 px, jumps of 6-20 px); online, the first informative shift beyond max(STILL_EXIT_PX,
# STILL_EXIT_RMS x that RMS) ends the still state
STILL_RMS_PX = 0.5
STILL_MAX_PX = 1.5
STILL_EXIT_PX = 1.0
STILL_EXIT_RMS = 4.0
STILL_MIN_FRAMES = 10


def still_limit(shifts: np.ndarray, good: np.ndarray, fields: np.ndarray | None = None
                ) -> float:  # fmt: skip
    """Online movement threshold (px) when the frames ``good`` stood still, else 0.

    Parameters
    ----------
    shifts : ndarray of shape (T, 2)
        Measured shifts of the initialisation frames (frame pixels).
    good : ndarray of shape (T,), bool
        The unflagged frames.
    fields : ndarray of shape (T, 2, ny, nx), or None
        Piecewise-rigid: each patch's shift, judged like the rigid one (per patch, about its
        own median over the frames).

    Returns
    -------
    float
        ``max(STILL_EXIT_PX, STILL_EXIT_RMS × rms)`` when at least ``STILL_MIN_FRAMES``
        unflagged frames lie within ``STILL_MAX_PX`` of their median shift with an RMS
        distance ``rms`` ≤ ``STILL_RMS_PX`` (every patch too; ``rms`` is then the largest
        patch's); 0.0 otherwise (the tissue moved).

    Notes
    -----
    On a still movie the measured shifts are the registration's noise; correcting by them
    resamples every frame by a random sub-pixel shift, which blurs and jitters the cells
    (held-out ``lens_margin``, 0.32 px RMS: −0.014 F1 against no correction).
    """
    good = np.asarray(good, bool)
    if int(good.sum()) < STILL_MIN_FRAMES:
        return 0.0
    d = np.asarray(shifts, np.float64)[good][:, :, None]  # (n, 2, 1): one "patch"
    if fields is not None:
        d = np.concatenate([d, np.asarray(fields, np.float64)[good].reshape(*d.shape[:2], -1)], 2)
    size = np.hypot(*(d - np.median(d, axis=0)).transpose(1, 0, 2))
    rms = float(np.sqrt(np.mean(size**2, axis=0)).max())  # the most jittery patch's
    if rms > STILL_RMS_PX or float(size.max()) >= STILL_MAX_PX:
        return 0.0
    return max(STILL_EXIT_PX, STILL_EXIT_RMS * rms)
