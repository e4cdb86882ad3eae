"""``online-cnmfe curate RESULTS``: accept or reject neurons; compute and list quality metrics."""

from __future__ import annotations

import argparse
import logging
import math
import sys

logger = logging.getLogger(__name__)

SORTABLE = ("neuron_id", "snr", "pnr", "spatial_corr", "size_px", "peak_dff", "event_rate_hz")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="accept or reject neurons of a results file; list their quality metrics",
        description=(
            "Label neurons accepted or rejected in RESULTS.h5 (stored in its curation/ group, "
            "with a log of every change). Every export (online-cnmfe export) and the evaluator "
            "leave rejected neurons out. IDS are neuron ids separated by commas or spaces, "
            "with ranges: 3,7,12-15. --list prints each neuron's quality metrics (SNR, PNR, "
            "spatial correlation, size, peak dF/F, event rate) and label. The review window "
            "(online-cnmfe view) does the same with the A / R keys."
        ),
        epilog=(
            "examples: online-cnmfe curate s.h5 --reject 4,9-11 --accept 2 ; "
            "online-cnmfe curate s.h5 --reject-below snr=2 --reject-below spatial_corr=0.3 ; "
            "online-cnmfe curate s.h5 --list --sort snr"
        ),
    )
    parser.add_argument("results", metavar="RESULTS.h5", help="a finished results file")
    parser.add_argument("--accept", action="append", default=[], metavar="IDS")
    parser.add_argument("--reject", action="append", default=[], metavar="IDS")
    parser.add_argument(
        "--clear", action="append", default=[], metavar="IDS", help="unlabel these neurons"
    )
    parser.add_argument(
        "--reject-below",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help=f"reject every unlabelled neuron whose METRIC is below VALUE (or NaN); METRIC is "
        f"one of {', '.join(SORTABLE[1:])} (repeatable)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="recompute the quality metrics (files written before they existed, or after a crash)",
    )
    parser.add_argument("--list", action="store_true", help="print the neuron table")
    parser.add_argument(
        "--sort",
        default="neuron_id",
        choices=SORTABLE,
        help="column to sort the --list table by (descending, except neuron_id)",
    )
    parser.set_defaults(func=run)


def _thresholds(items: list[str]) -> dict[str, float]:
    from online_cnmfe.errors import ConfigError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in SORTABLE[1:]:
            raise ConfigError(
                f"--reject-below expects METRIC=VALUE with METRIC one of "
                f"{', '.join(SORTABLE[1:])}; got {item!r}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--reject-below {item}: {value!r} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    import h5py

    from online_cnmfe.errors import ConfigError, StateFileError
    from online_cnmfe.results import curation
    from online_cnmfe.results.quality import read_quality, write_quality

    try:
        accept = curation.parse_ids(args.accept)
        reject = curation.parse_ids(args.reject)
        clear = curation.parse_ids(args.clear)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    limits = _thresholds(args.reject_below)
    if args.metrics:
        write_quality(args.results)
    table = None
    if limits or args.list:
        try:
            with h5py.File(args.results, "r") as f:
                table = read_quality(f)
        except OSError as exc:
            raise StateFileError(f"cannot read {args.results}: {exc}") from None
        if table is None:
            table = write_quality(args.results)
    if limits:
        labels = curation.read_curation(args.results)
        below = [
            int(row["neuron_id"])
            for row in table
            if int(row["neuron_id"]) not in labels
            and any(not (float(row[m]) >= v) for m, v in limits.items())
        ]
        reject = sorted(set(reject) | (set(below) - set(accept) - set(clear)))
        sys.stdout.write(f"{len(below)} unlabelled neuron(s) below the thresholds\n")
    if accept or reject or clear:
        try:
            labels = curation.set_labels(args.results, accept=accept, reject=reject, clear=clear)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        n_rej = len(curation.rejected(labels))
        sys.stdout.write(
            f"{args.results}: {n_rej} rejected, {len(labels) - n_rej} accepted "
            f"(changed: {len(accept)} accepted, {len(reject)} rejected, {len(clear)} cleared)\n"
        )
    if args.list:
        _print_table(table, curation.read_curation(args.results), args.sort)
    if not (accept or reject or clear or args.list or args.metrics or limits):
        raise ConfigError("nothing to do: give --accept, --reject, --clear, --reject-below, "
                          "--metrics or --list")  # fmt: skip
    return 0


def _print_table(table, labels: dict[int, int], sort: str) -> None:
    import numpy as np

    from online_cnmfe.results.curation import LABEL_NAMES

    key = table[sort].astype(np.float64)
    order = np.argsort(key if sort == "neuron_id" else -np.nan_to_num(key, nan=-np.inf))
    cols = ("neuron_id", "snr", "pnr", "spatial_corr", "size_px", "peak_dff", "event_rate_hz")
    sys.stdout.write(" ".join(f"{c:>13}" for c in cols) + "        label\n")
    for i in order.tolist():
        row = table[i]
        cells = []
        for c in cols:
            v = row[c]
            if c in ("neuron_id", "size_px"):
                cells.append(f"{int(v):>13d}")
            else:
                cells.append(f"{'–':>13}" if not math.isfinite(float(v)) else f"{float(v):>13.3g}")
        label = LABEL_NAMES[labels.get(int(row["neuron_id"]), 0)]
        sys.stdout.write(" ".join(cells) + f" {label:>12}\n")
