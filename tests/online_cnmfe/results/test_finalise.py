"""The close of a results file: atomic alignment, every group carried, kills and full disks.

Real processes, real files: a writer subprocess (``killable_writer``) is SIGKILLed at random
instants of its session and of ``close()``; a real small tmpfs (in a private mount namespace,
when this user may create one) fills up; the free-space check is fooled to reach a real ENOSPC
in the middle of the rewrite. After each, ``read_results`` must read the file and every value
it returns must be the one written.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import finalise as fin
from online_cnmfe.results.reader import read_results
from online_cnmfe.results.writer import ResultsWriter
from tests.online_cnmfe.results.killable_writer import trace_value

REPO = Path(__file__).resolve().parents[3]
WRITER = [sys.executable, "-m", "tests.online_cnmfe.results.killable_writer"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")


def check_session_file(path: Path, n_flushed: int, n_frames_total: int) -> None:
    """The file reads back, holds every flushed frame, and every trace value is the one written."""
    res = read_results(path)
    n = res.n_frames
    assert n >= n_flushed, (n, n_flushed)
    np.testing.assert_array_equal(res.frames["frame_index"], np.arange(n))
    t = np.arange(n)
    half = n_frames_total // 2
    for row, nid in enumerate(res.trace_neuron_ids):
        present = (t < half) | (nid % 3 != 0)
        expected = np.where(present, trace_value(nid, t), 0.0)
        np.testing.assert_array_equal(res.C_all[row], expected, err_msg=f"neuron {nid}")
        np.testing.assert_array_equal(res.S_all[row][present], expected[present] + 0.5)
    for k, nid in enumerate(res.neuron_ids):  # aligned with the footprint columns
        row = int(np.flatnonzero(res.trace_neuron_ids == nid)[0])
        np.testing.assert_array_equal(res.C[k], res.C_all[row])


def _run_writer(path: Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [*WRITER, str(path), *args], capture_output=True, text=True, timeout=timeout, env=_env(),
        cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---------------------------------------------------------------- the rewrite itself
def test_close_aligns_rows_and_carries_every_group(tmp_path):
    path = tmp_path / "r.h5"
    out = _run_writer(path, "--frames", "600", "--neurons", "30")
    assert "closed ok" in out
    check_session_file(path, 600, 600)
    with h5py.File(path, "r") as f:  # an ordinary file, aligned, with the others' groups
        assert f.attrs["complete"] and f.attrs["aligned"]
        np.testing.assert_array_equal(f["neurons/neuron_ids"], f["footprints/neuron_ids"])
        assert sorted(f["removed/neuron_ids"][:]) == list(range(3, 31, 3))
        np.testing.assert_array_equal(f["curation/labels"], [7, 8, 9])
        assert f["curation"].attrs["note"] == "kept by every rewrite"
        shifts = f["hooked/shifts"][:]  # appended by a flush hook at every flush
        assert len(shifts) >= 3 and (shifts[:, 0] == np.arange(len(shifts))).all()
        assert f["motion/shifts"].shape == (600, 2)  # the writer's own per-frame group
        assert f["traces/C"].chunks and f["traces/C"].maxshape == (None, None)
    assert not fin.partial_path(path).exists()


def test_extra_per_neuron_datasets_follow_the_rows(tmp_path, monkeypatch):
    path = tmp_path / "r.h5"
    monkeypatch.setattr(fin, "free_bytes", lambda _folder: 0)  # the close leaves it unaligned
    with ResultsWriter(path, (4, 4), CNMFEParams(), 20.0, {}) as w:
        for t in range(10):
            ids = np.array([5, 6, 7] if t < 5 else [5, 7], np.int64)
            x = ids.astype(np.float32)
            w.append_frame(FrameResult(t, ids, x, x, x), {"frame_index": t})
        w.set_footprints(np.eye(16, 2, dtype=np.float32), np.array([7, 5]), 1)
    monkeypatch.undo()
    with h5py.File(path, "r+") as f:  # as another feature might: a per-neuron dataset
        f["neurons"].create_dataset("quality", data=np.array([50.0, 60.0, 70.0]))
    assert fin.finalise(path) == "rewritten"
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["neurons/neuron_ids"], [7, 5])
        np.testing.assert_array_equal(f["neurons/quality"], [70.0, 50.0])
        np.testing.assert_array_equal(f["removed/quality"], [60.0])
        np.testing.assert_array_equal(f["traces/C"][:, 0], [7.0, 5.0])
    assert fin.finalise(path) == "aligned"  # twice: nothing to do


def test_too_little_space_leaves_the_file_complete_and_readable(tmp_path, monkeypatch):
    path = tmp_path / "r.h5"
    monkeypatch.setattr(fin, "free_bytes", lambda _folder: 100)  # the copy cannot fit
    with ResultsWriter(path, (4, 4), CNMFEParams(), 20.0, {}, min_free_bytes=1 << 20) as w:
        for t in range(50):
            ids = np.array([1, 2, 3] if t < 25 else [1, 3], np.int64)
            x = trace_value(ids, t)
            w.append_frame(FrameResult(t, ids, x, x, x), {"frame_index": t})
        w.set_footprints(np.eye(16, 2, dtype=np.float32), np.array([3, 1]), 1)
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"] and not f.attrs["aligned"] and "removed" not in f
    res = read_results(path)  # the reader aligns what the close could not
    np.testing.assert_array_equal(res.neuron_ids, [3, 1])
    np.testing.assert_array_equal(res.C[0], trace_value(3, np.arange(50)))
    assert not fin.partial_path(path).exists()


def test_resuming_a_closed_file_with_removed_neurons(tmp_path):
    path = tmp_path / "r.h5"
    _run_writer(path, "--frames", "400", "--neurons", "12")
    with h5py.File(path, "r") as f:
        assert "removed" in f
    (tmp_path / "r.h5.finalising").write_bytes(b"half a copy from a killed close")
    with ResultsWriter(path, (24, 20), CNMFEParams(), 20.0, {}, resume=True) as w:
        ids = np.array([1, 2, 99], np.int64)  # 3 was removed before; 99 is new
        for t in range(400, 450):
            x = trace_value(ids, t)
            w.append_frame(FrameResult(t, ids, x, x + 0.5, x + 0.25), {"frame_index": t})
        w.set_footprints(np.eye(480, 3, dtype=np.float32), ids, 2)
    assert not (tmp_path / "r.h5.finalising").exists()
    res = read_results(path)  # readable, rows complete and of equal length
    assert res.n_frames == 450 and res.C_all.shape[1] == 450
    np.testing.assert_array_equal(res.neuron_ids, [1, 2, 99])
    np.testing.assert_array_equal(res.C[2, 400:], trace_value(99, np.arange(400, 450)))
    np.testing.assert_array_equal(res.C[0], trace_value(1, np.arange(450)))
    row3 = int(np.flatnonzero(res.trace_neuron_ids == 3)[0])  # removed, kept, zeros after
    np.testing.assert_array_equal(res.C_all[row3, :200], trace_value(3, np.arange(200)))
    assert not res.C_all[row3, 200:].any()
    assert sorted(res.trace_neuron_ids.tolist()) == sorted(set(res.trace_neuron_ids.tolist()))


# ---------------------------------------------------------------- SIGKILL at random instants
def _close_duration(tmp_path: Path, args: list[str]) -> float:
    """Seconds from 'closing' to 'closed' in an unkilled run of the same session."""
    proc = subprocess.Popen(
        [*WRITER, str(tmp_path / "timing.h5"), *args], stdout=subprocess.PIPE, text=True,
        env=_env(), cwd=REPO,
    )  # fmt: skip
    t0 = None
    for line in proc.stdout:
        if line.startswith("closing"):
            t0 = time.monotonic()
        elif line.startswith("closed"):
            break
    duration = time.monotonic() - t0
    proc.wait(timeout=60)
    return duration


def kill_once(path: Path, args: list[str], phase: str, delay_s: float) -> tuple[int, str]:
    """Run a session, SIGKILL it ``delay_s`` after it starts ``phase`` (``session``/``close``);
    returns (frames flushed before the kill, what the writer printed last)."""
    proc = subprocess.Popen(
        [*WRITER, str(path), *args], stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    flushed, last = 0, ""
    try:
        for line in proc.stdout:
            last = line.strip()
            if line.startswith("flushed"):
                flushed = int(line.split()[1])
                if phase == "session" and flushed == 250:
                    break
            if line.startswith("closing") and phase == "close":
                break
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return flushed, last


@pytest.mark.timeout(240)
def test_sigkill_at_random_instants_of_the_close_leaves_a_readable_file(tmp_path):
    args = ["--frames", "4000", "--neurons", "150"]
    duration = _close_duration(tmp_path, args)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for i in range(5):
        path = tmp_path / f"k{i}.h5"
        delay = rng.uniform(0.0, duration * 1.1)
        flushed, _ = kill_once(path, args, "close", delay)
        try:
            check_session_file(path, flushed, 4000)
        except Exception as exc:
            raise AssertionError(f"seed {seed}, kill {i} at {delay:.3f} s of close: {exc}") from exc


@pytest.mark.timeout(120)
def test_sigkill_during_the_session_leaves_a_readable_file(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    args = ["--frames", "6000", "--neurons", "200"]
    for i in range(2):
        path = tmp_path / f"s{i}.h5"
        delay = rng.uniform(0.0, 0.5)
        flushed, _ = kill_once(path, args, "session", delay)
        try:
            check_session_file(path, flushed, 6000)
        except Exception as exc:
            raise AssertionError(f"seed {seed}, kill {i} at +{delay:.3f} s: {exc}") from exc


# ---------------------------------------------------------------- full disks
def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
        capture_output=True, timeout=20,
    )  # fmt: skip
    return probe.returncode == 0


def run_on_small_tmpfs(tmp_path: Path, size_mb: int, writer_args: list[str]) -> str:
    """Run the writer on a fresh tmpfs of ``size_mb`` in a private mount namespace (gone with
    it), then copy what it left into ``tmp_path/out``; returns the writer's output."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    writer = " ".join([*WRITER, str(mnt / "r.h5"), *writer_args])
    script = (
        f"mount -t tmpfs -o size={size_mb}m tmpfs {mnt} && cd {REPO} && {writer}; "
        f"echo writer-exit $?; ls -la {mnt}; cp {mnt}/* {out}/ 2>/dev/null; true"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=180,
        env=_env(),
    )  # fmt: skip
    assert "writer-exit 0" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


needs_tmpfs = pytest.mark.skipif(
    not _tmpfs_available(), reason="cannot mount a tmpfs in a private mount namespace here"
)


@needs_tmpfs
def test_full_tmpfs_during_the_close_keeps_the_session(tmp_path):
    # The session file (~10 MB) fits on the 16 MB disk, its aligned copy does not: the close
    # must see it and leave the file complete (before: an in-place rewrite, ENOSPC, SIGSEGV).
    out = run_on_small_tmpfs(tmp_path, 16, ["--frames", "6000", "--neurons", "120"])
    assert "closed ok" in out, out
    path = tmp_path / "out" / "r.h5"
    check_session_file(path, 6000, 6000)
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"] and not f.attrs["aligned"]
    assert not (tmp_path / "out" / "r.h5.finalising").exists()


@needs_tmpfs
def test_enospc_in_the_middle_of_the_rewrite_leaves_the_original(tmp_path):
    # The free-space check is fooled (another program filled the disk meanwhile): the copy
    # hits a real ENOSPC half-way; the original must be intact and the copy gone.
    out = run_on_small_tmpfs(
        tmp_path, 16,
        ["--frames", "6000", "--neurons", "120", "--fake-free-bytes", str(1 << 40)],
    )  # fmt: skip
    assert "closed ok" in out, out  # the copy failed in a child process: this one is fine
    path = tmp_path / "out" / "r.h5"
    check_session_file(path, 6000, 6000)
    assert not (tmp_path / "out" / "r.h5.finalising").exists()


@needs_tmpfs
def test_disk_filling_during_the_session_stops_cleanly(tmp_path):
    out = run_on_small_tmpfs(
        tmp_path, 6, ["--frames", "20000", "--neurons", "120", "--min-free-bytes", str(1 << 20)]
    )
    assert "STOREERROR" in out and "free space" in out, out
    flushed = [int(x.split()[1]) for x in out.splitlines() if x.startswith("flushed")]
    check_session_file(tmp_path / "out" / "r.h5", flushed[-1], 20000)


def test_recovery_checks_the_free_space_first(tmp_path, monkeypatch):
    from online_cnmfe.errors import StateFileError
    from online_cnmfe.results import recovery

    path = tmp_path / "r.h5"
    _run_writer(path, "--frames", "300", "--neurons", "10")
    before = path.read_bytes()
    monkeypatch.setattr(recovery, "free_bytes", lambda _folder: 1 << 20)
    with pytest.raises(StateFileError, match="free space first") as info:
        recovery.recover_results(path, path)
    assert "\n" not in str(info.value) and path.read_bytes() == before
    size = path.stat().st_size
    monkeypatch.setattr(recovery, "free_bytes", lambda _folder: size + (64 << 20) + size // 2)
    recovery.recover_results(path, path)  # room for the copy, not for the .crashed backup
    assert not (tmp_path / "r.h5.crashed").exists()
    check_session_file(path, 300, 300)
