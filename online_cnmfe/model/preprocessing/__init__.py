"""Preprocessing of real recordings before motion correction and demixing (issue 13).

One stage of the per-frame path, the same code for the initialisation frames and every later
frame (``PreprocessParams``, the ``[preprocess]`` table):

* :func:`preprocess_frame`: row/column offsets (line noise), frame quality (corrupt frames
  are flagged), bleaching normalisation, on the model's own float32 copy of the frame;
* :func:`preprocess_movie`: the initialisation frames, bootstrapping the state (template,
  baselines, field-of-view mask, dark level, bleaching gains);
* :func:`pixel_noise`: per-pixel noise from the high-frequency spectrum;
* :mod:`.fov`: the field-of-view mask and where it plugs into seeding and detection;
* :mod:`.sanity`: the warning when a result cannot be right;
* :mod:`.diameter`: an optional estimate of the neuron diameter from the data.
"""

from online_cnmfe.model.preprocessing.batch import (
    preprocess_movie,
    replace_flagged,
    replay_corrections,
)
from online_cnmfe.model.preprocessing.frame import preprocess_frame
from online_cnmfe.model.preprocessing.noise import pixel_noise
from online_cnmfe.model.preprocessing.state import InitCorrections, PreprocessState

__all__ = [
    "InitCorrections",
    "PreprocessState",
    "pixel_noise",
    "preprocess_frame",
    "preprocess_movie",
    "replace_flagged",
    "replay_corrections",
]
