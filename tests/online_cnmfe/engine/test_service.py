"""The engine end to end: real acquisition and engine subprocesses, real sockets and files."""

from __future__ import annotations

import signal

import h5py
import numpy as np
import pytest

from online_cnmfe.results.reader import read_results
from online_cnmfe.results.stream import footprints_from_message
from tests.online_cnmfe.engine_harness import (
    ResultsClient,
    endpoints,
    engine_log,
    running_after,
    start_acquire,
    start_engine,
    stop,
)

pytestmark = pytest.mark.timeout(180)


def test_acquisition_to_engine_to_subscriber_matches_the_file(tmp_path, client):
    engine = start_engine(tmp_path, "--set", "engine.queue_full=wait")
    acquire = None
    try:
        client.wait_for(lambda c: c.messages["ready"], 60, "the ready handshake", engine)
        acquire = start_acquire(tmp_path, n_frames=300)
        assert engine.wait(timeout=120) == 0, engine_log(tmp_path)
        assert acquire.wait(timeout=30) == 0
        client.poll(1.0)
    finally:
        stop(engine)
        if acquire is not None:
            stop(acquire)
    res = read_results(tmp_path / "session.h5")
    assert "froze" in engine_log(tmp_path)  # no full GC pass over the libraries per frame
    assert res.attrs["complete"]
    assert res.n_frames == 300  # lossless: 60 init frames (batch fit) + 240 online
    np.testing.assert_array_equal(res.frames["frame_index"], np.arange(300))
    assert res.dropped.size == 0 and not res.rejected
    assert res.A.shape[1] > 0

    traces = client.messages["traces"]
    assert [m.header["frame_index"] for m in traces] == list(range(60, 300))
    for m in traces[::37]:  # what the subscriber saw is what was stored
        t = m.header["frame_index"]
        row = {int(n): i for i, n in enumerate(res.neuron_ids)}
        idx = [row[int(n)] for n in m.arrays["neuron_ids"]]
        np.testing.assert_array_equal(res.C[idx, t], m.arrays["C"])
        np.testing.assert_array_equal(res.S[idx, t], m.arrays["S"])
        np.testing.assert_array_equal(res.C_raw[idx, t], m.arrays["C_raw"])
        assert m.header["age_ms"] >= 0
    A, ids = footprints_from_message(client.messages["footprints"][-1])
    np.testing.assert_array_equal(ids, res.neuron_ids)
    assert (A != res.A).nnz == 0
    final = client.last_status()
    assert final["phase"] == "stopped" and final["n_frames_processed"] == 240
    assert final["store_ok"] and final["n_dropped"] == 0 and final["n_neurons"] == len(ids)
    layers = {m.header["layer"] for m in client.messages["image"]}
    assert {"raw", "denoised", "residual", "background_subtracted", "max_projection"} <= layers
    assert client.messages["eos"][-1].header["reason"] == "eos"
    assert client.messages["eos"][-1].header["n_frames_processed"] == 240
    with h5py.File(tmp_path / "session.h5", "r") as f:  # summary images and quality table
        assert f["images/max"].attrs["set"] and f["images/max"].attrs["n_frames"] == 300
        assert f["images/corr_pnr"].attrs["n_frames"] == 60
        assert np.isfinite(f["images/mean"][()]).all() and np.isfinite(f["images/corr"][()]).all()
        assert f["quality"]["neuron_id"].tolist() == res.neuron_ids.tolist()


def test_sigint_stops_cleanly_with_a_complete_file(tmp_path, client):
    engine = start_engine(tmp_path)
    acquire = start_acquire(tmp_path, n_frames=None, rate="200")
    late = None
    try:
        client.wait_for(running_after(40), 90, "40 processed frames", engine)
        late = ResultsClient(endpoints(tmp_path)[1])  # joins mid-run: gets the full picture
        late.wait_for(
            lambda c: c.messages["footprints"]
            and {"corr_pnr", "max_projection"} <= {m.header["layer"] for m in c.messages["image"]}
            and c.messages["ready"],
            10, "footprints and summary images for a late joiner", engine,
        )  # fmt: skip
        engine.send_signal(signal.SIGINT)
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        stop(acquire)
        if late is not None:
            late.close()
    assert client.messages["eos"][-1].header["reason"] == "SIGINT"
    res = read_results(tmp_path / "session.h5")
    assert res.attrs["complete"]
    n_done = client.messages["eos"][-1].header["n_frames_processed"]
    assert res.n_frames == 60 + n_done
    assert (tmp_path / "session.state.h5").exists()  # final checkpoint for --resume


def test_sigkill_then_resume_continues_the_same_file(tmp_path, client):
    engine = start_engine(tmp_path, "--set", "engine.checkpoint_period_s=0.3")
    acquire = start_acquire(tmp_path, n_frames=None, rate="200")
    try:
        client.wait_for(running_after(100), 90, "100 processed frames", engine)
        client.wait_for(lambda c: (tmp_path / "session.state.h5").exists(), 30, "a checkpoint")
        client.poll(0.5)  # at least two flush periods
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=20)
        killed = read_results(tmp_path / "session.h5")  # readable right after SIGKILL
        assert not killed.attrs["complete"]
        assert killed.n_frames >= 60 + 50
        fi = killed.frames["frame_index"]
        missing = np.setdiff1d(np.arange(fi[-1] + 1), fi)  # e.g. the queue overflowed in init
        dropped = np.concatenate([np.arange(a, b + 1) for a, b in killed.dropped] + [[]])
        assert np.all(np.diff(fi) > 0) and np.isin(missing, dropped).all()

        client.messages.clear()
        engine = start_engine(tmp_path, "--resume")
        client.wait_for(
            lambda c: c.messages["traces"] and len(c.messages["traces"]) >= 50, 90, "traces", engine
        )
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        stop(acquire)
    assert "resuming from checkpoint" in engine_log(tmp_path)
    res = read_results(tmp_path / "session.h5")
    assert res.attrs["complete"]
    assert res.n_frames > killed.n_frames
    fi = res.frames["frame_index"]
    np.testing.assert_array_equal(fi[: killed.n_frames], killed.frames["frame_index"])
    assert np.all(np.diff(fi) > 0)  # the frames missed while down leave a gap, not a repeat
    assert (tmp_path / "session.h5.crashed").exists()


def test_the_stored_baseline_is_the_one_at_the_start_not_a_later_state():
    # The store thread writes b0 when it gets to it; the model thread had handed it a view of
    # the live baseline, which the next frames update: the file's b0 (and the f0 of every
    # neuron's quality, computed from it) depended on the threads' timing.
    from types import SimpleNamespace

    from online_cnmfe.engine import heap
    from online_cnmfe.engine.service import Engine

    b0 = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = SimpleNamespace(b0=b0, neuron_ids=np.arange(2))
    engine = Engine.__new__(Engine)
    submitted = []
    engine.runner = SimpleNamespace(model=model, dims=(3, 4), params=None)
    engine.config = SimpleNamespace(out=None, resume=False)
    engine.images, engine._session = None, 0
    engine.store = SimpleNamespace(submit=lambda op, *args: submitted.append((op, args)))
    engine._send_footprints = engine._republish = lambda: None
    try:
        engine._on_initialised(resume=True)
    finally:
        heap.thaw()
    b0 += 100.0  # the frames after the hand-over move the baseline
    stored = dict(submitted)["b0"][0]
    np.testing.assert_array_equal(stored, np.arange(12, dtype=np.float32).reshape(3, 4))
