"""`online-cnmfe demo` end to end on a tiny movie (publisher, engine, scoring; no display)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from online_cnmfe.results.reader import read_results
from tests.online_cnmfe.engine_harness import env

pytestmark = pytest.mark.timeout(240)


def test_demo_runs_the_whole_pipeline_and_prints_a_summary(tmp_path):
    cmd = [
        sys.executable, "-m", "online_cnmfe", "demo", "--size", "64", "64", "--duration", "10",
        "--neurons", "8", "--init-frames", "60", "--headless", "--quiet",
        "--outdir", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "neurons found:" in out and "per-frame processing" in out
    assert "F1" in out and "recall" in out  # the evaluator's table
    res = read_results(tmp_path / "out" / "session.h5")
    assert res.n_frames == 200 and res.attrs["complete"]


def test_demo_help_lists_its_options():
    done = subprocess.run(
        [sys.executable, "-m", "online_cnmfe", "demo", "--help"],
        capture_output=True, text=True, env=env(), timeout=60,
    )  # fmt: skip
    for option in ("--size", "--duration", "--realtime", "--headless"):
        assert option in done.stdout
