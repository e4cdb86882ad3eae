"""The preprocessing call of the initialisation (``initialization.fit.fit_initial``)."""

from __future__ import annotations

import logging

import numpy as np

from online_cnmfe.model.preprocessing.batch import preprocess_movie, replace_flagged
from online_cnmfe.model.preprocessing.diameter import estimate_diameter
from online_cnmfe.model.preprocessing.state import PreprocessState
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)


def preprocess_initial(Y: np.ndarray, params: CNMFEParams) -> PreprocessState | None:
    """Preprocess the initialisation frames in place for the batch fit.

    Runs :func:`~.batch.preprocess_movie` (line noise, frame quality, field of view,
    bleaching), replaces the frames it flags as corrupt by their nearest usable frame (so they
    seed nothing) and, with ``preprocess.estimate_diameter``, logs the neuron diameter the data
    suggest next to the configured one.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32, C-contiguous
        Finite frames, overwritten.
    params : CNMFEParams

    Returns
    -------
    PreprocessState or None
        None when ``preprocess.enabled`` is false.
    """
    p = params.preprocess
    if not p.enabled:
        return None
    pre = preprocess_movie(Y, params)
    replace_flagged(Y, pre.init.flagged)
    if p.estimate_diameter:
        pre.diameter_px = estimate_diameter(Y, params.data.frame_rate_hz, pre.fov)
        configured = params.data.neuron_diameter_px
        ratio = pre.diameter_px / configured
        level = logging.WARNING if not 0.75 <= ratio <= 1.33 else logging.INFO
        logger.log(
            level,
            "estimated neuron diameter: %.1f px (configured data.neuron_diameter_px = %g); "
            "the estimate is experimental and often wrong (out-of-focus neuropil and noise "
            "mislead it): measure a few cells on the mean or correlation image before changing "
            "the setting",
            pre.diameter_px,
            configured,
        )
    return pre
