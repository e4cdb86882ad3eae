"""Online motion correction: the per-frame registration stage and its initialisation.

``register.correct_frame`` is the stage on the frame path (between validation and the
demixing); ``initial.register_initial`` builds the template and registers the initialisation
frames before the CNMF-E fit. Shifts (dy, dx) are in frame pixels: the content of the frame
moved by +d relative to the template (``frame[r, c] ≈ template[r − dy, c − dx]``), and the
template sits at the median position of the initialisation frames.
"""

from online_cnmfe.model.motion.checks import check_motion_state
from online_cnmfe.model.motion.initial import (
    apply_initial,
    init_frame_fields,
    online_start,
    register_initial,
    state_from_init,
)
from online_cnmfe.model.motion.register import correct_frame, mask_residual, outputs, warm_up
from online_cnmfe.model.motion.state import MotionInit, MotionState, PatchState, zero_border

__all__ = [
    "MotionInit",
    "MotionState",
    "PatchState",
    "apply_initial",
    "check_motion_state",
    "correct_frame",
    "init_frame_fields",
    "mask_residual",
    "online_start",
    "outputs",
    "register_initial",
    "state_from_init",
    "warm_up",
    "zero_border",
]
