"""Parameters of the motion-correction stage of the per-frame path."""

from __future__ import annotations

from dataclasses import dataclass

from online_cnmfe.params._checks import int_at_least


@dataclass(frozen=True, slots=True, kw_only=True)
class MotionParams:
    """Optional rigid motion correction on the frame path."""

    enabled: bool = False
    max_shift_px: int = 10

    def __post_init__(self) -> None:
        int_at_least("max_shift_px", self.max_shift_px, 0)
