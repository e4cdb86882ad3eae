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


def _pixel_mask_images(seg, n: int) -> np.ndarray:
    """Dense (n, H, W) images from an NWB PlaneSegmentation's pixel masks (x = row)."""
    out = np.zeros((n, *DIMS), np.float32)
    for k in range(n):
        for x, y, weight in seg["pixel_mask"][k]:
            out[k, int(x), int(y)] = weight
    return out


def test_nwb_round_trip(results_file, tmp_path):
    from pynwb import NWBHDF5IO, validate

    path, images = results_file
    out = tmp_path / "r.nwb"
    assert main(["export", str(path), "--nwb", str(out)]) == 0
    with NWBHDF5IO(str(out), "r") as io:
        assert validate(io=io) == []
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        seg = ophys["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(_pixel_mask_images(seg, 3), images)
        assert sum(len(seg["pixel_mask"][k]) for k in range(3)) == int((images > 0).sum())
        np.testing.assert_array_equal(seg["neuron_id"].data[:], [4, 7, 11])
        assert list(seg["curation"].data[:]) == ["unlabelled"] * 3
        series = ophys["Fluorescence"]["Denoised"]
        data = np.asarray(series.data)
        assert data.shape == (30, 3)  # time x ROIs
        np.testing.assert_array_equal(data[:, 1], 10 + np.arange(30))
        np.testing.assert_allclose(series.timestamps[:], 0.05 * np.arange(30))
        np.testing.assert_array_equal(
            np.asarray(ophys["Fluorescence"]["Raw"].data)[:, 2], 20.5 + np.arange(30)
        )
        # dF/F = C / f0, f0 = a.b0 / a.a from the footprint and b0 = arange(77)
        a = images[0].ravel().astype(np.float64)
        f0 = a @ np.arange(77) / (a @ a)
        dff = np.asarray(ophys["DfOverF"]["DfOverF"].data)
        np.testing.assert_allclose(dff[:, 0], np.arange(30) / f0, rtol=1e-5)
        assert ophys["Fluorescence"]["Denoised"].data.compression == "gzip"


def test_nwb_image_masks_are_compressed_and_round_trip(results_file, tmp_path):
    from pynwb import NWBHDF5IO

    path, images = results_file
    out = tmp_path / "r.nwb"
    assert main(["export", str(path), "--nwb", str(out), "--nwb-masks", "image"]) == 0
    with NWBHDF5IO(str(out), "r") as io:
        seg = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(np.asarray(seg["image_mask"].data), images)
        assert seg["image_mask"].data.compression == "gzip"


def test_nwb_metadata_from_options_and_a_file(results_file, tmp_path, capsys):
    from pynwb import NWBHDF5IO

    path, _ = results_file
    meta = tmp_path / "meta.toml"
    meta.write_text(
        '[nwb]\nspecies = "Mus musculus"\nsex = "F"\nlab = "Lab A"\n'
        'session_description = "linear track, day 3"\nexcitation_lambda_nm = 465\n'
    )
    identifiers = []
    for name in ("a.nwb", "b.nwb"):
        assert main(["export", str(path), "--nwb", str(tmp_path / name), "--metadata", str(meta),
                     "--subject-id", "M12", "--indicator", "GCaMP6f", "--location", "CA1",
                     "--meta", "age=P90D"]) == 0  # fmt: skip
        with NWBHDF5IO(str(tmp_path / name), "r") as io:
            nwb = io.read()
            identifiers.append(nwb.identifier)
            assert nwb.session_description == "linear track, day 3" and nwb.lab == "Lab A"
            assert (nwb.subject.subject_id, nwb.subject.species, nwb.subject.sex) == (
                "M12", "Mus musculus", "F")  # fmt: skip
            assert nwb.subject.age == "P90D"
            plane = nwb.imaging_planes["ImagingPlane"]
            assert (plane.indicator, plane.location, plane.excitation_lambda) == (
                "GCaMP6f", "CA1", 465.0)  # fmt: skip
    assert identifiers[0] != identifiers[1] and len(identifiers[0]) == 36  # fresh UUIDs
    meta.write_text('indicatr = "GCaMP6f"\n')
    assert main(["export", str(path), "--nwb", str(tmp_path / "c.nwb"), "--metadata",
                 str(meta)]) == 2  # fmt: skip
    assert "did you mean 'indicator'" in capsys.readouterr().err
    assert main(["export", str(path), "--nwb", str(tmp_path / "c.nwb"), "--meta", "sex=X"]) == 2
    assert "sex='X'" in capsys.readouterr().err
    assert main(["export", str(path), "--nwb", str(tmp_path / "a.nwb")]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_every_export_leaves_rejected_neurons_out(results_file, tmp_path):
    from pynwb import NWBHDF5IO

    from online_cnmfe.results.curation import set_labels

    path, images = results_file
    set_labels(path, reject=[7], accept=[4])
    assert main(["export", str(path), "--nwb", str(tmp_path / "r.nwb"), "--caiman",
                 str(tmp_path / "r.hdf5"), "--cellreg", str(tmp_path / "r.mat"), "--csv",
                 str(tmp_path / "csv")]) == 0  # fmt: skip
    with NWBHDF5IO(str(tmp_path / "r.nwb"), "r") as io:
        seg = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert seg["neuron_id"].data[:].tolist() == [4, 11]
        assert list(seg["curation"].data[:]) == ["accepted", "unlabelled"]
        np.testing.assert_array_equal(_pixel_mask_images(seg, 2), images[[0, 2]])
    with h5py.File(tmp_path / "r.hdf5", "r") as f:
        assert f["estimates/neuron_ids"][:].tolist() == [4, 11]
        assert f["estimates/C"].shape == (2, 30) and f["estimates/A/shape"][1] == 2
    assert scipy.io.loadmat(tmp_path / "r.mat")["footprints"].shape == (2, *DIMS)
    header = (tmp_path / "csv" / "C.csv").read_text().splitlines()[0]
    assert header == "frame_index,time_s,n4,n11"
    assert main(["export", str(path), "--csv", str(tmp_path / "all"), "--include-rejected"]) == 0
    assert (tmp_path / "all" / "C.csv").read_text().splitlines()[0].endswith("n4,n7,n11")


def test_csv_tables(results_file, tmp_path):
    import csv

    path, _ = results_file
    out = tmp_path / "tables"
    assert main(["export", str(path), "--csv", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [  # no triggers.csv: no closed loop
        "C.csv", "C_raw.csv", "S.csv", "dff.csv", "events.csv", "neurons.csv"
    ]  # fmt: skip
    rows = list(csv.reader((out / "C.csv").open()))
    assert rows[0] == ["frame_index", "time_s", "n4", "n7", "n11"] and len(rows) == 31
    assert rows[2][:3] == ["1", "0.0500", "1"] and float(rows[2][3]) == 11.0
    neurons = list(csv.DictReader((out / "neurons.csv").open()))
    assert [n["neuron_id"] for n in neurons] == ["4", "7", "11"]
    img = _images()[0]
    row = np.average(np.nonzero(img)[0], weights=img[img > 0])
    assert float(neurons[0]["centroid_row"]) == pytest.approx(row, abs=0.005)  # 2 decimals
    assert {"snr", "pnr", "spatial_corr", "size_px", "f0", "peak_dff"} <= set(neurons[0])


def test_triggers_are_exported_as_events(results_file, tmp_path):
    import json

    from pynwb import NWBHDF5IO

    from online_cnmfe.results.triggers_table import (
        create_trigger_datasets,
        store_rule_log,
        store_triggers,
    )
    from online_cnmfe.triggers.records import TriggerRecord

    path, _ = results_file
    with h5py.File(path, "a") as f:
        g = create_trigger_datasets(f)
        store_rule_log(g, [(-1, "add", json.dumps({"name": "r1"}))])
        store_triggers(g, [
            TriggerRecord("r1", 10, 10, 500.0, 2.5, 1.5, (4, 7), 0, 0, 1),
            TriggerRecord("r1", 20, 20, 1000.0, 3.0, 0.5, (11,), 0, 0, 2),
        ])  # fmt: skip
    assert main(["export", str(path), "--nwb", str(tmp_path / "t.nwb"), "--csv",
                 str(tmp_path / "csv")]) == 0  # fmt: skip
    with NWBHDF5IO(str(tmp_path / "t.nwb"), "r") as io:
        table = io.read().intervals["closed_loop_triggers"].to_dataframe()
    assert table["start_time"].tolist() == [0.5, 1.0] and table["rule"].tolist() == ["r1"] * 2
    assert [list(x) for x in table["neuron_ids"]] == [[4, 7], [11]]
    lines = (tmp_path / "csv" / "triggers.csv").read_text().splitlines()
    assert lines[1] == "r1,10,0.5000,2.5,1.5,4 7"


def test_nwb_is_compact_next_to_the_results_file(tmp_path):
    """Dense image masks made NWB files ~70x the results file; pixel masks keep it near 1x."""
    rng = np.random.default_rng(3)
    dims, k, t = (192, 192), 60, 600
    cols = []
    for _ in range(k):
        img = np.zeros(dims, np.float32)
        r, c = rng.integers(8, 184, 2)
        img[r - 6 : r + 6, c - 6 : c + 6] = rng.random((12, 12)).astype(np.float32)
        cols.append(img.ravel())
    A = scipy.sparse.csc_array(np.stack(cols, 1))
    ids = np.arange(k)
    path = tmp_path / "big.h5"
    with ResultsWriter(path, dims, CNMFEParams(), 20.0, {}) as w:
        for i in range(t):
            x = rng.random(k).astype(np.float32)
            w.append_frame(FrameResult(i, ids, x, x, x),
                           {"frame_index": i, "seq": i, "daq_frame": None,
                            "t_acq_ms": 50.0 * i, "latency_ms": 1.0})  # fmt: skip
        w.set_footprints(A, ids, 1)
        w.set_background(np.full(dims, 10.0, np.float32))
    out = tmp_path / "big.nwb"
    assert main(["export", str(path), "--nwb", str(out)]) == 0
    ratio = out.stat().st_size / path.stat().st_size
    assert ratio <= 4.0, ratio
    dense = k * dims[0] * dims[1] * 4 / path.stat().st_size
    assert dense > 5  # what the old dense masks alone would have weighed


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
