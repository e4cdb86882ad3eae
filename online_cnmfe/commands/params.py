"""``online-cnmfe params``: write a commented default config, or check a config file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from online_cnmfe.commands.options import add_set_option

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "params",
        help="write a commented default config file (--dump) or check one (--check)",
        description=(
            "--dump writes every parameter with its default and a comment saying what it does "
            "(TOML, one [stage] table per stage). The [data] keys (frame rate, neuron size, "
            "indicator decay, pixel size) are active; the others are commented out and follow "
            "the software's defaults until you uncomment them. --check loads a config file "
            "(plus --set overrides) and prints the parameters that differ from the defaults, "
            "or the first error."
        ),
        epilog=(
            "example: online-cnmfe params --dump my_params.toml, edit it, then "
            "online-cnmfe process movie.avi --out results.h5 --config my_params.toml"
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--dump",
        nargs="?",
        const="-",
        metavar="FILE.toml",
        help="write the commented default config to FILE.toml (default: standard output)",
    )
    what.add_argument("--check", metavar="CONFIG", help="validate a TOML/JSON config file")
    add_set_option(
        parser,
        "with --dump: write these values instead of the defaults; with --check: apply them "
        "after the file (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dump FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError
    from online_cnmfe.params import CNMFEParams, load_params
    from online_cnmfe.params.dump import default_config_text

    if args.check is not None:
        params = load_params(args.check, args.overrides)
        changed = _differences(params.to_dict(), CNMFEParams().to_dict())
        sys.stdout.write(f"{args.check}: valid; {len(changed)} value(s) differ from the defaults\n")
        for key, value in changed:
            sys.stdout.write(f"  {key} = {value!r}\n")
        return 0
    text = default_config_text(load_params(None, args.overrides))
    if args.dump == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.dump)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of {out} does not exist")
    out.write_text(text)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def _differences(values: dict, defaults: dict) -> list[tuple[str, object]]:
    return [
        (f"{stage}.{key}", value)
        for stage, keys in values.items()
        for key, value in keys.items()
        if defaults[stage][key] != value
    ]
