"""Miniscope timing files: ``timeStamps.csv`` (DAQ-QT v1/v2), legacy ``timestamp.dat``, the
16-bit DAQ frame counter and the ``frameRate`` strings of ``metaData.json``."""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.errors import SourceError

logger = logging.getLogger(__name__)

DAQ_MODULUS = 65536


def parse_frame_rate(value: Any) -> float | None:
    """Parse a Miniscope ``frameRate`` (``"20FPS"``, ``"20 FPS"``, ``20``) into Hz, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        match = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*(fps|hz)?\s*$", value, re.IGNORECASE)
        if match and float(match.group(1)) > 0:
            return float(match.group(1))
    return None


@dataclass(frozen=True, slots=True)
class Timestamps:
    """Per-frame timing of a recording.

    Attributes
    ----------
    frame_number : ndarray of int64
    t_ms : ndarray of float64
    daq_raw : ndarray of int64 or None
        The DAQ counter as written (16-bit, -1 = unknown), v2 files only.
    version : int
        1 (three columns), 2 (with DAQ Frame Number) or 0 (legacy timestamp.dat).
    """

    frame_number: np.ndarray
    t_ms: np.ndarray
    daq_raw: np.ndarray | None
    version: int


def read_timestamps_csv(path: Path) -> Timestamps:
    """Read a DAQ-QT ``timeStamps.csv`` (v1 or v2 layout).

    Raises
    ------
    SourceError
        If the header is not a known layout or a row is not numeric (naming the row).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise SourceError(f"{path}: empty timestamps file")
    header = [h.strip().lower() for h in rows[0]]
    if header[:3] != ["frame number", "time stamp (ms)", "buffer index"]:
        raise SourceError(
            f"{path}: header {rows[0]} is not 'Frame Number,Time Stamp (ms),Buffer Index"
            "[,DAQ Frame Number]'"
        )
    has_daq = len(header) >= 4 and header[3] == "daq frame number"
    ncol = 4 if has_daq else 3
    data = np.zeros((len(rows) - 1, ncol), dtype=np.float64)
    for i, row in enumerate(rows[1:]):
        try:
            data[i] = [float(x) for x in row[:ncol]]
        except (ValueError, TypeError):
            if i == len(rows) - 2 and len(row) < ncol:  # a truncated last line: ignore it
                data = data[:i]
                break
            raise SourceError(f"{path}: row {i + 2} {row!r} is not {ncol} numbers") from None
    return Timestamps(
        frame_number=data[:, 0].astype(np.int64),
        t_ms=data[:, 1],
        daq_raw=data[:, 3].astype(np.int64) if has_daq else None,
        version=2 if has_daq else 1,
    )


def read_legacy_timestamps(path: Path, n_video_frames: int | None) -> Timestamps:
    """Read a legacy ``timestamp.dat`` and keep the miniscope camera's rows.

    The miniscope camera is the ``camNum`` whose row count equals ``n_video_frames``; when
    none or several match, the lowest ``camNum`` is used and a warning logged.
    """
    path = Path(path)
    try:
        table = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise SourceError(
            f"{path}: not a tab-separated camNum/frameNum/sysClock table ({exc})"
        ) from None
    if table.shape[1] < 3:
        raise SourceError(f"{path}: expected columns camNum, frameNum, sysClock, buffer")
    cams = np.unique(table[:, 0]).astype(int)
    counts = {c: int(np.sum(table[:, 0] == c)) for c in cams}
    matching = [c for c in cams if counts[c] == n_video_frames]
    cam = matching[0] if len(matching) == 1 else int(cams[0])
    if len(matching) != 1 and len(cams) > 1:
        logger.warning("%s: cameras %s; using camNum %d for the miniscope", path, counts, cam)
    rows = table[table[:, 0] == cam]
    return Timestamps(rows[:, 1].astype(np.int64), rows[:, 2].astype(np.float64), None, 0)


def unwrap_daq_counter(raw: np.ndarray) -> tuple[np.ndarray, list[list[int]], int]:
    """Unwrap a 16-bit DAQ frame counter and find lost frames.

    Parameters
    ----------
    raw : ndarray of int64, shape (n,)
        Counter values as written; ``-1`` marks a failed read.

    Returns
    -------
    unwrapped : ndarray of int64, shape (n,)
        Monotonic counter (``-1`` where unknown).
    lost_ranges : list of [row, n_lost]
        For each jump: the row (0-based) after which ``n_lost`` hardware frames are missing.
    n_resets : int
        Counter re-seeds (backward jumps by more than half the range).
    """
    raw = np.asarray(raw, dtype=np.int64)
    out = np.full(raw.shape, -1, dtype=np.int64)
    valid = np.flatnonzero(raw >= 0)
    lost: list[list[int]] = []
    if valid.size == 0:
        return out, lost, 0
    values = raw[valid]
    step = np.mod(np.diff(values), DAQ_MODULUS)  # counter advance between valid rows
    expected = np.diff(valid)  # rows between them
    resets = step > DAQ_MODULUS // 2
    step = np.where(resets, expected, step)  # continue counting across a re-seed
    out[valid] = values[0] + np.concatenate(([0], np.cumsum(step)))
    gaps = np.flatnonzero(step > expected)
    lost = [[int(valid[g]), int(step[g] - expected[g])] for g in gaps]
    return out, lost, int(resets.sum())
