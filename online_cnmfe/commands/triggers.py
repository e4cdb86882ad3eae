"""``online-cnmfe triggers``: listen to closed-loop triggers, forward them, manage rules.

Listening prints one line per trigger (or one JSON object with ``--json``) and can forward each
trigger to a serial device (``--forward-serial PORT``). ``--list/--add/--remove/--enable/
--disable/--stats`` talk to a running engine's control socket; ``--check FILE`` validates a
trigger config offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "tcp://127.0.0.1:5557"
DEFAULT_CONTROL = "tcp://127.0.0.1:5558"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "triggers",
        help="listen to / forward closed-loop triggers; list, add or remove trigger rules",
        description=(
            "Print (or forward to a serial device) the triggers an engine fires, or change its "
            "trigger rules at run time through its control socket. Rules: docs/closed-loop.md."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  online-cnmfe triggers --listen tcp://127.0.0.1:5557\n"
            "  online-cnmfe triggers --listen --forward-serial /dev/ttyACM0 --payload 'T\\n'\n"
            "  online-cnmfe triggers --list\n"
            '  online-cnmfe triggers --add \'{"name": "c7", "neurons": [7], "signal": '
            '"zscore", "condition": "threshold", "threshold": 4}\'\n'
            "  online-cnmfe triggers --remove c7\n"
            "  online-cnmfe triggers --check engine.toml"
        ),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--listen", nargs="?", const=DEFAULT_LISTEN, metavar="ENDPOINT",
        help=f"receive triggers from the engine's trigger socket (default {DEFAULT_LISTEN})",
    )  # fmt: skip
    mode.add_argument("--list", action="store_true", help="list the engine's rules and counters")
    mode.add_argument(
        "--add", metavar="RULE",
        help="add a rule: a JSON object, or a .json/.toml file with one rule or [[rules]]",
    )  # fmt: skip
    mode.add_argument("--remove", metavar="NAME", help="remove the rule NAME")
    mode.add_argument("--enable", metavar="NAME", help="enable the rule NAME")
    mode.add_argument("--disable", metavar="NAME", help="disable the rule NAME")
    mode.add_argument("--stats", action="store_true", help="print the engine's trigger counters")
    mode.add_argument("--check", metavar="CONFIG", help="validate the [triggers] of a config file")
    p.add_argument(
        "--control", default=DEFAULT_CONTROL, metavar="ENDPOINT",
        help=f"the engine's control socket (default {DEFAULT_CONTROL})",
    )  # fmt: skip
    p.add_argument(
        "--token-file", metavar="PATH",
        help="the engine's control token file (its triggers.control_token_file; default: "
        "~/.config/online-cnmfe/control-token)",
    )  # fmt: skip
    p.add_argument("--pull", action="store_true", help="the trigger socket is PUSH (not PUB)")
    p.add_argument("--count", type=int, default=None, help="stop after N triggers")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds of silence")
    p.add_argument("--json", action="store_true", help="print one JSON object per trigger")
    p.add_argument("--forward-serial", metavar="PORT", help="write each trigger to this device")
    p.add_argument("--baudrate", type=int, default=115200, help="serial baud rate (115200)")
    p.add_argument(
        "--payload", default="T\\n",
        help="bytes written per trigger; backslash escapes and {rule}, {frame_index} allowed "
        "(default 'T\\n')",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.listen:
        return _listen(args)
    if args.check:
        return _check(args.check)
    from online_cnmfe.triggers.client import TriggerControl

    with TriggerControl(args.control, token_file=args.token_file) as ctl:
        try:
            if args.list:
                _out(json.dumps(ctl.list(), indent=2))
            elif args.stats:
                _out(json.dumps(ctl.stats(), indent=2))
            elif args.add:
                for rule in _rules_from_arg(args.add):
                    _out(f"added {json.dumps(ctl.add(rule))}")
            elif args.remove:
                ctl.remove(args.remove)
                _out(f"removed {args.remove}")
            else:
                name = args.enable or args.disable
                (ctl.enable if args.enable else ctl.disable)(name)
                _out(f"{'enabled' if args.enable else 'disabled'} {name}")
        except TimeoutError as exc:
            raise ConfigError(str(exc)) from None
    return 0


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _rules_from_arg(value: str) -> list[dict[str, Any]]:
    path = Path(value)
    if not value.lstrip().startswith("{") and path.suffix in (".json", ".toml"):
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"cannot read rule file {path}: {exc.strerror}") from exc
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"rule file {path} does not parse: {exc}") from exc
    else:
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"--add expects a JSON object or a .json/.toml file: {exc}") from exc
    if isinstance(data, dict) and "triggers" in data:
        data = data["triggers"]
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        return data["rules"]
    return [data]


def _check(path: str) -> int:
    from online_cnmfe.triggers.config import load_trigger_config

    config = load_trigger_config(path)
    _out(f"{path}: {len(config.rules)} valid rule(s)")
    for rule in config.rules:
        _out(f"  {rule.name}: {rule.condition} on {rule.signal} -> {', '.join(rule.actions)}")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from online_cnmfe.triggers.actions import SerialOutput
    from online_cnmfe.triggers.client import TriggerListener

    payload = args.payload.encode("latin-1").decode("unicode_escape")
    serial = None
    if args.forward_serial:
        serial = SerialOutput(args.forward_serial, args.baudrate)
        if not serial.open():
            raise ConfigError(f"cannot open serial port {args.forward_serial}: {serial.last_error}")
    n = 0
    socket_type = "pull" if args.pull else "sub"
    with TriggerListener(args.listen, socket_type, timeout_s=args.timeout) as listener:
        logger.info("listening for triggers on %s (%s)", args.listen, socket_type)
        for trig in listener:
            if serial is not None:
                serial.write(payload.format(rule=trig.rule, frame_index=trig.frame_index).encode())
            if args.json:
                _out(json.dumps(trig.to_header()))
            else:
                _out(
                    f"{trig.rule} frame={trig.frame_index} value={trig.value:.3g} "
                    f"age_ms={trig.age_ms:.2f} neurons={list(trig.neuron_ids)}"
                )
            n += 1
            if args.count is not None and n >= args.count:
                break
    if serial is not None:
        serial.close()
        if serial.n_errors:
            logger.warning("%d serial write(s) failed: %s", serial.n_errors, serial.last_error)
    return 0
