"""Reading a results file back, including one left by a killed writer (SWMR mode).

:func:`read_results` aligns the trace rows (every neuron ever present) with the footprint
columns (the neurons present at the end); removed neurons stay available in ``*_all``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from online_cnmfe.errors import StateFileError
from online_cnmfe.results.layout import (
    FORMAT,
    FRAME_FIELDS,
    MOTION_FIELDS,
    TRACE_NAMES,
    open_for_reading,
)
from online_cnmfe.results.triggers_table import read_triggers

logger = logging.getLogger(__name__)


@dataclass
class Results:
    """Contents of a results file (see :func:`read_results`).

    ``C``, ``S``, ``C_raw`` and ``birth_frame`` are aligned with the footprint columns
    (``neuron_ids``); ``*_all`` and ``trace_neuron_ids`` keep every neuron ever present.
    ``motion_shifts`` (T, 2) and ``motion_quality`` (T,) are the motion correction of each
    frame (NaN where none was measured; sign: docs/results-format.md).
    """

    dims: tuple[int, int]
    A: scipy.sparse.csc_array
    neuron_ids: np.ndarray
    C: np.ndarray
    S: np.ndarray
    C_raw: np.ndarray
    birth_frame: np.ndarray
    trace_neuron_ids: np.ndarray
    C_all: np.ndarray
    S_all: np.ndarray
    C_raw_all: np.ndarray
    b0: np.ndarray
    frames: dict[str, np.ndarray]
    dropped: np.ndarray
    rejected: list[tuple[int, str]]
    params: dict[str, Any]
    input: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    flagged: list[tuple[int, str]] = field(default_factory=list)
    motion_shifts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    motion_quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def n_frames(self) -> int:
        return int(self.frames["frame_index"].shape[0])


def read_results(path: str | Path) -> Results:
    """Read a results file, including one left by a killed writer (opened in SWMR mode).

    Raises
    ------
    StateFileError
        If the file is missing, not a results file or unreadable.
    """
    path = Path(path)
    with open_for_reading(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise StateFileError(f"{path} is not an online-cnmfe results file (no format attr)")
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        dims = tuple(int(x) for x in f.attrs["dims"])
        frames = {name: f[f"frames/{name}"][:] for name in FRAME_FIELDS}
        n = min([int(f.attrs.get("n_frames", 10**18))] + [v.shape[0] for v in frames.values()])
        frames = {k: v[:n] for k, v in frames.items()}
        traces = {name: f[f"traces/{name}"][:, :n] for name in TRACE_NAMES}
        row_ids = f["neurons/neuron_ids"][:]
        birth = f["neurons/birth_frame"][:]
        k_rows = min(row_ids.shape[0], traces["C"].shape[0])
        fp = f["footprints"]
        ids = fp["neuron_ids"][:]
        indptr = fp["indptr"][:]
        data, indices = fp["data"][:], fp["indices"][:]
        if indptr.shape[0] != ids.shape[0] + 1 or indptr[-1] != data.shape[0]:
            logger.warning("%s: footprints were being rewritten at the crash; ignoring them", path)
            ids, indptr = ids[:0], indptr[:1]
        A = scipy.sparse.csc_array(
            (data, indices, indptr), shape=(dims[0] * dims[1], ids.shape[0]), dtype=np.float32
        )
        if "removed" in f:  # a cleanly closed file keeps removed neurons apart
            gone = f["removed"]
            row_ids = np.concatenate([row_ids[:k_rows], gone["neuron_ids"][:]])
            birth = np.concatenate([birth[:k_rows], gone["birth_frame"][:]])
            for name in TRACE_NAMES:
                traces[name] = np.concatenate([traces[name][:k_rows], gone[name][:, :n]])
            k_rows = row_ids.shape[0]
        b0 = f["background/b0"][:]
        dropped = f["frames/dropped"][:]
        rejected = [(int(i), r.decode("utf-8", "replace")) for i, r in f["frames/rejected"][:]]
        motion = _motion(f, n)
        flagged = [
            (int(i), r.decode("utf-8", "replace"))
            for i, r in (f["frames/flagged"][:] if "flagged" in f["frames"] else ())
        ]
    row_of = {int(nid): r for r, nid in enumerate(row_ids[:k_rows].tolist())}
    sel = np.array([row_of.get(int(nid), -1) for nid in ids], np.int64)
    aligned = {}
    for name, values in traces.items():
        out = np.zeros((ids.shape[0], n), np.float32)
        ok = sel >= 0
        out[ok] = values[sel[ok]]
        aligned[name] = out
    birth_aligned = np.where(sel >= 0, birth[np.maximum(sel, 0)] if birth.size else 0, -1)
    return Results(
        dims=dims,
        A=A,
        neuron_ids=ids,
        C=aligned["C"],
        S=aligned["S"],
        C_raw=aligned["C_raw"],
        birth_frame=birth_aligned.astype(np.int64),
        trace_neuron_ids=row_ids[:k_rows],
        C_all=traces["C"][:k_rows],
        S_all=traces["S"][:k_rows],
        C_raw_all=traces["C_raw"][:k_rows],
        b0=b0,
        frames=frames,
        dropped=dropped,
        rejected=rejected,
        params=json.loads(attrs.get("params", "{}")),
        input=json.loads(attrs.get("input", "{}")),
        attrs=attrs,
        flagged=flagged,
        motion_shifts=motion["shifts"],
        motion_quality=motion["quality"],
    )


def _motion(f, n: int) -> dict[str, np.ndarray]:
    """motion/shifts and motion/quality of the first n frames (NaN where absent)."""
    out = {}
    for name, tail in MOTION_FIELDS.items():
        values = np.full((n, *tail), np.nan, np.float32)
        if "motion" in f and name in f["motion"]:
            got = f["motion"][name][:n]
            values[: got.shape[0]] = got
        out[name] = values
    return out


def read_trigger_log(path: str | Path) -> dict[str, Any] | None:
    """The closed-loop ``triggers/`` group of a results file (see :mod:`.triggers_table`),
    or None when the session had no trigger rules."""
    with open_for_reading(Path(path)) as f:
        return read_triggers(f["triggers"]) if "triggers" in f else None
