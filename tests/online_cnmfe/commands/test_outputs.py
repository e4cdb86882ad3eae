"""Output files of run, process and export: checked before anything starts, replaced only with
--overwrite, never written over an input; read-only and nearly full disks are real (a
read-only or small tmpfs in a private mount namespace, when this user may create one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from online_cnmfe.cli import main
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.writer import ResultsWriter

REPO = Path(__file__).resolve().parents[3]


def _one_line_error(capsys, *needles: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture
def movie(tmp_path) -> Path:
    path = tmp_path / "movie.npy"
    np.save(path, np.zeros((40, 8, 8), np.float32))
    return path


@pytest.fixture
def results_file(tmp_path) -> Path:
    path = tmp_path / "r.h5"
    with ResultsWriter(path, (4, 4), CNMFEParams(), 20.0, {}) as w:
        for t in range(5):
            ids = np.array([1, 2], np.int64)
            w.append_frame(FrameResult(t, ids, *(np.ones(2, np.float32),) * 3), {"frame_index": t})
        w.set_footprints(np.eye(16, 2, dtype=np.float32), np.array([1, 2]), 1)
    return path


def test_process_refuses_an_existing_file_without_overwrite(tmp_path, movie, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("a lab notebook, not a results file")
    args = ["process", str(movie), "--out", str(out), "--set", "data.frame_rate_hz=20"]
    assert main(args) == 2
    _one_line_error(capsys, "exists; pass --overwrite")
    assert out.read_text() == "a lab notebook, not a results file"


def test_process_never_writes_over_its_input(movie, capsys):
    args = ["process", str(movie), "--out", str(movie), "--overwrite"]
    assert main([*args, "--set", "data.frame_rate_hz=20"]) == 2
    _one_line_error(capsys, "is the input file itself")
    assert np.load(movie).shape == (40, 8, 8)


def test_export_refuses_existing_outputs_then_replaces_them_with_overwrite(
    tmp_path, results_file, capsys
):
    mat, h5 = tmp_path / "fp.mat", tmp_path / "caiman.hdf5"
    mat.write_bytes(b"old")
    args = ["export", str(results_file), "--caiman", str(h5), "--cellreg", str(mat)]
    assert main(args) == 2
    _one_line_error(capsys, "--cellreg", "exists; pass --overwrite")
    assert mat.read_bytes() == b"old" and not h5.exists()  # nothing written at all
    assert main([*args, "--overwrite"]) == 0
    assert mat.read_bytes() != b"old" and h5.exists()
    assert not list(tmp_path.glob("*.partial*"))
    assert main(["export", str(results_file), "--caiman", str(results_file), "--overwrite"]) == 2
    _one_line_error(capsys, "is the input file itself")
    assert main(["export", str(tmp_path / "none.h5"), "--caiman", str(h5)]) == 2
    _one_line_error(capsys, "does not exist")


def test_a_missing_folder_is_refused(tmp_path, movie, capsys):
    out = tmp_path / "no" / "such" / "r.h5"
    assert main(["process", str(movie), "--out", str(out), "--set", "data.frame_rate_hz=20"]) == 2
    _one_line_error(capsys, "does not exist")


def _can_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"]
    return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0


needs_mount = pytest.mark.skipif(
    not _can_mount(), reason="cannot mount a tmpfs in a private mount namespace here"
)


def _run_on_mount(tmp_path: Path, options: str, command: list[str]) -> tuple[int, str, float]:
    """Run ``online-cnmfe COMMAND`` with ``tmp_path/mnt`` a fresh tmpfs mounted with
    ``options``; returns (exit code, stderr, seconds)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    cli = " ".join([sys.executable, "-m", "online_cnmfe", *command])
    script = f"mount -t tmpfs -o {options} tmpfs {mnt} && cd {REPO} && exec {cli}"
    t0 = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    return proc.returncode, proc.stderr, time.monotonic() - t0


@needs_mount
def test_run_on_a_read_only_folder_fails_at_once(tmp_path):
    frames, results = f"ipc://{tmp_path}/f", f"ipc://{tmp_path}/r"
    code, err, seconds = _run_on_mount(
        tmp_path, "ro,size=1m",
        ["run", "--frames", frames, "--results", results, "--out", f"{tmp_path}/mnt/s.h5"],
    )  # fmt: skip
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "cannot write --out" in lines[0] and "Read-only" in lines[0], lines[0]
    assert seconds < 60  # no frame, no initialisation: at once


@needs_mount
@pytest.mark.parametrize("command", ["run", "process"])
def test_a_nearly_full_disk_is_refused_before_anything_starts(tmp_path, movie, command):
    out = f"{tmp_path}/mnt/s.h5"
    if command == "run":
        args = ["run", "--frames", f"ipc://{tmp_path}/f", "--results", f"ipc://{tmp_path}/r"]
    else:
        args = ["process", str(movie), "--set", "data.frame_rate_hz=20"]
    code, err, _ = _run_on_mount(tmp_path, "size=20m", [*args, "--out", out])
    lines = [x for x in err.splitlines() if "error:" in x]
    assert code == 2 and len(lines) == 1, err
    assert "MiB free; this needs about" in lines[0], lines[0]
