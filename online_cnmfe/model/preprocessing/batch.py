"""Preprocessing of the initialisation frames (:func:`preprocess_movie`) with the per-frame
code, and the exact replay of those corrections (:func:`replay_corrections`).

Bootstrapping (the online model starts from the state this leaves):

1. template = per-pixel median of up to 64 evenly spread frames (robust to corrupt ones);
2. every frame is measured against it (gain, row offsets, row roughness) without changing
   anything; the roughness baselines are the per-row medians over the frames and the usual
   ``|s - 1|`` the median over the frames (a minority of corrupt frames cannot move them);
3. :func:`~.frame.preprocess_frame`, as online (the template and baselines learn from the
   usable frames), removes the offsets and flags the corrupt frames;
4. the field-of-view mask and the dark level from the mean and noise images of the usable
   frames (:mod:`.fov`);
5. bleaching: a straight line fitted to the log FOV brightness of the usable frames, against
   its value at the last frame, gives each frame's gain (``state.bleach_gain``: changes
   within +-2 % are left alone; a trend below 10 % over the whole batch is left to the
   background model); frames are normalised by it, and the online level, slope
   and reference continue from the line's end (online, Holt's level and slope follow it).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from online_cnmfe.model._kernels import preprocess as kp
from online_cnmfe.model.preprocessing import fov as fov_mod
from online_cnmfe.model.preprocessing.frame import measure, preprocess_frame
from online_cnmfe.model.preprocessing.state import (
    GAIN_GRID_STEP,
    InitCorrections,
    PreprocessState,
    bleach_gain,
    make_state,
)
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

TEMPLATE_FRAMES = 64
HUBER_VARIANCE = 1.1  # variance of the offsets' Huber location: 1.1 sigma^2 / n (Gaussian)
LINE_NOISE_SIGNIFICANCE = 3.0  # offsets varying more than 3x their estimation noise: removed
INIT_MIN_DRIFT = 0.1  # a brightness trend below 10 % over the batch is not normalised
ROUGH_FLOOR_FRACTION = 0.05  # rows this much smoother than the median row: no flat-row test


def preprocess_movie(Y: np.ndarray, params: CNMFEParams) -> PreprocessState:
    """Clean the initialisation frames in place and return the state the online model continues.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32, C-contiguous
        Finite frames; overwritten with the corrected frames (flagged frames included: the
        caller replaces them, see ``InitCorrections.flagged``).
    params : CNMFEParams
        ``preprocess`` and ``data`` (frame rate, neuron diameter) are used.

    Returns
    -------
    PreprocessState
        With ``init`` holding the corrections applied to each frame.
    """
    p = params.preprocess
    T, H, W = Y.shape
    pick = np.unique(np.linspace(0, T - 1, min(T, TEMPLATE_FRAMES)).astype(np.int64))
    pre = make_state(median_image(Y[pick]), p, params.data.frame_rate_hz)
    _bootstrap_baselines(pre, Y, p)
    row_off = np.zeros((T, H), np.float32)
    col_off = np.zeros((T, W), np.float32)
    flagged = np.zeros(T, bool)
    reasons: list[str] = []
    online_like = dataclasses.replace(p, correct_bleaching=False)  # normalised below, centred
    for t in range(T):
        flag = preprocess_frame(pre, Y[t], online_like)
        row_off[t], col_off[t] = pre.row_off, pre.col_off
        if flag is not None:
            flagged[t] = True
            reasons.append(flag)
    good = ~flagged
    if not good.any():
        raise ValueError(
            f"all {T} initialisation frames look corrupt ({reasons[0]}); check the source, or "
            "set preprocess.flag_corrupt_frames=false if the frames are fine"
        )
    usable = Y if good.all() else Y[good]  # the frames themselves: no movie-sized copy
    mean_img = usable.mean(axis=0, dtype=np.float64).astype(np.float32)
    if p.fov_mask:
        fov, dark = fov_mod.find_fov(usable, mean_img, params)
        if fov is not None:
            pre.mask[...] = fov
            pre.fov_found = True
            pre.dark = dark
    del usable
    gain = _bleaching_gains(pre, Y, good, params)
    if p.correct_bleaching:
        for t in np.flatnonzero(gain != 1.0):
            Y[t] -= np.float32(pre.dark)
            Y[t] *= np.float32(1.0 / gain[t])
            Y[t] += np.float32(pre.dark)
    pre.init = InitCorrections(
        row_offsets=row_off, col_offsets=col_off, gain=gain.astype(np.float32),
        flagged=flagged, reasons=tuple(reasons),
    )  # fmt: skip
    _log_summary(pre, reasons, T)
    return pre


def median_image(X: np.ndarray) -> np.ndarray:
    """``np.median(X, axis=0)`` of finite frames (n, H, W), by a sort along axis 0: the same
    values (the middle one, or the mean of the two middle ones in X's dtype) at 0.4x the CPU
    of the partition NumPy runs along a strided axis (64 frames of 608²)."""
    s = np.sort(X, axis=0)
    m = s.shape[0]
    if m % 2:
        return s[m // 2]
    return (s[m // 2 - 1] + s[m // 2]) / s.dtype.type(2)


def _bootstrap_baselines(pre: PreprocessState, Y: np.ndarray, p) -> None:
    """Offset scale, whether there is line noise at all, roughness baselines and the usual
    frame-gain change, from every frame measured without changing it."""
    T, H, W = Y.shape
    gains = np.array(
        [kp.frame_gain(Y[t], pre.template, pre.mask, pre.dark, GAIN_GRID_STEP)[0] for t in range(T)]
    )
    pre.offset_scale = _offset_scale(pre, Y, gains)
    rough = np.empty((T, H), np.float32)
    rows = np.empty((T, H), np.float32)
    cols = np.empty((T, W), np.float32)
    both = dataclasses.replace(p, remove_column_offsets=True)
    for t in range(T):
        measure(pre, Y[t], gains[t], both)
        rough[t], rows[t], cols[t] = pre.row_rough, pre.row_off, pre.col_off
    pre.col_off[:] = 0.0
    n_row = len(range(0, W, pre.col_step))
    n_col = len(range(0, H, pre.row_step))
    pre.rows_active = _significant(rows, pre.offset_scale, n_row, "row")
    pre.cols_active = _significant(cols, pre.offset_scale, n_col, "column")
    pre.rough_base[:] = np.median(rough, axis=0)
    pre.rough_floor = float(ROUGH_FLOOR_FRACTION * np.median(pre.rough_base))
    # usual frame-to-frame change of s (slow drift against the fixed template excluded)
    pre.gain_dev = float(np.median(np.abs(np.diff(gains)))) if T > 1 else 0.0
    pre.gain_ref = float(np.median(gains[: max(1, min(T, 20))]))


def _offset_scale(pre: PreprocessState, Y: np.ndarray, gains: np.ndarray) -> float:
    """Robust spread (1.4826 MAD) of the offset samples around their row medians, pooled
    over up to 16 frames; the Huber threshold of the offsets is 1.5 x it."""
    spreads = []
    for t in np.unique(np.linspace(0, Y.shape[0] - 1, 16).astype(np.int64)):
        d = (
            Y[t][:, :: pre.col_step]
            - pre.dark
            - gains[t] * (pre.template[:, :: pre.col_step] - pre.dark)
        )
        d -= np.median(d, axis=1, keepdims=True)
        spreads.append(np.abs(d).ravel())
    spread = np.concatenate(spreads)
    mad = float(np.median(spread))
    return 1.4826 * mad if mad > 0 else float(spread.mean())


def _significant(offsets: np.ndarray, scale: float, n: int, what: str) -> bool:
    """Whether the frame-to-frame variation of the offsets (T, L) exceeds their estimation
    noise: the variance of their second difference along the rows (columns) - which a smooth
    background leak does not have - against that of a Huber location of n samples."""
    if offsets.shape[1] < 3 or offsets.shape[0] < 2 or scale <= 0:
        return False
    o = offsets - offsets.mean(axis=0)
    second = o[:, 1:-1] - 0.5 * (o[:, :-2] + o[:, 2:])
    ratio = float(second.var()) / (1.5 * HUBER_VARIANCE * scale * scale / n)
    found = ratio > LINE_NOISE_SIGNIFICANCE
    logger.info(
        "preprocessing: %s offsets vary %.1f x their estimation noise: %s",
        what,
        ratio,
        "removed every frame" if found else "none to remove",
    )
    return found


def _bleaching_gains(pre: PreprocessState, Y, good, params: CNMFEParams) -> np.ndarray:
    """Each frame's bleaching gain against the brightness at the end of the batch (the online
    reference): a straight line fitted to the log FOV brightness of the usable frames (a
    trend, not the wiggles of activity and background), soft-thresholded by
    ``state.bleach_gain``; sets the online level, its slope and the reference."""
    T = Y.shape[0]
    inside = pre.mask.astype(bool)
    level = np.array([float(Y[t][inside].mean()) - pre.dark for t in range(T)])
    idx = np.flatnonzero(good & (level > 0))
    pre.gain = 1.0
    if idx.size < 3:
        pre.ref_level = pre.level = float(max(level[good].mean(), 0.0))
        return np.ones(T)
    slope, intercept = np.polyfit(idx, np.log(level[idx]), 1)
    trend = np.exp(intercept + slope * np.arange(T))
    pre.ref_level = pre.level = float(trend[-1])
    pre.level_slope = float(slope)
    if abs(trend[0] / trend[-1] - 1.0) < INIT_MIN_DRIFT:  # left to the background model
        return np.ones(T)
    return bleach_gain(trend, pre.ref_level)


def replay_corrections(frames: np.ndarray, pre: PreprocessState, params: CNMFEParams):
    """The initialisation frames corrected exactly as :func:`preprocess_movie` did.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
        The raw frames (the last T of the initialisation when fewer).
    pre : PreprocessState
        With ``init`` set.

    Returns
    -------
    ndarray of shape (T, H, W), float32
        A corrected copy; flagged frames are replaced by the nearest usable frame.
    """
    corr = pre.init
    T0 = corr.gain.shape[0]
    T = frames.shape[0]
    out = np.array(frames, dtype=np.float32, order="C")
    first = T0 - T
    d = np.float32(pre.dark)
    for j in range(T):
        t = first + j
        out[j] -= corr.row_offsets[t][:, None] + corr.col_offsets[t][None, :]
        if params.preprocess.correct_bleaching and corr.gain[t] != 1.0:
            out[j] = d + (out[j] - d) / np.float32(corr.gain[t])
    replace_flagged(out, corr.flagged[first:])
    return out


def replace_flagged(Y: np.ndarray, flagged: np.ndarray) -> int:
    """Replace flagged frames of ``Y`` (T, H, W) by the nearest usable frame, in place."""
    bad = np.flatnonzero(flagged)
    good = np.flatnonzero(~flagged)
    if bad.size == 0 or good.size == 0:
        return 0
    pos = np.clip(np.searchsorted(good, bad), 0, good.size - 1)
    prev = good[np.maximum(pos - 1, 0)]
    nxt = good[pos]
    nearest = np.where(np.abs(prev - bad) <= np.abs(nxt - bad), prev, nxt)
    Y[bad] = Y[nearest]
    return int(bad.size)


def _log_summary(pre: PreprocessState, reasons: list[str], T: int) -> None:
    H, W = pre.dims
    if reasons:
        logger.warning(
            "preprocessing: %d of %d initialisation frames flagged as corrupt (first: %s); they "
            "are replaced by their nearest usable frame for the initial fit",
            len(reasons),
            T,
            reasons[0],
        )
    if pre.fov_found:
        logger.info(
            "preprocessing: field of view = %.0f %% of the %dx%d frame (lens margin at level "
            "%.1f excluded from seeding and detection)",
            100.0 * pre.mask.mean(),
            H,
            W,
            pre.dark,
        )
