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
import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from online_cnmfe.errors import ConfigError

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "SIGNALS",
    "Region",
    "Rule",
    "TriggerConfig",
    "load_trigger_config",
    "parse_region",
    "parse_rule",
    "parse_trigger_config",
    "rule_to_dict",
]

SIGNALS = ("spike", "calcium", "raw", "zscore", "rise")
CONDITIONS = ("threshold", "k_of_n", "ensemble")
ACTIONS = ("publish", "serial", "callback")
REGION_SHAPES = ("rectangle", "circle", "polygon")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_NEURONS = 100_000
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _unknown_keys(where: str, given: dict[str, Any], valid: tuple[str, ...]) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}valid keys: {', '.join(valid)}")


def _number(where: str, key: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} is {value!r}; expected a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: {key} is {value!r}; expected a number >= {minimum}")
    return float(value)


def _integer(where: str, key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key} is {value!r}; expected an integer >= {minimum}")
    return int(value)


def _point(where: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where}: {key} is {value!r}; expected [row, col]")
    return (_number(where, key, value[0]), _number(where, key, value[1]))


# --------------------------------------------------------------------------------------------
# Regions of the field of view
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Region:
    """A region of the field of view in (row, col) pixel coordinates.

    Attributes
    ----------
    shape : str
        ``"rectangle"`` (``rows`` = (r0, r1), ``cols`` = (c0, c1), half-open), ``"circle"``
        (``center`` = (row, col), ``radius``) or ``"polygon"`` (``vertices``, >= 3 (row, col)
        points, even-odd rule).
    """

    shape: str
    rows: tuple[float, float] = (0.0, 0.0)
    cols: tuple[float, float] = (0.0, 0.0)
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    vertices: tuple[tuple[float, float], ...] = ()

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which (row, col) points lie in the region.

        Parameters
        ----------
        points : ndarray of shape (n, 2)
            (row, col) coordinates, e.g. footprint centroids.

        Returns
        -------
        ndarray of shape (n,), bool
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        r, c = pts[:, 0], pts[:, 1]
        if self.shape == "rectangle":
            return (
                (r >= self.rows[0]) & (r < self.rows[1]) & (c >= self.cols[0]) & (c < self.cols[1])
            )
        if self.shape == "circle":
            return (r - self.center[0]) ** 2 + (c - self.center[1]) ** 2 <= self.radius**2
        verts = np.asarray(self.vertices, dtype=np.float64)
        inside = np.zeros(len(pts), dtype=bool)
        vr, vc = verts[:, 0], verts[:, 1]
        pr, pc = np.roll(vr, 1), np.roll(vc, 1)
        for i in range(len(verts)):  # loop over vertices (few), vectorised over points
            straddles = (vr[i] > r) != (pr[i] > r)
            with np.errstate(divide="ignore", invalid="ignore"):
                cross = (pc[i] - vc[i]) * (r - vr[i]) / (pr[i] - vr[i]) + vc[i]
            inside ^= straddles & (c < cross)
        return inside

    def to_dict(self) -> dict[str, Any]:
        if self.shape == "rectangle":
            return {"shape": "rectangle", "rows": list(self.rows), "cols": list(self.cols)}
        if self.shape == "circle":
            return {"shape": "circle", "center": list(self.center), "radius": self.radius}
        return {"shape": "polygon", "vertices": [list(v) for v in self.vertices]}


def parse_region(value: Any, where: str = "region") -> Region:
    """Validate a region table (see :class:`Region`); raises ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is {value!r}; expected a table with a 'shape' key")
    shape = value.get("shape")
    if shape not in REGION_SHAPES:
        raise ConfigError(f"{where}: shape is {shape!r}; expected one of {REGION_SHAPES}")
    if shape == "rectangle":
        _unknown_keys(where, value, ("shape", "rows", "cols"))
        rows, cols = (
            _point(where, "rows", value.get("rows")),
            _point(where, "cols", value.get("cols")),
        )
        if rows[1] <= rows[0] or cols[1] <= cols[0]:
            raise ConfigError(
                f"{where}: rows {rows} / cols {cols} must be [low, high] with low < high"
            )
        return Region(shape, rows=rows, cols=cols)
    if shape == "circle":
        _unknown_keys(where, value, ("shape", "center", "radius"))
        radius = _number(where, "radius", value.get("radius"), minimum=0.0)
        if radius <= 0:
            raise ConfigError(f"{where}: radius is {radius}; expected > 0 pixels")
        return Region(shape, center=_point(where, "center", value.get("center")), radius=radius)
    _unknown_keys(where, value, ("shape", "vertices"))
    verts = value.get("vertices")
    if not isinstance(verts, list) or len(verts) < 3:
        raise ConfigError(f"{where}: vertices is {verts!r}; expected >= 3 [row, col] points")
    return Region(shape, vertices=tuple(_point(where, "vertices", v) for v in verts))


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------
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
    _unknown_keys(where, value, _RULE_KEYS)
    kw: dict[str, Any] = {"name": name}
    for key, choices in (("signal", SIGNALS), ("condition", CONDITIONS)):
        if value.get(key) not in choices:
            raise ConfigError(f"{where}: {key} is {value.get(key)!r}; expected one of {choices}")
        kw[key] = value[key]
    if "threshold" not in value:
        raise ConfigError(f"{where}: missing 'threshold' (the firing level)")
    kw["threshold"] = _number(where, "threshold", value["threshold"])
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
            or not 0 < len(neurons) <= _MAX_NEURONS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in neurons)
        ):
            raise ConfigError(f"{where}: neurons is {neurons!r}; expected non-negative integer ids")
        if len(set(neurons)) != len(neurons):
            raise ConfigError(f"{where}: neurons {neurons!r} lists an id twice")
        kw["neurons"] = tuple(int(n) for n in neurons)
    else:
        kw["region"] = parse_region(region, f"{where}: region")


def _parse_condition(where: str, value: dict[str, Any], kw: dict[str, Any]) -> None:
    cond, n_sel = kw["condition"], len(kw["neurons"]) if kw.get("neurons") else None
    release = value.get("release")
    if release is not None:
        if cond == "k_of_n":
            raise ConfigError(f"{where}: 'release' applies to threshold and ensemble, not k_of_n")
        kw["release"] = _number(where, "release", release)
        if kw["release"] > kw["threshold"]:
            raise ConfigError(
                f"{where}: release {kw['release']} is above threshold {kw['threshold']}; "
                "the re-arm level must be <= the firing level"
            )
    for key in ("k", "window_frames"):
        if key in value:
            if cond != "k_of_n":
                raise ConfigError(f"{where}: {key!r} only applies to condition 'k_of_n'")
            kw[key] = _integer(where, key, value[key], minimum=1)
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
        kw["weights"] = tuple(_number(where, "weights", w) for w in weights)


def _parse_refractory_and_actions(where: str, value: dict[str, Any], kw: dict[str, Any]) -> None:
    if "refractory_frames" in value:
        kw["refractory_frames"] = _integer(
            where, "refractory_frames", value["refractory_frames"], minimum=0
        )
    if "refractory_ms" in value:
        kw["refractory_ms"] = _number(where, "refractory_ms", value["refractory_ms"], minimum=0.0)
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


# --------------------------------------------------------------------------------------------
# The [triggers] table
# --------------------------------------------------------------------------------------------
def check_endpoint(endpoint: str, allow_remote: bool, what: str) -> str:
    """An endpoint to bind: ``tcp://HOST:PORT`` (loopback unless allowed) or ``ipc://PATH``."""
    if not isinstance(endpoint, str) or not re.match(r"^(tcp|ipc|inproc)://.+", endpoint):
        raise ConfigError(f"{what} is {endpoint!r}; expected tcp://HOST:PORT or ipc://PATH")
    if endpoint.startswith("tcp://") and not allow_remote:
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
        if host not in _LOOPBACK_HOSTS:
            raise ConfigError(
                f"{what} {endpoint!r} is not loopback; closed-loop sockets bind to "
                "tcp://127.0.0.1 by default. Set triggers.allow_remote = true to bind wider."
            )
    return endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerConfig:
    """The ``[triggers]`` table of the engine config.

    Attributes
    ----------
    enabled : bool
        False: no trigger engine, sockets or serial port at all.
    endpoint : str
        Trigger socket (bound by the engine), default ``tcp://127.0.0.1:5557``.
    socket_type : str
        ``"pub"`` (any number of listeners; dropped when none) or ``"push"`` (one consumer;
        queued up to ``send_hwm``, then dropped and counted; never blocks the model thread).
    control_endpoint : str
        REQ/REP control socket, default ``tcp://127.0.0.1:5558``; ``""`` disables it.
    allow_remote : bool
        Allow non-loopback tcp endpoints.
    send_hwm : int
        Send high-water mark of the trigger socket.
    serial_port, serial_baudrate
        Serial device for the ``serial`` action (``None``: the action is an error at load time).
    serial_reconnect_s : float
        After a serial failure, reopening is tried at most this often.
    zscore_window_s, zscore_warmup_frames
        Time constant of the running baseline/noise of ``zscore`` signals, and frames a neuron
        must have been seen before its z-score can fire.
    rules : tuple of Rule
    """

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5557"
    socket_type: str = "pub"
    control_endpoint: str = "tcp://127.0.0.1:5558"
    allow_remote: bool = False
    send_hwm: int = 1000
    serial_port: str | None = None
    serial_baudrate: int = 115200
    serial_reconnect_s: float = 2.0
    zscore_window_s: float = 30.0
    zscore_warmup_frames: int = 20
    rules: tuple[Rule, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rules"}
        out["rules"] = [rule_to_dict(r) for r in self.rules]
        return {k: v for k, v in out.items() if v is not None}


_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(TriggerConfig))


def parse_trigger_config(value: Any) -> TriggerConfig:
    """Validate a ``[triggers]`` table (dict) into a :class:`TriggerConfig`; raises ConfigError."""
    if value is None:
        return TriggerConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"[triggers] is a {type(value).__name__}; expected a table")
    _unknown_keys("[triggers]", value, _CONFIG_KEYS)
    kw: dict[str, Any] = {}
    for key in ("enabled", "allow_remote"):
        if key in value:
            if not isinstance(value[key], bool):
                raise ConfigError(f"[triggers] {key} is {value[key]!r}; expected true or false")
            kw[key] = value[key]
    allow_remote = kw.get("allow_remote", False)
    if "endpoint" in value:
        kw["endpoint"] = check_endpoint(value["endpoint"], allow_remote, "triggers.endpoint")
    if value.get("control_endpoint"):
        kw["control_endpoint"] = check_endpoint(
            value["control_endpoint"], allow_remote, "triggers.control_endpoint"
        )
    elif "control_endpoint" in value:
        kw["control_endpoint"] = ""
    if "socket_type" in value:
        if value["socket_type"] not in ("pub", "push"):
            raise ConfigError(
                f"[triggers] socket_type is {value['socket_type']!r}; expected pub/push"
            )
        kw["socket_type"] = value["socket_type"]
    if value.get("serial_port") is not None:
        if not isinstance(value["serial_port"], str) or not value["serial_port"]:
            raise ConfigError(
                f"[triggers] serial_port is {value['serial_port']!r}; expected a path"
            )
        kw["serial_port"] = value["serial_port"]
    for key, minimum in (("send_hwm", 1), ("serial_baudrate", 1), ("zscore_warmup_frames", 2)):
        if key in value:
            kw[key] = _integer("[triggers]", key, value[key], minimum=minimum)
    for key in ("serial_reconnect_s", "zscore_window_s"):
        if key in value:
            kw[key] = _number("[triggers]", key, value[key], minimum=1e-3)
    kw["rules"] = _parse_rules(value.get("rules", []), kw.get("serial_port"))
    return TriggerConfig(**kw)


def _parse_rules(rules: Any, serial_port: str | None) -> tuple[Rule, ...]:
    if not isinstance(rules, list):
        raise ConfigError(f"triggers.rules is {type(rules).__name__}; expected [[triggers.rules]]")
    parsed = tuple(parse_rule(r, f"triggers.rules[{i}]") for i, r in enumerate(rules))
    names = [r.name for r in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"triggers.rules: rule names must be unique; repeated: {dup}")
    for r in parsed:
        if "serial" in r.actions and serial_port is None:
            raise ConfigError(
                f"rule {r.name!r} has the 'serial' action but [triggers] has no serial_port"
            )
    return parsed


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


def load_trigger_config(path: str | Path) -> TriggerConfig:
    """Read the ``[triggers]`` table of a TOML/JSON config file.

    The file may be the engine config (``[triggers]`` with ``[[triggers.rules]]``) or a separate
    rules file (top-level ``[[rules]]`` and the other ``[triggers]`` keys at top level). A file
    with neither yields the defaults with no rules.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or any rule is invalid.
    """
    values = read_config_file(path)
    if "triggers" in values:
        return parse_trigger_config(values["triggers"])
    if "rules" in values:
        return parse_trigger_config(values)
    return TriggerConfig()
