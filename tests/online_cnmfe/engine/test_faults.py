"""The engine under faults: malformed and wrong-shape messages, publisher restarts, overload."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from acquisition.protocol import FrameMessage, StartMessage, encode_frame, encode_start
from online_cnmfe.engine.id_reservation import read_reservation
from online_cnmfe.results.bookkeeping import coverage_problems
from online_cnmfe.results.reader import read_results
from tests.online_cnmfe.engine_harness import (
    SIZE,
    TestPublisher,
    endpoints,
    engine_log,
    running_after,
    start_acquire,
    start_engine,
    stop,
)

pytestmark = pytest.mark.timeout(180)


def _crafted_frame(pub: TestPublisher, **header) -> list[bytes]:
    """A valid frame message whose JSON header fields are then replaced by ``header``."""
    msg = FrameMessage(
        seq=pub.seq, frame_index=0, daq_frame=None, t_acq_ms=0.0, t_send_ns=time.monotonic_ns(),
        session_id=pub.session_id, source="synthetic", pixels=pub.movie[0],
    )  # fmt: skip
    parts = [bytes(p) for p in encode_frame(msg)]
    parts[1] = json.dumps({**json.loads(parts[1]), **header}).encode()
    return parts


def test_malformed_and_wrong_shape_messages_are_counted_and_skipped(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(100):
            pub.send_frame(i)
        bad = [
            [b"frame", b"{not json"],
            [b"frame", json.dumps({"v": 99, "topic": "frame", "arrays": []}).encode()],
            [b"frame", b'{"v": 1, "topic": "frame", "arrays": [{"name": "pixels", '
             b'"dtype": "uint16", "shape": [64, 64]}]}', b"truncated"],
            [b"eos", b'{"v": 1, "topic": "eos", "arrays": []}'],  # no session_id
            _crafted_frame(pub, seq=2**63),  # used to stop the store thread (int64 overflow)
            _crafted_frame(pub, frame_index=2**63),
        ]  # fmt: skip
        for parts in bad:
            pub.send_raw(parts)
        pub.send_frame(100, np.zeros((32, 48), np.uint16))  # wrong shape
        pub.send_frame(101, np.zeros(SIZE, np.float32))  # wrong dtype
        for i in range(102, 150):
            pub.send_frame(i)
        client.wait_for(running_after(40 + 48), 60, "all valid frames processed", engine)
        pub.send_eos()
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    status = client.last_status()
    assert status["n_malformed"] == len(bad)
    assert status["n_rejected"] == 2
    res = read_results(tmp_path / "session.h5")
    assert sorted(i for i, _ in res.rejected) == [100, 101]
    assert any("(32, 48)" in reason for _, reason in res.rejected)
    np.testing.assert_array_equal(
        res.frames["frame_index"], np.r_[np.arange(100), np.arange(102, 150)]
    )
    kinds = [m.header["kind"] for m in client.messages["event"]]
    assert kinds.count("reject") == 2
    # the file keeps the counts and the fate of every index (100 and 101 rejected)
    assert res.attrs["n_malformed"] == len(bad) and res.attrs["n_frames_rejected"] == 2
    assert coverage_problems(res.frames["frame_index"], res.frames["session"], res.lost) == []


def test_publisher_restart_mid_run_does_not_stop_the_engine(tmp_path, client):
    engine = start_engine(tmp_path)
    first = start_acquire(tmp_path, n_frames=None, rate="200", seed=0)
    second = None
    try:
        client.wait_for(running_after(30), 90, "30 processed frames", engine)
        stop(first)  # killed: no eos
        n_before = client.last_status()["n_frames_processed"]
        second = start_acquire(tmp_path, n_frames=80, rate="max", seed=0)  # new session id
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)  # stops at the 2nd eos
        client.poll(0.5)
    finally:
        stop(engine)
        stop(first)
        if second is not None:
            stop(second)
    restarts = [m for m in client.messages["event"] if m.header["kind"] == "restart"]
    assert len(restarts) == 1
    status = client.last_status()
    assert status["n_restarts"] == 1
    assert status["n_frames_processed"] >= n_before + 80 - 2  # tolerate frames lost in transit
    res = read_results(tmp_path / "session.h5")
    assert res.n_frames == 60 + status["n_frames_processed"]
    fi = res.frames["frame_index"]
    np.testing.assert_array_equal(fi[-80:], np.arange(80))  # the new session starts over
    # the restart is stored: two sessions, and each frame says which one it belongs to
    assert res.attrs["n_restarts"] == 1 and res.sessions.shape == (2,)
    first_row = int(res.sessions["first_row"][1])
    assert first_row == res.n_frames - 80
    np.testing.assert_array_equal(res.frames["session"], np.repeat([0, 1], [first_row, 80]))
    assert res.sessions["session_id"][0] != res.sessions["session_id"][1]
    assert coverage_problems(res.frames["frame_index"], res.frames["session"], res.lost) == []


def test_a_slow_consumer_spools_to_disk_and_catches_up_without_loss(tmp_path, client):
    # A 4-frame memory queue and a lossless max-rate sender: everything sent while the model
    # initialises goes to the disk spool and is processed afterwards; nothing is dropped.
    engine = start_engine(tmp_path, "--set", "engine.queue_frames=4")
    acquire = start_acquire(tmp_path, n_frames=1500, rate="max")
    try:
        client.wait_for(lambda c: c.last_status().get("n_spooled", 0) > 100, 60, "spooling")
        assert (tmp_path / "session.spool").is_dir()
        client.wait_for(lambda c: c.messages["eos"], 120, "the engine's eos", engine)
        assert acquire.wait(timeout=120) == 0
        assert engine.wait(timeout=120) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        stop(acquire)
    res = read_results(tmp_path / "session.h5")
    np.testing.assert_array_equal(res.frames["frame_index"], np.arange(1500))
    assert res.dropped.size == 0 and res.lost.size == 0
    assert res.attrs["n_frames_dropped"] == 0 and res.attrs["complete"]
    assert not (tmp_path / "session.spool").exists()  # deleted at the clean close
    behind = [(m.header["phase"], m.header["behind_s"]) for m in client.messages["status"]]
    assert max(b for _, b in behind) > 0 and behind[-1] == ("stopped", 0), behind
    eos = client.messages["eos"][-1].header
    assert eos["n_frames_received"] == 1500 and eos["n_dropped"] == 0
    assert (
        "1500 frames received; 1500 frames processed (60 by the initialisation), none lost"
        in eos["summary"]
    )


def test_a_full_queue_with_queue_full_drop_records_every_dropped_frame(tmp_path, client):
    engine = start_engine(
        tmp_path, "--set", "engine.queue_frames=4", "--set", "engine.queue_full=drop"
    )
    acquire = start_acquire(tmp_path, n_frames=3000, rate="max")
    try:
        assert acquire.wait(timeout=120) == 0
        assert engine.wait(timeout=120) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        stop(acquire)
    res = read_results(tmp_path / "session.h5")
    n_dropped = int(np.sum(res.dropped[:, 1] - res.dropped[:, 0] + 1)) if res.dropped.size else 0
    assert n_dropped > 0
    assert res.n_frames + n_dropped == 3000
    covered = np.zeros(3000, int)
    covered[res.frames["frame_index"]] += 1
    for first, last in res.dropped:
        covered[first : last + 1] += 1
    np.testing.assert_array_equal(covered, 1)  # every frame exactly once: stored or dropped
    assert coverage_problems(res.frames["frame_index"], res.frames["session"], res.lost) == []
    assert client.last_status()["n_dropped"] == n_dropped == res.attrs["n_frames_dropped"]
    assert all(b"engine queue full" in r for r in res.lost["reason"])
    assert any(m.header["kind"] == "drop" for m in client.messages["event"])


def test_store_failure_is_reported_and_the_engine_keeps_running(tmp_path, client):
    folder = tmp_path / "gone"
    folder.mkdir()
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path, out="gone/session.h5")
    try:
        pub.wait_for_subscriber()
        folder.rmdir()  # the results folder disappears before the file is created
        pub.send_start()
        for i in range(120):
            pub.send_frame(i)
        client.wait_for(running_after(60), 60, "60 processed frames", engine)
        client.wait_for(lambda c: not c.last_status().get("store_ok", True), 10, "store_ok")
        pub.send_eos()
        assert engine.wait(timeout=60) == 3, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    status = client.last_status()
    assert "gone" in status["store_error"] and status["n_frames_processed"] == 60
    assert [m.header["frame_index"] for m in client.messages["traces"]] == list(range(60, 120))
    assert any(m.header["kind"] == "store_error" for m in client.messages["event"])


@pytest.mark.parametrize("policy", ["continue", "reinitialise"])
def test_a_new_session_with_another_frame_size(tmp_path, client, policy):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path, "--set", f"engine.on_restart={policy}")
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(100):
            pub.send_frame(i)
        client.wait_for(running_after(40), 60, "40 processed frames", engine)
        pub.new_session(size=(48, 56))
        pub.send_start()
        for i in range(100):
            pub.send_frame(i)
        if policy == "reinitialise":
            client.wait_for(
                lambda c: c.last_status().get("dims") == [48, 56]
                and c.last_status().get("phase") == "running"
                and c.last_status()["n_frames_processed"] >= 40 + 40,
                60, "the second model running", engine,
            )  # fmt: skip
        else:
            client.wait_for(
                lambda c: c.last_status().get("n_rejected", 0) >= 100, 60, "rejections", engine
            )
        pub.send_eos()
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    assert [m.header["kind"] for m in client.messages["event"]].count("restart") == 1
    first = read_results(tmp_path / "session.h5")
    assert first.dims == SIZE
    if policy == "reinitialise":
        assert first.n_frames == 100 and first.attrs["complete"]
        second = read_results(tmp_path / "session-1.h5")
        assert second.dims == (48, 56) and second.n_frames == 100
        # each file has its own id reservation, past every id published for it
        assert read_reservation(tmp_path / "session-1.h5") > second.trace_neuron_ids.max()
        assert read_reservation(tmp_path / "session.h5") > first.trace_neuron_ids.max()
    else:
        assert first.n_frames == 100
        assert len(first.rejected) == 100
        assert all("(48, 56)" in reason for _, reason in first.rejected)


def test_idle_exit_stops_cleanly_when_the_eos_never_comes(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path, "--idle-exit", "1.5")
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(90):
            pub.send_frame(i)
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)  # no eos was sent
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    assert client.messages["eos"][-1].header["reason"] == "idle"
    res = read_results(tmp_path / "session.h5")
    assert res.attrs["complete"] and res.n_frames == 90


def test_corrupt_frames_are_flagged_counted_published_and_stored(tmp_path, client):
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)
    rng = np.random.default_rng(0)
    try:
        pub.wait_for_subscriber()
        pub.send_start()
        for i in range(120):
            pixels = pub.movie[i].copy()
            if i in (5, 75):  # missing lines: one initialisation frame, one online frame
                pixels[10:30] = 0
            if i == 90:  # a wireless glitch: a band of random values
                pixels[20:40] = rng.integers(0, 4000, (20, SIZE[1]))
            pub.send_frame(i, pixels)
        client.wait_for(running_after(60), 90, "all online frames processed", engine)
        pub.send_eos()
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    status = client.last_status()
    assert status["n_flagged"] == 3 and status["n_rejected"] == 0
    assert "sanity_warning" in status
    flags = {m.header["frame_index"]: m.header["flag"] for m in client.messages["traces"]}
    assert flags[75].startswith("corrupt: ") and flags[90].startswith("corrupt: ")
    assert flags[76] is None and sum(v is not None for v in flags.values()) == 2
    res = read_results(tmp_path / "session.h5")
    assert [i for i, _ in res.flagged] == [5, 75, 90]
    assert res.n_frames == 120  # flagged frames keep their (predicted) traces


def test_huge_pixel_values_are_rejected_and_never_poison_the_traces(tmp_path, client):
    # A float32 stream (1e30 is a valid float32): one wild frame while the engine buffers
    # its initialisation frames, two after; each recorded as rejected with the reason.
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)
    try:
        _send_float_frames(pub, 150, {30: (slice(None), 1e30), 100: (5, 1e30), 101: (5, -1e30)})
        client.wait_for(running_after(150 - 61 - 2), 90, "the valid frames processed", engine)
        pub.send_eos()
        assert engine.wait(timeout=60) == 0, engine_log(tmp_path)
        client.poll(0.5)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    reasons = dict(res.rejected)
    assert sorted(reasons) == [30, 100, 101], res.rejected
    assert all("outside" in r for r in reasons.values()), reasons
    assert client.last_status()["n_rejected"] == 3
    assert np.isfinite(res.C_all).all() and np.isfinite(res.b0).all()
    assert res.b0.max() < 2 * float(pub.movie.max())
    # left out of the initialisation; the two later ones keep a (repeated) trace column
    assert 30 not in res.frames["frame_index"] and res.n_frames == 149


def test_a_wild_frame_in_a_stream_shorter_than_init_frames_stays_out_of_the_fit(tmp_path, client):
    # The stream stops before init.init_frames: the early initialisation screens its buffer
    # too (fails without the screen in StoppingMixin._early_init: the fit sees 1e30).
    pub = TestPublisher(endpoints(tmp_path)[0])
    engine = start_engine(tmp_path)  # init.init_frames=60
    try:
        _send_float_frames(pub, 40, {25: (slice(None), 1e30)})
        pub.send_eos()
        assert engine.wait(timeout=90) == 0, engine_log(tmp_path)
    finally:
        stop(engine)
        pub.close()
    res = read_results(tmp_path / "session.h5")
    assert dict(res.rejected).keys() == {25} and "outside" in dict(res.rejected)[25]
    assert res.params["init"]["init_frames"] == 39 and res.n_frames == 39
    assert np.isfinite(res.C_all).all() and res.b0.max() < 2 * float(pub.movie.max())


def _send_float_frames(pub, n: int, wild: dict) -> None:
    """A float32 stream of ``n`` frames (1e30 is a valid float32); ``wild[i] = (rows, value)``
    sets ``pixels[rows, rows]`` of frame ``i`` (``slice(None)``: the whole frame)."""
    pub.movie = pub.movie.astype(np.float32)
    pub.wait_for_subscriber()
    start = StartMessage(pub.session_id, "synthetic", 20.0, SIZE, "float32", "t", None, {})
    pub.send_raw(encode_start(start))
    for i in range(n):
        pixels = pub.movie[i % len(pub.movie)].copy()
        if i in wild:
            where, value = wild[i]
            pixels[where, where] = value
        pub.send_frame(i, pixels)
