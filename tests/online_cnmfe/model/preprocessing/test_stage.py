"""The preprocessing stage on simulated nuisance with known truth: line noise, corrupt frames,
the lens margin, bleaching, the noise estimate; the state's contract (frozen on flagged
frames, no per-frame allocation, exact replay of the initialisation corrections)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.ndimage as ndi

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from acquisition.simulator_nuisance import line_offsets
from online_cnmfe.model.preprocessing import (
    pixel_noise,
    preprocess_frame,
    preprocess_movie,
    replay_corrections,
)
from online_cnmfe.model.preprocessing.fov import find_fov
from online_cnmfe.params import CNMFEParams

SIZE, N, N_INIT = 96, 500, 200
V4 = dict(line_noise_sigma=20.0, row_band_amplitude=10.0)


def _sim(**kw) -> MiniscopeSimulator:
    base = dict(height=SIZE, width=SIZE, n_frames=N, n_neurons=20, neuron_diameter_px=10.0)
    return MiniscopeSimulator(SimulationParams(**{**base, **kw}))


def _params(**kw) -> CNMFEParams:
    return CNMFEParams().replace(**{"data.neuron_diameter_px": 10.0, **kw})


def _run(frames: np.ndarray, params: CNMFEParams):
    """(state, corrected frames (T, H, W), flags (T,)): batch on N_INIT, then per frame."""
    Y = np.ascontiguousarray(frames, np.float32).copy()
    pre = preprocess_movie(Y[:N_INIT], params)
    flags = list(pre.init.flagged)
    for t in range(N_INIT, len(Y)):
        flags.append(preprocess_frame(pre, Y[t].reshape(-1), params.preprocess) is not None)
    return pre, Y, np.asarray(flags)


def _high_pass_rows(x: np.ndarray) -> np.ndarray:
    """Row profile minus its smooth part (what the ring background cannot absorb)."""
    return x - ndi.gaussian_filter1d(x, 6.0, axis=-1, mode="nearest")


@pytest.fixture(scope="module")
def noisy():
    sim = _sim(seed=4, **V4)
    pre, Y, flags = _run(sim.frames(0, N), _params())
    return sim, pre, Y, flags


def _row_error(sim, Y) -> tuple[float, float]:
    """(row noise left in the corrected frames, row noise injected), both high-passed."""
    clean = sim.render(0, N, noise=False)  # everything but the noise and the lines
    p = sim.params
    lines = np.stack(
        [line_offsets(p.seed, t, SIZE, 20.0, 10.0, 20.0, sim._bands) for t in range(N)]
    )
    rows_after = (Y - clean).mean(axis=2)  # per-row error left in the corrected frames
    after = _high_pass_rows(rows_after - rows_after.mean(axis=0)).std()
    return float(after), float(_high_pass_rows(lines - lines.mean(axis=0)).std())


def test_line_noise_is_removed(noisy):
    after, before = _row_error(noisy[0], noisy[2])
    # out-of-focus neuropil (sigma 9-15 px) spans much of a 96-px row: its fluctuation moves
    # the row medians (at 256 px the same scene leaves ~0.15, see BENCHMARKS.md)
    assert after < 0.35 * before, (after, before)


def test_line_noise_removal_reaches_the_noise_floor_without_background():
    sim = _sim(seed=5, n_neuropil=0, n_blobs=0, **V4)
    _, Y, _ = _run(sim.frames(0, N), _params())
    after, before = _row_error(sim, Y)
    # the mean over a row of the pixel noise alone is 10 / sqrt(96) ~ 1
    assert after < 0.07 * before, (after, before)


def test_clean_frames_are_not_flagged(noisy):
    assert not noisy[3].any(), np.flatnonzero(noisy[3])


def test_corrupt_frames_are_flagged_with_their_reason():
    sim = _sim(seed=6, corrupt_fraction=0.08, **V4)
    truth = sim.corrupt_frames(0, N) > 0
    pre, _, flags = _run(sim.frames(0, N), _params())
    assert truth.sum() >= 20
    recall = (flags & truth).sum() / truth.sum()
    assert recall >= 0.95, np.flatnonzero(truth & ~flags)
    assert not (flags & ~truth).any(), np.flatnonzero(flags & ~truth)
    assert pre.n_flagged == flags.sum()
    assert all(r.startswith("corrupt: ") for r in pre.init.reasons)
    assert any("broken rows" in r for r in pre.init.reasons)


def test_a_flagged_frame_teaches_the_state_nothing(noisy):
    _, pre, _, _ = noisy
    before = (pre.template.copy(), pre.rough_base.copy(), pre.level, pre.gain_ref)
    frame = _sim(seed=4, **V4).frames(N - 1, N)[0].astype(np.float32)
    frame[20:40] = 0.0  # missing lines
    reason = preprocess_frame(pre, frame.reshape(-1), _params().preprocess)
    assert reason is not None and "20 flat or missing" in reason
    assert np.array_equal(pre.template, before[0]) and np.array_equal(pre.rough_base, before[1])
    assert (pre.level, pre.gain_ref) == before[2:]


def test_no_allocation_per_frame(noisy):
    _, pre, _, _ = noisy
    p = _params().preprocess
    buf = np.ascontiguousarray(_sim(seed=4, **V4).frames(N - 1, N)[0], np.float32).reshape(-1)
    preprocess_frame(pre, buf.copy(), p)  # compiled already; warm the Python paths
    tracemalloc.start()
    for _ in range(20):
        preprocess_frame(pre, buf, p)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < buf.nbytes // 8, f"{peak} bytes traced for frames of {buf.nbytes}"


def test_lens_margin_is_found_inside_the_truth():
    sim = _sim(seed=7, lens_radius_fraction=0.85, **V4)
    pre, _, _ = _run(sim.frames(0, N_INIT + 1), _params())
    truth = sim.truth.fov_mask
    assert pre.fov_found
    assert not (pre.fov & ~truth).any(), "pixels outside the lens called inside"
    assert pre.fov.sum() > 0.8 * truth.sum()  # the excluded band along the edge is d / 4
    assert pre.dark == pytest.approx(100.0, abs=5.0)


def test_no_margin_no_mask(noisy):
    _, pre, _, _ = noisy
    assert not pre.fov_found and pre.fov.all() and pre.dark == 0.0


def test_dim_tissue_at_the_border_is_not_a_lens_margin():
    # A corner 3x darker than the rest (a vignette, a dark background patch) that fluctuates
    # with the same smooth background as the rest of the field: tissue, not a margin (the
    # held-out movies without a margin lost 6-16 % of their frame to such corners at the
    # former fov_min_contrast of 2; fails with 2).
    sim = _sim(seed=9)
    frames = sim.frames(0, N_INIT).astype(np.float32)
    rng = np.random.default_rng(0)
    T, H, W = frames.shape
    drift = ndi.gaussian_filter(rng.standard_normal((T, H, W)).astype(np.float32), (0, 6, 6))
    frames += 40.0 * drift / drift.std()
    gain = np.ones((H, W), np.float32)
    gain[: H // 3, : W // 3] = 1 / 3
    params = _params()
    mask, dark = find_fov(frames * gain, (frames * gain).mean(axis=0), params)
    assert mask is None and dark == 0.0
    # the same corner as a true margin (sensor noise only) is found
    frames[:, : H // 3, : W // 3] = 100.0 + rng.standard_normal((T, H // 3, W // 3)) * 2.0
    mask, dark = find_fov(frames, frames.mean(axis=0), params)
    assert mask is not None and not mask[: H // 3 - 2, : W // 3 - 2].any()


def test_replay_reproduces_the_initialisation_corrections():
    sim = _sim(seed=8, corrupt_fraction=0.05, lens_radius_fraction=0.9, **V4)
    raw = sim.frames(0, N_INIT)
    Y = raw.astype(np.float32)
    pre = preprocess_movie(Y, _params())
    tail = replay_corrections(raw[-120:], pre, _params())
    good = ~pre.init.flagged[-120:]
    np.testing.assert_allclose(tail[good], Y[-120:][good], atol=1e-3)
    assert pre.init.flagged[-120:].any()  # and the flagged ones were replaced
    bad = np.flatnonzero(~good)
    assert not np.array_equal(tail[bad[0]], Y[-120:][bad[0]])


def test_bleaching_is_normalised_online():
    """Against the twin without bleaching (the scene's own brightness varies too)."""
    ratios = {}
    for tb in (0.0, 60.0):  # 60 s: e^-1 of the signal left after the 60 s movie
        raw = _sim(seed=9, bleach_time_s=tb, n_frames=1200).frames(0, 1200).astype(np.float32)
        _, Y, _ = _run(raw, _params())
        level, level_raw = Y.mean(axis=(1, 2)), raw.mean(axis=(1, 2))
        first = slice(N_INIT, N_INIT + 100)
        ratios[tb] = (level[-100:].mean() / level[first].mean(),
                      level_raw[-100:].mean() / level_raw[first].mean())  # fmt: skip
    assert ratios[60.0][1] < 0.6 * ratios[0.0][1]
    assert ratios[60.0][0] == pytest.approx(ratios[0.0][0], rel=0.05), ratios


def test_noise_estimate_is_the_pixel_noise_after_line_removal(noisy):
    sim, _, Y, _ = noisy
    twin = _sim(seed=4)  # the same scene without line noise
    sn_twin = np.median(pixel_noise(twin.frames(0, N).astype(np.float32)))
    sn_raw = np.median(pixel_noise(sim.frames(0, N).astype(np.float32)))
    sn = np.median(pixel_noise(Y))
    assert sn_raw > 1.6 * sn_twin  # rows of sigma 20 on pixels of sigma 10
    assert sn == pytest.approx(sn_twin, rel=0.1)


def test_pixel_noise_rejects_bad_input():
    with pytest.raises(ValueError, match="T >= 4"):
        pixel_noise(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="freq_range"):
        pixel_noise(np.zeros((10, 4, 4), np.float32), (0.4, 0.2))


def test_all_frames_corrupt_is_a_clear_error():
    rng = np.random.default_rng(0)
    frames = (100 + rng.normal(0, 2, (40, 32, 32))).astype(np.float32)
    for t in range(40):  # a noise band in every frame, each row hit in a quarter of them
        r0 = (t * 8) % 32
        frames[t, r0 : r0 + 8] = rng.uniform(0, 255, (8, 32))
    with pytest.raises(ValueError, match="all 40 initialisation frames look corrupt"):
        preprocess_movie(frames, _params(**{"init.init_frames": 40}))


def test_diameter_estimate_is_logged_not_applied(caplog):
    from online_cnmfe.model.initialization.fit import fit_initial
    from online_cnmfe.model.preprocessing.diameter import DIAMETER_RANGE_PX, estimate_diameter

    assert np.isnan(estimate_diameter(np.zeros((10, 8, 8), np.float32), 20.0))
    frames = _sim(seed=12).frames(0, 120)
    params = _params(**{"preprocess.estimate_diameter": True, "init.init_frames": 120})
    with caplog.at_level("INFO"):
        init = fit_initial(frames, params)
    d = init.preprocess.diameter_px
    assert DIAMETER_RANGE_PX[0] <= d <= DIAMETER_RANGE_PX[1]
    assert f"estimated neuron diameter: {d:.1f} px" in caplog.text
    assert params.data.neuron_diameter_px == 10.0  # only logged


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_median_image_equals_numpy(n):
    """The template's median by a sort gives np.median's values (ties, an even count)."""
    from online_cnmfe.model.preprocessing.batch import median_image

    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 9, 11)).astype(np.float32).round(1)
    got = median_image(X)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.median(X, axis=0))
