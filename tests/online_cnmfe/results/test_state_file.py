"""HDF5 round trip of the model (params + complete state)."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import pytest
import scipy.sparse

from online_cnmfe import OnlineCNMFE
from online_cnmfe.errors import StateFileError
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file as state_io
from tests.online_cnmfe.model_fixtures import make_movie, truth_init


@dataclass(slots=True)
class _Inner:
    x: np.ndarray
    n: int


@dataclass(slots=True)
class _Outer:
    inner: _Inner
    table: dict
    items: list
    shape: tuple
    none: object
    M: scipy.sparse.csc_array
    label: str


def test_generic_dataclass_round_trip(tmp_path):
    obj = _Outer(
        inner=_Inner(np.arange(5, dtype=np.float32), 3),
        table={"a": np.ones((2, 2)), "b": 1.5},
        items=[np.zeros(3, np.int64), _Inner(np.ones(1), 4)],
        shape=(3, 4),
        none=None,
        M=scipy.sparse.csc_array(np.eye(3, dtype=np.float32)),
        label="hello",
    )
    state_io.save_model(tmp_path / "x.h5", CNMFEParams(), obj)
    _, back = state_io.load_model(tmp_path / "x.h5", classes={"_Outer": _Outer, "_Inner": _Inner})
    assert isinstance(back, _Outer) and isinstance(back.inner, _Inner)
    np.testing.assert_array_equal(back.inner.x, obj.inner.x)
    assert back.inner.n == 3 and back.shape == (3, 4) and back.none is None
    assert back.label == "hello" and back.table["b"] == 1.5
    np.testing.assert_array_equal(back.table["a"], obj.table["a"])
    assert back.items[1].n == 4 and back.items[0].dtype == np.int64
    assert isinstance(back.M, scipy.sparse.csc_array)
    np.testing.assert_array_equal(back.M.toarray(), np.eye(3))


def test_model_round_trip_gives_identical_next_results(tmp_path):
    movie = make_movie(n_frames=260, seed=4)
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}}
    )
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(movie, 150), movie.frames[:150])
    for f in movie.frames[150:200]:
        model.process_frame(f)
    model.save(tmp_path / "model.h5")
    loaded = OnlineCNMFE.load(tmp_path / "model.h5")
    assert loaded.params == params and loaded.frame_index == model.frame_index
    for f in movie.frames[200:]:
        a, b = model.process_frame(f), loaded.process_frame(f)
        assert a.frame_index == b.frame_index
        for name in ("C", "S", "C_raw", "neuron_ids"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(model.b0, loaded.b0)


def test_bad_files_raise_state_file_error(tmp_path):
    with pytest.raises(StateFileError, match="cannot open"):
        state_io.load_model(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(StateFileError, match="not an online-cnmfe model file"):
        OnlineCNMFE.load(tmp_path / "other.h5")


def test_round_trip_with_the_slow_path_state(tmp_path):
    pytest.importorskip("online_cnmfe.model.slow_path.schedule")
    movie = make_movie(n_frames=230, seed=5, late=((0, 180),))
    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(movie, 150), movie.frames[:150])
    assert model.state.slow is not None
    for f in movie.frames[150:190]:
        model.process_frame(f)
    model.save(tmp_path / "model.h5")
    loaded = OnlineCNMFE.load(tmp_path / "model.h5")
    assert type(loaded.state.slow) is type(model.state.slow)
    for f in movie.frames[190:]:
        a, b = model.process_frame(f), loaded.process_frame(f)
        for name in ("C", "S", "C_raw", "neuron_ids"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.footprints_version == b.footprints_version
        assert [e.kind for e in a.events] == [e.kind for e in b.events]
