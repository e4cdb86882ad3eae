"""All parameters, one frozen object per stage (:class:`CNMFEParams`), and how they are loaded."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError
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

_STAGES: dict[str, type] = {
    "data": DataParams,
    "init": InitParams,
    "background": BackgroundParams,
    "deconv": DeconvParams,
    "online": OnlineParams,
    "detection": DetectionParams,
    "preprocess": PreprocessParams,
    "motion": MotionParams,
    "engine": EngineParams,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CNMFEParams:
    """All parameters, one frozen object per stage.

    Examples
    --------
    >>> p = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 11}})
    >>> p.data.neuron_diameter_px  # an integer given for a float key widens to float
    11.0
    >>> CNMFEParams.from_dict({"data": {"diameter": 11}})
    Traceback (most recent call last):
    ...
    online_cnmfe.errors.ConfigError: unknown parameter 'data.diameter'; did you mean ...
    """

    data: DataParams = field(default_factory=DataParams)
    init: InitParams = field(default_factory=InitParams)
    background: BackgroundParams = field(default_factory=BackgroundParams)
    deconv: DeconvParams = field(default_factory=DeconvParams)
    online: OnlineParams = field(default_factory=OnlineParams)
    detection: DetectionParams = field(default_factory=DetectionParams)
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    motion: MotionParams = field(default_factory=MotionParams)
    engine: EngineParams = field(default_factory=EngineParams)

    def __post_init__(self) -> None:
        # relations between stages (each stage validated its own values already)
        self.motion.check_with(self.data.neuron_diameter_px)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-safe nested dict ``{stage: {key: value}}``."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _STAGES}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`to_json`: equal for equal parameters, in any process.

        Stored in every results file (root attribute ``params_sha256``) so that a rerun can
        tell whether a file was made with the same parameters.

        Examples
        --------
        >>> CNMFEParams().sha256() == CNMFEParams.from_dict({}).sha256()
        True
        >>> CNMFEParams().sha256() == CNMFEParams().replace(**{"data.frame_rate_hz": 7}).sha256()
        False
        """
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CNMFEParams:
        """Build from a nested dict; unknown stages or keys raise ConfigError with a suggestion."""
        if not isinstance(values, dict):
            raise ConfigError(
                f"parameters must be a mapping of stages, got {type(values).__name__}"
            )
        stages = {}
        for stage_name, stage_values in values.items():
            if stage_name not in _STAGES:
                raise ConfigError(_unknown("stage", stage_name, list(_STAGES)))
            if not isinstance(stage_values, dict):
                raise ConfigError(f"parameter stage '{stage_name}' must be a mapping")
            stage_cls = _STAGES[stage_name]
            fields = {f.name: f for f in dataclasses.fields(stage_cls)}
            typed = {}
            for key, value in stage_values.items():
                if key not in fields:
                    raise ConfigError(_unknown_key(stage_name, key))
                typed[key] = _typed(f"{stage_name}.{key}", value, fields[key])
            try:
                stages[stage_name] = stage_cls(**typed)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid parameter in stage '{stage_name}': {exc}") from exc
        try:
            return cls(**stages)
        except ValueError as exc:
            raise ConfigError(f"invalid parameters: {exc}") from exc

    def replace(self, **dotted: Any) -> CNMFEParams:
        """A copy with dotted ``stage.key`` values replaced."""
        values = self.to_dict()
        for key, value in dotted.items():
            stage, _, name = key.partition(".")
            if stage not in values or not name:
                raise ConfigError(_unknown_dotted(key))
            values[stage][name] = value
        return CNMFEParams.from_dict(values)

    def with_cells_diameter(self, d_cells: float) -> CNMFEParams:
        """A copy with ``data.neuron_diameter_px`` set to the cells' diameter measured by the
        initialisation (``init.adapt_diameter``), so the online search, the footprints' regions
        and the out-of-focus limits look for cells of that size, while the motion band-pass
        and grid stay those of the declared diameter, which the motion template was built with
        (written out, so a checkpoint's motion state still matches its params)."""
        d = self.data.neuron_diameter_px
        smooth, background = self.motion.sigmas_px(d)
        return self.replace(**{
            "data.neuron_diameter_px": float(d_cells),
            "motion.smooth_sigma_px": smooth,
            "motion.background_sigma_px": background,
            "motion.downsample": self.motion.grid_downsample(d),
        })  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> CNMFEParams:
        """Read a TOML (``.toml``) or JSON (``.json``) config file of ``[stage]`` tables."""
        return cls.from_dict(read_config_file(path))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if vv is not None}
                for k, v in self.to_dict().items()
            }
        )


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, c in _STAGES.items() for f in dataclasses.fields(c)]


def _unknown(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown {kind} '{name}'; {hint}valid: {', '.join(valid)}"


_CALIBRATED = (
    "was removed: detection thresholds are now calibrated on the movie's own noise; set "
    "detection.false_seeds_per_fov (expected false seeds per 256 x 256 pixels, default 3) to "
    "trade sensitivity against false seeds"
)
# Keys that existed once, with what to do instead (a config naming one gets this, not a guess).
REMOVED_KEYS = {
    "init.min_corr": _CALIBRATED,
    "init.min_pnr": _CALIBRATED,
    "init.reseed_min_corr": _CALIBRATED,
    "init.reseed_min_pnr": _CALIBRATED,
    "init.auto_thresholds": _CALIBRATED,
    "detection.min_corr": _CALIBRATED,
    "detection.min_pnr": _CALIBRATED,
    "detection.duplicate_overlap": (
        "was removed: a candidate overlapping a known neuron is now judged by demixing the two "
        "jointly (detection.duplicate_corr), not by footprint overlap"
    ),
}


def _unknown_key(stage: str, key: str) -> str:
    """An unknown key of a known stage: the close keys, then that stage's keys only (a removed
    key: what replaced it)."""
    if f"{stage}.{key}" in REMOVED_KEYS:
        return f"parameter '{stage}.{key}' {REMOVED_KEYS[f'{stage}.{key}']}"
    valid = [f.name for f in dataclasses.fields(_STAGES[stage])]
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(f'{stage}.{c}') for c in close)}? " if close else ""
    return f"unknown parameter '{stage}.{key}'; {hint}keys of [{stage}]: {', '.join(valid)}"


def _unknown_dotted(dotted: str) -> str:
    """An unknown ``stage.key``: suggest the closest full keys (a typo may be in the stage),
    never the list of every key (``online-cnmfe params --dump`` shows them all)."""
    stage, _, key = dotted.partition(".")
    if stage in _STAGES and key:
        return _unknown_key(stage, key)
    close = difflib.get_close_matches(dotted, _all_keys(), n=3, cutoff=0.6)
    close_stage = difflib.get_close_matches(stage, list(_STAGES), n=1, cutoff=0.5)
    if close:
        hint = f"did you mean {', '.join(repr(c) for c in close)}?"
    elif close_stage:
        hint = f"did you mean the stage '{close_stage[0]}'?"
    else:
        hint = f"stages: {', '.join(_STAGES)}."
    return (
        f"unknown parameter '{dotted}'; {hint} Keys are stage.key; "
        "`online-cnmfe params --dump` lists them all"
    )


_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a text"}


def _typed(name: str, value: Any, f: dataclasses.Field) -> Any:
    """``value`` checked against the field's declared type (ints widen to floats).

    Raises
    ------
    ConfigError
        Naming the key, the value received and the type expected, with the default as an
        example (``--set data.frame_rate_hz=twenty`` fails here, not deep in a comparison).
    """
    kinds = [k.strip() for k in str(f.type).split("|")]
    if value is None and "None" in kinds:
        return None
    base = next(k for k in kinds if k != "None")
    ok = {
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(base, True)
    if ok:
        return float(value) if base == "float" else value
    example = f.default if f.default is not dataclasses.MISSING else None
    example_text = json.dumps(example) if example is not None else "null"
    none = " or null" if "None" in kinds else ""
    return _raise_type(name, value, f"{_TYPE_WORDS.get(base, base)}{none}", example_text)


def _raise_type(name: str, value: Any, expected: str, example: str) -> Any:
    raise ConfigError(
        f"{name}={value!r} is not {expected}; expected e.g. {name}={example} (the default)"
    )


# Tables a config file may hold besides the parameter stages (read by other parts).
OTHER_CONFIG_TABLES = ("triggers",)


def load_params(config: str | Path | None, overrides: list[str] | None = None) -> CNMFEParams:
    """Parameters from an optional config file plus ``--set stage.key=value`` overrides.

    The file may also hold the closed-loop ``[triggers]`` table; it is left to the trigger
    configuration and ignored here.
    """
    params = CNMFEParams()
    if config is not None:
        values = read_config_file(config)
        for table in OTHER_CONFIG_TABLES:
            values.pop(table, None)
        params = CNMFEParams.from_dict(values)
    values = parse_overrides(overrides or [])
    return params.replace(**values) if values else params


def user_sets(key: str, config: str | Path | None, overrides: list[str] | None = None) -> bool:
    """True when the config file or a ``--set`` override gives the dotted ``stage.key``
    (a value taken from the data, e.g. the frame rate, must then not replace it)."""
    stage, _, name = key.partition(".")
    if key in parse_overrides(overrides or []):
        return True
    if config is None:
        return False
    table = read_config_file(config).get(stage)
    return isinstance(table, dict) and name in table
