"""The results writer's in-memory side: per-frame values buffered, then written in blocks.

:class:`Block` holds the traces and bookkeeping of up to ``capacity`` frames between two
writes; :func:`frame_values` checks one frame's bookkeeping against the file's dtypes before
anything is buffered; the rest are small HDF5 helpers of :mod:`.writer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from online_cnmfe.results.layout import FRAME_FIELDS, REJECT_DTYPE, TRACE_NAMES
from online_cnmfe.results.motion_table import MotionBlock


def utf8(value: str) -> bytes:
    return value.encode("utf-8", "replace")[: REJECT_DTYPE["reason"].itemsize]


class Block:
    """In-memory buffer of per-frame values, written to the file in one block."""

    def __init__(self, capacity: int, n_rows: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.traces = {
            name: np.zeros((max(n_rows, 8), capacity), np.float32) for name in TRACE_NAMES
        }
        self.meta = {name: np.zeros(capacity, dtype) for name, dtype in FRAME_FIELDS.items()}
        self.motion = MotionBlock(capacity)  # motion/shifts and motion/quality

    def ensure_rows(self, n_rows: int) -> None:
        have = self.traces["C"].shape[0]
        if n_rows > have:
            grow = max(n_rows, 2 * have)
            for name, buf in self.traces.items():
                new = np.zeros((grow, self.capacity), np.float32)
                new[:have] = buf
                self.traces[name] = new

    def clear(self) -> None:
        for buf in self.traces.values():
            buf[:, : self.n] = 0.0
        self.n = 0


def frame_values(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta``'s per-frame bookkeeping in the file's dtypes; ValueError if a value does not fit."""
    daq = meta.get("daq_frame")
    raw = {
        "frame_index": meta["frame_index"],
        "seq": meta.get("seq", -1),
        "daq_frame": -1 if daq is None else daq,
        "t_acq_ms": meta.get("t_acq_ms", np.nan),
        "latency_ms": meta.get("latency_ms", np.nan),
    }
    out = {}
    for name, value in raw.items():
        try:
            out[name] = FRAME_FIELDS[name](value)
        except (OverflowError, TypeError, ValueError):
            raise ValueError(
                f"frame {raw['frame_index']!r}: {name} = {value!r} does not fit the results "
                f"file's {np.dtype(FRAME_FIELDS[name]).name}"
            ) from None
    return out


def append_rows(ds: h5py.Dataset, rows: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize((n + rows.shape[0], *ds.shape[1:]))
    ds[n:] = rows


def opens_normally(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False
