"""Validated parameter objects, one per stage, composed into :class:`CNMFEParams`.

Each key exists in exactly one place; units are in the names. Parameters are never mutated:
values derived from them (ring radius in pixels, filter sizes, AR coefficients) are computed
once into frozen objects elsewhere. ``__post_init__`` raises ``ValueError`` naming the field,
the value received and the allowed range; it never corrects silently.

Stage functions take the params of their own stage (plus :class:`DataParams`, which describes
the recording: frame rate, neuron size, indicator kinetics).
"""

from online_cnmfe.params.config_files import parse_overrides, read_config_file
from online_cnmfe.params.engine import EngineParams
from online_cnmfe.params.model_stages import (
    BackgroundParams,
    DataParams,
    DeconvParams,
    DetectionParams,
    InitParams,
    OnlineParams,
)
from online_cnmfe.params.motion import MotionParams
from online_cnmfe.params.preprocess import PreprocessParams
from online_cnmfe.params.tree import OTHER_CONFIG_TABLES, CNMFEParams, load_params, user_sets

__all__ = [
    "OTHER_CONFIG_TABLES",
    "BackgroundParams",
    "CNMFEParams",
    "DataParams",
    "DeconvParams",
    "DetectionParams",
    "EngineParams",
    "InitParams",
    "MotionParams",
    "OnlineParams",
    "PreprocessParams",
    "load_params",
    "parse_overrides",
    "read_config_file",
    "user_sets",
]
