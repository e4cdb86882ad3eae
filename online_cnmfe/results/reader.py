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
from online_cnmfe.results import checks
from online_cnmfe.results.bookkeeping import LOST_DTYPE, SESSION_DTYPE
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
    ``lost`` and ``sessions`` are the ``bookkeeping/`` tables (empty for files written before
    they existed); the totals are in ``attrs`` (``n_frames_dropped``, …).
    ``flagged`` lists the frames that did not update the model, with the reason (see
    ``FrameResult.flag``); the model's plausibility warning, if any, is
    ``attrs["sanity_warning"]``.
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
    lost: np.ndarray = field(default_factory=lambda: np.zeros(0, LOST_DTYPE))
    sessions: np.ndarray = field(default_factory=lambda: np.zeros(0, SESSION_DTYPE))
    flagged: list[tuple[int, str]] = field(default_factory=list)
    motion_shifts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    motion_quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def n_frames(self) -> int:
        return int(self.frames["frame_index"].shape[0])


def read_results(path: str | Path) -> Results:
    """Read a results file, including one left by a killed writer (opened in SWMR mode).

    Every shape and index the file claims is checked before it is used
    (:mod:`.checks`): a damaged or crafted file is an error, never a crash.

    Raises
    ------
    StateFileError
        If the file is missing, not a results file, unreadable, or inconsistent (one line
        naming the dataset at fault).
    """
    path = Path(path)
    with open_for_reading(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise StateFileError(f"{path} is not an online-cnmfe results file (no format attr)")
        try:
            parts = _read_parts(f, path)
        except StateFileError:
            raise
        except (KeyError, OSError, ValueError, TypeError, IndexError) as exc:
            raise checks.damaged(path, f"{type(exc).__name__}: {exc}") from exc
    return _aligned(parts)


def _read_parts(f, path: Path) -> dict[str, Any]:
    attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
    dims = checks.dims_of(f, path)
    n_pixels = dims[0] * dims[1]
    frames = {
        name: checks.dataset(f, f"frames/{name}", 1, path)[:]
        for name in FRAME_FIELDS
        if name != "session" or "session" in f["frames"]
    }
    if "session" not in frames:  # written before sessions were stored
        frames["session"] = np.zeros(frames["frame_index"].shape[0], np.int32)
    n_attr = attrs.get("n_frames", 10**18)
    if not isinstance(n_attr, int | np.integer) or n_attr < 0:
        raise checks.damaged(path, f"root attribute 'n_frames' is {n_attr!r}")
    n = min([int(n_attr)] + [v.shape[0] for v in frames.values()])
    frames = {k: v[:n] for k, v in frames.items()}
    traces = {name: checks.dataset(f, f"traces/{name}", 2, path)[:, :n] for name in TRACE_NAMES}
    row_ids = checks.dataset(f, "neurons/neuron_ids", 1, path)[:]
    birth = checks.dataset(f, "neurons/birth_frame", 1, path)[:]
    # A writer killed between two resizes leaves these one block apart: use the common rows.
    k_rows = min([row_ids.shape[0], birth.shape[0]] + [t.shape[0] for t in traces.values()])
    row_ids, birth = row_ids[:k_rows], birth[:k_rows]
    traces = {k: v[:k_rows] for k, v in traces.items()}
    ids = checks.dataset(f, "footprints/neuron_ids", 1, path)[:]
    indptr = checks.dataset(f, "footprints/indptr", 1, path)[:]
    data = checks.dataset(f, "footprints/data", 1, path)[:]
    indices = checks.dataset(f, "footprints/indices", 1, path)[:]
    if not checks.footprint_arrays(data, indices, indptr, ids.shape[0], n_pixels, path):
        logger.warning("%s: footprints were being rewritten at the crash; ignoring them", path)
        ids, indptr, data, indices = ids[:0], np.zeros(1, np.int64), data[:0], indices[:0]
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise checks.damaged(path, "footprints/neuron_ids repeats an id")
    A = scipy.sparse.csc_array(
        (data, indices, indptr), shape=(n_pixels, ids.shape[0]), dtype=np.float32
    )
    if "removed" in f:  # a cleanly closed file keeps removed neurons apart
        gone = {name: checks.dataset(f, f"removed/{name}", 1, path)[:] for name in
                ("neuron_ids", "birth_frame")}  # fmt: skip
        for name in TRACE_NAMES:
            gone[name] = checks.dataset(f, f"removed/{name}", 2, path)[:, :n]
            if gone[name].shape[1] != n:
                raise checks.damaged(path, f"removed/{name} has fewer than {n} frames")
        checks.same_length(path, **{f"removed__{k}": v for k, v in gone.items()})
        row_ids = np.concatenate([row_ids, gone["neuron_ids"]])
        birth = np.concatenate([birth, gone["birth_frame"]])
        for name in TRACE_NAMES:
            traces[name] = np.concatenate([traces[name], gone[name]])
    b0 = checks.dataset(f, "background/b0", 2, path)[:]
    if b0.shape != dims:
        raise checks.damaged(path, f"background/b0 has shape {b0.shape}; the dims are {dims}")
    dropped = checks.dataset(f, "frames/dropped", 2, path)[:]
    rejected = [
        (int(i), r.decode("utf-8", "replace"))
        for i, r in checks.dataset(f, "frames/rejected", 1, path)[:][["frame_index", "reason"]]
    ]
    flagged = []
    if "flagged" in f["frames"]:  # frames that got traces but did not update the model
        flagged = [
            (int(i), r.decode("utf-8", "replace"))
            for i, r in checks.dataset(f, "frames/flagged", 1, path)[:][["frame_index", "reason"]]
        ]
    book = f["bookkeeping"] if "bookkeeping" in f else {}
    lost = book["lost"][:] if "lost" in book else np.zeros(0, LOST_DTYPE)
    sessions = book["sessions"][:] if "sessions" in book else np.zeros(0, SESSION_DTYPE)
    return dict(
        dims=dims, A=A, ids=ids, traces=traces, row_ids=row_ids, birth=birth, n=n, b0=b0,
        frames=frames, dropped=dropped, rejected=rejected, flagged=flagged, attrs=attrs,
        lost=lost, sessions=sessions, motion=_motion(f, n, path),
    )  # fmt: skip


def _aligned(p: dict[str, Any]) -> Results:
    ids, traces, row_ids, birth, n = p["ids"], p["traces"], p["row_ids"], p["birth"], p["n"]
    row_of = {int(nid): r for r, nid in enumerate(row_ids.tolist())}
    sel = np.array([row_of.get(int(nid), -1) for nid in ids], np.int64)
    ok = sel >= 0
    aligned = {}
    for name, values in traces.items():
        out = np.zeros((ids.shape[0], n), np.float32)
        out[ok] = values[sel[ok]]
        aligned[name] = out
    birth_aligned = np.full(ids.shape[0], -1, np.int64)
    birth_aligned[ok] = birth[sel[ok]]
    attrs = p["attrs"]
    return Results(
        dims=p["dims"],
        A=p["A"],
        neuron_ids=ids,
        C=aligned["C"],
        S=aligned["S"],
        C_raw=aligned["C_raw"],
        birth_frame=birth_aligned,
        trace_neuron_ids=row_ids,
        C_all=traces["C"],
        S_all=traces["S"],
        C_raw_all=traces["C_raw"],
        b0=p["b0"],
        frames=p["frames"],
        dropped=p["dropped"],
        rejected=p["rejected"],
        flagged=p["flagged"],
        params=_json(attrs.get("params", "{}")),
        input=_json(attrs.get("input", "{}")),
        attrs=attrs,
        lost=p["lost"],
        sessions=p["sessions"],
        motion_shifts=p["motion"]["shifts"],
        motion_quality=p["motion"]["quality"],
    )


def _motion(f, n: int, path: Path) -> dict[str, np.ndarray]:
    """motion/shifts and motion/quality of the first n frames (NaN where absent)."""
    out = {}
    for name, tail in MOTION_FIELDS.items():
        values = np.full((n, *tail), np.nan, np.float32)
        if "motion" in f and name in f["motion"]:
            ds = checks.dataset(f, f"motion/{name}", 1 + len(tail), path)
            if ds.shape[1:] != tail:
                raise checks.damaged(path, f"'motion/{name}' has shape {ds.shape}")
            got = ds[:n]
            values[: got.shape[0]] = got
        out[name] = values
    return out


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_identity(path: str | Path) -> dict[str, Any]:
    """What ``--resume`` needs of a results file without reading its traces.

    Returns
    -------
    dict
        ``file_id`` (str or None for files older than the attribute), ``dims`` (H, W),
        ``max_neuron_id`` (the largest id in rows, footprints or ``removed/``; -1 if none) and
        ``n_frames``.

    Raises
    ------
    StateFileError
        If the file is missing, not a results file or damaged.
    """
    path = Path(path)
    with open_for_reading(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise StateFileError(f"{path} is not an online-cnmfe results file (no format attr)")
        try:
            dims = checks.dims_of(f, path)
            ids = [checks.dataset(f, "neurons/neuron_ids", 1, path)[:],
                   checks.dataset(f, "footprints/neuron_ids", 1, path)[:]]  # fmt: skip
            if "removed" in f:
                ids.append(checks.dataset(f, "removed/neuron_ids", 1, path)[:])
            file_id = f.attrs.get("file_id")
            n_frames = int(f.attrs.get("n_frames", 0))
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise checks.damaged(path, f"{type(exc).__name__}: {exc}") from exc
    all_ids = np.concatenate(ids).astype(np.int64)
    return {
        "file_id": None if file_id is None else str(file_id),
        "dims": dims,
        "max_neuron_id": int(all_ids.max(initial=-1)),
        "n_frames": n_frames,
    }


def read_trigger_log(path: str | Path) -> dict[str, Any] | None:
    """The closed-loop ``triggers/`` group of a results file (see :mod:`.triggers_table`),
    or None when the session had no trigger rules."""
    with open_for_reading(Path(path)) as f:
        return read_triggers(f["triggers"]) if "triggers" in f else None
