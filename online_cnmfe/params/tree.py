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

_STAGES: dict[str, type] = {
    "data": DataParams,
    "init": InitParams,
    "background": BackgroundParams,
    "deconv": DeconvParams,
    "online": OnlineParams,
    "detection": DetectionParams,
    "motion": MotionParams,
    "engine": EngineParams,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CNMFEParams:
    """All parameters, one frozen object per stage.

    Examples
    --------
    >>> p = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 11}})
    >>> p.data.neuron_diameter_px
    11
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
            valid = [f.name for f in dataclasses.fields(stage_cls)]
            for key in stage_values:
                if key not in valid:
                    raise ConfigError(
                        _unknown(
                            "parameter", f"{stage_name}.{key}", [f"{stage_name}.{v}" for v in valid]
                        )
                    )
            try:
                stages[stage_name] = stage_cls(**stage_values)
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
                raise ConfigError(_unknown("parameter", key, _all_keys()))
            values[stage][name] = value
        return CNMFEParams.from_dict(values)

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
