"""Real-recording nuisance of the simulator: line noise, lens margin, corrupt frames,
bleaching; each with its truth, deterministic, and absent from the clean twin."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from acquisition.simulator_nuisance import CORRUPT_KINDS

BASE = dict(height=48, width=64, n_frames=120, n_neurons=6, neuron_diameter_px=8.0, seed=2)
BASE_F = dict(BASE, dtype="float32")


def _sim(**kw) -> MiniscopeSimulator:
    return MiniscopeSimulator(SimulationParams(**{**BASE_F, **kw}))


def test_nuisance_is_chunk_independent():
    kw = dict(line_noise_sigma=5.0, row_band_amplitude=3.0, lens_radius_fraction=0.9,
              corrupt_fraction=0.2, bleach_time_s=10.0)  # fmt: skip
    sim = MiniscopeSimulator(SimulationParams(**BASE, **kw))
    whole = sim.frames(0, 40)
    parts = np.concatenate([sim.frames(0, 17), sim.frames(17, 40)])
    assert np.array_equal(whole, parts)


def test_line_noise_is_constant_along_rows_and_the_twin_is_untouched():
    clean, noisy = _sim(), _sim(line_noise_sigma=5.0, row_band_amplitude=3.0)
    diff = noisy.frames(0, 50) - clean.frames(0, 50)
    assert np.abs(diff - diff[:, :, :1]).max() < 1e-3  # one offset per row
    per_row = diff[:, :, 0]
    assert 4.0 < per_row.std() < 8.0  # sqrt(5^2 + 2 * 3^2 / 2) ~ 5.8
    assert not np.array_equal(per_row[0], per_row[1])  # new every frame


def test_lens_margin_with_its_truth():
    sim = _sim(lens_radius_fraction=0.8)
    fov = sim.truth.fov_mask
    assert fov is not None and 0.3 < fov.mean() < 0.7
    assert _sim().truth.fov_mask is None
    frames = sim.frames(0, 60)
    far = ~scipy.ndimage.binary_dilation(fov, iterations=3)  # beyond the 2-px soft edge
    assert abs(frames[:, far].mean() - 100.0) < 3.0  # dark level and noise only
    assert frames[:, fov].mean() > 500
    rows, cols = np.round(sim.truth.centres).astype(int).T
    assert fov[rows, cols].all()


def test_corrupt_frames_match_their_truth():
    clean, bad = _sim(), _sim(corrupt_fraction=0.3)
    kinds = bad.corrupt_frames(0, 120)
    assert np.array_equal(clean.corrupt_frames(0, 120), np.zeros(120, np.int8))
    assert set(kinds.tolist()) == {0, 1, 2, 3}
    a, b = clean.frames(0, 120), bad.frames(0, 120)
    for t in range(120):
        kind = CORRUPT_KINDS[kinds[t]]
        if kind == "clean":
            assert np.array_equal(a[t], b[t])
        elif kind == "missing_lines":
            assert (b[t] == 0).all(axis=1).sum() >= 2
        elif kind == "noise_band":
            changed = (a[t] != b[t]).all(axis=1)
            assert changed.sum() >= 2 and np.abs(np.diff(b[t][changed], axis=1)).mean() > 100
        else:
            np.testing.assert_allclose(b[t], 1.6 * a[t], rtol=1e-5)


def test_bleaching_scales_the_signal():
    clean, bleached = _sim(), _sim(bleach_time_s=2.0)
    t = 60  # 3 s at 20 Hz
    ratio = bleached.render(t, t + 1, noise=False) / clean.render(t, t + 1, noise=False)
    np.testing.assert_allclose(ratio, np.exp(-3.0 / 2.0), rtol=1e-4)


@pytest.mark.parametrize(
    "field, value",
    [("line_noise_sigma", -1.0), ("lens_radius_fraction", 0.1), ("corrupt_fraction", 0.9),
     ("bleach_time_s", -5.0)],
)  # fmt: skip
def test_bad_nuisance_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        SimulationParams(**{field: value})
