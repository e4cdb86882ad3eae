"""What the preprocessing stage keeps between frames (:class:`PreprocessState`) and the
corrections it applied to the initialisation frames (:class:`InitCorrections`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from online_cnmfe.params import PreprocessParams

GAIN_GRID_STEP = 4  # the frame gain is fitted on every 4th row and column
BLEACH_DEADBAND = 0.02  # brightness changes within +-2 % are not normalised (activity, noise)
ROUGHNESS_TIME_FACTOR = 10.0  # the row-roughness baseline forgets 10x slower than the template


@dataclass(slots=True)
class InitCorrections:
    """Per-frame corrections of the initialisation frames, to replay them exactly.

    Attributes
    ----------
    row_offsets : ndarray of shape (T, H), float32
    col_offsets : ndarray of shape (T, W), float32 (zeros when columns are not corrected)
    gain : ndarray of shape (T,), float32
        Bleaching gain each frame was divided by (after subtracting the dark level).
    flagged : ndarray of shape (T,), bool
    reasons : tuple of str
        The reason of each flagged frame, in frame order.
    """

    row_offsets: np.ndarray
    col_offsets: np.ndarray
    gain: np.ndarray
    flagged: np.ndarray
    reasons: tuple

    def reason_of(self) -> list[str | None]:
        """The flag of every initialisation frame (None when usable)."""
        out: list[str | None] = [None] * int(self.flagged.shape[0])
        for t, reason in zip(np.flatnonzero(self.flagged), self.reasons):
            out[int(t)] = str(reason)
        return out


@dataclass(slots=True)
class PreprocessState:
    """Everything the per-frame preprocessing keeps (arrays float32 unless noted).

    Attributes
    ----------
    dims : tuple (H, W)
    template : ndarray of shape (H, W)
        Running mean of the offset-corrected frames (before bleaching normalisation).
    mask : ndarray of shape (H, W), uint8
        1 inside the field of view (the lens), 0 outside; all ones when no margin was found.
    fov_found : bool
        Whether a margin outside the lens was found.
    dark : float
        Sensor dark level (the margin's level; 0 without a margin).
    ref_level, level : float
        Mean brightness above ``dark`` inside the FOV at initialisation and now (running).
    level_slope : float
        Running slope of ``log(level)`` per frame (bleaching is followed without lag).
    gain : float
        The slow bleaching gain frames are divided by: ``level / ref_level`` shrunk towards
        1 by :data:`BLEACH_DEADBAND` (:func:`bleach_gain`).
    alpha : float
        Template forgetting rate per frame (``1 / (template_time_s * frame_rate_hz)``).
    rough_base : ndarray of shape (H,)
        Usual roughness of each row (running, slow).
    rough_floor : float
        Roughness below which a row's baseline is too small to call a flat row broken.
    gain_ref, gain_dev : float
        Recent frame gain ``s`` (against the template) and the running mean of its change
        ``|s - gain_ref|``, over usable frames (followed 10x faster than the template).
    row_off, col_off, row_rough, samples : ndarray
        Per-frame work arrays (row offsets (H,), column offsets (W,), row roughness (H,)).
    col_step, row_step : int
        Sampling strides of the row (column) medians.
    offset_scale : float
        Usual spread of the offset samples (the Huber threshold is 1.5 x it; 0: median only).
    rows_active, cols_active : bool
        Whether the initialisation frames showed row (column) offsets above what their
        estimation noise explains; offsets are only removed when they did, so clean data are
        left untouched.
    n_seen, n_flagged : int
        Frames preprocessed and frames flagged as corrupt since the start (init included).
    diameter_px : float
        Neuron diameter estimated from the data (NaN when not estimated).
    init : InitCorrections or None
        Corrections of the initialisation frames (dropped once the online model is built).
    fov_registered : ndarray of shape (H, W), bool, or None
        With a lens margin and moving tissue: the field of view in the motion-corrected frame,
        where the registered initialisation frames saw the lens in at least
        ``preprocess.fov_min_seen`` of them (``fov.seen_fov``). None otherwise.
    """

    dims: tuple[int, int]
    template: np.ndarray
    mask: np.ndarray
    fov_found: bool
    dark: float
    ref_level: float
    level: float
    level_slope: float
    gain: float
    alpha: float
    rough_base: np.ndarray
    rough_floor: float
    gain_ref: float
    gain_dev: float
    row_off: np.ndarray
    col_off: np.ndarray
    row_rough: np.ndarray
    samples: np.ndarray
    col_step: int
    row_step: int
    offset_scale: float = 0.0
    rows_active: bool = True
    cols_active: bool = True
    n_seen: int = 0
    n_flagged: int = 0
    diameter_px: float = math.nan
    init: InitCorrections | None = None
    fov_registered: np.ndarray | None = None

    @property
    def fov(self) -> np.ndarray:
        """The field-of-view mask as bool (H, W) (a new array)."""
        return self.mask.astype(bool)


def make_state(template: np.ndarray, params: PreprocessParams, frame_rate_hz: float):
    """A fresh state around ``template`` (H, W): no mask, dark 0, unit gain."""
    H, W = template.shape
    col_step = max(1, -(-W // params.offset_samples))  # at most offset_samples per median
    row_step = max(1, -(-H // params.offset_samples))
    tpl = np.ascontiguousarray(template, np.float32).copy()
    level = float(tpl.mean())
    return PreprocessState(
        dims=(int(H), int(W)), template=tpl, mask=np.ones((H, W), np.uint8), fov_found=False,
        dark=0.0, ref_level=level, level=level, level_slope=0.0, gain=1.0,
        alpha=float(1.0 / max(params.template_time_s * frame_rate_hz, 1.0)),
        rough_base=np.zeros(H, np.float32), rough_floor=0.0, gain_ref=1.0, gain_dev=0.0,
        row_off=np.zeros(H, np.float32), col_off=np.zeros(W, np.float32),
        row_rough=np.zeros(H, np.float32),
        samples=np.zeros(max(W // col_step, H // row_step) + 2, np.float32),
        col_step=int(col_step), row_step=int(row_step),
    )  # fmt: skip


def bleach_gain(level, ref_level: float):
    """``level / ref_level`` soft-thresholded towards 1 by :data:`BLEACH_DEADBAND` (scalar or
    array): brightness within +-2 % of the reference is left alone, beyond it the excess is
    normalised, so slow bleaching is followed while activity and noise are not."""
    if not ref_level > 0:
        return np.ones_like(np.asarray(level, np.float64)) if np.ndim(level) else 1.0
    r = np.asarray(level, np.float64) / ref_level - 1.0
    g = 1.0 + np.sign(r) * np.maximum(np.abs(r) - BLEACH_DEADBAND, 0.0)
    g = np.maximum(g, 1e-3)
    return g if np.ndim(level) else float(g)
