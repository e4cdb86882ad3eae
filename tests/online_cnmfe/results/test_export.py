"""Exports: orientation round trips on an asymmetric image, traces as time x ROIs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from online_cnmfe.cli import main
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.writer import ResultsWriter

DIMS = (7, 11)  # not square, so a transposed or mis-ordered export cannot pass


def _images() -> np.ndarray:
    """Three footprints, each an L-shape at a distinct place (asymmetric under transposes)."""
    images = np.zeros((3, *DIMS), np.float32)
    for k, (r, c) in enumerate([(1, 1), (2, 6), (4, 8)]):
        images[k, r, c : c + 3] = [3.0 + k, 2.0, 1.0]
        images[k, r + 1 : r + 3, c] = [0.5, 0.25]
    return images


@pytest.fixture
def results_file(tmp_path):
    images = _images()
    ids = np.array([4, 7, 11], np.int64)
    A = scipy.sparse.csc_array(images.reshape(3, -1).T)  # row-major pixels
    path = tmp_path / "r.h5"
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {"source": "test"}) as w:
        for t in range(30):
            x = (np.arange(3) * 10 + t).astype(np.float32)
            w.append_frame(
                FrameResult(t, ids, x, x / 10, x + 0.5),
                {"frame_index": t, "seq": t, "daq_frame": None, "t_acq_ms": 50.0 * t,
                 "latency_ms": 1.0},
            )  # fmt: skip
        w.set_footprints(A, ids, 1)
        w.set_background(np.arange(np.prod(DIMS), dtype=np.float32).reshape(DIMS))
    return path, images


def test_nwb_round_trip(results_file, tmp_path):
    from pynwb import NWBHDF5IO

    path, images = results_file
    out = tmp_path / "r.nwb"
    assert main(["export", str(path), "--nwb", str(out)]) == 0
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        seg = ophys["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(np.asarray(seg["image_mask"].data), images)
        np.testing.assert_array_equal(seg["neuron_id"].data[:], [4, 7, 11])
        series = ophys["Fluorescence"]["Denoised"]
        data = np.asarray(series.data)
        assert data.shape == (30, 3)  # time x ROIs
        np.testing.assert_array_equal(data[:, 1], 10 + np.arange(30))
        np.testing.assert_allclose(series.timestamps[:], 0.05 * np.arange(30))
        np.testing.assert_array_equal(
            np.asarray(ophys["Fluorescence"]["Raw"].data)[:, 2], 20.5 + np.arange(30)
        )


def test_caiman_round_trip_uses_fortran_pixel_order(results_file, tmp_path):
    path, images = results_file
    out = tmp_path / "r.hdf5"
    assert main(["export", str(path), "--caiman", str(out)]) == 0
    with h5py.File(out, "r") as f:
        g = f["estimates/A"]
        A = scipy.sparse.csc_array(
            (g["data"][:], g["indices"][:], g["indptr"][:]), shape=tuple(g["shape"][:])
        )
        dims = tuple(f["params/data/dims"][:])
        assert dims == DIMS
        for k in range(3):  # CaImAn's own convention: reshape(dims, order="F")
            img = A[:, [k]].toarray().reshape(dims, order="F")
            np.testing.assert_array_equal(img, images[k])
        assert f["estimates/C"].shape == (3, 30)
        np.testing.assert_allclose(f["estimates/YrA"][:], 0.5)
        b0 = f["estimates/b0"][:].reshape(dims, order="F")
        np.testing.assert_array_equal(b0, np.arange(77).reshape(DIMS))
        assert f["params/data/fr"][()] == 20.0


def test_cellreg_round_trip(results_file, tmp_path):
    path, images = results_file
    out = tmp_path / "r.mat"
    assert main(["export", str(path), "--cellreg", str(out)]) == 0
    mat = scipy.io.loadmat(out)
    assert mat["footprints"].shape == (3, *DIMS)  # N x H x W in MATLAB too
    np.testing.assert_array_equal(mat["footprints"], images)


def test_export_needs_a_target(results_file, capsys):
    path, _ = results_file
    assert main(["export", str(path)]) == 2
    assert "--nwb" in capsys.readouterr().err
