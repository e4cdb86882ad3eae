"""Motion correction inside OnlineCNMFE: traces on a moving movie, flagged frames, state files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.ndimage as ndi

from online_cnmfe.errors import StateFileError
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file
from tests.online_cnmfe.model.motion.moving import PAD, canvas, walk
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

N_INIT = 150
N_FRAMES = 330


@pytest.fixture(scope="module")
def moving():
    """make_movie's neurons over a textured tissue, all moved by a walk with a 6 px jump.

    Returns (still twin, moving frames, shifts); the shifts' median over the initialisation
    frames is 0, so the template sits where the truth footprints are.
    """
    still = make_movie(n_frames=N_FRAMES, seed=3, noise=1.0)
    H, W = still.frames.shape[1:]
    rng = np.random.default_rng(3)
    tissue = canvas(rng, (H, W), n_cells=20)[PAD : PAD + H, PAD : PAD + W] * 0.05
    shifts = walk(rng, N_FRAMES, 1.2, jumps=[(250, 280, 4.0, -4.5)])
    shifts -= np.median(shifts[:N_INIT], axis=0)
    clean = still.frames + tissue[None]  # (noise of make_movie included; motion moves it too)
    frames = np.stack(
        [ndi.shift(f, d, order=3, mode="nearest") for f, d in zip(clean, shifts)]
    ).astype(np.float32)
    twin = dataclasses.replace(still, frames=clean.astype(np.float32))
    return twin, frames, shifts


def _params(**motion) -> CNMFEParams:
    return CNMFEParams.from_dict(
        {
            "data": {"neuron_diameter_px": 8.0},
            "detection": {"enabled": False},
            "motion": {"max_shift_px": 10.0, **motion},
        }
    )


def _traces(model, frames):
    results = [model.process_frame(f) for f in frames]
    return results, np.stack([r.C_raw for r in results], 1)


def _corr(C, truth):
    return np.array([np.corrcoef(C[k], truth[k])[0, 1] for k in range(truth.shape[0])])


def test_motion_correction_restores_the_traces(moving):
    twin, frames, shifts = moving
    init = truth_init(twin, N_INIT)
    truth = twin.C[:, N_INIT:]
    on = OnlineCNMFE(_params())
    on.initialize_from(init, frames[:N_INIT])
    results, C_on = _traces(on, frames[N_INIT:])
    off = OnlineCNMFE(_params(enabled=False))
    off.initialize_from(init, frames[:N_INIT])
    _, C_off = _traces(off, frames[N_INIT:])
    r_on, r_off = _corr(C_on, truth), _corr(C_off, truth)
    assert np.median(r_on) > 0.9 and r_on.min() > 0.75, r_on
    assert np.median(r_on) > np.median(r_off) + 0.1, (np.median(r_on), np.median(r_off))
    est = np.array([r.motion_shift_px for r in results])
    err = est - shifts[N_INIT:]
    assert np.sqrt((err**2).sum(1).mean()) < 0.5
    assert all(r.flag is None for r in results)
    assert all(-1 <= r.motion_quality <= 1 for r in results)
    assert all("motion" in r.timings_ms for r in results)


def test_a_flagged_frame_gets_traces_but_does_not_update_the_model(moving):
    """The shared flag interface: no residual written, b0 unchanged, no slow path."""
    twin, frames, _ = moving
    params = _params().replace(**{"detection.enabled": True})
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(twin, N_INIT), frames[:N_INIT])
    for f in frames[N_INIT : N_INIT + 5]:
        model.process_frame(f)
    st = model.state
    jumped = ndi.shift(frames[N_INIT + 5], (9.0, 8.0), order=1, mode="nearest")  # 12 px > 10
    before = {
        "b0": st.b0.copy(), "residual": st.residual.copy(), "head": st.residual_head,
        "frames": st.residual_frame.copy(), "slow_t": st.slow.t,
        "template": st.motion.template.copy(),
    }  # fmt: skip
    early = []
    result = model.process_frame(jumped, on_traces=early.append)
    assert result.flag is not None and result.flag.startswith("motion: shift 1")
    assert early[0].flag == result.flag and early[0].motion_shift_px == result.motion_shift_px
    assert result.C_raw.shape == (st.n_components,) and not result.skipped
    np.testing.assert_array_equal(st.b0, before["b0"])
    np.testing.assert_array_equal(st.residual, before["residual"])
    np.testing.assert_array_equal(st.residual_frame, before["frames"])
    np.testing.assert_array_equal(st.motion.template, before["template"])
    assert st.residual_head == before["head"] and st.slow.t == before["slow_t"]
    assert st.motion.n_flagged == 1
    following = model.process_frame(frames[N_INIT + 6])  # back to normal
    assert following.flag is None and st.residual_head != before["head"]
    assert not np.array_equal(st.b0, before["b0"])


@pytest.mark.parametrize("mode", ["rigid", "piecewise"])
def test_state_round_trip_with_motion(moving, tmp_path, mode):
    twin, frames, _ = moving
    params = _params(mode=mode, patch_size_px=32, patch_overlap_px=16)
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(twin, N_INIT), frames[:N_INIT])
    ms = model.state.motion
    if mode == "rigid":  # with a lens margin's weight (state.lens_weight): saved and used
        rows = np.linspace(0.0, 1.0, ms.grid[0], dtype=np.float32)
        ms.lens = np.ascontiguousarray(np.broadcast_to(rows[:, None], ms.grid))
    for f in frames[N_INIT : N_INIT + 20]:
        model.process_frame(f)
    path = tmp_path / "m.h5"
    state_file.save_online_model(path, model)
    loaded = state_file.load_online_model(path)
    assert (loaded.state.motion.patches is None) == (mode == "rigid")
    assert (loaded.state.motion.lens is None) == (mode == "piecewise")
    for f in frames[N_INIT + 20 : N_INIT + 40]:  # spans a template spectrum refresh
        a, b = model.process_frame(f), loaded.process_frame(f)
        np.testing.assert_array_equal(a.C_raw, b.C_raw)
        assert a.motion_shift_px == b.motion_shift_px and a.motion_quality == b.motion_quality


@pytest.mark.parametrize(
    "field, bad",
    [
        ("template", np.zeros((5, 5), np.float32)),  # the warp would read outside it
        ("registered", np.zeros(7, np.float32)),
        ("search", np.array([90, 90], np.int64)),  # a search beyond the FFT buffers
        ("patches", None),  # a piecewise state without its patches
        ("lens", np.ones((5, 5), np.float32)),  # a lens weight of another grid
    ],
)
def test_a_crafted_motion_state_is_refused_when_it_loads(moving, tmp_path, field, bad):
    twin, frames, _ = moving
    params = _params(mode="piecewise", patch_size_px=32, patch_overlap_px=16)
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(twin, N_INIT), frames[:N_INIT])
    setattr(model.state.motion, field, bad)
    path = tmp_path / "m.h5"
    state_file.save_model(path, model.params, model.state)
    with pytest.raises(StateFileError, match=f"motion.{field}"):
        state_file.load_online_model(path)


@pytest.mark.parametrize("field", ["col_w", "grid_row_w"])
def test_crafted_interpolation_weights_are_refused_when_they_load(moving, tmp_path, field):
    """The warp's interior runs take a column run's sample offsets from its first and last
    weight (they ascend in [0, 1]): a weight beyond them would read outside the frame."""
    twin, frames, _ = moving
    params = _params(mode="piecewise", patch_size_px=32, patch_overlap_px=16)
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(twin, N_INIT), frames[:N_INIT])
    weights = getattr(model.state.motion.patches, field)
    weights[len(weights) // 2] = 40.0
    path = tmp_path / "m.h5"
    state_file.save_model(path, model.params, model.state)
    with pytest.raises(StateFileError, match=f"motion.patches.{field} differs"):
        state_file.load_online_model(path)


def test_an_init_result_without_motion_needs_its_frames(moving):
    twin, frames, _ = moving
    with pytest.raises(ValueError, match="needs the initialisation frames"):
        OnlineCNMFE(_params()).initialize_from(truth_init(twin, N_INIT))
    model = OnlineCNMFE(_params(enabled=False))
    model.initialize_from(truth_init(twin, N_INIT))  # fine without motion correction
    result = model.process_frame(frames[N_INIT])
    assert model.state.motion is None and result.motion_shift_px is None


def test_fit_initial_registers_the_batch_before_the_fit(moving):
    """The initialisation itself runs on registered frames and hands the motion on."""
    from online_cnmfe.model.initialization.fit import fit_initial

    twin, frames, shifts = moving
    params = _params().replace(**{"init.init_frames": N_INIT})
    init = fit_initial(frames[:N_INIT], params)
    assert init.motion is not None and init.motion.shifts.shape == (N_INIT, 2)
    err = init.motion.shifts - shifts[:N_INIT]
    assert np.sqrt((err**2).sum(1).mean()) < 0.5
    model = OnlineCNMFE(params)
    model.initialize_from(init, frames[:N_INIT])
    assert model.state.motion is not None
    np.testing.assert_array_equal(model.state.motion.template, init.motion.template)
    # the border the correction filled: no seed there, and the residual buffer is zero there
    H, W = twin.frames.shape[1:]
    top, bottom, left, right = band = init.motion.band
    assert band.min() >= 1 and (band == model.state.motion.band).all()
    inside = np.zeros((H, W), bool)
    inside[top : H - bottom, left : W - right] = True
    A = init.A.toarray() if hasattr(init.A, "toarray") else np.asarray(init.A)
    assert A.shape[1] > 0 and inside.ravel()[A.argmax(axis=0)].all()
    assert (model.state.residual[:, ~inside.ravel()] == 0).all()


def test_params_reject_bad_motion_values_when_they_load():
    from online_cnmfe.errors import ConfigError

    bad = [
        {"mode": "affine"},
        {"max_shift_px": 0},
        {"enabled": "False"},
        {"patch_overlap_px": 200},
        {"smooth_sigma_px": 5.0, "background_sigma_px": 6.0},
        {"min_quality": 1.5},
        {"downsample": 0},
        {"max_deviation_px": 50.0},
    ]
    for values in bad:
        with pytest.raises(ConfigError, match="motion"):
            CNMFEParams.from_dict({"motion": values})
    with pytest.raises(ConfigError, match="background_sigma_px"):  # relation with the data stage
        CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8}, "motion": {"smooth_sigma_px": 3}})
    p = CNMFEParams()
    assert p.motion.enabled and p.motion.mode == "rigid" and p.motion.max_shift_px == 20
    assert not CNMFEParams().replace(**{"motion.enabled": False}).motion.enabled


def test_skipped_frames_have_no_motion_outputs(moving):
    twin, frames, _ = moving
    model = OnlineCNMFE(_params().replace(**{"online.nan_policy": "skip"}))
    model.initialize_from(truth_init(twin, N_INIT), frames[:N_INIT])
    bad = frames[N_INIT].copy()
    bad[3, 3] = np.nan
    result = model.process_frame(bad)
    assert result.skipped and result.motion_shift_px is None and result.flag is None
