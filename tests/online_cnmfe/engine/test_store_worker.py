"""The store thread takes frames in batches without stranding any of them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from online_cnmfe.engine import store_worker
from online_cnmfe.engine.store_worker import StoreWorker
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.reader import read_results

pytestmark = pytest.mark.timeout(60)


def _frame(t: int) -> tuple[FrameResult, dict]:
    v = np.full(3, t, np.float32)
    meta = {"frame_index": t, "seq": t, "daq_frame": None, "t_acq_ms": 50.0 * t, "latency_ms": 1}
    return FrameResult(t, np.arange(3), v, v, v), meta


def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return predicate()


def test_frames_below_a_batch_are_stored_by_the_worker_waking_itself(tmp_path):
    worker = StoreWorker(flush_period_s=0.5)
    worker.start()
    worker.submit(
        "open",
        dict(path=tmp_path / "s.h5", dims=(4, 4), params=CNMFEParams(), frame_rate_hz=20.0,
             input_provenance={}),
    )  # fmt: skip
    assert _until(lambda: worker.writer is not None, 5)
    n = store_worker.BATCH_FRAMES - 1  # no wake-up from submit
    for t in range(n):
        worker.submit("frame", *_frame(t))
    assert _until(lambda: worker.n_frames == n, 5 * store_worker.WAKE_S + 1)
    for t in range(n, n + 2 * store_worker.BATCH_FRAMES + 3):  # batches, then a remainder
        worker.submit("frame", *_frame(t))
    worker.close()
    res = read_results(tmp_path / "s.h5")
    total = n + 2 * store_worker.BATCH_FRAMES + 3
    np.testing.assert_array_equal(res.frames["frame_index"], np.arange(total))
    np.testing.assert_allclose(res.frames["t_acq_ms"], 50.0 * np.arange(total))
    assert worker.ok and worker.n_unsaved == 0


class _Recording(StoreWorker):
    """A worker that records the operations it would apply (no file)."""

    def __init__(self, gate) -> None:
        super().__init__(flush_period_s=60.0, between_frames=gate)
        self.applied: list[str] = []

    def _apply(self, op: str, args: tuple) -> None:
        self.applied.append(op)


def test_writes_wait_for_the_model_thread_to_be_between_frames(monkeypatch):
    monkeypatch.setattr(store_worker, "MAX_DEFER_S", 30.0)
    gate = threading.Event()  # clear: a frame is being processed
    worker = _Recording(gate)
    worker.start()
    worker.submit("b0", np.zeros(4, np.float32))  # wakes the worker at once
    time.sleep(0.3)
    assert worker.applied == []  # held back while the frame's critical path runs
    gate.set()  # the frame is done
    assert _until(lambda: worker.applied == ["b0"], 5)
    worker.close()


def test_a_model_thread_that_is_never_idle_does_not_stall_the_writes(monkeypatch):
    monkeypatch.setattr(store_worker, "MAX_DEFER_S", 0.05)
    gate = threading.Event()  # never set: e.g. catching up on a backlog
    worker = _Recording(gate)
    worker.start()
    for t in range(store_worker.BATCH_FRAMES):
        worker.submit("frame", *_frame(t))
    worker.submit("b0", np.zeros(4, np.float32))
    assert _until(lambda: len(worker.applied) == store_worker.BATCH_FRAMES + 1, 10)
    worker.close()
    assert worker.applied[-1] == "b0"
