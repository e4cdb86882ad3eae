"""Config files (TOML or JSON, one table per stage) and ``--set stage.key=value`` overrides."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``--set stage.key=value`` strings; values are JSON if they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(
                f"--set expects stage.key=value (e.g. data.frame_rate_hz=10), got {pair!r}"
            )
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML (or ``.json``) config file as a dict; ConfigError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML/JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table/object at top level")
    return values
