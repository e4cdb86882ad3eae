"""How :class:`~online_cnmfe.model.online.OnlineCNMFE` uses the preprocessing stage: the
state it starts from (:func:`online_start`, :func:`attach`), the per-frame call
(:func:`preprocess_frame`) and the periodic sanity check (:func:`sanity_tick`)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from online_cnmfe.model.preprocessing.batch import replay_corrections
from online_cnmfe.model.preprocessing.fov import block_detection_outside, fov_in_model
from online_cnmfe.model.preprocessing.frame import preprocess_frame
from online_cnmfe.model.preprocessing.sanity import SanityReport, check_components
from online_cnmfe.model.preprocessing.state import PreprocessState
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

__all__ = ["attach", "final_check", "online_start", "preprocess_frame", "sanity_tick"]


def _copy_state(src: PreprocessState) -> PreprocessState:
    """A copy with its own arrays and without the initialisation corrections."""
    values = {}
    for f in dataclasses.fields(src):
        v = getattr(src, f.name)
        values[f.name] = v.copy() if isinstance(v, np.ndarray) else v
    values["init"] = None
    return PreprocessState(**values)


def online_start(init, frames, params: CNMFEParams):
    """The online preprocessing state and the initialisation frames as the fit saw them.

    Parameters
    ----------
    init : InitResult
    frames : ndarray of shape (T, H, W) or None
        Raw initialisation frames (or their tail).
    params : CNMFEParams

    Returns
    -------
    pre : PreprocessState or None
        None when preprocessing is off or ``init`` carries no preprocessing state (e.g. an
        InitResult built from ground truth).
    frames : ndarray or None
        Corrected as during the fit (:func:`~.batch.replay_corrections`), or unchanged.
    """
    src = getattr(init, "preprocess", None)
    if src is None or not params.preprocess.enabled:
        return None, frames
    if frames is not None and src.init is not None:
        frames = replay_corrections(frames, src, params)
    return _copy_state(src), frames


def attach(st, pre: PreprocessState | None, init, params: CNMFEParams) -> SanityReport | None:
    """Give the model state its preprocessing state, exclude the margin outside the lens from
    online detection and check the initial result; returns the initial sanity report."""
    st.pre = pre
    fov = model_fov(st)
    if fov is not None and st.slow is not None:
        n = block_detection_outside(st.slow.det, fov)
        logger.debug("online detection: %d grid pixels outside the field of view excluded", n)
    if not params.preprocess.sanity_check:
        return None
    report = check_components(
        init.A, tuple(init.dims), params.data.neuron_diameter_px, params.preprocess, fov=fov,
        traces=init.C_raw, noise=init.trace_noise,
    )  # fmt: skip
    _log(None, report, "initialisation")
    return report


def model_fov(st) -> np.ndarray | None:
    """The field of view in the model's (motion-corrected) frame, None without a lens margin.

    The lens margin is found on the raw frames, where the lens stands still; with motion
    correction the model's pixels are the tissue's, and the lens moves over them by the
    shifts: only pixels inside the lens at every shift of the border band so far count
    (:func:`~.fov.registered_fov`).
    """
    return fov_in_model(st.pre, None if st.motion is None else st.motion.band)


def sanity_tick(model, st) -> SanityReport | None:
    """Every ``preprocess.sanity_period_s`` of frames, a fresh check of the model's components
    (logged when it turns bad or good again); None on the other frames."""
    params = model.params
    if not params.preprocess.sanity_check:
        return None
    period = max(1, int(round(params.preprocess.sanity_period_s * params.data.frame_rate_hz)))
    if st.t % period:
        return None
    report = _check(model, st)
    _log(model.sanity, report, f"frame {st.t}")
    return report


def final_check(model) -> SanityReport | None:
    """The check of the model's current components (e.g. at the end of a file); None when
    ``preprocess.sanity_check`` is off or the model is not initialised."""
    if not model.params.preprocess.sanity_check or not model.is_initialized:
        return None
    return _check(model, model.state)


def _check(model, st) -> SanityReport:
    params = model.params
    filled = st.residual_frame >= 0
    return check_components(
        model.footprints, tuple(st.dims), params.data.neuron_diameter_px, params.preprocess,
        fov=model_fov(st),
        traces=st.c_raw_buffer[:, filled], noise=st.trace_noise,
    )  # fmt: skip


def _log(previous: SanityReport | None, report: SanityReport, when: str) -> None:
    if not report.ok and (previous is None or previous.warnings != report.warnings):
        if previous is None or previous.ok or len(previous.warnings) != len(report.warnings):
            logger.warning("%s: %s", when, report.message)
    elif report.ok and previous is not None and not previous.ok:
        logger.info("%s: the result looks plausible again (%d components)", when,
                    report.n_components)  # fmt: skip
