"""A small results file with every feature review and exports must handle, written by the real
writer: a neuron removed mid-session, one born late, frames dropped upstream (a frame-index
gap), a frame the model skipped, model events, summary images and the baseline b0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse

from online_cnmfe.model.frame_result import FrameResult, ModelEvent
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.writer import ResultsWriter

DIMS = (16, 32)
N_COLUMNS = 60
DROP = (20, 24)  # frames 20..24 lost upstream: column 20 holds frame 25
SKIPPED_FRAME = 40  # the model skipped it (NaN pixels): its column repeats the values
BORN = 9, 30  # neuron 9 is born at column 30
REMOVED = 5, 45  # neuron 5 disappears after frame index 45 + 5 (column 45)
B0 = 100.0
W7_PIXELS = ((5, 20), (5, 21), (6, 20), (6, 21))
W7 = (0.5, 0.4, 0.3, 0.2)
F0_7 = B0 * sum(W7) / sum(w * w for w in W7)  # (a.b0) / (a.a): the dF/F baseline of neuron 7


def frame_index_of(col: int) -> int:
    return col if col < DROP[0] else col + DROP[1] - DROP[0] + 1


def footprints(ids: list[int]) -> scipy.sparse.csc_array:
    """Neuron 7: a 2x2 block at (5, 20) of weights 0.5, 0.4, 0.3, 0.2 (f0 = F0_7); 9: one
    pixel (10, 3); 5: a 1x3 bar at (2, 2)."""
    A = np.zeros((DIMS[0] * DIMS[1], len(ids)), np.float32)
    for k, nid in enumerate(ids):
        if nid == 7:
            for (r, c), v in zip(W7_PIXELS, W7, strict=True):
                A[r * DIMS[1] + c, k] = v
        elif nid == 9:
            A[10 * DIMS[1] + 3, k] = 1.0
        elif nid == 5:
            A[2 * DIMS[1] + 2 : 2 * DIMS[1] + 5, k] = 1.0
    return scipy.sparse.csc_array(A)


def trace(nid: int, col: int) -> tuple[float, float, float]:
    """(C, S, C_raw) of a neuron at a column: C rises by 1 per column from its base."""
    base = {7: 1.0, 9: 100.0, 5: 50.0}[nid]
    c = base + col
    return c, float(col % 10 == 0), c + (0.5 if col % 2 else -0.5)


def write_session(path: Path, *, pixel_size_um: float | None = 2.0) -> Path:
    params = CNMFEParams().replace(**{"data.pixel_size_um": pixel_size_um})
    with ResultsWriter(path, DIMS, params, 20.0, {"source": "test"}) as w:
        w.set_images(
            {"mean": np.full(DIMS, 3.0), "max": np.full(DIMS, 9.0)}, n_frames=0, source="test"
        )
        w.set_background(np.full(DIMS, B0, np.float32))
        for col in range(N_COLUMNS):
            fi = frame_index_of(col)
            if col == DROP[0]:
                w.record_drop(*DROP)
            ids = [7] + ([5] if col <= REMOVED[1] else []) + ([9] if col >= BORN[1] else [])
            values = np.array([trace(n, col) for n in ids], np.float32).reshape(-1, 3)
            events = ()
            if col == BORN[1]:
                events = (ModelEvent("born", fi, (9,)),)
            elif col == REMOVED[1]:
                events = (ModelEvent("removed", fi, (5,), "silent"),)
            skipped = fi == SKIPPED_FRAME
            w.append_frame(
                FrameResult(
                    frame_index=fi,
                    neuron_ids=np.array(ids, np.int64),
                    C=values[:, 0].copy(),
                    S=values[:, 1].copy(),
                    C_raw=values[:, 2].copy(),
                    skipped=skipped,
                    skip_reason="NaN pixels" if skipped else "",
                    events=events,
                ),
                {"frame_index": fi, "seq": fi, "daq_frame": None, "t_acq_ms": 50.0 * fi,
                 "latency_ms": 1.0},
            )  # fmt: skip
            if col in (0, BORN[1], REMOVED[1] + 1):
                alive = [n for n in (7, 5, 9) if n in ids or (n == 9 and col >= BORN[1])]
                alive = [n for n in alive if not (n == 5 and col > REMOVED[1])]
                w.set_footprints(footprints(alive), np.array(alive, np.int64), col)
    return path
