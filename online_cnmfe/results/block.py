"""The results writer's in-memory block of per-frame values, written to the file in one go,
and appending rows to a resizable dataset."""

from __future__ import annotations

import h5py
import numpy as np

from online_cnmfe.results.layout import FRAME_FIELDS, TRACE_NAMES


class FrameBlock:
    """In-memory buffer of per-frame values, written to the file in one block."""

    def __init__(self, capacity: int, n_rows: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.traces = {
            name: np.zeros((max(n_rows, 8), capacity), np.float32) for name in TRACE_NAMES
        }
        self.meta = {name: np.zeros(capacity, dtype) for name, dtype in FRAME_FIELDS.items()}

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


def append_rows(ds: h5py.Dataset, rows: np.ndarray) -> None:
    """Append ``rows`` to a resizable dataset along its first axis."""
    n = ds.shape[0]
    ds.resize((n + rows.shape[0], *ds.shape[1:]))
    ds[n:] = rows
