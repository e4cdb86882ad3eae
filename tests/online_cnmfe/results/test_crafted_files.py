"""Crafted and damaged results files: every case a one-line StateFileError, never a crash.

Each case starts from a valid file written by the real writer and changes one thing, as a
damaged disk or an attacker would; ``read_results`` (and so ``export`` and ``view``) must
refuse it with one line naming the dataset at fault.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.errors import StateFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.reader import read_results
from online_cnmfe.results.writer import ResultsWriter

DIMS = (9, 7)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def valid_file(tmp_path) -> Path:
    path = tmp_path / "r.h5"
    rng = np.random.default_rng(3)
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}) as w:
        for t in range(20):
            ids = np.array([1, 2, 3] if t < 10 else [1, 3], np.int64)  # 2 removed at 10
            x = (ids * 10.0 + t).astype(np.float32)
            w.append_frame(FrameResult(t, ids, x, x, x), {"frame_index": t})
        dense = (rng.random((DIMS[0] * DIMS[1], 2)) > 0.7).astype(np.float32)
        w.set_footprints(scipy.sparse.csc_array(dense), np.array([1, 3]), 2)
        w.set_background(np.ones(DIMS, np.float32))
    read_results(path)  # valid as written
    return path


def _replace(f: h5py.File, name: str, values) -> None:
    del f[name]
    f[name] = values


def _out_of_range_index(f):
    idx = f["footprints/indices"][:]
    idx[-1] = DIMS[0] * DIMS[1] + 10_000_000
    f["footprints/indices"][:] = idx


def _negative_index(f):
    idx = f["footprints/indices"][:]
    idx[0] = -5
    f["footprints/indices"][:] = idx


def _decreasing_indptr(f):
    ptr = f["footprints/indptr"][:]
    ptr[1] = ptr[2] + 1  # the last entry still matches the data: only the order is wrong
    f["footprints/indptr"][:] = ptr


CASES = {
    "footprint index past the image": (_out_of_range_index, "outside 0..62"),
    "negative footprint index": (_negative_index, "outside 0..62"),
    "decreasing indptr": (_decreasing_indptr, "indptr does not start at 0"),
    "dims zero": (lambda f: f.attrs.__setitem__("dims", [0, 7]), "'dims'"),
    "dims huge": (lambda f: f.attrs.__setitem__("dims", [2**20, 2**20]), "exceed"),
    "dims missing": (lambda f: f.attrs.__delitem__("dims"), "'dims'"),
    "dims text": (lambda f: f.attrs.__setitem__("dims", "9x7"), "'dims'"),
    "b0 of another size": (lambda f: _replace(f, "background/b0", np.ones((3, 3))), "b0"),
    "traces missing": (lambda f: f.__delitem__("traces/C"), "'traces/C' is missing"),
    "traces 1-D": (lambda f: _replace(f, "traces/S", np.ones(5)), "'traces/S' has shape"),
    "repeated footprint ids": (
        lambda f: f["footprints/neuron_ids"].__setitem__(slice(None), [3, 3]),
        "repeats",
    ),
    "removed rows disagree": (
        lambda f: _replace(f, "removed/birth_frame", np.zeros(4, np.int64)),
        "lengths disagree",
    ),
    "removed traces too short": (
        lambda f: _replace(f, "removed/C", np.zeros((1, 3), np.float32)),
        "fewer than",
    ),
    "negative n_frames": (lambda f: f.attrs.__setitem__("n_frames", -3), "n_frames"),
    "frames group gone": (lambda f: f.__delitem__("frames"), "frames/frame_index"),
    "rejected not a table": (lambda f: _replace(f, "frames/rejected", np.zeros(3)), "damaged"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_file_is_a_one_line_error(valid_file, case):
    craft, match = CASES[case]
    with h5py.File(valid_file, "r+") as f:
        craft(f)
    with pytest.raises(StateFileError, match=match) as info:
        read_results(valid_file)
    assert "\n" not in str(info.value)


def test_export_of_an_out_of_range_footprint_is_an_error_not_a_segfault(valid_file, tmp_path):
    with h5py.File(valid_file, "r+") as f:
        _out_of_range_index(f)
    outputs = {"--cellreg": "x.mat", "--caiman": "x.hdf5"}
    for flag, name in outputs.items():
        proc = subprocess.run(
            [sys.executable, "-m", "online_cnmfe", "export", str(valid_file), flag,
             str(tmp_path / name)],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "outside 0..62" in lines[0], proc.stderr
        assert not (tmp_path / name).exists()
