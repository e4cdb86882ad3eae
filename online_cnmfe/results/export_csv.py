"""Export a results file as a folder of CSV tables (spreadsheets, R, MATLAB's readtable).

Files (rejected neurons left out unless asked):

- ``C.csv``, ``C_raw.csv``, ``S.csv``, ``dff.csv``: one row per frame, columns ``frame_index``,
  ``time_s`` (acquisition time from the first frame), then one column per neuron named
  ``n<id>``; empty cells where a neuron did not exist yet (before its birth);
- ``neurons.csv``: one row per neuron: ``neuron_id``, ``label``, ``birth_frame``,
  ``centroid_row``, ``centroid_col`` (pixels) and the quality metrics (:mod:`.quality`);
- ``events.csv``: frame_index, kind (drop, reject, born, merged, removed), neuron_ids, detail;
- ``triggers.csv`` (sessions with closed-loop rules): rule, frame_index, time_s, value, age_ms,
  neuron_ids.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from online_cnmfe.results.export import Curated, curated
from online_cnmfe.results.quality import QUALITY_COLUMNS
from online_cnmfe.results.reader import read_trigger_log
from online_cnmfe.results.session import ResultsSession

logger = logging.getLogger(__name__)

LABELS = {1: "accepted", -1: "rejected", 0: "unlabelled"}
BLOCK_ROWS = 4096  # frames formatted at a time


def _trace_table(path: Path, cur: Curated, values: np.ndarray, t0: float) -> None:
    res = cur.res
    fi = res.frames["frame_index"]
    t = (res.frames["t_acq_ms"].astype(np.float64) - t0) / 1000.0
    birth = res.birth_frame[cur.keep]
    header = ["frame_index", "time_s", *[f"n{i}" for i in cur.ids.tolist()]]
    with path.open("w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for c0 in range(0, fi.shape[0], BLOCK_ROWS):
            c1 = min(fi.shape[0], c0 + BLOCK_ROWS)
            block = values[:, c0:c1].T.astype(np.float64)
            block[np.arange(c0, c1)[:, None] < birth[None, :]] = np.nan
            lines = []
            for j in range(c1 - c0):
                cells = ["" if not np.isfinite(v) else f"{v:.6g}" for v in block[j]]
                lines.append(f"{fi[c0 + j]},{t[c0 + j]:.4f}," + ",".join(cells))
            fh.write("\n".join(lines) + ("\n" if lines else ""))


def _centroids(cur: Curated) -> np.ndarray:
    A, w = cur.A, cur.res.dims[1]
    out = np.full((A.shape[1], 2), np.nan)
    for k in range(A.shape[1]):
        sl = slice(A.indptr[k], A.indptr[k + 1])
        wsum = A.data[sl].sum()
        if wsum > 0:
            r, c = np.divmod(A.indices[sl].astype(np.int64), w)
            out[k] = [(r * A.data[sl]).sum() / wsum, (c * A.data[sl]).sum() / wsum]
    return out


def _neurons(path: Path, cur: Curated) -> None:
    cent = _centroids(cur)
    metrics = [c for c in QUALITY_COLUMNS if c not in ("neuron_id", "birth_frame")]
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["neuron_id", "label", "birth_frame", "centroid_row", "centroid_col",
                      *(metrics if cur.quality is not None else [])])  # fmt: skip
        for k, nid in enumerate(cur.ids.tolist()):
            row = [nid, LABELS[cur.labels.get(int(nid), 0)], int(cur.res.birth_frame[cur.keep][k]),
                   f"{cent[k, 0]:.2f}", f"{cent[k, 1]:.2f}"]  # fmt: skip
            if cur.quality is not None:
                row += [f"{float(cur.quality[m][k]):.6g}" for m in metrics]
            out.writerow(row)


def _events(path: Path, results: Path) -> int:
    with ResultsSession(results) as s:
        events = s.events
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["frame_index", "kind", "neuron_ids", "detail"])
        for e in events:
            out.writerow([e.frame_index, e.kind, " ".join(map(str, e.neuron_ids)), e.detail])
    return len(events)


def _triggers(path: Path, results: Path, t0: float) -> int:
    log = read_trigger_log(results)
    if log is None:
        return 0
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["rule", "frame_index", "time_s", "value", "age_ms", "neuron_ids"])
        for rule, row, ids in zip(log["rule"], log["fired"], log["neuron_ids"], strict=True):
            out.writerow([
                rule, int(row["frame_index"]), f"{(float(row['t_acq_ms']) - t0) / 1000:.4f}",
                f"{float(row['value']):.6g}", f"{float(row['age_ms']):.4g}",
                " ".join(str(int(i)) for i in ids),
            ])  # fmt: skip
    return len(log["fired"])


def export_csv(results: str | Path, folder: str | Path, include_rejected: bool = False) -> Path:
    """Write the CSV tables of a results file into ``folder`` (created; module docstring).

    Returns
    -------
    Path
        The folder.
    """
    results, folder = Path(results), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cur = curated(results, include_rejected)
    t = cur.res.frames["t_acq_ms"].astype(np.float64)
    t0 = float(t[np.isfinite(t)][0]) if np.isfinite(t).any() else 0.0
    tables = [("C", cur.traces("C")), ("C_raw", cur.traces("C_raw")), ("S", cur.traces("S"))]
    dff = cur.dff()
    if dff is not None:
        tables.append(("dff", dff))
    for name, values in tables:
        _trace_table(folder / f"{name}.csv", cur, values, t0)
    _neurons(folder / "neurons.csv", cur)
    n_events = _events(folder / "events.csv", results)
    n_triggers = _triggers(folder / "triggers.csv", results, t0)
    logger.info(
        "wrote %s: %s, neurons, %d events, %d triggers (%d neurons, %d frames)",
        folder, ", ".join(n for n, _ in tables), n_events, n_triggers, len(cur.keep),
        cur.res.n_frames,
    )  # fmt: skip
    return folder
