"""Parameters of the preprocessing stage of the per-frame path (before motion correction)."""

from __future__ import annotations

from dataclasses import dataclass

from online_cnmfe.params._checks import check, fraction, int_at_least, positive


@dataclass(frozen=True, slots=True, kw_only=True)
class PreprocessParams:
    """Real-recording clean-up before extraction (``online_cnmfe.model.preprocessing``).

    The same code runs on the initialisation frames and on every later frame. Each step can be
    switched off; all are on by default except the column offsets and the diameter estimate.
    """

    enabled: bool = True  # master switch of the whole stage
    # 1. structured sensor noise: per-frame offsets of rows (V4 line noise) and of columns
    remove_row_offsets: bool = True
    remove_column_offsets: bool = False
    offset_samples: int = 96  # pixels per row / column in the robust (median) offset
    template_time_s: float = 10.0  # memory of the running template the offsets are taken from
    # 2. field of view: pixels outside the lens are excluded from seeding and detection
    fov_mask: bool = True
    fov_threshold: float = 0.3  # outside: darker than dark + this x (bright - dark)
    fov_min_contrast: float = 4.0  # ... and the lens at least this x brighter or noisier
    fov_margin_px: float | None = None  # excluded band along the lens edge (None: diameter / 2)
    # with motion correction: the field of view in the corrected frame is where the registered
    # initialisation frames saw the lens in at least this fraction of them (motion.lens_gaps)
    fov_min_seen: float = 0.9
    # 3. frame quality: corrupt frames are flagged and do not update the model
    flag_corrupt_frames: bool = True
    broken_row_ratio: float = 4.0  # row roughness this x above (or below 1/x) its usual value
    max_broken_row_fraction: float = 0.01  # more broken rows (and >= 2): the frame is corrupt
    max_brightness_jump: float = 0.25  # frame gain vs the template beyond 1 +- this: corrupt
    # 4. bleaching: frames are divided by the slow gain of the running template (FOV mean)
    correct_bleaching: bool = True
    # 7. neuron diameter estimated from the initialisation frames (logged for the user)
    estimate_diameter: bool = False
    # 6. sanity guard on the result (warnings in the log, status, dashboard and results file)
    sanity_check: bool = True
    # the components' disks, summed, over the FOV area: a 1-photon image projects cells from
    # more than one layer, so dense recordings overlap (the held-out benchmark's true cells:
    # 1.23 in high_density, 0.69 in large_cells, both warned at 0.6); tilings of stripes or
    # noise give several
    sanity_max_coverage: float = 1.5
    sanity_max_silent_fraction: float = 0.5  # share of components without a transient
    sanity_max_elongated_fraction: float = 0.25  # share of stripe-like components
    sanity_period_s: float = 10.0  # how often the online model re-checks

    def __post_init__(self) -> None:
        int_at_least("offset_samples", self.offset_samples, 8)
        positive("template_time_s", self.template_time_s)
        fraction("fov_threshold", self.fov_threshold, 0.01, 0.9)
        check("fov_min_contrast", self.fov_min_contrast, self.fov_min_contrast >= 1, ">= 1")
        if self.fov_margin_px is not None:
            check("fov_margin_px", self.fov_margin_px, self.fov_margin_px >= 0, ">= 0 pixels")
        check("fov_min_seen", self.fov_min_seen, 0 < self.fov_min_seen <= 1, "in (0, 1]")
        check("broken_row_ratio", self.broken_row_ratio, self.broken_row_ratio > 1, "> 1")
        fraction("max_broken_row_fraction", self.max_broken_row_fraction, 0.0, 1.0)
        positive("max_brightness_jump", self.max_brightness_jump)
        positive("sanity_max_coverage", self.sanity_max_coverage)
        fraction("sanity_max_silent_fraction", self.sanity_max_silent_fraction)
        fraction("sanity_max_elongated_fraction", self.sanity_max_elongated_fraction)
        positive("sanity_period_s", self.sanity_period_s)
