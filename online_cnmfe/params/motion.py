"""Parameters of the motion-correction stage of the per-frame path (``model/motion/``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from online_cnmfe.params._checks import check, int_at_least, positive

MOTION_MODES = ("rigid", "piecewise")


def _optional_positive(name: str, value) -> None:
    if value is not None:
        check(name, value, _is_number(value) and value > 0 and math.isfinite(value), "> 0 or None")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class MotionParams:
    """Online motion correction: every frame registered to a template before the demixing.

    Shifts are measured on a band-passed image (a Gaussian of ``smooth_sigma_px`` minus one of
    ``background_sigma_px``: the neuron-scale texture, without the noise and the smooth 1-photon
    background) on a grid downsampled by ``downsample``; the raw frame is then resampled
    (bilinear). ``mode="piecewise"`` adds a shift per overlapping patch of ``patch_size_px``
    (within ``max_deviation_px`` of the rigid shift), interpolated to every pixel. A frame whose
    shift exceeds ``max_shift_px`` or whose registration quality (correlation with the template,
    in [-1, 1]) is below ``min_quality`` is flagged: it gets traces but does not update the
    model. Set ``enabled=false`` for movies registered beforehand.
    """

    enabled: bool = True
    mode: str = "rigid"
    max_shift_px: float = 20.0
    # band-pass of the registration image; None: neuron_diameter_px / 8 and 3 / 8 of it
    smooth_sigma_px: float | None = None
    background_sigma_px: float | None = None
    # registration grid: block means of downsample x downsample pixels; None: about a seventh of
    # the neuron diameter (2 for 11-17 px cells)
    downsample: int | None = None
    # the template: iterative registration of the initialisation frames, then a running mean of
    # the well-registered frames that forgets with this time constant
    template_iterations: int = 3
    template_forgetting_s: float = 30.0
    # registration quality threshold; None: min_quality_ratio x the median quality of the
    # initialisation frames (calibrated on the recording itself)
    min_quality: float | None = None
    min_quality_ratio: float = 0.5
    # piecewise-rigid
    patch_size_px: int = 128
    patch_overlap_px: int = 32
    max_deviation_px: float = 3.0

    def __post_init__(self) -> None:
        check("enabled", self.enabled, isinstance(self.enabled, bool), "true or false")
        check("mode", self.mode, self.mode in MOTION_MODES, " or ".join(map(repr, MOTION_MODES)))
        check(
            "max_shift_px",
            self.max_shift_px,
            _is_number(self.max_shift_px) and 0 < self.max_shift_px <= 1000,
            "(0, 1000] pixels",
        )
        _optional_positive("smooth_sigma_px", self.smooth_sigma_px)
        _optional_positive("background_sigma_px", self.background_sigma_px)
        if self.smooth_sigma_px is not None and self.background_sigma_px is not None:
            check(
                "background_sigma_px",
                self.background_sigma_px,
                self.background_sigma_px > 1.5 * self.smooth_sigma_px,
                f"> 1.5 x smooth_sigma_px = {1.5 * self.smooth_sigma_px:g}",
            )
        if self.downsample is not None:
            check(
                "downsample",
                self.downsample,
                isinstance(self.downsample, int) and 1 <= self.downsample <= 8,
                "an integer in [1, 8] or None",
            )
        check(
            "template_iterations",
            self.template_iterations,
            isinstance(self.template_iterations, int) and 1 <= self.template_iterations <= 20,
            "an integer in [1, 20]",
        )
        positive("template_forgetting_s", self.template_forgetting_s)
        if self.min_quality is not None:
            check(
                "min_quality",
                self.min_quality,
                _is_number(self.min_quality) and -1 <= self.min_quality < 1,
                "[-1, 1) or None",
            )
        check(
            "min_quality_ratio",
            self.min_quality_ratio,
            _is_number(self.min_quality_ratio) and 0 <= self.min_quality_ratio <= 1,
            "[0, 1]",
        )
        int_at_least("patch_size_px", self.patch_size_px, 16)
        check(
            "patch_overlap_px",
            self.patch_overlap_px,
            isinstance(self.patch_overlap_px, int)
            and 0 <= self.patch_overlap_px <= self.patch_size_px - 8,
            f"an integer in [0, patch_size_px - 8] = [0, {self.patch_size_px - 8}]",
        )
        check(
            "max_deviation_px",
            self.max_deviation_px,
            _is_number(self.max_deviation_px) and 0 < self.max_deviation_px <= self.max_shift_px,
            f"(0, max_shift_px = {self.max_shift_px}]",
        )

    def sigmas_px(self, neuron_diameter_px: float) -> tuple[float, float]:
        """(smooth, background) sigmas of the band-pass in pixels, defaults resolved."""
        smooth = self.smooth_sigma_px or neuron_diameter_px / 8.0
        background = self.background_sigma_px or 3.0 * neuron_diameter_px / 8.0
        return float(smooth), float(background)

    def grid_downsample(self, neuron_diameter_px: float) -> int:
        """The registration grid's downsampling, default resolved."""
        return self.downsample or max(1, round(neuron_diameter_px / 7.0))

    def check_with(self, neuron_diameter_px: float) -> None:
        """Relations with the recording's parameters (raises ValueError naming the field)."""
        smooth, background = self.sigmas_px(neuron_diameter_px)
        if background <= 1.5 * smooth:
            raise ValueError(
                f"motion band-pass: background_sigma_px={background:g} must be > 1.5 x "
                f"smooth_sigma_px={smooth:g} (defaults: 3/8 and 1/8 of data.neuron_diameter_px); "
                "set motion.background_sigma_px or motion.smooth_sigma_px"
            )
