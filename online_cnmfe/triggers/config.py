"""The ``[triggers]`` table of the engine config: sockets, serial device, z-score and rules.

Read from the engine config file (``[triggers]`` with ``[[triggers.rules]]``) or a separate rules
file (top-level ``[[rules]]``), see docs/closed-loop.md. Every problem is a
:class:`~online_cnmfe.errors.ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acquisition.publisher import is_local_endpoint
from online_cnmfe.errors import ConfigError
from online_cnmfe.params import read_config_file
from online_cnmfe.triggers._validate import integer, number, unknown_keys
from online_cnmfe.triggers.rules import Rule, parse_rule, rule_to_dict

__all__ = [
    "TriggerConfig",
    "check_endpoint",
    "load_trigger_config",
    "parse_trigger_config",
    "read_config_file",
]


def check_endpoint(endpoint: str, allow_remote: bool, what: str) -> str:
    """An endpoint to bind: ``tcp://HOST:PORT`` (loopback unless allowed) or ``ipc://PATH``."""
    if not isinstance(endpoint, str) or not re.match(r"^(tcp|ipc|inproc)://.+", endpoint):
        raise ConfigError(f"{what} is {endpoint!r}; expected tcp://HOST:PORT or ipc://PATH")
    if not allow_remote and not is_local_endpoint(endpoint):
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
    control_token_file : str or None
        File holding the control socket's secret token (created, mode 0600, when absent);
        None: the per-user default (:func:`~online_cnmfe.triggers.auth.default_token_file`).
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
    control_token_file: str | None = None
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
    unknown_keys("[triggers]", value, _CONFIG_KEYS)
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
    if value.get("control_token_file") is not None:
        path = value["control_token_file"]
        if not isinstance(path, str) or not path:
            raise ConfigError(f"[triggers] control_token_file is {path!r}; expected a path")
        kw["control_token_file"] = path
    if value.get("serial_port") is not None:
        if not isinstance(value["serial_port"], str) or not value["serial_port"]:
            raise ConfigError(
                f"[triggers] serial_port is {value['serial_port']!r}; expected a path"
            )
        kw["serial_port"] = value["serial_port"]
    for key, minimum in (("send_hwm", 1), ("serial_baudrate", 1), ("zscore_warmup_frames", 2)):
        if key in value:
            kw[key] = integer("[triggers]", key, value[key], minimum=minimum)
    for key in ("serial_reconnect_s", "zscore_window_s"):
        if key in value:
            kw[key] = number("[triggers]", key, value[key], minimum=1e-3)
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
