"""Closed-loop trigger rules: what to watch, when to fire, what to do.

A rule names a set of neurons (by id, or by a region of the field of view resolved against the
footprint centroids), a signal, a condition, a refractory period and a list of actions. Rules come
from the ``[triggers]`` table of the engine's config file (``[[triggers.rules]]`` entries) or from
a separate file, and can be added at run time over the control socket as JSON objects; all three
paths go through :func:`parse_rule`, which raises :class:`~online_cnmfe.errors.ConfigError`
naming the rule, the key, the value received and what is allowed.

Signals (per neuron, at frame t; all final at t): ``spike`` = S (causal deconvolved activity),
``calcium`` = C (denoised), ``raw`` = C_raw (demixed, before deconvolution), ``zscore`` = C_raw
standardised by its running baseline and noise, ``rise`` = the frame-to-frame increase of C_raw
in units of its noise (a spike's jump; see :mod:`online_cnmfe.triggers.zscore`).

Conditions (all edge-triggered; a firing needs a new crossing, never a level that stays high):

- ``threshold``: per neuron, fires when a neuron's signal rises to ``>= threshold`` while armed;
  the neuron re-arms when its signal falls ``< release`` (hysteresis; ``release`` defaults to
  ``threshold``). One firing per frame lists every neuron that crossed.
- ``k_of_n``: a neuron is active at a frame when its signal is ``>= threshold``; fires when at
  least ``k`` distinct neurons were active within the last ``window_frames`` frames (current frame
  included); re-arms when fewer than ``k`` are.
- ``ensemble``: fires when ``sum_i weights_i * x_i >= threshold``; re-arms below ``release``.

A refractory period (``refractory_frames`` or ``refractory_ms``, acquisition time) after a firing
suppresses further firings of the same rule; state (arming) keeps updating meanwhile.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from online_cnmfe.errors import ConfigError
from online_cnmfe.triggers._validate import integer, number, unknown_keys
from online_cnmfe.triggers.limits import MAX_RULE_NEURONS
from online_cnmfe.triggers.regions import Region, parse_region

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "SIGNALS",
    "Region",
    "Rule",
    "parse_region",
    "parse_rule",
    "rule_to_dict",
]

SIGNALS = ("spike", "calcium", "raw", "zscore", "rise")
CONDITIONS = ("threshold", "k_of_n", "ensemble")
ACTIONS = ("publish", "serial", "callback")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One validated trigger rule (see the module docstring for the semantics).

    Attributes
    ----------
    name : str
        Unique name (1-64 of ``A-Za-z0-9_.:-``); it is the ``rule`` field of every trigger.
    signal : str
        One of :data:`SIGNALS`.
    condition : str
        One of :data:`CONDITIONS`.
    threshold : float
        Firing level (per neuron for ``threshold`` and ``k_of_n``, of the sum for ``ensemble``).
    release : float or None
        Re-arm level (hysteresis), <= threshold; None means ``threshold``.
    neurons : tuple of int or None
        Neuron ids; exactly one of ``neurons`` and ``region`` is set.
    region : Region or None
    k : int
        ``k_of_n`` only: number of distinct active neurons needed.
    window_frames : int
        ``k_of_n`` only: frames (current included) within which they must be active.
    weights : tuple of float or None
        ``ensemble`` only, with ``neurons``: one weight per neuron (None: all 1).
    refractory_frames : int
    refractory_ms : float
        At most one of the two is non-zero.
    actions : tuple of str
        Subset of :data:`ACTIONS`.
    serial_payload : str
        ASCII bytes written to the serial device by the ``serial`` action.
    enabled : bool
    """

    name: str
    signal: str
    condition: str
    threshold: float
    release: float | None = None
    neurons: tuple[int, ...] | None = None
    region: Region | None = None
    k: int = 1
    window_frames: int = 1
    weights: tuple[float, ...] | None = None
    refractory_frames: int = 0
    refractory_ms: float = 0.0
    actions: tuple[str, ...] = ("publish", "callback")
    serial_payload: str = "T\n"
    enabled: bool = True

    @property
    def release_level(self) -> float:
        return self.threshold if self.release is None else self.release


_RULE_KEYS = tuple(f.name for f in dataclasses.fields(Rule))


def parse_rule(value: Any, where: str | None = None) -> Rule:
    """Validate one rule given as a dict (TOML table or JSON object).

    Parameters
    ----------
    value : dict
        Keys as the attributes of :class:`Rule`; ``region`` is a table (see :func:`parse_region`).
    where : str, optional
        Prefix of error messages (e.g. ``"triggers.rules[2]"``).

    Returns
    -------
    Rule

    Raises
    ------
    ConfigError
        On an unknown key, a missing or invalid value, or an inconsistent combination.

    Examples
    --------
    >>> r = parse_rule({"name": "cell7", "neurons": [7], "signal": "spike",
    ...                 "condition": "threshold", "threshold": 0.5, "refractory_frames": 10})
    >>> r.neurons, r.release_level
    ((7,), 0.5)
    """
    if not isinstance(value, dict):
        raise ConfigError(f"{where or 'rule'} is a {type(value).__name__}; expected a table/object")
    name = value.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{where or 'rule'}: name is {name!r}; expected 1-64 characters of A-Za-z0-9_.:-"
        )
    where = f"{where}: rule {name!r}" if where else f"rule {name!r}"
    unknown_keys(where, value, _RULE_KEYS)
    kw: dict[str, Any] = {"name": name}
    for key, choices in (("signal", SIGNALS), ("condition", CONDITIONS)):
        if value.get(key) not in choices:
            raise ConfigError(f"{where}: {key} is {value.get(key)!r}; expected one of {choices}")
        kw[key] = value[key]
    if "threshold" not in value:
        raise ConfigError(f"{where}: missing 'threshold' (the firing level)")
    kw["threshold"] = number(where, "threshold", value["threshold"])
    _parse_selection(where, value, kw)
    _parse_condition(where, value, kw)
    _parse_refractory_and_actions(where, value, kw)
    return Rule(**kw)


def _parse_selection(where: str, value: dict[str, Any], kw: dict[str, Any]) -> None:
    neurons, region = value.get("neurons"), value.get("region")
    if (neurons is None) == (region is None):
        raise ConfigError(f"{where}: give exactly one of 'neurons' (list of ids) and 'region'")
    if neurons is not None:
        if isinstance(neurons, int) and not isinstance(neurons, bool):
            neurons = [neurons]
        if (
            not isinstance(neurons, list | tuple)
            or not 0 < len(neurons) <= MAX_RULE_NEURONS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in neurons)
        ):
            got = f"{len(neurons)} values" if isinstance(neurons, list | tuple) else "invalid"
            raise ConfigError(
                f"{where}: neurons is {_short(neurons)} ({got}); expected 1 to "
                f"{MAX_RULE_NEURONS} non-negative integer ids"
            )
        if len(set(neurons)) != len(neurons):
            raise ConfigError(f"{where}: neurons {_short(neurons)} lists an id twice")
        kw["neurons"] = tuple(int(n) for n in neurons)
    else:
        kw["region"] = parse_region(region, f"{where}: region")


def _parse_condition(where: str, value: dict[str, Any], kw: dict[str, Any]) -> None:
    cond, n_sel = kw["condition"], len(kw["neurons"]) if kw.get("neurons") else None
    release = value.get("release")
    if release is not None:
        if cond == "k_of_n":
            raise ConfigError(f"{where}: 'release' applies to threshold and ensemble, not k_of_n")
        kw["release"] = number(where, "release", release)
        if kw["release"] > kw["threshold"]:
            raise ConfigError(
                f"{where}: release {kw['release']} is above threshold {kw['threshold']}; "
                "the re-arm level must be <= the firing level"
            )
    for key in ("k", "window_frames"):
        if key in value:
            if cond != "k_of_n":
                raise ConfigError(f"{where}: {key!r} only applies to condition 'k_of_n'")
            kw[key] = integer(where, key, value[key], minimum=1)
    if cond == "k_of_n":
        if "k" not in value:
            raise ConfigError(
                f"{where}: condition 'k_of_n' needs 'k' (neurons that must be active)"
            )
        if n_sel is not None and kw["k"] > n_sel:
            raise ConfigError(f"{where}: k = {kw['k']} but only {n_sel} neurons are listed")
    weights = value.get("weights")
    if weights is not None:
        if cond != "ensemble" or n_sel is None:
            raise ConfigError(f"{where}: 'weights' need condition 'ensemble' and a 'neurons' list")
        if not isinstance(weights, list | tuple) or len(weights) != n_sel:
            raise ConfigError(f"{where}: weights {weights!r} must have one number per neuron")
        kw["weights"] = tuple(number(where, "weights", w) for w in weights)


def _parse_refractory_and_actions(where: str, value: dict[str, Any], kw: dict[str, Any]) -> None:
    if "refractory_frames" in value:
        kw["refractory_frames"] = integer(
            where, "refractory_frames", value["refractory_frames"], minimum=0
        )
    if "refractory_ms" in value:
        kw["refractory_ms"] = number(where, "refractory_ms", value["refractory_ms"], minimum=0.0)
    if kw.get("refractory_frames") and kw.get("refractory_ms"):
        raise ConfigError(f"{where}: give refractory_frames or refractory_ms, not both")
    if "actions" in value:
        actions = value["actions"]
        if isinstance(actions, str):
            actions = [actions]
        if (
            not isinstance(actions, list | tuple)
            or not actions
            or any(a not in ACTIONS for a in actions)
            or len(set(actions)) != len(actions)
        ):
            raise ConfigError(
                f"{where}: actions is {actions!r}; expected a non-empty list of distinct {ACTIONS}"
            )
        kw["actions"] = tuple(actions)
    if "serial_payload" in value:
        payload = value["serial_payload"]
        if (
            not isinstance(payload, str)
            or not payload
            or len(payload) > 64
            or not payload.isascii()
        ):
            raise ConfigError(
                f"{where}: serial_payload is {payload!r}; expected 1-64 ASCII characters"
            )
        kw["serial_payload"] = payload
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            raise ConfigError(f"{where}: enabled is {value['enabled']!r}; expected true or false")
        kw["enabled"] = value["enabled"]


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """JSON-safe dict that :func:`parse_rule` turns back into the same rule."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Rule):
        v = getattr(rule, f.name)
        if v is None:
            continue
        if isinstance(v, Region):
            v = v.to_dict()
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    if rule.condition != "k_of_n":
        out.pop("k"), out.pop("window_frames")
    return out


def _short(value: Any, limit: int = 60) -> str:
    """repr of a value cut to ``limit`` characters (a rejected rule must not flood the log)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
