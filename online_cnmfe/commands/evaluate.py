"""``online-cnmfe evaluate RESULT TRUTH.h5``: score an extraction against simulated ground truth."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def _frames(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        value = (int(start) if start else 0, int(stop))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP frame numbers (e.g. 500:2000), got {text!r}"
        ) from None
    if not sep or value[0] < 0 or value[1] <= value[0]:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP with 0 <= START < STOP (e.g. 500:2000), got {text!r}"
        )
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a results file against a simulation's ground truth",
        description=(
            "Match the result's footprints to the true ones (binarised footprints, IoU cost, "
            "Hungarian assignment with a centroid distance cap, as CaImAn's register_ROIs) and "
            "report recall, precision, F1, trace correlation of matched pairs, footprint "
            "similarity, and their dependence on each neuron's peak-to-noise ratio (PNR). "
            "Prints a table, then one JSON line with every number."
        ),
        epilog="example: online-cnmfe evaluate results.h5 sim.h5 --frames 500:2000",
    )
    parser.add_argument("result", metavar="RESULT", help="results file (docs/results-format.md)")
    parser.add_argument(
        "truth", metavar="TRUTH.h5", help="simulation file (docs/simulation-format.md)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        help="binarise each footprint at this fraction of its maximum (default 0.2)",
    )
    parser.add_argument(
        "--min-iou", type=float, default=0.3, help="smallest IoU of a matched pair (default 0.3)"
    )
    parser.add_argument(
        "--max-dist",
        type=float,
        default=10.0,
        help="largest centroid distance of a matched pair in pixels (default 10)",
    )
    parser.add_argument(
        "--frames",
        type=_frames,
        default=None,
        metavar="START:STOP",
        help="score traces only on truth frames START..STOP-1 (e.g. the online part)",
    )
    parser.add_argument(
        "--pnr-bins",
        type=float,
        nargs="+",
        default=(5.0, 10.0),
        metavar="EDGE",
        help="PNR bin edges of the breakdown (default: 5 10)",
    )
    parser.add_argument(
        "--min-pnr",
        type=float,
        default=5.0,
        help="threshold of the high-PNR metrics (default 5)",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--include-rejected",
        action="store_true",
        help="also score the neurons rejected by curation (left out by default)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError
    from online_cnmfe.evaluation.metrics import (
        EvaluationParams,
        evaluate_files,
        format_report,
        metrics_json,
    )

    try:
        params = EvaluationParams(
            threshold=args.threshold,
            min_iou=args.min_iou,
            max_dist_px=args.max_dist,
            frames=args.frames,
            pnr_bins=tuple(args.pnr_bins),
            min_pnr=args.min_pnr,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid evaluation option: {exc}") from exc
    metrics = evaluate_files(args.result, args.truth, params, args.include_rejected)
    if not args.json_only:
        sys.stdout.write(f"{args.result} vs {args.truth}\n{format_report(metrics)}\n")
    sys.stdout.write(metrics_json(metrics) + "\n")
    return 0
