"""`online-cnmfe acquire` as a real subprocess: round trip, Ctrl-C/SIGTERM, one-line errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from acquisition.sources import open_source
from acquisition.subscriber import FrameSubscriber
from acquisition.transforms import FrameTransform
from tests.acquisition.test_sources_miniscope import make_movie, write_miniscope_session
from tests.conftest import REPO

TIMEOUT_MS = 20000


def launch(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "online_cnmfe", "acquire", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collect(sub: FrameSubscriber) -> list:
    frames = []
    while (msg := sub.recv(TIMEOUT_MS)) is not None:
        frames.append(msg)
    return frames


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"publisher did not exit; stderr:\n{err}")
    return proc.returncode, err


def test_replay_miniscope_folder_round_trip(tmp_path):
    movie = make_movie(10, seed=21)
    daq = [10, 11, 12, 13, 15, 16, 17, 18, 19, 20]
    write_miniscope_session(tmp_path / "rec", movie, daq=daq)
    endpoint = f"ipc://{tmp_path}/frames"
    with FrameSubscriber(endpoint) as sub:
        proc = launch(
            "replay", str(tmp_path / "rec"), "--endpoint", endpoint, "--rate", "max",
            "--wait-for-subscriber", "60", "--quiet",
        )  # fmt: skip
        frames = collect(sub)
        code, err = finish(proc)
    assert code == 0, err
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)
    assert [f.t_acq_ms for f in frames] == [50.0 * i + 3.0 for i in range(10)]
    assert sub.eos.reason == "complete" and sub.eos.n_sent == 10
    assert sub.session.frame_rate_hz == 20.0 and sub.stats.n_daq_lost == 1
    assert "read 10 frames, delivered 10 to subscribers" in err
    assert "1 lost in the recording" in err


def test_replay_corrupted_wireless_avi_with_binning(tmp_path, shared_data):
    path = shared_data / "miniscope_wireless_corrupted_60x200x200.avi"
    endpoint = f"ipc://{tmp_path}/frames"
    with FrameSubscriber(endpoint) as sub:
        proc = launch(
            "replay", str(path), "--endpoint", endpoint, "--rate", "max", "--bin", "2",
            "--crop", "0,0,200,100", "--wait-for-subscriber", "60", "--quiet",
        )  # fmt: skip
        frames = collect(sub)
        code, err = finish(proc)
    assert code == 0, err
    transform = FrameTransform(crop=(0, 0, 200, 100), bin=2)
    expected = np.stack([f.pixels for f in open_source(path, transform=transform)])
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), expected)
    assert sub.session.shape == (100, 50)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_with_eos_and_exit_0(tmp_path, sig):
    endpoint = f"ipc://{tmp_path}/frames"
    with FrameSubscriber(endpoint) as sub:
        proc = launch(
            "simulate", "--size", "32", "32", "--neurons", "2", "--rate", "100",
            "--endpoint", endpoint, "--wait-for-subscriber", "60",
        )  # fmt: skip
        for _ in range(3):
            assert sub.recv(TIMEOUT_MS) is not None, proc.stderr
        assert sub.session.source == "synthetic" and sub.session.n_frames is None
        proc.send_signal(sig)
        collect(sub)
        code, err = finish(proc)
    assert code == 0, err
    assert sub.ended and sub.eos.reason == "interrupted" and sub.eos.n_sent >= 3
    assert "end: interrupted" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/nonexistent/rec.avi"], "no such file"),
        (["replay", "REC", "--rate", "fast"], "rate 'fast' is invalid"),
        (["replay", "REC", "--crop", "1,2"], "crop '1,2' is invalid"),
        (["replay", "REC", "--crop", "0,0,500,500"], "does not fit"),
        (["camera", "--index", "57"], "no camera at index 57"),
        (["replay", "REC", "--start", "2"], "--start 2 is beyond the 2 frames"),
        (["replay", "REC", "--start", "1", "--stop", "1"], "frame range"),
        (["replay", "REC", "--stop", "5000"], "--stop 5000 is beyond the 2 frames"),
        (["replay", "REC", "--endpoint", "127.0.0.1:5555"], "did you mean tcp://127.0.0.1:5555"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, args, message):
    np.save(tmp_path / "rec.npy", np.zeros((2, 8, 8), np.uint8))
    args = [str(tmp_path / "rec.npy") if a == "REC" else a for a in args]
    if "--endpoint" not in args:
        args = [*args, "--endpoint", f"ipc://{tmp_path}/x"]
    proc = launch(*args)
    code, err = finish(proc)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_max_rate_replay_waits_for_a_slow_receiver_to_drain(tmp_path):
    """Lossless mode: frames still queued when the replay ends reach a receiver that is busy
    for longer than a paced stream's 2 s linger (an engine initialising, say)."""
    movie = np.random.default_rng(5).integers(0, 255, (400, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "movie.npy", movie)
    endpoint = f"ipc://{tmp_path}/frames"
    with FrameSubscriber(endpoint, rcvhwm=64) as sub:
        proc = launch(
            "replay", str(tmp_path / "movie.npy"), "--endpoint", endpoint, "--rate", "max",
            "--sndhwm", "64", "--wait-for-subscriber", "60", "--fps", "20", "--quiet",
        )  # fmt: skip
        frames = []
        while len(frames) < 300 and (msg := sub.recv(TIMEOUT_MS)) is not None:
            frames.append(msg)
        # busy for a while: meanwhile the publisher queues the last frames and ends its stream
        time.sleep(4)
        frames += collect(sub)
        code, err = finish(proc)
    assert code == 0, err
    seqs = [f.seq for f in frames]
    assert len(frames) == 400, [s for a, s in zip(seqs, seqs[1:]) if s != a + 1][:5]
    assert sub.eos is not None and sub.eos.n_sent == 400
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)


@pytest.mark.parametrize("rate", ["max", "500"])
def test_a_replay_nobody_receives_never_reports_success(tmp_path, rate):
    np.save(tmp_path / "rec.npy", np.zeros((20, 8, 8), np.uint8))
    wait = ["--wait-for-subscriber", "1"] if rate == "max" else []
    proc = launch(
        "replay", str(tmp_path / "rec.npy"), "--endpoint", f"ipc://{tmp_path}/x", "--rate", rate,
        "--fps", "20", "--quiet", "--linger-s", "0", *wait,
    )  # fmt: skip
    code, err = finish(proc)
    assert code == 1, err
    assert "no frame reached a subscriber" in err
    if rate == "max":  # lossless: it waited, then sent nothing
        assert "nothing sent" in err and "read 0 frames" in err
    else:  # paced: frames were due, went out to nobody, and the summary says so
        assert "read 20 frames, delivered 0 to subscribers, 20 sent with no subscriber" in err
