"""The held-out generator (benchmarks/heldout): determinism, the PNR definition, the motion
sign convention and the file layout the evaluator and `process` read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.ndimage

from benchmarks.heldout.generator import HeldoutMovie, write_movie
from benchmarks.heldout.params import HeldoutParams
from benchmarks.heldout.regimes import REGIMES, regime_params, user_overrides

SMALL = dict(
    height=48,
    width=48,
    n_frames=120,
    n_neurons=6,
    n_neuropil=4,
    n_blobs=2,
    frame_rate_hz=10.0,
    seed=3,
)


def small(**kw) -> HeldoutParams:
    return HeldoutParams(**{**SMALL, **kw})


def test_same_seed_same_movie_whatever_the_chunking():
    p = small(line_noise_sigma=5.0, band_amplitude=3.0, corrupt_fraction=0.05, motion_std_px=1.0)
    whole = HeldoutMovie(p).frames(0, 40)
    other = HeldoutMovie(p)
    pieces = np.concatenate([other.frames(0, 7), other.frames(7, 30), other.frames(30, 40)])
    np.testing.assert_array_equal(whole, pieces)
    assert not np.array_equal(whole, HeldoutMovie(small(seed=4)).frames(0, 40))


def test_pnr_is_peak_calcium_over_noise_sigma_as_measured_in_the_movie():
    # one isolated neuron on a flat, steady background: the movie at its brightest pixel is
    # baseline + C + noise, so the regression slope on C is 1 and the residual std is sigma
    p = small(
        n_neurons=1,
        n_neuropil=0,
        n_blobs=0,
        drift_amplitude=0.0,
        n_frames=600,
        pnr=(6.0, 6.0),
        rate_hz=(1.0, 1.0),
        noise_sigma=4.0,
    )
    movie = HeldoutMovie(p)
    C = movie.activity.C[0]
    np.testing.assert_allclose(movie.activity.pnr, C.max() / p.pnr_sigma)
    np.testing.assert_allclose(movie.activity.pnr, 6.0, rtol=1e-9)
    A = movie.A.toarray()[:, 0]
    assert A.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(A), (p.height, p.width))
    y = movie.frames(0, p.n_frames)[:, peak[0], peak[1]].astype(np.float64)
    slope, intercept = np.polyfit(C, y, 1)
    assert slope == pytest.approx(1.0, abs=0.08)
    residual = y - (slope * C + intercept)
    assert residual.std() == pytest.approx(p.noise_sigma, rel=0.1)


def test_shifting_frame_t_by_minus_motion_registers_it_to_the_truth():
    kw = dict(n_frames=60, noise_sigma=0.5, n_neurons=10, pnr=(60.0, 80.0), rate_hz=(3.0, 3.0))
    moving = HeldoutMovie(small(motion_std_px=3.0, motion_time_s=0.5, **kw))
    still = HeldoutMovie(small(**kw))
    t = int(np.argmax(np.hypot(*moving.motion.T)))
    m = moving.motion[t].astype(np.float64)
    assert np.hypot(*m) > 2.0
    frame = moving.frames(t, t + 1)[0].astype(np.float64)
    ref = still.frames(t, t + 1)[0].astype(np.float64)
    inner = (slice(10, -10), slice(10, -10))
    right = scipy.ndimage.shift(frame, -m, order=3, mode="nearest")[inner] - ref[inner]
    wrong = scipy.ndimage.shift(frame, +m, order=3, mode="nearest")[inner] - ref[inner]
    assert np.abs(right).mean() < 0.2 * np.abs(wrong).mean()
    assert np.abs(right).mean() < 2.0


def test_file_is_read_by_the_evaluator_and_the_sources(tmp_path):
    from acquisition.sources import open_source
    from online_cnmfe.evaluation import estimate_from_arrays, evaluate, read_truth

    p = small(late_fraction=0.5, lens_radius_frac=1.0, corrupt_fraction=0.05)
    path = write_movie(tmp_path / "m.h5", p, chunk_frames=50)["path"]
    truth = read_truth(path)
    assert truth["A"].shape == (48 * 48, 6) and truth["C"].shape == (6, 120)
    assert (truth["birth_frame"] > 0).any()
    for k in np.flatnonzero(truth["birth_frame"]):
        b = truth["birth_frame"][k]
        assert not truth["C"][k, :b].any() and truth["C"][k, b] > 0
    metrics = evaluate(estimate_from_arrays(truth["A"], truth["C"], truth["dims"]), truth)
    assert metrics["f1"] == 1.0 and metrics["trace_corr_median"] == pytest.approx(1.0)
    with h5py.File(path) as f:
        assert f["movie"].dtype == np.uint16 and f["movie"].shape == (120, 48, 48)
        assert f["truth/motion"].shape == (120, 2)
        assert len(f["truth/corrupt_frames"]) == 6
        np.testing.assert_allclose(
            f["truth/pnr"][()],
            f["truth/C"][()].max(axis=1) / f["truth"].attrs["noise_sigma"],
            rtol=1e-5,
        )
        np.testing.assert_array_equal(f["movie"][:50], HeldoutMovie(p).frames(0, 50))
    source = open_source(path)
    assert source.info.frame_rate_hz == 10.0 and source.info.n_frames == 120


def test_every_regime_builds_quick_and_names_its_user_overrides():
    for name in REGIMES:
        p = regime_params(name, quick=True)
        assert p.n_frames >= 700 and p.height <= 192
        sets = user_overrides(name)
        assert sets[0].startswith("data.frame_rate_hz=") and sets[1].startswith(
            "data.neuron_diameter_px="
        )
    assert regime_params("motion_free").replace(
        **{"motion_std_px": 3.0, "jump_rate_hz": 0.05, "jump_px": (9.0, 11.0)}
    ) == regime_params("motion_3px")
