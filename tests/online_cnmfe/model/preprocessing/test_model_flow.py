"""The preprocessing stage inside the model: the initialisation, the per-frame path, flagged
frames (prediction, no update), the FOV in seeding and detection, and state files."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from online_cnmfe.model.initialization.fit import fit_initial
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file

N, N_INIT, D = 420, 200, 10.0


@pytest.fixture(scope="module")
def sim():
    return MiniscopeSimulator(
        SimulationParams(
            height=96, width=96, n_frames=N, n_neurons=20, neuron_diameter_px=D, seed=31,
            line_noise_sigma=20.0, row_band_amplitude=10.0, lens_radius_fraction=0.9,
            corrupt_fraction=0.04,
        )
    )  # fmt: skip


def _params(**kw):
    base = {"data.neuron_diameter_px": D, "init.init_frames": N_INIT}
    return CNMFEParams().replace(**{**base, **kw})


@pytest.fixture(scope="module")
def init(sim):
    return fit_initial(sim.frames(0, N_INIT), _params())


@pytest.fixture(scope="module")
def run(sim, init):
    model = OnlineCNMFE(_params())
    model.initialize_from(init, sim.frames(0, N_INIT))
    results, heads = [], []
    for frame in sim.frames(N_INIT, N):
        before = (model.state.residual_head, model.state.c_den.copy(), model.state.g.copy())
        results.append(model.process_frame(frame))
        heads.append(before)
    return model, results, heads


def _centroids(A, dims):
    A = A.tocsc()
    out = []
    for k in range(A.shape[1]):
        idx, a = A.indices[A.indptr[k] : A.indptr[k + 1]], A.data[A.indptr[k] : A.indptr[k + 1]]
        r, c = np.divmod(idx, dims[1])
        out.append((int(round((r * a).sum() / a.sum())), int(round((c * a).sum() / a.sum()))))
    return out


def test_initialisation_seeds_only_inside_the_lens(sim, init):
    pre = init.preprocess
    assert pre is not None and pre.fov_found
    assert init.n_components >= 10
    fov = sim.truth.fov_mask
    assert all(fov[r, c] for r, c in _centroids(init.A, init.dims))


def test_corrupt_initialisation_frames_are_flagged(sim, init):
    truth = sim.corrupt_frames(0, N_INIT) > 0
    flags = np.array([f is not None for f in init.preprocess.init.reason_of()])
    assert truth.any() and np.array_equal(flags, truth)


def test_online_detection_is_blocked_outside_the_lens(run):
    model = run[0]
    st = model.state
    det = st.slow.det
    small = det.blocked_until.shape
    corner = det.blocked_until[0, 0]
    assert corner > 10**15  # forever
    assert det.blocked_until[small[0] // 2, small[1] // 2] < 10**15
    assert st.pre is not None and st.pre.init is None


def test_corrupt_frames_get_a_flag_a_prediction_and_no_update(sim, run):
    model, results, before = run
    truth = sim.corrupt_frames(N_INIT, N) > 0
    flags = np.array([r.flag is not None for r in results])
    assert truth.any() and np.array_equal(flags, truth), np.flatnonzero(flags != truth)
    for j in np.flatnonzero(truth):
        r, (head, c_den, g) = results[j], before[j]
        assert r.flag.startswith("corrupt: ")
        np.testing.assert_allclose(r.C, c_den * g, rtol=1e-6)  # one-step AR(1) prediction
        assert not r.S.any()
        after = before[j + 1][0] if j + 1 < len(before) else model.state.residual_head
        assert after == head, "a flagged frame must not write the residual buffer"
    assert model.state.n_flagged == truth.sum()
    assert all(r.flag is None for r in np.asarray(results, object)[~truth])


def test_components_stay_inside_the_lens(sim, run):
    model = run[0]
    fov = sim.truth.fov_mask
    assert all(fov[r, c] for r, c in _centroids(model.footprints, model.dims))


def test_sanity_report_is_kept(run):
    model = run[0]
    assert model.sanity is not None and model.sanity.ok, model.sanity


def test_state_file_round_trip_continues_identically(sim, init, tmp_path):
    frames = sim.frames(0, N)
    a = OnlineCNMFE(_params())
    a.initialize_from(init, frames[:N_INIT])
    for f in frames[N_INIT : N_INIT + 40]:
        a.process_frame(f)
    path = tmp_path / "model.h5"
    state_file.save_online_model(path, a)
    b = state_file.load_online_model(path)
    assert b.state.pre is not None and b.state.pre.fov_found
    for f in frames[N_INIT + 40 : N_INIT + 80]:
        ra, rb = a.process_frame(f), b.process_frame(f)
        assert ra.flag == rb.flag
        np.testing.assert_array_equal(ra.C, rb.C)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("state/pre/row_off", np.zeros(3, np.float32), "pre.row_off has shape"),
        ("state/pre/samples", np.zeros(2, np.float32), "pre.samples holds 2 values"),
        ("state/pre/template", np.zeros((4, 4), np.float32), "pre.template has shape"),
        ("state/pre/fov_registered", np.ones((4, 4), bool), "pre.fov_registered has shape"),
    ],
)
def test_a_checkpoint_with_a_crafted_preprocessing_state_is_refused(
    init, sim, tmp_path, field, value, match
):
    # The preprocessing kernels index rows and the sample buffer without bounds checks.
    import h5py

    from online_cnmfe.errors import StateFileError

    model = OnlineCNMFE(_params())
    model.initialize_from(init, sim.frames(0, N_INIT))
    path = tmp_path / "ckpt.h5"
    state_file.save_online_model(path, model)
    with h5py.File(path, "r+") as f:
        group, name = field.rsplit("/", 1)
        if field in f:
            del f[field]
        else:  # None is an attribute (fov_registered: this model's tissue stands still)
            del f[group].attrs[f"scalar:{name}"]
        f[field] = value
    with pytest.raises(StateFileError, match=match) as info:
        state_file.load_online_model(path)
    assert "\n" not in str(info.value)


def test_init_result_round_trips_with_its_preprocessing(init, tmp_path):
    path = tmp_path / "init.h5"
    state_file.save_model(path, _params(), init, fmt=state_file.INIT_FORMAT)
    _, back = state_file.load_model(path, fmt=state_file.INIT_FORMAT)
    assert np.array_equal(back.preprocess.init.flagged, init.preprocess.init.flagged)
    assert back.preprocess.init.reasons == init.preprocess.init.reasons


def test_preprocessing_off_means_no_stage_and_no_flags(sim):
    params = _params(**{"preprocess.enabled": False})
    init = fit_initial(sim.frames(0, N_INIT), params)
    assert init.preprocess is None
    model = OnlineCNMFE(params)
    model.initialize_from(init, sim.frames(0, N_INIT))
    assert model.state.pre is None
    assert all(model.process_frame(f).flag is None for f in sim.frames(N_INIT, N_INIT + 30))
