"""The evaluator on hand-made truth and result files with known answers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.errors import InputFileError
from online_cnmfe.evaluation.metrics import (
    EvaluationParams,
    evaluate_files,
    format_report,
    match_footprints,
    metrics_json,
)

DIMS = (48, 64)


def disc_footprints(centres, dims=DIMS, radius=4.0) -> np.ndarray:
    """(K, H, W) Gaussian-ish round footprints of peak 1 at the given (row, col) centres."""
    rr, cc = np.mgrid[: dims[0], : dims[1]]
    out = []
    for r, c in centres:
        d2 = (rr - r) ** 2 + (cc - c) ** 2
        out.append(np.where(d2 <= (2 * radius) ** 2, np.exp(-d2 / (2 * (radius / 2) ** 2)), 0))
    return np.asarray(out, np.float32).reshape(len(centres), *dims)


def grid_centres(n: int) -> list[tuple[float, float]]:
    """n well separated centres (15 px apart)."""
    return [(8 + 15 * (i // 4), 8 + 15 * (i % 4)) for i in range(n)]


def write_truth(path, footprints, C, pnr=None, birth=None):
    k = len(footprints)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "online-cnmfe-simulation"
        f["movie"] = np.zeros((C.shape[1], *footprints.shape[1:]), np.uint16)
        g = f.create_group("truth")
        g["footprints"] = footprints
        g["C"] = C.astype(np.float32)
        g["pnr"] = np.full(k, 10.0) if pnr is None else np.asarray(pnr, float)
        g["birth_frame"] = np.zeros(k, np.int64) if birth is None else np.asarray(birth)


def write_result(path, footprints, C, frame_index=None, birth=None):
    """A minimal results file in the documented layout (CSC, row-major pixels)."""
    k, h, w = footprints.shape
    A = scipy.sparse.csc_array(footprints.reshape(k, h * w).T)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "online-cnmfe-results"
        f.attrs["dims"] = [h, w]
        g = f.create_group("footprints")
        g["data"] = A.data.astype(np.float32)
        g["indices"] = A.indices.astype(np.int32)
        g["indptr"] = A.indptr.astype(np.int32)
        g.attrs["shape"] = [h * w, k]
        g.attrs["dims"] = [h, w]
        f["traces/C"] = np.asarray(C, np.float32).reshape(k, np.shape(C)[-1])
        if frame_index is not None:
            f["frames/frame_index"] = np.asarray(frame_index, np.int64)
        if birth is not None:
            f["neurons/birth_frame"] = np.asarray(birth, np.int64)


def random_traces(k: int, t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spikes = rng.random((k, t)) < 0.05
    C = np.zeros((k, t))
    for i in range(1, t):
        C[:, i] = 0.9 * C[:, i - 1] + spikes[:, i]
    return C.astype(np.float32)


@pytest.fixture
def truth_file(tmp_path):
    fp = disc_footprints(grid_centres(12))
    C = random_traces(12, 300)
    pnr = np.array([3, 4, 6, 7, 8, 9, 11, 12, 15, 18, 20, 4.5])
    birth = np.array([0] * 9 + [100, 150, 200])
    for k, b in enumerate(birth):
        C[k, :b] = 0
    path = tmp_path / "truth.h5"
    write_truth(path, fp, C, pnr, birth)
    return path, fp, C, pnr, birth


def test_perfect_estimate_scores_one(truth_file, tmp_path):
    path, fp, C, pnr, birth = truth_file
    write_result(tmp_path / "r.h5", fp, C)
    m = evaluate_files(tmp_path / "r.h5", path)
    assert (m["n_true"], m["n_found"], m["n_matched"]) == (12, 12, 12)
    assert m["f1"] == 1.0 and m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["trace_corr_median"] == pytest.approx(1.0) and m["trace_corr_mean"] == pytest.approx(1)
    assert m["footprint_cosine_mean"] == pytest.approx(1.0) and m["iou_median"] == 1.0
    assert m["late"]["n_true"] == 3 and m["late"]["recall"] == 1.0
    assert [b["n_true"] for b in m["pnr_bins"]] == [3, 4, 5]
    metrics_json(m)  # JSON-safe


def test_shuffled_and_rescaled_columns_still_match(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    perm = np.random.default_rng(3).permutation(12)
    scale = np.linspace(0.5, 3, 12).astype(np.float32)
    write_result(tmp_path / "r.h5", fp[perm] * scale[:, None, None], C[perm] * 7 + 2)
    m = evaluate_files(tmp_path / "r.h5", path)
    assert m["f1"] == 1.0 and m["trace_corr_median"] == pytest.approx(1.0)
    with h5py.File(tmp_path / "r.h5") as f:
        A = scipy.sparse.csc_array(
            (f["footprints/data"][()], f["footprints/indices"][()], f["footprints/indptr"][()]),
            shape=(DIMS[0] * DIMS[1], 12),
        )
    match = match_footprints(A, scipy.sparse.csc_array(fp.reshape(12, -1).T), DIMS)
    np.testing.assert_array_equal(perm[match.est_index], match.true_index)


def test_shifted_footprints_match_only_when_close(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    near = disc_footprints([(r + 1, c + 1) for r, c in grid_centres(12)])
    write_result(tmp_path / "near.h5", near, C)
    assert evaluate_files(tmp_path / "near.h5", path)["n_matched"] == 12
    far = disc_footprints([(r, c + 7) for r, c in grid_centres(12)])  # no overlap left
    write_result(tmp_path / "far.h5", far, C)
    m = evaluate_files(tmp_path / "far.h5", path)
    assert m["n_matched"] == 0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["trace_corr_median"] is None


def test_centroid_distance_cap():
    """Big footprints 11 px apart still overlap (IoU ~0.16): only the distance cap decides."""
    dims = (64, 64)
    true = disc_footprints([(32, 20)], dims, radius=10).reshape(1, -1).T
    est = disc_footprints([(32, 31)], dims, radius=10).reshape(1, -1).T
    capped = match_footprints(est, true, dims, min_iou=0.1, max_dist_px=10)
    assert len(capped.true_index) == 0
    loose = match_footprints(est, true, dims, min_iou=0.1, max_dist_px=12)
    assert loose.true_index.tolist() == [0] and loose.distance_px[0] == pytest.approx(11)
    assert 0.1 < loose.iou[0] < 0.3
    assert len(match_footprints(est, true, dims, max_dist_px=12).true_index) == 0  # IoU < 0.3


def test_extra_and_missing_neurons_change_precision_and_recall_exactly(truth_file, tmp_path):
    path, fp, C, pnr, _ = truth_file
    extra = disc_footprints([(40, 58), (40, 5), (3, 60)])
    write_result(
        tmp_path / "r.h5", np.concatenate([fp, extra]), np.concatenate([C, random_traces(3, 300)])
    )
    m = evaluate_files(tmp_path / "r.h5", path)
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(12 / 15)
    assert m["f1"] == pytest.approx(2 * 0.8 / 1.8)
    keep = [k for k in range(12) if k not in (0, 5)]  # drop a PNR-3 and a PNR-9 neuron
    write_result(tmp_path / "m.h5", fp[keep], C[keep])
    m = evaluate_files(tmp_path / "m.h5", path)
    assert m["recall"] == pytest.approx(10 / 12) and m["precision"] == 1.0
    assert m["pnr_bins"][0]["recall"] == pytest.approx(2 / 3)  # PNR < 5: 3, 4, 4.5
    assert m["pnr_bins"][1]["recall"] == pytest.approx(3 / 4)  # 5-10: 6, 7, 8, 9
    assert m["recall_high_pnr"] == pytest.approx(8 / 9)
    # estimates matched to low-PNR neurons are left out of the high-PNR precision
    assert m["precision_high_pnr"] == 1.0 and m["n_true_high_pnr"] == 9


def test_frames_window_and_frame_index_alignment(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    noisy = C.copy()
    noisy[:, :150] = np.random.default_rng(1).random((12, 150))
    write_result(tmp_path / "r.h5", fp, noisy)
    everything = evaluate_files(tmp_path / "r.h5", path)
    online = evaluate_files(tmp_path / "r.h5", path, EvaluationParams(frames=(150, 300)))
    assert everything["trace_corr_median"] < 0.9
    assert online["trace_corr_median"] == pytest.approx(1.0)
    assert online["n_frames_scored"] == 150 and online["frames_scored"] == [150, 300]
    # a result that covers truth frames 100..249 only, and says so
    write_result(tmp_path / "part.h5", fp, C[:, 100:250], frame_index=np.arange(100, 250))
    m = evaluate_files(tmp_path / "part.h5", path)
    assert m["trace_corr_median"] == pytest.approx(1.0) and m["n_frames_scored"] == 150


def test_late_neuron_detection_delay(truth_file, tmp_path):
    path, fp, C, pnr, birth = truth_file
    est_birth = np.where(birth > 0, birth + 25, 0)
    write_result(tmp_path / "r.h5", fp[:11], C[:11], birth=est_birth[:11])
    m = evaluate_files(tmp_path / "r.h5", path)
    assert m["late"]["recall"] == pytest.approx(2 / 3)
    assert m["late"]["detection_delay_frames_median"] == 25
    report = format_report(m)
    assert "late-born" in report and "PNR >= 5" in report


def test_bad_inputs_raise_input_file_error(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    write_result(tmp_path / "r.h5", fp, C)
    with pytest.raises(InputFileError, match="does not exist"):
        evaluate_files(tmp_path / "nope.h5", path)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="not a readable HDF5"):
        evaluate_files(tmp_path / "r.h5", tmp_path / "text.h5")
    with h5py.File(tmp_path / "broken.h5", "w") as f:
        f["truth/footprints"] = fp
    with pytest.raises(InputFileError, match="truth/C"):
        evaluate_files(tmp_path / "r.h5", tmp_path / "broken.h5")
    small = disc_footprints([(5, 5)], dims=(32, 32))
    write_result(tmp_path / "small.h5", small, C[:1])
    with pytest.raises(InputFileError, match="32x32"):
        evaluate_files(tmp_path / "small.h5", path)
    write_result(tmp_path / "long.h5", fp, np.zeros((12, 400)))
    with pytest.raises(InputFileError, match="truth has 300 frames"):
        evaluate_files(tmp_path / "long.h5", path)


def test_empty_result_and_params_validation(truth_file, tmp_path):
    path, *_ = truth_file
    write_result(tmp_path / "empty.h5", np.zeros((0, *DIMS), np.float32), np.zeros((0, 300)))
    m = evaluate_files(tmp_path / "empty.h5", path)
    assert m["n_found"] == 0 and m["recall"] == 0.0 and m["precision"] is None
    for bad in ({"threshold": 1.5}, {"min_iou": 0}, {"frames": (5, 2)}, {"pnr_bins": (10, 5)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EvaluationParams(**bad)


@settings(max_examples=40, deadline=None)
@given(
    keep=st.lists(st.booleans(), min_size=12, max_size=12),
    n_extra=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_matching_recovers_any_subset_permutation_and_extras(keep, n_extra, seed):
    """Kept true neurons (in any order) match their own copies; extras between them never do."""
    fp = disc_footprints(grid_centres(12))
    kept = np.flatnonzero(keep)
    extras = [(15.5 + 15 * (i // 3), 15.5 + 15 * (i % 3)) for i in range(n_extra)]
    est = np.concatenate([fp[kept], disc_footprints(extras)]) if extras else fp[kept]
    perm = np.random.default_rng(seed).permutation(len(est))
    est = est[perm]
    m = match_footprints(est.reshape(len(est), DIMS[0] * DIMS[1]).T, fp.reshape(12, -1).T, DIMS)
    assert (m.n_true, m.n_found) == (12, len(kept) + n_extra)
    assert sorted(m.true_index.tolist()) == kept.tolist()
    # est column j holds original row perm[j]; kept rows are indices into `kept`
    np.testing.assert_array_equal(kept[perm[m.est_index]], m.true_index)
    np.testing.assert_allclose(m.iou, 1.0)


def test_in_memory_evaluation_against_a_simulator():
    from acquisition.simulator import MiniscopeSimulator, SimulationParams
    from online_cnmfe.evaluation.metrics import estimate_from_arrays, evaluate, truth_from_simulator

    sim = MiniscopeSimulator(SimulationParams(height=64, width=64, n_frames=100, n_neurons=10))
    truth = truth_from_simulator(sim, 100)
    # an estimate for frames 20..99 of the first 8 neurons, footprints blurred a little
    A = scipy.ndimage.gaussian_filter(sim.truth.footprints[:8], (0, 0.7, 0.7))
    est = estimate_from_arrays(
        A.reshape(8, -1).T, sim.calcium(20, 100)[:8], (64, 64), frame_index=np.arange(20, 100)
    )
    m = evaluate(est, truth)
    assert m["recall"] == pytest.approx(0.8) and m["precision"] == 1.0
    assert m["trace_corr_median"] == pytest.approx(1.0) and m["n_frames_scored"] == 80
    assert 0.95 < m["footprint_cosine_median"] < 1.0


def test_missed_and_unmatched_indices_are_listed(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    extra = disc_footprints([(40, 58)])
    write_result(tmp_path / "r.h5", np.concatenate([fp[2:], extra]), np.concatenate([C[2:], C[:1]]))
    m = evaluate_files(tmp_path / "r.h5", path)
    assert m["missed_true"] == [0, 1] and m["unmatched_found"] == [10]


def test_nan_frames_are_left_out_of_the_trace_correlation(truth_file, tmp_path):
    path, fp, C, *_ = truth_file
    est = C.copy()
    est[:, 50:60] = np.nan  # frames the result skipped
    est[3, 100:110] = np.nan
    write_result(tmp_path / "r.h5", fp, est)
    m = evaluate_files(tmp_path / "r.h5", path)
    assert m["trace_corr_median"] == pytest.approx(1.0) and m["trace_corr_mean"] == pytest.approx(1)
    metrics_json(m)
    bad = fp.copy()
    bad[0, 5, 5] = np.nan
    write_result(tmp_path / "bad.h5", bad, C)
    with pytest.raises(InputFileError, match="NaN"):
        evaluate_files(tmp_path / "bad.h5", path)


def test_matching_leaves_the_callers_unsorted_footprints_alone():
    dense = disc_footprints([(20, 20), (30, 40)]).reshape(2, -1).T.astype(np.float64)
    A = scipy.sparse.csc_array(dense)
    A.indices[: A.indptr[1]] = A.indices[: A.indptr[1]][::-1].copy()  # unsorted column 0
    A.data[: A.indptr[1]] = A.data[: A.indptr[1]][::-1].copy()
    A.has_sorted_indices = False
    before = A.indices.copy()
    match = match_footprints(A, scipy.sparse.csc_array(dense), DIMS)
    assert match.true_index.tolist() == [0, 1]
    assert np.array_equal(A.indices, before)


def test_result_left_open_by_a_killed_swmr_writer_is_scored(truth_file, tmp_path):
    """The engine writes in SWMR mode; after a SIGKILL only an SWMR reader can open the file."""
    import signal
    import subprocess
    import sys

    path, fp, C, *_ = truth_file
    clean = tmp_path / "clean.h5"
    write_result(clean, fp, C)
    killed = tmp_path / "killed.h5"
    writer = (
        "import sys, time, h5py\n"
        "src = h5py.File(sys.argv[1], 'r'); f = h5py.File(sys.argv[2], 'w', libver='latest')\n"
        "[src.copy(k, f) for k in src]; f.attrs.update(src.attrs)\n"
        "f.swmr_mode = True; f.flush()\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(clean), str(killed)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError):
        h5py.File(killed, "r")  # what a plain reader meets
    metrics = evaluate_files(killed, path)
    assert metrics["f1"] == pytest.approx(1.0)
