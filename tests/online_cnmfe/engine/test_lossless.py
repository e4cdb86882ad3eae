"""No frame lost without a record: stopping while catching up or before the initialisation,
the raw recording, frames before the engine connected, and the stream's frame rate.

Real engine subprocesses, real sockets and files; every test checks that each frame index is
accounted for exactly once (``coverage_problems``).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from acquisition.sources import open_source
from online_cnmfe.results.bookkeeping import coverage_problems
from online_cnmfe.results.reader import read_results
from tests.online_cnmfe.engine_harness import (
    ENGINE_SETTINGS,
    TestPublisher,
    endpoints,
    engine_log,
    env,
    start_engine,
    stop,
)

pytestmark = pytest.mark.timeout(180)


def accounted(res) -> None:
    assert coverage_problems(res.frames["frame_index"], res.frames["session"], res.lost) == []


def lost_rows(res, kind: str) -> list[tuple[int, int, str]]:
    return [
        (int(r["first"]), int(r["last"]), r["reason"].decode())
        for r in res.lost
        if r["kind"] == kind.encode()
    ]


def test_sigterm_while_catching_up_records_and_keeps_what_was_not_processed(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(
        tmp_path, "--set", "engine.queue_frames=4", "--set", "engine.drain_timeout_s=0"
    )
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(400):
            pub.send_frame(i)
        client.wait_for(
            lambda c: c.last_status().get("n_spooled", 0) > 50
            and c.last_status()["n_frames_received"] == 400,
            60, "all frames received, some in the spool", engine,
        )  # fmt: skip
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    assert res.attrs["complete"]
    accounted(res)
    unprocessed = lost_rows(res, "unprocessed")
    n_left = sum(b - a + 1 for a, b, _ in unprocessed)
    assert n_left > 0 and res.n_frames + n_left == 400
    assert res.attrs["n_frames_unprocessed"] == n_left
    assert all("engine stopped (SIGTERM) still queued" in r for _, _, r in unprocessed)
    assert all("session.unprocessed.h5" in r for _, _, r in unprocessed)
    with h5py.File(tmp_path / "session.unprocessed.h5", "r") as f:
        index = f["frame_index"][:]
        np.testing.assert_array_equal(f["movie"][:], pub.movie[index])
    assert sorted(index.tolist()) == [i for a, b, _ in unprocessed for i in range(a, b + 1)]
    assert not (tmp_path / "session.spool").exists()
    eos = client.messages["eos"][-1].header
    assert eos["n_unprocessed"] == n_left and f"{n_left} unprocessed" in eos["summary"]
    assert f"{n_left} unprocessed" in engine_log(tmp_path)


def test_a_stream_shorter_than_init_frames_is_initialised_on_what_arrived(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)  # init.init_frames=60
    try:
        pub.wait_for_subscriber()
        pub.send_start(frame_rate_hz=30.0)
        for i in range(40):
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames == 40 and res.attrs["complete"] and res.lost.size == 0
    assert res.params["init"]["init_frames"] == 40
    assert "fewer than init.init_frames=60: initialising on those" in engine_log(tmp_path)
    # the rate came from the stream (nobody set data.frame_rate_hz)
    assert res.attrs["frame_rate_hz"] == 30.0 and res.params["data"]["frame_rate_hz"] == 30.0
    assert res.sessions["frame_rate_hz"].tolist() == [30.0]


def test_too_few_frames_exit_4_and_the_frames_are_kept(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(10):
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=60) == 4, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    log = engine_log(tmp_path)
    assert "no model was fitted: the stream stopped (eos) after 10 frame(s)" in log
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames == 0 and res.attrs["n_frames_unprocessed"] == 10
    assert lost_rows(res, "unprocessed")[0][:2] == (0, 9)
    assert "before the model was initialised" in lost_rows(res, "unprocessed")[0][2]
    with h5py.File(tmp_path / "session.unprocessed.h5", "r") as f:
        np.testing.assert_array_equal(f["movie"][:], pub.movie[:10])
        assert f["movie"].attrs["frame_rate_hz"] == 20.0
    assert client.messages["eos"][-1].header["n_frames_received"] == 10


def test_record_raw_keeps_every_frame_received_and_a_wrong_rate_is_a_warning(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(
        tmp_path, "--set", "engine.record_raw=true", "--set", "data.frame_rate_hz=20"
    )
    sent = [i for i in range(150) if i not in range(70, 75)]  # 5 missing from the source
    try:
        pub.wait_for_subscriber()
        pub.send_start(frame_rate_hz=30.0)
        for i in sent:
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    with h5py.File(tmp_path / "session.raw.h5", "r") as f:
        assert f["frame_index"][:].tolist() == sent
        np.testing.assert_array_equal(f["movie"][:], pub.movie[sent])
        assert f["movie"].attrs["frame_rate_hz"] == 30.0
        assert f.attrs["format"] == "online-cnmfe-raw"
    with open_source(tmp_path / "session.raw.h5") as src:  # replayable as it was received
        got = list(src)
        assert src.info.frame_rate_hz == 30.0
    assert [f.frame_index for f in got] == sent
    assert [f.t_acq_ms for f in got] == [50.0 * i for i in sent]
    res = read_results(tmp_path / "session.h5")
    accounted(res)
    assert lost_rows(res, "dropped") == [
        (70, 74, "missing from the source (frame_index jumps from 69 to 75)")
    ]
    assert res.attrs["frame_rate_hz"] == 20.0  # the user's setting wins, with a warning
    assert "the stream declares 30 Hz but data.frame_rate_hz=20 Hz" in engine_log(tmp_path)


def test_frames_sent_before_the_engine_connected_are_recorded_as_dropped(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    pub.send_start()
    for i in range(30):  # nobody listens yet: these never reach the engine
        pub.send_frame(i)
    engine = start_engine(tmp_path)
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(30, 150):
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    accounted(res)
    np.testing.assert_array_equal(res.frames["frame_index"], np.arange(30, 150))
    ((first, last, reason),) = lost_rows(res, "dropped")
    assert (first, last) == (0, 29) and "sent before the first frame the engine received" in reason
    np.testing.assert_array_equal(res.dropped, [[0, 29]])
    assert res.attrs["n_frames_dropped"] == 30


def test_sigterm_during_initialisation_with_enough_frames_fits_them(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    settings = tuple(s for s in ENGINE_SETTINGS if not s.startswith("init.init_frames"))
    engine = start_engine(tmp_path, settings=(*settings, "init.init_frames=300"))
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(50):
            pub.send_frame(i)
        client.wait_for(lambda c: c.last_status().get("init_progress", 0) >= 50 / 300, 30,
                        "50 frames buffered", engine)  # fmt: skip
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames == 50 and res.lost.size == 0 and res.attrs["complete"]


def test_a_miniscope_replay_with_a_missing_chunk_is_stored_with_the_gap(tmp_path, client):
    from tests.acquisition.test_sources_miniscope import write_miniscope_session

    movie = np.clip(TestPublisher.make_movie(3, n=200) / 16, 0, 255).astype(np.uint8)
    dev = write_miniscope_session(tmp_path / "rec", movie, frames_per_file=50)
    (dev / "2.avi").unlink()  # frames 100-149 are gone
    engine = start_engine(tmp_path)
    frames, _ = endpoints(tmp_path)
    acquire = subprocess.Popen(
        [sys.executable, "-m", "online_cnmfe", "acquire", "replay", str(tmp_path / "rec"),
         "--endpoint", frames, "--rate", "max", "--quiet"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert engine.wait(timeout=120) == 0, engine_log(tmp_path)
        _, err = acquire.communicate(timeout=60)
        assert acquire.returncode == 0, err
    finally:
        stop(engine)
        stop(acquire)
    assert "50 frame(s) missing from the recording (100-149: 2.avi missing)" in err
    res = read_results(tmp_path / "session.h5")
    accounted(res)
    np.testing.assert_array_equal(res.frames["frame_index"], np.r_[0:100, 150:200])
    np.testing.assert_array_equal(res.frames["t_acq_ms"], 50.0 * np.r_[0:100, 150:200] + 3.0)
    assert lost_rows(res, "dropped") == [
        (100, 149, "missing from the source (frame_index jumps from 99 to 150)")
    ]
    assert res.attrs["frame_rate_hz"] == 20.0  # the folder's metaData.json "20FPS"


def test_a_resumed_session_that_fits_nothing_keeps_the_earlier_file(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    try:
        engine = start_engine(tmp_path)
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(100):
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
        (tmp_path / "session.state.h5").unlink()  # no checkpoint: the model starts over
        pub.close()
        pub = TestPublisher(endpoints(tmp_path)[0])  # a restarted acquisition
        engine = start_engine(tmp_path, "--resume")
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(10):  # too few to initialise
            pub.send_frame(100 + i)
        pub.send_eos()
        assert engine.wait(timeout=60) == 4, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames == 100 and res.attrs["complete"]  # the first session is still there
    assert lost_rows(res, "unprocessed")[0][:2] == (100, 109)
    assert res.sessions.shape == (2,)


def test_a_full_spool_drops_and_records_every_frame_it_could_not_keep(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path, "--set", "engine.queue_frames=4",
                          "--set", "engine.spool_max_mb=0.25")  # fmt: skip  # ~30 frames
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(400):  # all at once, while the model initialises
            pub.send_frame(i)
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    accounted(res)
    dropped = lost_rows(res, "dropped")
    n = sum(b - a + 1 for a, b, _ in dropped)
    assert n > 0 and res.n_frames + n == 400 and res.attrs["n_frames_dropped"] == n
    assert all("engine.spool_max_mb" in reason for _, _, reason in dropped)
