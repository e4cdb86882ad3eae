"""`online-cnmfe batch` on a real Dask LocalCluster (2 worker processes): the same results as
`process`, a corrupt input, a killed worker (retried once, then failed), reruns and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from online_cnmfe.batch.summary import read_summary
from online_cnmfe.cli import main
from tests.online_cnmfe.batch.test_task import N_INIT, simulated_movie

psutil = pytest.importorskip("psutil")
pytest.importorskip("distributed")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
COMMON = ["--init-frames", str(N_INIT), "--dashboard-address", "127.0.0.1:0", "--quiet"]


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """Two short simulated recordings and a corrupt one; numba's cache is warmed here (in
    this process) so that the workers load the compiled kernels instead of compiling them."""
    tmp = tmp_path_factory.mktemp("batch")
    for seed in (1, 2):
        simulated_movie(tmp / f"s{seed}.npy", seed)
    (tmp / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))  # a truncated header
    assert main(["process", str(tmp / "s1.npy"), "--out", str(tmp / "s1_process.h5"), "--quiet",
                 "--init-frames", str(N_INIT)]) == 0  # fmt: skip
    return tmp


def _rows(out_dir) -> dict[str, dict[str, str]]:
    return {r["session"]: r for r in read_summary(out_dir / "summary.csv")}


def _same_results(a, b) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        pa, pb = json.loads(fa.attrs["params"]), json.loads(fb.attrs["params"])
        # batch runs the slow path inline (one thread per session), process on a thread
        assert (pa["engine"].pop("slow_path_thread"), pb["engine"].pop("slow_path_thread")) == (
            False,
            True,
        )
        assert pa == pb
        for name in ("traces/C", "traces/S", "traces/C_raw", "footprints/data",
                     "footprints/indices", "footprints/neuron_ids", "background/b0",
                     "frames/frame_index", "frames/t_acq_ms"):  # fmt: skip
            np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name)


def test_batch_matches_process_finishes_despite_a_corrupt_input_and_skips_on_rerun(movies):
    out = movies / "out"
    inputs = [str(movies / n) for n in ("s1.npy", "s2.npy", "corrupt.h5")]
    numba_env = os.environ.get("NUMBA_NUM_THREADS")
    rc = main(["batch", *inputs, "--out-dir", str(out), "--workers", "2", *COMMON])
    assert rc == 1  # one session failed
    # the workers' thread settings stay in the workers (numba here would refuse a change)
    assert os.environ.get("NUMBA_NUM_THREADS") == numba_env
    rows = _rows(out)
    assert [rows[n]["status"] for n in ("s1", "s2", "corrupt")] == ["ok", "ok", "failed"]
    assert rows["corrupt"]["attempts"] == "2"  # retried once
    assert (
        rows["corrupt"]["error"].startswith("SourceError:")
        and "corrupt.h5" in rows["corrupt"]["error"]
    )
    assert rows["s1"]["frames"] == "120" and int(rows["s1"]["neurons"]) >= 1
    _same_results(out / "s1.h5", movies / "s1_process.h5")  # the same code path, bit for bit
    rc = main(["batch", *inputs[:2], "--out-dir", str(out), "--workers", "2", *COMMON])
    assert rc == 0
    assert {r["status"] for r in _rows(out).values()} == {"skipped"}


def _batch_process(inputs, out_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "online_cnmfe", "batch", *map(str, inputs), "--out-dir",
           str(out_dir), "--workers", "2", *COMMON]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stderr=subprocess.PIPE, preexec_fn=_as_in_a_terminal
    )


def _as_in_a_terminal() -> None:
    """SIGINT as a command typed in a terminal has it: the default action (a test runner
    started in the background by a non-interactive shell passes it on ignored, and Python
    then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _worker_reading(batch: subprocess.Popen, movie: Path, timeout_s: float = 120.0, not_pid=None):
    """The worker process that has ``movie`` open (i.e. is processing it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert batch.poll() is None, batch.stderr.read().decode()[-3000:]
        for proc in psutil.Process(batch.pid).children(recursive=True):
            try:
                if proc.pid != not_pid and any(f.path == str(movie) for f in proc.open_files()):
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.02)
    raise AssertionError(f"no worker opened {movie} within {timeout_s} s")


def _long_movie(path: Path, seed: int, n_frames: int = 500) -> Path:
    """An HDF5 movie (kept open while processed, unlike a memory-mapped .npy)."""
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    params = SimulationParams(height=64, width=64, n_frames=n_frames, n_neurons=8, seed=seed)
    with h5py.File(path, "w") as f:
        f["movie"] = MiniscopeSimulator(params).frames(0, n_frames)
    return path


def test_a_killed_worker_is_retried_once_then_its_session_fails_and_others_finish(movies):
    once = _long_movie(movies / "once.h5", 3, n_frames=2000)
    twice = _long_movie(movies / "twice.h5", 4, n_frames=2000)
    out = movies / "killed"
    batch = _batch_process([once, twice, movies / "s2.npy"], out)
    try:
        first = _worker_reading(batch, once)
        first.kill()
        victim = _worker_reading(batch, twice)
        victim.kill()
        _worker_reading(batch, twice, not_pid=victim.pid).kill()  # its retry dies too
        _, err = batch.communicate(timeout=240)
    finally:
        batch.kill()
    assert batch.returncode == 1, err.decode()[-3000:]
    rows = _rows(out)
    assert (rows["once"]["status"], rows["once"]["attempts"]) == ("ok", "2"), rows
    assert rows["once"]["worker"].split(":")[1] != str(first.pid)
    assert (rows["twice"]["status"], rows["twice"]["attempts"]) == ("failed", "2")
    assert "worker running it died" in rows["twice"]["error"]
    assert rows["s2"]["status"] == "ok"
    with h5py.File(out / "once.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["n_frames"] == 2000


def test_ctrl_c_cancels_the_unfinished_sessions_and_stops_every_worker(movies):
    # long enough to be still running when the signal lands (500 frames took ~2 s once the
    # initialisation got faster, and the batch could finish first)
    movie = _long_movie(movies / "slow.h5", 5, n_frames=4000)
    out = movies / "interrupted"
    batch = _batch_process([movie, movies / "s1.npy", movies / "s2.npy"], out)
    try:
        _worker_reading(batch, movie)
        family = psutil.Process(batch.pid).children(recursive=True)
        os.killpg(batch.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 130, err.decode()[-3000:]
    assert "interrupted" in err.decode()
    assert _rows(out)["slow"]["status"] == "cancelled"
    assert {r["status"] for r in _rows(out).values()} <= {"cancelled", "ok"}
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"processes left running after Ctrl-C: {alive}"
