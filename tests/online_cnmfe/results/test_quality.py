"""Summary images (running mean / max) and per-neuron quality metrics against slow references;
dF/F of a processed simulated movie against its ground truth."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels.session_summary import accumulate_sum_max
from online_cnmfe.results.quality import dff, neuron_quality, write_quality
from online_cnmfe.results.summary import SessionSummary
from tests.online_cnmfe.results.session_files import F0_7, W7, W7_PIXELS, write_session


# ---- summary images ------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    t=st.integers(1, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_running_mean_and_max_match_numpy(t, h, w, dtype, seed):
    rng = np.random.default_rng(seed)
    frames = (rng.random((t, h, w)) * 200).astype(dtype)
    s = SessionSummary((h, w))
    s.add_many(frames)
    img = s.images()
    np.testing.assert_allclose(img["mean"], frames.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_array_equal(img["max"], frames.max(0).astype(np.float32))
    assert s.n_frames == t and img["mean"].dtype == np.float32


def test_nan_pixels_are_left_out_and_counted():
    total, peak = np.zeros((1, 3)), np.full((1, 3), -np.inf, np.float32)
    frame = np.array([[1.0, np.nan, 3.0]], np.float32)
    assert accumulate_sum_max(frame, total, peak) == 1
    np.testing.assert_array_equal(total, [[1.0, 0.0, 3.0]])
    assert peak[0, 1] == -np.inf and peak[0, 2] == 3.0
    s = SessionSummary((1, 3))
    s.add(frame)
    assert s.n_with_nan == 1
    with pytest.raises(ValueError, match="shape"):
        s.add(np.zeros((2, 3)))
    assert np.isnan(SessionSummary((2, 2)).images()["mean"]).all()  # no frame yet


# ---- quality metrics ------------------------------------------------------------------------
def _reference(C, S, C_raw, birth):
    """Slow, obvious versions of the trace metrics (birth: first column alive)."""
    c, s, r = C[birth:].astype(np.float64), S[birth:], (C_raw - C)[birth:].astype(np.float64)
    noise = r.std()
    onsets = int(np.sum((s > 0) & ~np.r_[False, s[:-1] > 0]))
    return {
        "noise": noise,
        "snr": c.std() / noise,
        "pnr": c.max() / noise,
        "event_rate_hz": onsets / (c.size / 20.0),
    }


def test_metrics_match_a_slow_reference_across_read_blocks(tmp_path):
    path = write_session(tmp_path / "s.h5")
    with h5py.File(path, "r") as f:
        rows = {int(i): k for k, i in enumerate(f["neurons/neuron_ids"][()])}
        births = f["neurons/birth_frame"][()]
        traces = {n: f[f"traces/{n}"][()] for n in ("C", "S", "C_raw")}
        for block in (7, 4096):  # onsets and sums must not depend on the block boundaries
            q = neuron_quality(f, block=block)
            for k, nid in enumerate(q["neuron_id"].tolist()):
                r = rows[nid]
                ref = _reference(*(traces[n][r] for n in ("C", "S", "C_raw")), births[r])
                for key, value in ref.items():
                    assert q[key][k] == pytest.approx(value, rel=1e-5), (nid, key, block)
    by_id = {int(row["neuron_id"]): row for row in q}
    assert by_id[7]["size_px"] == 4 and by_id[9]["size_px"] == 1
    assert by_id[7]["f0"] == pytest.approx(F0_7) and by_id[9]["f0"] == pytest.approx(100.0)
    assert by_id[7]["peak_dff"] == pytest.approx(traces["C"][rows[7]].max() / F0_7)
    assert np.isnan(by_id[7]["spatial_corr"])  # no corr x PNR image in this file


def test_spatial_corr_is_one_for_a_footprint_that_is_the_image(tmp_path):
    path = write_session(tmp_path / "s.h5")
    img = np.random.default_rng(0).random((16, 32)).astype(np.float32)
    for (r, c), v in zip(W7_PIXELS, W7, strict=True):
        img[r, c] = 3.0 * v + 1.0  # neuron 7's weights, scaled and shifted
    with h5py.File(path, "a") as f:
        f["images/corr_pnr"][...] = img
        f["images/corr_pnr"].attrs["set"] = True
    table = write_quality(path)
    corr = dict(zip(table["neuron_id"].tolist(), table["spatial_corr"].tolist(), strict=True))
    assert corr[7] == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(corr[9])  # one pixel: no correlation
    with h5py.File(path, "r") as f:
        assert f["quality"].shape == (2,)


def test_dff_divides_by_a_positive_baseline_only():
    out = dff(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([2.0, 0.0, np.nan]))
    np.testing.assert_allclose(out[0], [0.5, 1.0])
    assert np.isnan(out[1:]).all()


def test_dff_of_a_processed_simulation_matches_the_truth(tmp_path):
    """dF/F = C (a.a) / (a.b0) computed from the result and from the simulator's truth."""
    from online_cnmfe.cli import main
    from online_cnmfe.params import CNMFEParams
    from online_cnmfe.results import state_file
    from tests.online_cnmfe.model_fixtures import make_movie, truth_init

    movie = make_movie(n_frames=260, seed=8)
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        f.create_dataset("movie", data=movie.frames)
    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})
    state_file.save_model(
        tmp_path / "init.h5", params, truth_init(movie, 120), fmt=state_file.INIT_FORMAT
    )
    out = tmp_path / "r.h5"
    rc = main(
        ["process", str(tmp_path / "movie.h5"), "--out", str(out), "--init-result",
         str(tmp_path / "init.h5"), "--init-frames", "120", "--set", "data.neuron_diameter_px=8",
         "--set", "detection.enabled=false", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    with h5py.File(out, "r") as f:
        q = f["quality"][()]
        assert f["images/mean"].attrs["n_frames"] == 260
        np.testing.assert_allclose(f["images/mean"][()], movie.frames.mean(0), rtol=1e-4, atol=1e-3)
    A = movie.A.toarray().astype(np.float64)
    b0 = movie.background.mean(axis=0).ravel()
    true_peak = movie.C.max(axis=1) * (A * A).sum(0) / (A.T @ b0)
    assert q["neuron_id"].tolist() == list(range(A.shape[1]))
    np.testing.assert_allclose(q["peak_dff"], true_peak, rtol=0.25)
    assert np.median(np.abs(q["peak_dff"] / true_peak - 1)) < 0.1
