"""Validation helpers shared by the trigger rule, region and config parsers (ConfigError)."""

from __future__ import annotations

import difflib
import math
from typing import Any

from online_cnmfe.errors import ConfigError


def unknown_keys(where: str, given: dict[str, Any], valid: tuple[str, ...]) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}valid keys: {', '.join(valid)}")


def number(where: str, key: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} is {value!r}; expected a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: {key} is {value!r}; expected a number >= {minimum}")
    return float(value)


def integer(where: str, key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key} is {value!r}; expected an integer >= {minimum}")
    return int(value)


def point(where: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where}: {key} is {value!r}; expected [row, col]")
    return (number(where, key, value[0]), number(where, key, value[1]))
