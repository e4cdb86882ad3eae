"""Validation helpers of the parameter objects: each raises ``ValueError`` naming the field,
the value received and the allowed range (never a silent correction)."""

from __future__ import annotations

import math
from typing import Any


def check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


def positive(name: str, value: float) -> None:
    check(name, value, value is not None and value > 0 and math.isfinite(value), "> 0")


def fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    check(name, value, low <= value <= high, f"[{low}, {high}]")


def int_at_least(name: str, value: int, low: int) -> None:
    check(name, value, isinstance(value, int) and value >= low, f"an integer >= {low}")
