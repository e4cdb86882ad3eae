"""What initialisation hands to the online model: the batch CNMF-E fit of the first frames.

Symbols (CNMF-E): A footprints, C denoised calcium, S deconvolved activity, C_raw = C + YrA
(the demixed trace before deconvolution), b0 per-pixel baseline, W ring-background
coefficients on the background grid (downsampled by ``background_downsample``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse


@dataclass(slots=True)
class InitResult:
    """The initial model.

    Attributes
    ----------
    dims : tuple (H, W)
    A : scipy.sparse.csc_array of shape (n_pixels, n_components), float32
        Footprints, pixels flattened row-major.
    C, S, C_raw : ndarray of shape (n_components, n_frames), float32
    b0 : ndarray of shape (n_pixels,), float32
    W : ndarray of shape (n_background_pixels, n_ring), float32
        Ring coefficients of each background-grid pixel; entry j weighs the pixel at
        ``ring_offsets[j]`` from it (0 where that pixel falls outside the image).
    ring_offsets : ndarray of shape (n_ring, 2), int32
        (d_row, d_col) on the background grid.
    background_downsample : int
        ssub_B: the background grid is the image block-averaged by this factor.
    g : ndarray of shape (n_components, ar_order), float32
        AR coefficients of each trace.
    trace_noise : ndarray of shape (n_components,), float32
        Noise standard deviation of each C_raw trace.
    pixel_noise : ndarray of shape (n_pixels,), float32
    corr_image, pnr_image : ndarray of shape (H, W), float32
        Local correlation and peak-to-noise images of the initialisation frames.
    motion : MotionInit or None
        The motion template and the registration of the initialisation frames (the fit ran on
        the registered frames); None when motion correction was off.
    neuron_diameter_px : float or None
        The diameter the fit used (``data.neuron_diameter_px``, or the cells' own when
        ``init.adapt_diameter`` found them much wider). The online model keeps the declared
        one (motion correction and the detection grid are built on it); the log tells the
        user the measured one.
    matched_filter : bool or None
        Whether the seeding used the matched temporal filter (``detection.matched_filter``
        "auto" decides it here and the online search follows); None when not fitted.
    preprocess : PreprocessState or None
        The preprocessing state after the initialisation frames (template, field-of-view
        mask, baselines) with the corrections applied to each of them
        (``online_cnmfe.model.preprocessing``); None when preprocessing was off.
    """

    dims: tuple[int, int]
    A: scipy.sparse.csc_array
    C: np.ndarray
    S: np.ndarray
    C_raw: np.ndarray
    b0: np.ndarray
    W: np.ndarray
    ring_offsets: np.ndarray
    background_downsample: int
    g: np.ndarray
    trace_noise: np.ndarray
    pixel_noise: np.ndarray
    corr_image: np.ndarray
    pnr_image: np.ndarray
    motion: Any = None
    preprocess: Any = None
    matched_filter: bool | None = None
    neuron_diameter_px: float | None = None

    @property
    def n_components(self) -> int:
        return int(self.A.shape[1])
