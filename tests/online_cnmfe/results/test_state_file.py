"""HDF5 round trip of the model (params + complete state)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def test_a_state_file_with_int64_row_indices_loads_as_int32(tmp_path):
    """State files written before the slotted matrices' row indices became int32 (int64 on
    disk) load with int32 indices (the frame path's kernels are compiled for those) and give
    the same next results as the model that wrote them."""
    movie = make_movie(n_frames=220, seed=4)
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}}
    )
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(movie, 150), movie.frames[:150])
    model.save(tmp_path / "model.h5")
    with h5py.File(tmp_path / "model.h5", "r+") as f:
        n_rewritten = 0
        for name in ("A", "DA", "G"):
            group = next(g for k, g in f.items() if isinstance(g, h5py.Group) and name in g)
            idx = group[name]["indices"][()]
            del group[name]["indices"]
            group[name]["indices"] = idx.astype(np.int64)
            n_rewritten += 1
    assert n_rewritten == 3
    loaded = OnlineCNMFE.load(tmp_path / "model.h5")
    for name in ("A", "DA", "G"):
        assert getattr(loaded.state, name).indices.dtype == np.int32, name
    for f in movie.frames[150:160]:
        a, b = model.process_frame(f), loaded.process_frame(f)
        np.testing.assert_array_equal(a.C_raw, b.C_raw)


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


REPO = Path(__file__).resolve().parents[3]
_EVIL_MODULE = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the state file ran code")
class Payload:
    pass
"""


@pytest.mark.parametrize("name", ["os:system", "evil_mod:Payload", "builtins:eval", "x:"])
def test_a_state_file_naming_another_class_imports_nothing(tmp_path, monkeypatch, name):
    # A checkpoint names the class of each object; reading must rebuild only allow-listed
    # classes and never import the module it names (here one planted in the working folder).
    (tmp_path / "evil_mod.py").write_text(_EVIL_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "crafted.h5"
    state_io.save_model(path, CNMFEParams(), _Inner(np.zeros(2), 1))
    with h5py.File(path, "r+") as f:
        f["state"].attrs["__class__"] = name
    with pytest.raises(StateFileError, match="not a state class") as info:
        state_io.load_model(path, classes={"_Inner": _Inner})
    assert "\n" not in str(info.value)
    assert "evil_mod" not in sys.modules and not (tmp_path / "IMPORTED").exists()


def test_a_crafted_checkpoint_on_the_command_line_imports_nothing(tmp_path):
    (tmp_path / "evil_mod.py").write_text(_EVIL_MODULE)
    path = tmp_path / "init.h5"
    state_io.save_model(path, CNMFEParams(), _Inner(np.zeros(2), 1), fmt=state_io.INIT_FORMAT)
    with h5py.File(path, "r+") as f:
        f["state"].attrs["__class__"] = "evil_mod:Payload"
    np.save(tmp_path / "movie.npy", np.zeros((300, 16, 16), np.float32))
    proc = subprocess.run(
        [sys.executable, "-m", "online_cnmfe", "process", "movie.npy", "--out", "r.h5",
         "--init-result", "init.h5", "--init-frames", "100", "--set", "data.frame_rate_hz=20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'Payload', which is not a state class" in lines[0], proc.stderr
    assert not (tmp_path / "IMPORTED").exists()


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "model.h5"
    state_io.save_model(path, CNMFEParams(), _Inner(np.arange(50_000.0), 1))
    data = path.read_bytes()
    for fraction in (0.9, 0.5, 0.05):
        cut = tmp_path / f"cut{fraction}.h5"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(StateFileError) as info:
            state_io.load_model(cut, classes={"_Inner": _Inner})
        assert "\n" not in str(info.value) and "cut" in str(info.value)


def _bump(f, name, value):
    data = f[name][()]
    if name == "state/A/indices":  # inside column 0 (the tail past the columns is unused)
        data[int(f["state/A/start"][0])] = value
    else:
        data.flat[-1] = value
    del f[name]
    f[name] = data


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("state/A/indices", 10**9, "A.indices of column"),
        ("state/ring_idx", 10**6, "ring_idx holds values outside"),
        ("state/q_indices", 10**6, "q_indices holds values outside"),
        ("state/order", -3, "order holds values outside"),
        ("state/residual_frame", None, "residual_frame has shape"),
        ("state/pool_count", 10**6, "pool_count holds values outside"),
    ],
)
def test_a_checkpoint_with_indices_out_of_range_is_refused(tmp_path, field, value, match):
    # The per-frame kernels do not bound-check: such an index used to be a wild memory access.
    movie = make_movie(n_frames=170, seed=4)
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}}
    )
    model = OnlineCNMFE(params)
    model.initialize_from(truth_init(movie, 150), movie.frames[:150])
    path = tmp_path / "ckpt.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        if value is None:
            del f[field]
            f[field] = np.zeros(3, np.int64)
        else:
            _bump(f, field, value)
    with pytest.raises(StateFileError, match=match) as info:
        state_io.load_online_model(path)
    assert "\n" not in str(info.value)
