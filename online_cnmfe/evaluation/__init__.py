"""Scoring a result against ground truth (footprint matching, F1, trace correlation).

:mod:`.metrics` computes, :mod:`.files` reads results and truth files and formats reports.
"""

from online_cnmfe.evaluation.files import format_report, metrics_json, read_result, read_truth
from online_cnmfe.evaluation.metrics import (
    estimate_from_arrays,
    evaluate,
    evaluate_files,
    match_footprints,
    truth_from_simulator,
)

__all__ = [
    "estimate_from_arrays",
    "evaluate",
    "evaluate_files",
    "format_report",
    "match_footprints",
    "metrics_json",
    "read_result",
    "read_truth",
    "truth_from_simulator",
]
