"""Checkpoint snapshots: a reused copy that equals the state when taken and shares nothing."""

from __future__ import annotations

import copy
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from online_cnmfe import OnlineCNMFE
from online_cnmfe.engine.snapshot import RingCopy, Snapshotter, copy_into
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file
from tests.online_cnmfe.model_fixtures import make_movie, truth_init


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=260, seed=5, late=((0, 200),))


def _model(movie) -> OnlineCNMFE:
    m = OnlineCNMFE(CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}}))
    m.initialize_from(truth_init(movie, 150), movie.frames[:150])
    return m


def _arrays(obj, out=None):
    """Every ndarray reachable from obj (dataclasses, dicts, lists, tuples)."""
    out = [] if out is None else out
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _arrays(getattr(obj, f.name), out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _arrays(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _arrays(v, out)
    return out


def test_copy_equals_a_deep_copy_and_shares_no_memory(movie):
    model = _model(movie)
    for frame in movie.frames[150:190]:
        model.process_frame(frame)
    snap = copy_into(None, model.state)
    reference = copy.deepcopy(model.state)
    live, mine, ref = _arrays(model.state), _arrays(snap), _arrays(reference)
    assert len(live) == len(mine) == len(ref) > 50
    for a, b, r in zip(live, mine, ref, strict=True):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(b, r)
    assert snap.slow is not None and type(snap.slow) is type(model.state.slow)


def test_refill_reuses_arrays_and_reallocates_changed_shapes(movie):
    model = _model(movie)
    snap = copy_into(None, model.state)
    residual = snap.residual
    for frame in movie.frames[150:200]:
        model.process_frame(frame)
    again = copy_into(snap, model.state)
    assert again is snap and again.residual is residual  # refilled in place: no allocation
    for a, b in zip(_arrays(model.state), _arrays(again), strict=True):
        np.testing.assert_array_equal(a, b)
    grown = copy.copy(model.state)  # as after a birth: K-dependent arrays change shape
    grown.neuron_ids = np.arange(model.n_components + 2)
    ids = again.neuron_ids
    third = copy_into(again, grown)
    assert third.neuron_ids is not ids and third.neuron_ids.shape == (model.n_components + 2,)
    assert third.residual is residual


def test_a_saved_snapshot_is_the_state_when_it_was_taken(movie, tmp_path):
    # The live model goes on after the copy; the checkpoint written from the copy must
    # continue exactly like the model did from that frame.
    model = _model(movie)
    for frame in movie.frames[150:180]:
        model.process_frame(frame)
    snaps = Snapshotter()
    state = snaps.take(model.state)
    expected = [model.process_frame(f) for f in movie.frames[180:]]  # the live model moves on
    state_file.save_model(tmp_path / "ckpt.h5", model.params, state)
    snaps.release()
    _assert_resumes_as_it_went_on(tmp_path / "ckpt.h5", movie.frames[180:], expected)


def test_a_busy_copy_is_skipped_or_waited_for():
    snaps = Snapshotter()
    state = {"x": np.arange(5.0)}
    assert snaps.take(state) is not None
    assert snaps.take(state) is None  # the store thread still holds it: skip, do not wait
    threading.Timer(0.2, snaps.release).start()
    assert snaps.take(state, wait=True, timeout_s=5) is not None
    assert snaps.take(state, wait=True, timeout_s=0.05) is None
    snaps.release()
    snaps.prime({"x": np.zeros(3)})  # off the model thread: allocates, leaves it free
    assert snaps.take(state)["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    # The store thread primes while the model thread already took the copy (queued
    # checkpoint behind the prime): prime must return at once, not wait for the lock.
    done = threading.Event()
    threading.Thread(target=lambda: (snaps.prime(state), done.set()), daemon=True).start()
    assert done.wait(5), "prime waited for a lock only its own thread would release"
    snaps.release()


# ---- take_model: the residual buffer and the slow path's state copied off the model thread ----


def _threaded_model(movie):
    model = _model(movie)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-test")
    model.run_slow_path_on(pool)
    return model, pool


def test_the_deferred_parts_share_no_array_with_the_rest_of_the_state(movie):
    # take_model copies the slow path's state later than the rest: that is consistent only
    # if the rest of the state never shares memory with it (nor with the residual buffer),
    # except arrays nobody writes after the initialisation (the ring's geometry).
    model = _model(movie)
    for frame in movie.frames[150:170]:
        model.process_frame(frame)
    st = model.state
    deferred = _arrays(st.slow) + [st.residual]
    constant = (st.ring_offsets,)
    rest = [a for f in dataclasses.fields(st) if f.name not in ("slow", "residual")
            for a in _arrays(getattr(st, f.name)) if not any(a is c for c in constant)]  # fmt: skip
    assert len(deferred) > 20 and len(rest) > 30
    for a in deferred:
        assert not any(np.shares_memory(a, b) for b in rest)


def test_take_model_is_the_state_when_taken_while_the_model_goes_on(movie):
    model, pool = _threaded_model(movie)
    try:
        for frame in movie.frames[150:175]:
            model.process_frame(frame)
        model.settle_slow_path()
        reference = copy.deepcopy(model.state)
        snaps = Snapshotter()
        pending = snaps.take_model(model)
        assert model.residual_guard is pending.ring and not pending.ring.done
        for frame in movie.frames[175:185]:  # overwrites 10 residual rows: copied first
            model.process_frame(frame)
        assert 10 <= pending.ring._copied.sum() < len(pending.ring._copied)
        paced = []
        state = pending.complete(pace=lambda: paced.append(1))
        assert pending.ring.done and model.residual_guard is None
        assert len(paced) == model.state.residual.shape[0] - 10  # rows the model did not copy
        mine, ref, live = _arrays(state), _arrays(reference), _arrays(model.state)
        assert len(mine) == len(ref)
        for b, r in zip(mine, ref, strict=True):
            np.testing.assert_array_equal(b, r)
            assert not any(np.shares_memory(b, a) for a in live)
        assert not np.array_equal(state.residual, model.state.residual)  # the model moved on
        snaps.release()
    finally:
        model.settle_slow_path()
        pool.shutdown()


def test_a_checkpoint_from_take_model_resumes_exactly(movie, tmp_path):
    model, pool = _threaded_model(movie)
    try:
        for frame in movie.frames[150:180]:
            model.process_frame(frame)
        model.settle_slow_path()
        snaps = Snapshotter()
        snaps.prime(model.state)  # the reused copy, as the engine's store thread primes it
        pending = snaps.take_model(model)
        expected = [model.process_frame(f) for f in movie.frames[180:]]
        state = pending.complete()
        state_file.save_model(tmp_path / "ckpt.h5", model.params, state, pace=lambda: None)
        snaps.release()
    finally:
        model.settle_slow_path()
        pool.shutdown()
    _assert_resumes_as_it_went_on(tmp_path / "ckpt.h5", movie.frames[180:], expected)


def test_ring_copy_copies_each_row_once_as_it_was():
    src = np.arange(20.0).reshape(5, 4)
    dst = np.zeros_like(src)
    ring = RingCopy(src, dst)
    ring.before_write(2)
    src[2] = -1  # the owner overwrites row 2 after its copy
    ring.before_write(2)  # a second write to the same row copies nothing again
    np.testing.assert_array_equal(dst[2], [8, 9, 10, 11])
    paced = []
    ring.copy_rest(pace=lambda: paced.append(1))
    assert len(paced) == 4 and ring.done
    np.testing.assert_array_equal(dst, np.arange(20.0).reshape(5, 4))
    whole = RingCopy(src, np.zeros_like(src))
    whole.before_write(0, every_row=True)  # e.g. the motion border band zeroes every row
    assert whole.done


def test_a_paced_save_writes_the_same_file(movie, tmp_path):
    model = _model(movie)
    paced = []
    state_file.save_model(tmp_path / "a.h5", model.params, model.state)
    state_file.save_model(
        tmp_path / "b.h5", model.params, model.state, pace=lambda: paced.append(1)
    )
    big = model.state.residual.nbytes
    assert len(paced) >= big // state_file.BLOCK
    _, a = state_file.load_model(tmp_path / "a.h5")
    _, b = state_file.load_model(tmp_path / "b.h5")
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_copy_that_cannot_start_leaves_no_guard_and_no_lock(movie):
    model, pool = _threaded_model(movie)
    model.process_frame(movie.frames[150])
    model.settle_slow_path()
    pool.shutdown()  # the slow path's executor refuses the copy job
    snaps = Snapshotter()
    with pytest.raises(RuntimeError):
        snaps.take_model(model)
    assert model.residual_guard is None
    assert snaps.take(model.state) is not None  # the lock was released
    snaps.release()


def _assert_resumes_as_it_went_on(path, frames, expected) -> None:
    """A model read back from ``path`` gives, frame by frame, the results the live model
    gave after the checkpoint."""
    resumed = OnlineCNMFE.load(path)
    for frame, want in zip(frames, expected, strict=True):
        got = resumed.process_frame(frame)
        np.testing.assert_array_equal(got.C, want.C)
        np.testing.assert_array_equal(got.S, want.S)
        np.testing.assert_array_equal(got.neuron_ids, want.neuron_ids)
