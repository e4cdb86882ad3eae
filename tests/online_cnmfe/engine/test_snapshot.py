"""Checkpoint snapshots: a reused copy that equals the state when taken and shares nothing."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest

from online_cnmfe import OnlineCNMFE
from online_cnmfe.engine.snapshot import Snapshotter, copy_into
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
    resumed = OnlineCNMFE.load(tmp_path / "ckpt.h5")
    for frame, want in zip(movie.frames[180:], expected, strict=True):
        got = resumed.process_frame(frame)
        np.testing.assert_array_equal(got.C, want.C)
        np.testing.assert_array_equal(got.neuron_ids, want.neuron_ids)


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
