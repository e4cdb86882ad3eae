"""Applying slow-path updates keeps the demixing products equal to a full rebuild."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model import build as model_build
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

slow_path = pytest.importorskip("online_cnmfe.model.slow_path.schedule")

N_INIT = 150


def _model():
    movie = make_movie(n_frames=260, seed=6, n_neurons=10)
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}}
    )
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(movie, N_INIT), movie.frames[:N_INIT])
    for f in movie.frames[N_INIT:200]:
        model.process_frame(f)
    return model, movie


def _col(A, k, scale=1.0, shift=0):
    a = A[:, [k]].toarray().ravel() * scale
    return scipy.sparse.csc_array(np.roll(a, shift)[:, None].astype(np.float32))


def _empty(n_pixels):
    return scipy.sparse.csc_array((n_pixels, 0), dtype=np.float32)


def _update(model, rng):
    st = model.state
    A = model.footprints
    hb_wb = st.W.shape[0]
    start = hb_wb // 3
    rows = (st.W[start : start + 7] * 1.3 + 0.001).astype(np.float32)
    return slow_path.ModelUpdate(
        frame_index=st.t - 1,
        replaced=np.array([1, 4], np.int64),
        replaced_footprints=scipy.sparse.hstack([_col(A, 1, 1.2, 1), _col(A, 4, 0.8, -64)]),
        merged_kept=np.array([2], np.int64),
        merged_absorbed=np.array([6], np.int64),
        merged_footprints=_col(A, 2, 1.1),
        removed=np.array([8], np.int64),
        removed_reasons=("footprint vanished",),
        new_footprints=scipy.sparse.hstack([_col(A, 0, 1.0, 130), _col(A, 3, 1.0, 200)]),
        new_traces=rng.uniform(0, 2, (2, 40)).astype(np.float32),
        new_trace_frames=np.arange(st.t - 40, st.t, dtype=np.int64),
        new_g=np.full((2, 1), 0.9, np.float32),
        new_noise=np.full(2, 0.3, np.float32),
        w_start=start,
        w_stop=start + 7,
        w_rows=rows,
    )


def test_update_matches_full_rebuild_and_keeps_ids():
    model, movie = _model()
    rng = np.random.default_rng(0)
    st = model.state
    ids = st.neuron_ids.copy()
    u = _update(model, rng)
    A_expected = u.apply_footprints(model.footprints).toarray()
    from online_cnmfe.model import updates as model_updates

    events = model_updates.apply_update(model, u)
    kinds = {e.kind: e for e in events}
    assert kinds["merged"].neuron_ids == (ids[2], ids[6])
    assert kinds["removed"].neuron_ids == (ids[8],)
    assert kinds["removed"].detail == "footprint vanished"  # the reason reaches the file/stream
    assert kinds["merged"].detail == f"{ids[6]} merged into {ids[2]} (kept)"
    assert kinds["born"].neuron_ids == (ids.max() + 1, ids.max() + 2)
    np.testing.assert_array_equal(st.neuron_ids[:8], np.delete(ids, [6, 8]))
    np.testing.assert_allclose(model.footprints.toarray(), A_expected, atol=1e-6)
    assert st.footprints_version == 1
    fresh = copy.deepcopy(st)
    model_build.refresh_products(fresh, model._ops)
    np.testing.assert_allclose(st.gram, fresh.gram, rtol=1e-4, atol=1e-4)
    for name in ("DA", "G"):
        ours, ref = getattr(st, name).to_csc(), getattr(fresh, name).to_csc()
        np.testing.assert_array_equal(ours.indptr, ref.indptr, err_msg=name)
        np.testing.assert_array_equal(ours.indices, ref.indices, err_msg=name)
        np.testing.assert_allclose(ours.data, ref.data, rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("boxes", "order", "q_indptr", "q_indices"):
        np.testing.assert_array_equal(getattr(st, name), getattr(fresh, name), err_msg=name)
    np.testing.assert_allclose(st.q_data, fresh.q_data, rtol=1e-4, atol=1e-4)
    for f in movie.frames[200:]:
        r = model.process_frame(f)
        assert r.C.shape == (st.n_components,) and np.isfinite(r.C).all()


def test_many_w_row_updates_stay_exact():
    from online_cnmfe.model import updates as model_updates

    model, _ = _model()
    st = model.state
    rng = np.random.default_rng(1)
    n_pixels = st.n_pixels
    empty = scipy.sparse.csc_array((n_pixels, 0), dtype=np.float32)
    none = np.zeros(0, np.int64)
    n_bg = st.W.shape[0]
    for start in range(0, n_bg, 13):
        stop = min(start + 13, n_bg)
        rows = st.W[start:stop] * rng.uniform(0.5, 1.5, (stop - start, 1)).astype(np.float32)
        u = slow_path.ModelUpdate(
            frame_index=st.t, replaced=none, replaced_footprints=empty, merged_kept=none,
            merged_absorbed=none, merged_footprints=empty, removed=none, new_footprints=empty,
            new_traces=np.zeros((0, 0), np.float32), new_trace_frames=none,
            new_g=np.zeros((0, 1), np.float32), new_noise=np.zeros(0, np.float32),
            w_start=start, w_stop=stop, w_rows=rows.astype(np.float32),
        )  # fmt: skip
        assert model_updates.apply_update(model, u) == []
    assert st.footprints_version == 0
    fresh = copy.deepcopy(st)
    model_build.refresh_products(fresh, model._ops)
    np.testing.assert_allclose(st.gram, fresh.gram, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st.G.to_csc().toarray(), fresh.G.to_csc().toarray(), atol=1e-6)


def test_w_row_updates_reach_the_frame_path():
    """The frame path reads its own transposed copy of W (``Operators.Wt``): after W rows
    change, the next frame must give exactly what a model rebuilt from the same state gives
    (fresh operators). Fails if an update stops copying its rows into the frame path's W."""
    from online_cnmfe.model import updates as model_updates

    model, movie = _model()
    st = model.state
    none = np.zeros(0, np.int64)
    empty = _empty(st.n_pixels)
    start, stop = 5, st.W.shape[0] - 5
    rows = (st.W[start:stop] * 1.7 + 0.01).astype(np.float32)
    u = slow_path.ModelUpdate(
        frame_index=st.t, replaced=none, replaced_footprints=empty, merged_kept=none,
        merged_absorbed=none, merged_footprints=empty, removed=none, new_footprints=empty,
        new_traces=np.zeros((0, 0), np.float32), new_trace_frames=none,
        new_g=np.zeros((0, 1), np.float32), new_noise=np.zeros(0, np.float32),
        w_start=start, w_stop=stop, w_rows=rows,
    )  # fmt: skip
    model_updates.apply_update(model, u)
    np.testing.assert_array_equal(model._ops.Wt, st.W.T)
    rebuilt = OnlineCNMFE.from_state(model.params, copy.deepcopy(st))
    for f in movie.frames[200:205]:
        ours, ref = model.process_frame(f), rebuilt.process_frame(f)
        np.testing.assert_array_equal(ours.C_raw, ref.C_raw)
        np.testing.assert_array_equal(model.state.b0, rebuilt.state.b0)


def _copy(model):
    return OnlineCNMFE.from_state(model.params, copy.deepcopy(model.state))


def _assert_same_state(a, b):
    """Every array and count of two ModelStates equal bit for bit (slotted ones as CSC)."""
    import dataclasses

    from online_cnmfe.model.slotted import SlottedColumns

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, SlottedColumns):
            x, y = x.to_csc(), y.to_csc()
            for part in ("indptr", "indices", "data"):
                np.testing.assert_array_equal(getattr(x, part), getattr(y, part), f.name)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        elif isinstance(x, (int, float, tuple)):
            assert x == y, f.name


def _w_update(st, start, stop, scale):
    none = np.zeros(0, np.int64)
    empty = _empty(st.n_pixels)
    return slow_path.ModelUpdate(
        frame_index=st.t, replaced=none, replaced_footprints=empty, merged_kept=none,
        merged_absorbed=none, merged_footprints=empty, removed=none, new_footprints=empty,
        new_traces=np.zeros((0, 0), np.float32), new_trace_frames=none,
        new_g=np.zeros((0, 1), np.float32), new_noise=np.zeros(0, np.float32),
        w_start=start, w_stop=stop, w_rows=(st.W[start:stop] * scale).astype(np.float32),
    )  # fmt: skip


def test_preparing_an_update_leaves_the_model_untouched():
    """``prepare`` runs on the slow path's thread while the frame path reads the model: it
    must write none of the model's arrays (only copies and the update scratch)."""
    from online_cnmfe.model import update_prepare

    model, _ = _model()
    before = _copy(model)
    Wt = model._ops.Wt.copy()
    u = _update(model, np.random.default_rng(0))
    p = update_prepare.prepare(model.state, model._ops, u, model.params, model.state.n_processed)
    assert p is not None and p.columns and p.g_values and p.births is not None
    _assert_same_state(model.state, before.state)
    np.testing.assert_array_equal(model._ops.Wt, Wt)
    for name in ("scratch_n", "scratch_a", "scratch_g", "scratch_s"):
        assert not getattr(model._ops, name).any(), name


def test_a_stale_preparation_is_prepared_again():
    """Fault injection: an update prepared before another one was committed (another epoch)
    must not be committed as it is; the result equals preparing it on the current model."""
    from online_cnmfe.model import update_prepare
    from online_cnmfe.model import updates as model_updates

    model, _ = _model()
    st = model.state
    u1 = _update(model, np.random.default_rng(0))
    stale = update_prepare.prepare(st, model._ops, u1, model.params, st.n_processed)
    n_bg = st.W.shape[0]
    u0 = _w_update(st, n_bg // 4, n_bg // 2, 1.5)
    model_updates.apply_update(model, u0)
    reference = _copy(model)
    model_updates.apply_update(model, u1, stale)
    model_updates.apply_update(reference, u1)
    _assert_same_state(model.state, reference.state)
    # committing the stale preparation would have kept Q from before u0's rows
    wrong = _copy(reference)
    wrong._ops.epoch = stale.epoch = 0
    stale.ops = wrong._ops
    model_updates.commit(wrong, stale)
    assert not np.array_equal(wrong.state.gram, reference.state.gram)


def test_births_prepared_for_another_frame_are_warm_started_again():
    """Fault injection: births prepared for frame count n (the slow job's guess) but committed
    at another count (a flagged frame in between does not advance it) are warm-started again
    on the frames they are committed at."""
    from online_cnmfe.model import update_prepare
    from online_cnmfe.model import updates as model_updates

    model, _ = _model()
    st = model.state
    reference = _copy(model)
    u = _update(model, np.random.default_rng(0))
    p = update_prepare.prepare(st, model._ops, u, model.params, st.n_processed + 1)
    model_updates.apply_update(model, u, p)
    model_updates.apply_update(reference, u)
    _assert_same_state(model.state, reference.state)
    assert p.births["n_processed"] != st.n_processed
