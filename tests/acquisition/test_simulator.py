"""The ground-truth simulator: determinism, statistics against its truth, file layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.ndimage
import tifffile

from acquisition.simulator import (
    BLOCK_FRAMES,
    MiniscopeSimulator,
    SimulationParams,
    load_simulator,
    write_simulation,
)
from acquisition.simulator_dynamics import bilinear_shift

SMALL = dict(height=64, width=64, n_frames=200, n_neurons=12, n_neuropil=4, n_blobs=3)


def small(**kw) -> MiniscopeSimulator:
    return MiniscopeSimulator(SimulationParams(**{**SMALL, **kw}))


# ---- determinism ---------------------------------------------------------------------------
def test_frames_identical_whatever_the_chunking():
    sim = small()
    whole = sim.frames(0, 200)
    for step in (1, 7, 33, 200):
        other = small()  # fresh caches
        parts = [other.frames(t, min(t + step, 200)) for t in range(0, 200, step)]
        np.testing.assert_array_equal(np.concatenate(parts), whole, err_msg=f"chunk {step}")
    # out of order access gives the same frames
    other = small()
    np.testing.assert_array_equal(other.frames(150, 170), whole[150:170])
    np.testing.assert_array_equal(other.frames(3, 5), whole[3:5])


def test_traces_identical_across_block_boundaries_and_access_order():
    p = dict(n_frames=2 * BLOCK_FRAMES + 100, motion_px=2.0)
    a, b = small(**p), small(**p)
    c_late_first = b.calcium(BLOCK_FRAMES + 500, BLOCK_FRAMES + 520)
    full = a.calcium(0, p["n_frames"])
    np.testing.assert_array_equal(c_late_first, full[:, BLOCK_FRAMES + 500 : BLOCK_FRAMES + 520])
    lo, hi = BLOCK_FRAMES - 5, BLOCK_FRAMES + 5
    np.testing.assert_array_equal(b.spikes(lo, hi), a.spikes(0, hi)[:, lo:])
    np.testing.assert_array_equal(b.motion(lo, hi), a.motion(0, hi)[lo:])
    # the AR state is carried over the block boundary: C follows its AR model exactly there
    g = a.truth.g
    S = a.spikes(0, hi)
    pred = g[:, :1] * full[:, lo - 1 : hi - 1] + g[:, 1:2] * full[:, lo - 2 : hi - 2] + S[:, lo:hi]
    np.testing.assert_allclose(full[:, lo:hi], pred, rtol=1e-4, atol=1e-3)


def test_seed_changes_the_movie_and_endless_streams_work():
    assert not np.array_equal(small(seed=1).frames(0, 10), small(seed=2).frames(0, 10))
    a = small(n_frames=None)
    b = small(n_frames=None)
    far = a.frames(2500, 2510)
    b.frames(0, 10)
    np.testing.assert_array_equal(b.frames(2500, 2510), far)
    frames = [f for _, (_, f) in zip(range(40), a.iter_frames(start=10), strict=False)]
    np.testing.assert_array_equal(np.stack(frames), b.frames(10, 50))
    with pytest.raises(ValueError, match="frame range"):
        small().frames(150, 201)


# ---- statistics against the truth ----------------------------------------------------------
def test_pnr_measured_in_the_movie_matches_the_truth_and_the_range():
    """Regress each neuron's brightest pixel on the true traces: gain ~1, PNR as stored."""
    sim = small(n_frames=400, pnr_range=(4.0, 12.0), background_strength=0.0, dtype="float32")
    movie = sim.frames(0, 400).reshape(400, -1)
    A = sim.truth.A.toarray()
    C = sim.calcium(0, 400)
    measured = []
    for k in range(sim.truth.n_neurons):
        p = int(np.argmax(A[:, k]))
        X = np.column_stack([np.ones(400), (C.T * A[p][None, :])[:, A[p] > 0]])
        beta, *_ = np.linalg.lstsq(X, movie[:, p], rcond=None)
        resid = movie[:, p] - X @ beta
        sigma = resid.std(ddof=X.shape[1])
        gain = beta[1 + int(np.flatnonzero(np.flatnonzero(A[p] > 0) == k)[0])]
        measured.append(gain * C[k].max() / sigma)
        assert abs(sigma - sim.params.noise_sigma) < 0.15 * sim.params.noise_sigma
    measured = np.array(measured)
    np.testing.assert_allclose(measured, sim.truth.pnr, rtol=0.15)
    assert (measured > 4.0 * 0.85).all() and (measured < 12.0 * 1.15).all(), measured
    assert (sim.truth.pnr >= 4.0 - 1e-4).all() and (sim.truth.pnr <= 12.0 + 1e-4).all()


def test_calcium_rises_where_the_truth_has_spikes():
    sim = small(n_frames=400, rise_time_s=0.0, pnr_range=(15.0, 20.0), firing_rate_hz=1.0)
    S, C = sim.spikes(0, 400), sim.calcium(0, 400)
    g = sim.truth.g
    assert g.shape == (12, 1)
    np.testing.assert_allclose(C[:, 1:], g * C[:, :-1] + S[:, 1:], rtol=1e-4, atol=1e-3)
    spikes = S[:, 1:] > 0
    assert spikes.sum() > 12 * 5
    jump = np.diff(C, axis=1)
    assert (jump[spikes] > 0).all() and (jump[~spikes] <= 1e-4).all()
    # and in the movie itself: the brightest pixel jumps up on spike frames, on average
    movie = sim.frames(0, 400).astype(np.float32).reshape(400, -1)
    for k in range(sim.truth.n_neurons):
        y = movie[:, int(sim.truth.A[:, [k]].toarray().argmax())]
        dy = np.diff(y)
        big = S[k, 1:] > 0.5 * S[k].max()
        assert dy[big].mean() > 3 * sim.params.noise_sigma > dy[~big].mean(), k
    # spike counts follow the firing rates (loosely: Poisson, log-normal rates)
    rate = (S > 0).sum() / (12 * 400 / sim.params.frame_rate_hz)
    assert 0.4 < rate < 2.5


def test_background_dominates_the_neural_signal():
    sim = small(n_frames=200)
    bg = sim.render(0, 200, neurons=False, noise=False).reshape(200, -1)
    neural = sim.render(0, 200, background=False, noise=False).reshape(200, -1)
    assert bg.mean() > 20 * neural.mean()
    assert bg.var(axis=0).sum() > neural.var(axis=0).sum()  # its fluctuations dominate too
    total = sim.render(0, 200)
    np.testing.assert_allclose(
        total.reshape(200, -1),
        bg + neural + sim.render(0, 200, neurons=False, background=False).reshape(200, -1),
        atol=1e-2,
    )
    np.testing.assert_allclose(sim.truth.background_mean.ravel(), bg.mean(0), rtol=0.1)
    flat = small(n_frames=200, background_strength=0.0)
    assert flat.render(0, 200, neurons=False, noise=False).var(axis=0).max() < 1e-3


def _shift_between(ref: np.ndarray, img: np.ndarray) -> tuple[int, int]:
    """Integer (row, col) displacement of img relative to ref by FFT cross-correlation."""
    f = np.fft.fft2(img - img.mean()) * np.conj(np.fft.fft2(ref - ref.mean()))
    corr = np.fft.ifft2(f).real
    r, c = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return (r - h if r > h // 2 else r, c - w if c > w // 2 else c)


def test_motion_shifts_follow_the_truth():
    still = small(n_frames=120, n_vessels=2)
    moving = small(n_frames=120, n_vessels=2, motion_px=4.0)
    motion = moving.motion(0, 120)
    assert np.abs(motion).max() <= 4.0 and motion.std() > 0.3
    assert np.abs(motion[0]).max() < 1.0  # starts near the reference position
    np.testing.assert_array_equal(still.calcium(0, 120), moving.calcium(0, 120))
    # high-pass the clean frames: neurons and vessels move with the tissue, the smooth
    # vignetting stays with the sensor
    ref = still.render(0, 120, noise=False)
    img = moving.render(0, 120, noise=False)
    ref = ref - scipy.ndimage.gaussian_filter(ref, (0, 4, 4))
    img = img - scipy.ndimage.gaussian_filter(img, (0, 4, 4))
    hits = 0
    for t in range(0, 120, 4):
        est = _shift_between(ref[t], img[t])
        hits += np.abs(np.array(est) - motion[t]).max() <= 0.75
    assert hits >= 27, hits  # of 30


def test_late_neurons_are_silent_until_their_birth():
    sim = small(n_frames=400, late_fraction=0.5, late_after_frame=100)
    birth = sim.truth.birth_frame
    late = np.flatnonzero(birth > 0)
    assert len(late) == 6 and (birth[late] >= 100).all() and (birth[late] < 400).all()
    C, S = sim.calcium(0, 400), sim.spikes(0, 400)
    for k in late:
        assert not C[k, : birth[k]].any() and S[k, birth[k]] > 0
    assert (C[birth == 0, :60].max(axis=1) > 0).all()  # early neurons fire early


def test_footprints_are_peak_normalised_gaussians_of_the_requested_size():
    sim = small(neuron_diameter_px=12.0)
    fp = sim.truth.footprints
    assert fp.shape == (12, 64, 64) and fp.dtype == np.float32
    np.testing.assert_allclose(fp.max(axis=(1, 2)), 1.0)
    # area above half maximum of a Gaussian of sigma s is 2 ln2 pi s^2 (s ~ diameter / 4)
    area = (fp >= 0.5).sum(axis=(1, 2))
    expected = 2 * np.log(2) * np.pi * 3.0**2
    assert 0.6 * expected < np.median(area) < 1.6 * expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("height", 8),
        ("n_frames", 0),
        ("pnr_range", (5, 2)),
        ("dtype", "int8"),
        ("late_fraction", 1.5),
        ("rise_time_s", 1.0),
        ("noise_sigma", 0.0),
    ],
)
def test_params_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        SimulationParams(**{field: value})


# ---- files ---------------------------------------------------------------------------------
def test_write_simulation_layout_and_tiff(tmp_path):
    sim = small(late_fraction=0.25, late_after_frame=50, motion_px=1.0)
    out = write_simulation(tmp_path / "sim.h5", sim, fmt="tiff", progress=False)
    assert out["n_frames"] == 200 and out["n_clipped"] == 0
    with h5py.File(tmp_path / "sim.h5", "r") as f:
        assert f.attrs["format"] == "online-cnmfe-simulation"
        assert f.attrs["frame_rate_hz"] == 20.0
        assert json.loads(f.attrs["params"])["n_neurons"] == 12
        movie = f["movie"][()]
        assert movie.dtype == np.uint16 and movie.shape == (200, 64, 64)
        assert f["movie"].attrs["gain"] == 1.0 and f["movie"].attrs["offset"] == 0.0
        np.testing.assert_array_equal(movie, sim.frames(0, 200))
        t = f["truth"]
        np.testing.assert_array_equal(t["C"][()], sim.calcium(0, 200))
        np.testing.assert_array_equal(t["S"][()], sim.spikes(0, 200))
        np.testing.assert_array_equal(t["footprints"][()], sim.truth.footprints)
        np.testing.assert_allclose(t["pnr"][()], t["C"][()].max(axis=1) / 10.0, rtol=1e-5)
        assert t["birth_frame"].shape == (12,) and t["g"].shape == (12, 2)
        assert t["motion"].shape == (200, 2) and t["background_mean"].shape == (64, 64)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "sim.tif"), movie)
    # the sparse copy of the footprints holds the same A as the dense stack
    from online_cnmfe.evaluation.files import read_truth

    with h5py.File(tmp_path / "sim.h5", "r") as f:
        dense = f["truth/footprints"][()].reshape(12, -1).T
    assert abs(read_truth(tmp_path / "sim.h5")["A"] - dense).max() == 0
    np.testing.assert_array_equal(load_simulator(tmp_path / "sim.h5").frames(190, 200), movie[190:])


def test_write_float32_part_of_an_endless_movie(tmp_path):
    sim = small(n_frames=None, dtype="float32")
    out = write_simulation(tmp_path / "s.h5", sim, n_frames=70, progress=False)
    with h5py.File(out["path"], "r") as f:
        assert f["movie"].dtype == np.float32 and f["movie"].shape == (70, 64, 64)
        assert f["truth/C"].shape == (12, 70)
    with pytest.raises(ValueError, match="n_frames"):
        write_simulation(tmp_path / "t.h5", sim, progress=False)


@pytest.mark.parametrize("shift", [(1.3, -2.7), (-0.4, 0.0), (3.0, 4.0), (-3.9, 2.2)])
def test_bilinear_shift_matches_scipy(shift):
    x = np.random.default_rng(0).random((2, 20, 30)).astype(np.float32)
    out = np.empty_like(x)
    bilinear_shift(x, np.array(shift, np.float32), out)
    ref = scipy.ndimage.shift(x, (0, *shift), order=1, mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_shot_noise_variance_follows_brightness():
    sim = small(n_frames=300, photons_per_unit=0.5, background_strength=0.0, n_neurons=0)
    clean = sim.render(0, 300, noise=False)
    noise = sim.render(0, 300) - clean
    mean = clean.mean(axis=0)
    var = noise.var(axis=0)
    dark, bright = mean < np.quantile(mean, 0.2), mean > np.quantile(mean, 0.8)
    for sel in (dark, bright):
        expected = sim.params.noise_sigma**2 + mean[sel].mean() / 0.5
        assert abs(var[sel].mean() / expected - 1) < 0.05
    assert var[bright].mean() > var[dark].mean() * 1.1
    # without shot noise, the same seed gives the same Gaussian noise
    plain = small(n_frames=300, background_strength=0.0, n_neurons=0)
    assert np.abs(plain.render(0, 300) - plain.render(0, 300, noise=False)).std() < 10.5


@pytest.mark.parametrize(
    "counts", [dict(n_neurons=0), dict(n_neuropil=0, n_blobs=0), dict(n_neurons=1, motion_px=1.0)]
)
def test_empty_or_tiny_scenes(counts, tmp_path):
    sim = small(n_frames=40, **counts)
    write_simulation(tmp_path / "s.h5", sim, progress=False)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["truth/footprints"].shape == (sim.params.n_neurons, 64, 64)
        assert f["truth/C"].shape == (sim.params.n_neurons, 40)
        assert np.isfinite(f["movie"][()]).all()


def test_params_round_trip_and_reject_unknown_keys():
    p = SimulationParams(height=32, width=48, n_frames=None, pnr_range=(2, 9), seed=4)
    assert SimulationParams.from_dict(json.loads(p.to_json())) == p
    with pytest.raises(ValueError, match="did you mean n_neurons"):
        SimulationParams.from_dict({"n_neuron": 3})


def test_jumps_are_sudden_held_and_leave_the_rest_unchanged():
    base = dict(n_frames=1000, frame_rate_hz=20.0, n_neurons=2, height=32, width=32, seed=4)
    still = MiniscopeSimulator(SimulationParams(**base))
    jumpy = MiniscopeSimulator(SimulationParams(jump_rate_hz=0.1, jump_px=(8.0, 12.0), **base))
    m = jumpy.motion(0, 1000)
    size = np.hypot(*m.T)
    assert size.max() >= 8.0 and (size < 0.01).mean() > 0.3  # jumps, and rest at 0 between
    steps = np.hypot(*np.diff(m, axis=0).T)
    assert ((steps > 7.0) & (steps < 24.1)).sum() >= 2  # in one frame, not a ramp
    np.testing.assert_array_equal(still.calcium(0, 1000), jumpy.calcium(0, 1000))
    np.testing.assert_array_equal(jumpy.motion(500, 600), m[500:600])  # chunking-independent
    again = SimulationParams.from_dict(jumpy.params.to_dict())
    assert again == jumpy.params
    with pytest.raises(ValueError, match="jump_px"):
        SimulationParams(jump_px=(0.0, 3.0))
