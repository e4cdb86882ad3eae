"""``--resume``: neuron ids never reused, checkpoints that do not match refused in one line.

Unit level: :func:`plan_resume` on real results files and checkpoints. End to end: a real
engine SIGKILLed before its first checkpoint, then resumed (the model re-initialises; its ids
must start past every id of the file), and a damaged checkpoint given to ``run --resume``.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from online_cnmfe import OnlineCNMFE
from online_cnmfe.engine.id_reservation import (
    RESERVE_BLOCK,
    IdReservation,
    read_reservation,
    reservation_path,
)
from online_cnmfe.engine.resume import CHECKPOINT_FILE_ID, checkpoint_path, plan_resume
from online_cnmfe.errors import StateFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file
from online_cnmfe.results.reader import read_identity, read_results
from online_cnmfe.results.writer import ResultsWriter
from tests.online_cnmfe.engine_harness import (
    REPO,
    endpoints,
    engine_log,
    env,
    running_after,
    start_acquire,
    start_engine,
    stop,
)
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

DIMS = (64, 64)


@pytest.fixture(scope="module")
def model() -> OnlineCNMFE:
    movie = make_movie(n_frames=170, seed=2)
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}}
    )
    m = OnlineCNMFE(params)
    m.initialize_from(truth_init(movie, 150), movie.frames[:150])
    for frame in movie.frames[150:]:
        m.process_frame(frame)
    return m


def _results_file(path, ids_per_frame, removed_after=None) -> str:
    """A results file whose rows hold ``ids_per_frame`` ids; returns its file_id."""
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}) as w:
        for t, ids in enumerate(ids_per_frame):
            ids = np.asarray(ids, np.int64)
            x = ids.astype(np.float32)
            w.append_frame(FrameResult(t, ids, x, x, x), {"frame_index": t})
        final = np.asarray(removed_after if removed_after is not None else ids_per_frame[-1])
        A = np.zeros((DIMS[0] * DIMS[1], final.shape[0]), np.float32)
        A[np.arange(final.shape[0]), np.arange(final.shape[0])] = 1
        w.set_footprints(A, final, 1)
        return w.file_id


def test_no_results_file_is_a_new_session(tmp_path):
    plan = plan_resume(tmp_path / "new.h5")
    assert plan.model is None and plan.first_free_id == 0


def test_no_checkpoint_reinitialises_with_ids_past_the_file(tmp_path, caplog):
    out = tmp_path / "s.h5"
    # 57 was born then removed: after the clean close it lives only in removed/
    _results_file(out, [[1, 2, 57]] * 5 + [[1, 2]] * 5, removed_after=[1, 2])
    assert read_identity(out)["max_neuron_id"] == 57
    plan = plan_resume(out)
    assert plan.model is None and plan.first_free_id == 58
    assert "identities do not carry over" in caplog.text


def test_checkpoint_of_this_file_continues_with_ids_past_the_file(tmp_path, model):
    out = tmp_path / "s.h5"
    file_id = _results_file(out, [[0, 1, 2, 40]] * 3)  # 40: born after the checkpoint
    state_file.save_online_model(checkpoint_path(out), model, {CHECKPOINT_FILE_ID: file_id})
    assert model.state.next_id <= 40
    plan = plan_resume(out)
    assert plan.model is not None and plan.first_free_id == 41
    assert plan.model.state.next_id == 41  # the next birth cannot take 40's row
    np.testing.assert_array_equal(plan.model.neuron_ids, model.neuron_ids)


def test_ids_published_after_the_last_flush_are_never_reused(tmp_path, model):
    """Fault injection for a kill between a birth's publication and the file's flush: the
    file's largest id is 40, but messages carried ids up to 1500 (reserved up to 2000)."""
    out = tmp_path / "s.h5"
    file_id = _results_file(out, [[0, 1, 2, 40]] * 3)
    reservation = IdReservation(out)
    reservation.cover(np.array([0, 1, 2, 1500]))  # what the killed engine published
    assert read_reservation(out) == reservation.first_free > 1500
    plan = plan_resume(out)  # no checkpoint: re-initialise with ids past the reservation
    assert plan.model is None and plan.first_free_id == read_reservation(out)
    state_file.save_online_model(checkpoint_path(out), model, {CHECKPOINT_FILE_ID: file_id})
    plan = plan_resume(out)
    assert plan.model.state.next_id == read_reservation(out)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": "x", "first_free": 3}',
        "[]",
        '{"format": "online-cnmfe-id-reservation", "first_free": -2}',
        '{"format": "online-cnmfe-id-reservation", "first_free": "9"}',
        '{"format": "online-cnmfe-id-reservation", "first_free": 9223372036854775807}',
    ],
)
def test_a_damaged_id_reservation_is_a_one_line_error(tmp_path, content):
    out = tmp_path / "s.h5"
    _results_file(out, [[0, 1]] * 2)
    reservation_path(out).write_text(content)
    with pytest.raises(StateFileError) as err:
        plan_resume(out)
    msg = str(err.value)
    assert "\n" not in msg and "delete it to resume anyway" in msg and "s.ids.json" in msg


def test_a_reservation_is_written_once_per_block_and_atomically(tmp_path):
    out = tmp_path / "s.h5"
    assert read_reservation(out) == 0  # none yet
    res = IdReservation(out)
    res.cover(np.array([], np.int64))
    assert res.written == 0 and not reservation_path(out).exists()
    res.cover(np.arange(300))
    assert res.written == 1 and read_reservation(out) == 300 + RESERVE_BLOCK
    res.cover(np.arange(300 + RESERVE_BLOCK))  # all below the mark: no write
    assert res.written == 1
    res.cover(np.array([300 + RESERVE_BLOCK]))
    assert res.written == 2 and read_reservation(out) == 301 + 2 * RESERVE_BLOCK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ids.json"]  # no .tmp left
    IdReservation(None).cover(np.arange(5))  # no results file: nothing to reserve


def test_an_unwritable_reservation_is_logged_and_publishing_goes_on(tmp_path, caplog):
    """Fault injection: the results folder is gone (the store reports that failure itself)."""
    res = IdReservation(tmp_path / "gone" / "s.h5")
    res.cover(np.arange(3))  # no exception: the traces still go out
    assert "cannot write the neuron id reservation" in caplog.text and res.path is None
    res.cover(np.arange(5000))  # given up: no retry per frame
    assert caplog.text.count("cannot write the neuron id reservation") == 1


def test_fresh_model_ids_are_renumbered(model):
    fresh = OnlineCNMFE.from_state(model.params, copy.deepcopy(model.state))
    before = fresh.neuron_ids.copy()
    fresh.reserve_neuron_ids(100, renumber=True)
    np.testing.assert_array_equal(fresh.neuron_ids, before + 100)
    assert fresh.state.next_id == int(before.max()) + 101
    with pytest.raises(ValueError, match="first_free"):
        fresh.reserve_neuron_ids(-1)


@pytest.mark.parametrize("problem", ["other file", "other dims", "truncated", "orphan"])
def test_a_checkpoint_that_does_not_match_is_a_one_line_error(tmp_path, model, problem):
    out = tmp_path / "s.h5"
    ckpt = checkpoint_path(out)
    if problem == "orphan":
        state_file.save_online_model(ckpt, model)
        match = "does not"
    else:
        file_id = _results_file(out, [[0, 1]] * 3)
        if problem == "other file":
            state_file.save_online_model(ckpt, model, {CHECKPOINT_FILE_ID: "0" * 32})
            match = "written for another results file"
        elif problem == "other dims":
            with ResultsWriter(out, (32, 32), CNMFEParams(), 20.0, {}) as w:
                file_id = w.file_id
            state_file.save_online_model(ckpt, model, {CHECKPOINT_FILE_ID: file_id})
            match = "has frames of"
        else:
            state_file.save_online_model(ckpt, model, {CHECKPOINT_FILE_ID: file_id})
            ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
            match = "cannot open model file"
    with pytest.raises(StateFileError, match=match) as info:
        plan_resume(out)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- end to end
def test_run_resume_with_a_truncated_checkpoint_is_one_line(tmp_path, model):
    out = tmp_path / "session.h5"
    file_id = _results_file(out, [[0, 1]] * 3)
    ckpt = checkpoint_path(out)
    state_file.save_online_model(ckpt, model, {CHECKPOINT_FILE_ID: file_id})
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    frames, results = endpoints(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "online_cnmfe", "run", "--frames", frames, "--results", results,
         "--out", str(out), "--resume"],
        capture_output=True, text=True, timeout=60, env=env(), cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "session.state.h5" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(400)
def test_sigkill_before_the_first_checkpoint_then_resume_never_reuses_an_id(tmp_path, client):
    settings = ("engine.checkpoint_period_s=1000",)  # no checkpoint before the kill
    engine = start_engine(tmp_path, "--set", settings[0])
    acquire = start_acquire(tmp_path, n_frames=None, rate="200")
    try:
        client.wait_for(running_after(80), 90, "80 processed frames", engine)
        client.poll(0.5)  # two flush periods
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=20)
        assert not checkpoint_path(tmp_path / "session.h5").exists()
        killed = read_results(tmp_path / "session.h5")
        old_max = int(killed.trace_neuron_ids.max())
        while client.poll(0.5):  # the killed engine's messages still queued in the socket
            pass  # (a loaded machine decodes them slower than 200 Hz came in)
        seen = [int(i) for m in client.messages["traces"] for i in m.arrays["neuron_ids"]]
        client.messages.clear()
        engine = start_engine(tmp_path, "--resume", "--set", settings[0])
        # 30 traces, some of them with neurons (the fresh initialisation of the resumed
        # session may find none at first on this small movie: then births bring them)
        client.wait_for(
            lambda c: len(c.messages["traces"]) >= 30
            and any(len(m.arrays["neuron_ids"]) for m in c.messages["traces"]),
            180, "resumed traces with neurons", engine,
        )  # fmt: skip
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        stop(acquire)
    resumed_ids = {int(i) for m in client.messages["traces"] for i in m.arrays["neuron_ids"]}
    assert resumed_ids and min(resumed_ids) > old_max, (sorted(resumed_ids), old_max)
    # nor an id a subscriber saw that the file never got (born after its last flush)
    assert min(resumed_ids) > max(seen, default=-1), (sorted(resumed_ids), max(seen))
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames > killed.n_frames
    n0 = killed.n_frames
    for row, nid in enumerate(res.trace_neuron_ids):
        if nid <= old_max:  # an old cell's row gets nothing from the new model's cells
            assert not res.C_all[row, n0:].any(), f"id {nid} reused"
            before = int(np.flatnonzero(killed.trace_neuron_ids == nid)[0])
            np.testing.assert_array_equal(res.C_all[row, :n0], killed.C_all[before])
    assert "identities do not carry over" in engine_log(tmp_path)
    assert os.path.exists(tmp_path / "session.h5")
