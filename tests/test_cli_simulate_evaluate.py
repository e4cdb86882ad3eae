"""`online-cnmfe simulate` and `evaluate` as real subprocesses on real files."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.online_cnmfe.evaluation.test_metrics import write_result


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "online_cnmfe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("command", ["simulate", "evaluate"])
def test_help(command):
    out = cli(command, "--help")
    assert out.returncode == 0 and "usage: online-cnmfe " + command in out.stdout


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sim.h5"
    out = cli(
        "simulate", path, "--size", 64, 64, "--frames", 120, "--neurons", 8, "--seed", 3,
        "--late-fraction", 0.25, "--late-after", 40, "--quiet", "--format", "tiff",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stderr and "8 neurons (2 late-born)" in out.stderr
    return path


def test_simulate_writes_movie_truth_and_tiff(simulated):
    with h5py.File(simulated, "r") as f:
        assert f["movie"].shape == (120, 64, 64) and f["truth/C"].shape == (8, 120)
        assert json.loads(f.attrs["params"])["seed"] == 3
    assert simulated.with_suffix(".tif").stat().st_size > 120 * 64 * 64 * 2


def test_evaluate_truth_as_a_perfect_result(simulated, tmp_path):
    with h5py.File(simulated, "r") as f:
        fp, C = f["truth/footprints"][()], f["truth/C"][()]
    write_result(tmp_path / "perfect.h5", fp[::-1], C[::-1])
    out = cli("evaluate", tmp_path / "perfect.h5", simulated)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["f1"] == 1.0 and metrics["trace_corr_median"] == pytest.approx(1.0)
    assert "recall" in out.stdout and metrics["late"]["n_true"] == 2
    # half the neurons missing, scored only on the later frames
    out = cli("evaluate", tmp_path / "perfect.h5", simulated, "--frames", "60:120", "--json-only")
    assert json.loads(out.stdout)["n_frames_scored"] == 60
    write_result(tmp_path / "half.h5", fp[:4], C[:4])
    out = cli("evaluate", tmp_path / "half.h5", simulated, "--json-only")
    assert json.loads(out.stdout)["recall"] == 0.5


def test_bad_inputs_give_one_line_errors(simulated, tmp_path):
    with h5py.File(simulated, "r") as f:
        fp, C = f["truth/footprints"][()], f["truth/C"][()]
    write_result(tmp_path / "r.h5", fp, C)
    assert_one_line_error(cli("evaluate", tmp_path / "none.h5", simulated), "none.h5", "exist")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(cli("evaluate", tmp_path / "r.h5", tmp_path / "notes.txt"), "HDF5")
    with h5py.File(tmp_path / "notruth.h5", "w") as f:
        f["movie"] = np.zeros((2, 64, 64))
    assert_one_line_error(
        cli("evaluate", tmp_path / "r.h5", tmp_path / "notruth.h5"), "no dataset", "truth/"
    )
    write_result(tmp_path / "small.h5", np.ones((1, 32, 32), np.float32), C[:1])
    assert_one_line_error(cli("evaluate", tmp_path / "small.h5", simulated), "32x32", "64x64")
    assert_one_line_error(cli("simulate", tmp_path / "x.h5", "--size", 8, 8), "height")
    assert_one_line_error(
        cli("simulate", tmp_path / "no" / "dir" / "x.h5", "--frames", 5, "--size", 32, 32),
        "cannot create",
    )
