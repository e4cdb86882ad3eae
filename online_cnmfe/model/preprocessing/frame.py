"""The per-frame preprocessing step: :func:`preprocess_frame` (kernels in
``online_cnmfe/model/_kernels/preprocess.py``; symbols there).

Per frame, in place on the model's own float32 copy of the frame:

1. the frame's gain ``s`` against the running template (a sparse grid inside the FOV);
2. row offsets ``o_r`` (median over sampled columns of ``y - d - s (T - d)``) and the row
   roughness; optionally column offsets ``o_c``;
3. the quality verdict: too many broken rows (roughness far above or below the row's usual
   value: transmission noise, missing or repeated lines; flat rows along the top or bottom
   edge, up to 5 % of the frame, are a registered movie's padding and do not count) or a
   brightness jump (``s`` against
   its recent value beyond ``max_brightness_jump`` and 8x its usual change) flag the frame;
4. ``v = y - o_r - o_c``; the template, the FOV level (a level and slope of its log,
   :func:`track_level`; hence the bleaching gain ``g``) and the roughness baselines learn
   from usable frames only; ``y <- d + (v - d) / g``.
"""

from __future__ import annotations

import math

import numpy as np

from online_cnmfe.model._kernels import preprocess as kp
from online_cnmfe.model.preprocessing.state import (
    GAIN_GRID_STEP,
    ROUGHNESS_TIME_FACTOR,
    PreprocessState,
    bleach_gain,
)
from online_cnmfe.params import PreprocessParams

JUMP_SPREAD_FACTOR = 8.0  # a brightness jump must also exceed 8x the usual change of s
GAIN_TIME_FACTOR = 10.0  # the recent frame gain is followed 10x faster than the template
SLOPE_RATE = 0.2  # the bleaching slope is learned 5x slower than the level
MIN_BROKEN_ROWS = 2
MAX_PADDING_FRACTION = 0.05  # flat rows along the top/bottom edge up to this: registration padding


def preprocess_frame(
    pre: PreprocessState, y: np.ndarray, params: PreprocessParams, learn: bool = True
) -> str | None:
    """Clean one frame in place and say whether it is corrupt.

    Parameters
    ----------
    pre : PreprocessState
        Updated in place (template, level, baselines, counters) unless ``learn`` is False.
    y : ndarray of shape (H * W,) or (H, W), float32, C-contiguous
        The frame; overwritten with the corrected frame (also when it is flagged).
    params : PreprocessParams
    learn : bool
        False freezes the state (used while bootstrapping on the initialisation frames).

    Returns
    -------
    str or None
        Why the frame is corrupt (e.g. ``"corrupt: 12 % broken rows (24 noisy, 0 flat)"``),
        or None when it is usable.
    """
    H, W = pre.dims
    img = y.reshape(H, W)
    s, _ = kp.frame_gain(img, pre.template, pre.mask, pre.dark, GAIN_GRID_STEP)
    measure(pre, img, s, params)
    flag = quality_flag(pre, s, params) if params.flag_corrupt_frames else None
    use = learn and flag is None
    inv_gain = 1.0 / pre.gain if params.correct_bleaching else 1.0
    alpha = pre.alpha if use else 0.0
    mean_v = kp.apply_corrections(
        img, pre.row_off, pre.col_off, pre.dark, inv_gain, pre.template, alpha, pre.mask
    )
    if use:
        track_level(pre, mean_v - pre.dark)
        pre.gain = bleach_gain(pre.level, pre.ref_level)
        kp.ema_update(pre.rough_base, pre.row_rough, pre.alpha / ROUGHNESS_TIME_FACTOR)
        fast = min(1.0, pre.alpha * GAIN_TIME_FACTOR)
        pre.gain_dev += fast * (abs(s - pre.gain_ref) - pre.gain_dev)
        pre.gain_ref += fast * (s - pre.gain_ref)
    if learn:
        pre.n_seen += 1
        pre.n_flagged += flag is not None
    return flag


def measure(pre: PreprocessState, img: np.ndarray, s: float, params: PreprocessParams) -> None:
    """Row (and column) offsets and row roughness of ``img`` into the state's work arrays.

    Row offsets that are not removed (off, or no line noise found at the start) are zero and
    their medians are not computed: the roughness alone is (~0.3 ms less per 256² frame).
    """
    if params.remove_row_offsets and pre.rows_active:
        kp.row_offsets(
            img, pre.template, pre.dark, s, pre.col_step, pre.offset_scale, pre.samples,
            pre.row_off, pre.row_rough,
        )  # fmt: skip
    else:
        kp.row_roughness(img, pre.row_rough)
        pre.row_off.fill(0.0)
    if params.remove_column_offsets and pre.cols_active:
        kp.column_offsets(
            img, pre.template, pre.dark, s, pre.row_off, pre.row_step, pre.offset_scale,
            pre.samples, pre.col_off,
        )  # fmt: skip


def quality_flag(pre: PreprocessState, s: float, params: PreprocessParams) -> str | None:
    """The reason the measured frame is corrupt, or None (reads ``pre.row_rough``)."""
    H = pre.dims[0]
    n_high, n_low = kp.count_broken_rows(
        pre.row_rough, pre.rough_base, params.broken_row_ratio, pre.rough_floor,
        int(MAX_PADDING_FRACTION * H),
    )  # fmt: skip
    n_bad = n_high + n_low
    if n_bad >= max(MIN_BROKEN_ROWS, params.max_broken_row_fraction * H):
        return (
            f"corrupt: {100.0 * n_bad / H:.0f} % broken rows ({n_high} noisy, {n_low} flat or "
            "missing)"
        )
    jump = s / pre.gain_ref - 1.0 if pre.gain_ref > 0 else 0.0
    if abs(jump) > params.max_brightness_jump and abs(jump) > JUMP_SPREAD_FACTOR * pre.gain_dev:
        return f"corrupt: brightness jump {100.0 * jump:+.0f} % against the running template"
    return None


def track_level(pre: PreprocessState, x: float) -> None:
    """Holt's linear trend on the log of the FOV brightness ``x`` (above the dark level): a
    running level and slope (per frame), so steady bleaching is followed without the lag of
    a plain running mean (``level`` would trail an exponential decay by ``template_time_s``)."""
    if not (x > 0 and pre.level > 0):
        return
    a = pre.alpha
    log_level = math.log(pre.level)
    predicted = log_level + pre.level_slope
    new = predicted + a * (math.log(x) - predicted)
    pre.level_slope += SLOPE_RATE * a * (new - log_level - pre.level_slope)
    pre.level = math.exp(new)
