"""The results file's ``motion/`` group: per-frame shifts and registration quality.

``motion/shifts`` (T, 2) float32 and ``motion/quality`` (T,) float32, one row per row of
``frames/``, NaN where nothing was measured (motion correction off, skipped frames, files
written before motion correction existed); the sign convention is in the group's attribute
``convention`` and docs/results-format.md.
"""

from __future__ import annotations

import h5py
import numpy as np

from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.results.layout import FLAG_DTYPE, MOTION_FIELDS, create_motion_datasets


class MotionBlock:
    """In-memory per-frame motion values of a writer's block (written with the traces)."""

    def __init__(self, capacity: int) -> None:
        self.values = {
            name: np.full((capacity, *tail), np.nan, np.float32)
            for name, tail in MOTION_FIELDS.items()
        }

    def set(self, j: int, result: FrameResult) -> None:
        """Buffer the motion outputs of ``result`` in row j."""
        if result.motion_shift_px is not None:
            self.values["shifts"][j] = result.motion_shift_px
        if result.motion_quality is not None:
            self.values["quality"][j] = result.motion_quality

    def write(self, f: h5py.File, t0: int, n: int) -> None:
        """Append rows 0 … n−1 at frames t0 … t0 + n − 1, then clear them."""
        for name, values in self.values.items():
            ds = f["motion"][name]
            ds.resize(t0 + n, axis=0)
            ds[t0 : t0 + n] = values[:n]
            values[:n] = np.nan


def add_missing_datasets(f: h5py.File, n_frames: int) -> None:
    """Add ``frames/flagged`` (empty) and ``motion/`` (NaN for its ``n_frames`` frames) to a file
    written before they existed (a resumed session)."""
    if "flagged" not in f["frames"]:
        f["frames"].create_dataset("flagged", (0,), FLAG_DTYPE, maxshape=(None,), chunks=(256,))
    if "motion" in f:
        return
    create_motion_datasets(f)
    for name in MOTION_FIELDS:
        f["motion"][name].resize(n_frames, axis=0)
