"""The ``online-cnmfe`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module under ``online_cnmfe/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(args) -> int``. Domain errors (:class:`~online_cnmfe.errors.OnlineCNMFEError`) become a
one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from online_cnmfe.commands import (
    acquire,
    batch,
    curate,
    dashboard,
    demo,
    evaluate,
    export,
    params,
    process,
    run,
    simulate,
    triggers,
    view,
)
from online_cnmfe.errors import USER_ERRORS
from online_cnmfe.version import __version__

logger = logging.getLogger(__name__)

# Order here is the order in `online-cnmfe --help`. Each module imports its heavy
# dependencies inside its command function, so building the parser stays fast.
COMMAND_MODULES = (
    demo,
    simulate,
    evaluate,
    process,
    batch,
    run,
    acquire,
    dashboard,
    view,
    curate,
    triggers,
    export,
    params,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="online-cnmfe",
        description=(
            "Real-time cell extraction for 1-photon miniscope calcium imaging. "
            "Run `online-cnmfe COMMAND --help` for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"online-cnmfe {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="how much to log on stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The parser of the (sub)command named in ``args``: its usage is the one to print."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = None if sub is None else getattr(args, sub.dest, None)
        if chosen is None or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report it with the usage of the subcommand, not the top-level one
        _innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        sys.stderr.write(f"online-cnmfe {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"online-cnmfe {args.command}: interrupted\n")
        return 130
