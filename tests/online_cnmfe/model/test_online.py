"""The online model from a truth-derived InitResult on a small synthetic movie."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

N_INIT = 150
N_FRAMES = 400


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=N_FRAMES, seed=3)


@pytest.fixture(scope="module")
def init(movie):
    return truth_init(movie, N_INIT)


def _params(**online):
    return CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}, "online": online}
    )


def _model(init, movie, **online):
    model = OnlineCNMFE(_params(**online))
    model.initialize_from(init, movie.frames[:N_INIT])
    return model


def test_tracks_truth_traces(movie, init):
    model = _model(init, movie)
    results = [model.process_frame(f) for f in movie.frames[N_INIT:]]
    C = np.stack([r.C for r in results], 1)
    C_raw = np.stack([r.C_raw for r in results], 1)
    truth = movie.C[:, N_INIT:]
    for k in range(truth.shape[0]):
        assert np.corrcoef(C[k], truth[k])[0, 1] > 0.9, f"neuron {k} denoised"
        assert np.corrcoef(C_raw[k], truth[k])[0, 1] > 0.9, f"neuron {k} raw"
    assert [r.frame_index for r in results] == list(range(N_INIT, N_FRAMES))
    assert set(results[0].timings_ms) >= {"background", "demix", "deconvolve", "residual"}
    assert (C >= 0).all() and (np.stack([r.S for r in results]) >= 0).all()


def test_emitted_outputs_never_change(movie, init):
    model = _model(init, movie)
    first = [model.process_frame(f) for f in movie.frames[N_INIT : N_INIT + 20]]
    copies = [(r.C.copy(), r.S.copy(), r.C_raw.copy()) for r in first]
    for f in movie.frames[N_INIT + 20 : N_INIT + 80]:
        model.process_frame(f)
    for r, (c, s, c_raw) in zip(first, copies):
        assert np.array_equal(r.C, c) and np.array_equal(r.S, s)
        assert np.array_equal(r.C_raw, c_raw)
        for arr in (r.C, r.S, r.C_raw, r.neuron_ids):
            for name in ("c", "c_den", "s", "neuron_ids"):
                assert not np.shares_memory(arr, getattr(model.state, name))


def test_nan_frame_is_skipped_without_touching_state(movie, init):
    clean = _model(init, movie)
    dirty = _model(init, movie)
    frames = movie.frames[N_INIT : N_INIT + 40]
    for j, f in enumerate(frames):
        a = clean.process_frame(f)
        if j == 10:
            bad = f.copy()
            bad[3, 4] = np.nan
            skipped = dirty.process_frame(bad)
            assert skipped.skipped and "NaN" in skipped.skip_reason
            assert (skipped.S == 0).all()
        b = dirty.process_frame(f)
        np.testing.assert_array_equal(a.C, b.C)
        np.testing.assert_array_equal(a.C_raw, b.C_raw)
        assert b.frame_index == a.frame_index + (1 if j >= 10 else 0)
    assert dirty.state.n_skipped == 1


def test_nan_policy_zero_fills_with_baseline(movie, init):
    model = _model(init, movie, nan_policy="zero")
    bad = movie.frames[N_INIT].copy()
    bad[0, :] = np.nan
    r = model.process_frame(bad)
    assert not r.skipped and np.isfinite(r.C).all()
    assert np.isnan(bad[0]).all()  # the caller's frame is not modified


def test_wrong_shape_raises_clear_error(movie, init):
    model = _model(init, movie)
    with pytest.raises(ValueError, match=r"shape \(64, 63\).*initialised on \(64, 64\)"):
        model.process_frame(movie.frames[N_INIT][:, :63])
    with pytest.raises(TypeError, match="dtype"):
        model.process_frame(movie.frames[N_INIT].astype(complex))
    with pytest.raises(RuntimeError, match="not initialised"):
        OnlineCNMFE(_params()).process_frame(movie.frames[0])


def test_integer_frames_are_cast(movie, init):
    a = _model(init, movie)
    b = _model(init, movie)
    f = np.round(movie.frames[N_INIT]).astype(np.uint16)
    ra, rb = a.process_frame(f), b.process_frame(f.astype(np.float32))
    np.testing.assert_array_equal(ra.C_raw, rb.C_raw)


def test_memory_is_flat(movie, init):
    model = _model(init, movie)

    def nbytes():
        st = model.state
        total = 0
        for name in st.__slots__:
            v = getattr(st, name)
            if hasattr(v, "indices"):  # slotted sparse columns
                total += v.indices.nbytes + v.data.nbytes
            total += getattr(v, "nbytes", 0)
        return total

    for f in movie.frames[N_INIT : N_INIT + 5]:
        model.process_frame(f)
    before = nbytes()
    for f in movie.frames[N_INIT + 5 :]:
        model.process_frame(f)
    assert nbytes() == before
    assert model.state.residual_frame.max() == N_FRAMES - 1


def test_zero_neurons_still_tracks_background(movie, init):
    import dataclasses

    import scipy.sparse

    empty = dataclasses.replace(
        init,
        A=scipy.sparse.csc_array((init.A.shape[0], 0), dtype=np.float32),
        C=init.C[:0], S=init.S[:0], C_raw=init.C_raw[:0], g=np.zeros((0, 1), np.float32),
        trace_noise=np.zeros(0, np.float32),
    )  # fmt: skip
    model = OnlineCNMFE(_params())
    model.initialize_from(empty, movie.frames[:N_INIT])
    for f in movie.frames[N_INIT : N_INIT + 10]:
        r = model.process_frame(f)
        assert r.C.shape == (0,) and not r.skipped
    assert model.n_components == 0 and model.footprints.shape == (64 * 64, 0)


def test_baseline_follows_a_slow_drift(movie, init):
    drift = np.linspace(0, 8, N_FRAMES, dtype=np.float32)  # brightness creeps up (8 σ)
    frames = movie.frames + drift[:, None, None]
    params = CNMFEParams.from_dict(
        {
            "data": {"neuron_diameter_px": 8.0},
            "detection": {"enabled": False},
            "background": {"forgetting_time_s": 2.0},  # 40 frames at 20 Hz
        }
    )
    model = OnlineCNMFE(params)
    model.initialize_from(init, frames[:N_INIT])
    results = [model.process_frame(f) for f in frames[N_INIT:]]
    # the true baseline now: exponential average (40 frames) of y - A c_true
    signal = (movie.A @ movie.C).T.reshape(frames.shape)
    alpha = 1 / 40
    w = alpha * (1 - alpha) ** np.arange(N_FRAMES - N_INIT)[::-1]
    target = np.tensordot(w / w.sum(), (frames - signal)[N_INIT:], axes=1)
    assert np.abs(model.b0 - target).mean() < 0.5
    assert np.abs(init.b0.reshape(model.dims) - target).mean() > 4  # a frozen b0 would be off
    C_raw = np.stack([r.C_raw for r in results], 1)
    for k in range(C_raw.shape[0]):
        assert np.corrcoef(C_raw[k], movie.C[k, N_INIT:])[0, 1] > 0.9, f"neuron {k}"


def test_initialize_runs_the_real_initialisation():
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(height=64, width=64, n_frames=200, n_neurons=8, seed=2, n_neuropil=4)
    )
    frames = sim.frames(0, 200)
    model = OnlineCNMFE(CNMFEParams.from_dict({"init": {"init_frames": 150}}))
    model.initialize(frames[:150])
    assert model.n_components >= 1 and model.frame_index == 150
    for f in frames[150:]:
        r = model.process_frame(f)
        assert np.isfinite(r.C).all() and r.C.shape == r.neuron_ids.shape


def test_on_traces_sees_final_traces_before_the_slow_path(movie, init):
    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})  # slow path on
    model = OnlineCNMFE(params)
    model.initialize_from(init, movie.frames[:N_INIT])
    seen = []

    def on_traces(early):
        assert early.events == ()  # events come from the slow path, which has not run yet
        seen.append(early)

    for f in movie.frames[N_INIT : N_INIT + 30]:
        full = model.process_frame(f, on_traces=on_traces)
        early = seen[-1]
        assert early.frame_index == full.frame_index
        assert np.array_equal(early.neuron_ids, full.neuron_ids)
        for name in ("C", "S", "C_raw"):
            assert np.array_equal(getattr(early, name), getattr(full, name))
    assert len(seen) == 30


def test_on_traces_comes_before_the_residual_update_and_changes_nothing(movie, init):
    # The residual and b0 update (needed only by the next frame and the slow path) runs after
    # the traces went out; with or without a callback the model evolves identically.
    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})  # slow path on
    with_cb, without = OnlineCNMFE(params), OnlineCNMFE(params)
    for model in (with_cb, without):  # each from its own copy (the model adopts its arrays)
        model.initialize_from(copy.deepcopy(init), movie.frames[:N_INIT])
    heads = []

    def on_traces(early):
        st = with_cb.state
        heads.append((st.residual_head, int(st.residual_frame.max()), st.b0.copy()))

    for f in movie.frames[N_INIT : N_INIT + 40]:
        head, b0 = with_cb.state.residual_head, with_cb.state.b0.copy()
        a = with_cb.process_frame(f, on_traces=on_traces)
        b = without.process_frame(f)
        assert heads[-1][0] == head and heads[-1][1] < a.frame_index  # not yet written
        assert np.array_equal(heads[-1][2], b0)
        assert with_cb.state.residual_head != head  # written after the callback
        for name in ("C", "S", "C_raw", "neuron_ids"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
    for name in ("residual", "b0", "c_raw_buffer", "residual_frame"):
        assert np.array_equal(getattr(with_cb.state, name), getattr(without.state, name)), name
    assert "on_traces" in a.timings_ms and "residual" in a.timings_ms


def test_the_online_model_follows_the_cells_diameter_measured_by_the_initialisation(
    movie, init, tmp_path, caplog
):
    """init.adapt_diameter measured wider cells: the online search, regions and limits use
    that diameter, the motion band-pass keeps the declared one (its template was built with
    it), and a checkpoint of the model loads back."""
    import dataclasses
    import logging

    from online_cnmfe.results.state_file import load_online_model, save_online_model

    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})
    declared_bands = params.motion.sigmas_px(8.0), params.motion.grid_downsample(8.0)
    wide = dataclasses.replace(init, neuron_diameter_px=14.0)
    caplog.set_level(logging.INFO, logger="online_cnmfe.model.online")
    model = OnlineCNMFE(params)
    model.initialize_from(wide, movie.frames[:N_INIT])
    p = model.params
    assert p.data.neuron_diameter_px == 14.0
    assert (p.motion.sigmas_px(14.0), p.motion.grid_downsample(14.0)) == declared_bands
    assert "cells of 14.0 px" in caplog.text
    for f in movie.frames[N_INIT : N_INIT + 30]:
        model.process_frame(f)
    save_online_model(tmp_path / "m.state.h5", model)
    back = load_online_model(tmp_path / "m.state.h5")
    assert back.params == p
    same = OnlineCNMFE(params)
    same.initialize_from(init, movie.frames[:N_INIT])  # no measure: the declared diameter
    assert same.params.data.neuron_diameter_px == 8.0 and same.params.motion == params.motion
