"""The lens's dark margin in the motion-corrected frame, inside OnlineCNMFE: its samples are
filled, so they reach neither the residual nor the baseline (``motion.lens_gaps``)."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from online_cnmfe.errors import StateFileError
from online_cnmfe.model.motion import lens_gaps
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file

N_INIT = 200
N_FRAMES = 320


@pytest.fixture(scope="module")
def lens_movie():
    """A lens (still on the sensor) over tissue moving by up to 6 px."""
    sim = MiniscopeSimulator(
        SimulationParams(height=192, width=192, n_frames=N_FRAMES, n_neurons=80, seed=31,
                         lens_radius_fraction=0.95, motion_px=6.0)
    )  # fmt: skip
    return sim.frames(0, N_FRAMES).astype(np.float32)


def _run(frames):
    """Residual and baseline at the pixels each online frame's correction took from the
    margin (the gap, as ``lens_gaps.frame_gap`` finds it), and at the rest of the lens."""
    params = CNMFEParams().replace(
        **{"data.neuron_diameter_px": 13.0, "init.init_frames": N_INIT,
           "detection.enabled": False}
    )  # fmt: skip
    model = OnlineCNMFE(params)
    model.initialize(frames[:N_INIT])
    st = model.state
    assert st.motion is not None and st.motion.lens_outside is not None
    fov = st.pre.fov_registered
    assert fov is not None and 0.3 < fov.mean() < 0.95
    gap_res, lens_res, n_gap = [], [], 0
    for f in frames[N_INIT:]:
        model.process_frame(f)
        gap = GAP_OF(st.motion).reshape(st.dims) > lens_gaps.GAP_LEVEL
        res = st.residual[(st.residual_head - 1) % st.residual.shape[0]].reshape(st.dims)
        edge = gap & ~st.pre.fov  # moved over the lens's margin by the shift: no tissue seen
        n_gap += int(edge.sum())
        gap_res.append(np.abs(res[edge]).sum())
        lens_res.append(np.abs(res[fov]).mean())
    return sum(gap_res) / max(n_gap, 1), float(np.mean(lens_res)), n_gap


GAP_OF = lens_gaps.frame_gap


def test_the_margin_seen_through_the_shifts_adds_no_residual(lens_movie):
    gap_res, lens_res, n_gap = _run(lens_movie)
    assert n_gap > 1000  # the tissue moved: the margin covered pixels of the model's frame
    assert gap_res < 2 * lens_res, (gap_res, lens_res)


def test_fault_injection_without_the_filling_the_margin_floods_the_residual(
    lens_movie, monkeypatch
):
    monkeypatch.setattr(lens_gaps, "frame_gap", lambda ms: None)  # the model fills nothing
    gap_res, lens_res, n_gap = _run(lens_movie)
    assert n_gap > 1000
    assert gap_res > 5 * lens_res, (gap_res, lens_res)


def _lens_model(frames):
    params = CNMFEParams().replace(
        **{"data.neuron_diameter_px": 13.0, "init.init_frames": N_INIT}
    )  # fmt: skip
    model = OnlineCNMFE(params)
    model.initialize(frames[:N_INIT])
    for f in frames[N_INIT : N_INIT + 20]:
        model.process_frame(f)
    return model


def test_state_round_trip_with_the_lens_gaps(lens_movie, tmp_path):
    model = _lens_model(lens_movie)
    path = tmp_path / "m.h5"
    state_file.save_online_model(path, model)
    loaded = state_file.load_online_model(path)
    np.testing.assert_array_equal(loaded.state.motion.lens_outside, model.state.motion.lens_outside)
    np.testing.assert_array_equal(loaded.state.pre.fov_registered, model.state.pre.fov_registered)
    for f in lens_movie[N_INIT + 20 : N_INIT + 50]:
        a, b = model.process_frame(f), loaded.process_frame(f)
        np.testing.assert_array_equal(a.C_raw, b.C_raw)
    # a crafted lens outside of another size is refused (the fill kernel would read past it)
    model.state.motion.lens_outside = np.zeros(7, np.float32)
    bad = tmp_path / "bad.h5"
    state_file.save_model(bad, model.params, model.state)
    with pytest.raises(StateFileError, match="lens_outside"):
        state_file.load_online_model(bad)
