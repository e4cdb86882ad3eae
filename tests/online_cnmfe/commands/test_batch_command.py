"""`online-cnmfe batch` options: bad values are one-line errors before any cluster starts, and
the command line does not import Dask unless `batch` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from online_cnmfe.cli import main

REPO = Path(__file__).resolve().parents[3]


def test_the_command_line_starts_without_dask():
    code = (
        "import sys; from online_cnmfe.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('dask', 'distributed', 'numba') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "workers must be >= 1"),
        (["--set", "data.neuron_diameter_px=1"], "neuron_diameter_px"),
        (["--manifest", "missing.csv"], "cannot read the manifest"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_cluster(tmp_path, capsys, extra, message):
    movie = tmp_path / "m.npy"
    movie.write_bytes(b"x")
    rc = main(["batch", str(movie), "--out-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_workers_and_scheduler_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            ["batch", "x", "--out-dir", str(tmp_path), "--workers", "2", "--scheduler", "tcp://h:1"]
        )
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
