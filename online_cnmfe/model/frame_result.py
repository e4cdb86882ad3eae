"""What the online model returns for each frame (the engine publishes and stores it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """A change in the set of neurons: ``kind`` is 'born', 'merged' or 'removed'."""

    kind: str
    frame_index: int
    neuron_ids: tuple[int, ...]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Outputs for frame ``frame_index``; every value here is final (never revised later).

    Attributes
    ----------
    frame_index : int
    neuron_ids : ndarray of shape (n_components,), int64
    C : ndarray of shape (n_components,), float32
        Denoised calcium at this frame (causal estimate).
    S : ndarray of shape (n_components,), float32
        Causal spike / event estimate at this frame.
    C_raw : ndarray of shape (n_components,), float32
        Demixed trace before deconvolution.
    skipped : bool
        True when the frame was not used (NaN pixels, …); the traces then repeat the last
        values and ``skip_reason`` says why.
    flag : str or None
        Why this frame did not update the model (e.g. ``"motion: shift 23.1 px > max 20"``,
        ``"corrupt: 12 % broken rows (24 noisy, 0 flat or missing)"``), None for an ordinary
        frame. A flagged frame still has traces (demixed on the corrected frame), but it writes
        no residual, does not update b0 and is not seen by the slow path (footprints, ring
        background, detection). A frame the preprocessing finds unusable (``corrupt: …``) is
        not demixed: its ``C`` and ``C_raw`` are the model's one-step prediction (the previous
        frame's values times each neuron's AR(1) coefficient), ``S`` is 0 and the
        deconvolution does not advance.
    motion_shift_px : tuple (dy, dx) of float, or None
        Rigid displacement of this frame's content relative to the motion template, in pixels
        (``frame[r, c] ≈ template[r − dy, c − dx]``; the traces come from the frame resampled
        at (r + dy, c + dx)); None when motion correction is off or the frame was skipped.
    motion_quality : float or None
        Registration quality: correlation of the band-passed frame with the template, in
        [-1, 1] (None as above).
    events : tuple of ModelEvent
    footprints_version : int
        Increments whenever A changes (new, merged, removed or refreshed footprints).
    timings_ms : dict of str to float
        Wall time of each stage of this frame.
    """

    frame_index: int
    neuron_ids: np.ndarray
    C: np.ndarray
    S: np.ndarray
    C_raw: np.ndarray
    skipped: bool = False
    skip_reason: str = ""
    flag: str | None = None
    motion_shift_px: tuple[float, float] | None = None
    motion_quality: float | None = None
    events: tuple[ModelEvent, ...] = ()
    footprints_version: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
