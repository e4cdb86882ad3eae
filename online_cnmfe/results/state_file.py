"""HDF5 save/load of the online model: params + the complete state, for any dataclass of arrays.

Layout of a model file::

    /            attrs: format = "online-cnmfe-model", format_version, software_version,
                        params (JSON of CNMFEParams.to_dict())
    /state       one entry per dataclass field (see below); attrs "__class__" = module:qualname

Field encoding (recursive, so the slow path's ``SlowPathState`` round-trips too): ndarray →
dataset; scipy sparse → group (data, indices, indptr, attr ``shape``, ``__sparse__`` =
format); dataclass → group with ``__class__``; dict → group with ``__dict__``; list/tuple of
non-scalars → group with ``__list__`` / ``__tuple__`` and items "0", "1", …; None, bool, int,
float, str, tuples of scalars → attributes (JSON-encoded, tagged).

Reading never imports anything named in the file: a dataclass is rebuilt only when its name
(the part of ``__class__`` after ``:``) is in the allow-list :data:`STATE_CLASSES` (or the
``classes`` mapping a caller passes); any other name is a :class:`StateFileError`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe.errors import StateFileError
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.motion import MotionInit, MotionState, PatchState
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.model.preprocessing.state import InitCorrections, PreprocessState
from online_cnmfe.model.slotted import SlottedColumns
from online_cnmfe.model.slow_path.detection import DetectionState, Geometry
from online_cnmfe.model.slow_path.reseed import ReseedState
from online_cnmfe.model.slow_path.ring_refresh import RingRefreshState
from online_cnmfe.model.slow_path.schedule import SlowPathState, SlowWork
from online_cnmfe.model.slow_path.suffstats import FootprintStats
from online_cnmfe.model.slow_path.update import ModelUpdate
from online_cnmfe.model.state import ModelState
from online_cnmfe.model.state_checks import StateError
from online_cnmfe.params import CNMFEParams
from online_cnmfe.version import __version__

FORMAT = "online-cnmfe-model"
INIT_FORMAT = "online-cnmfe-init"  # an InitResult saved for reuse (``process --init-result``)
FORMAT_VERSION = 1
_SCALARS = (type(None), bool, int, float, str, np.integer, np.floating, np.bool_)
BLOCK = 2 << 20  # bytes of a large array written at once when save_model is paced
Pace = Callable[[], Any] | None

# The only classes a state file may rebuild, by name.
STATE_CLASSES: dict[str, type] = {
    cls.__qualname__: cls
    for cls in (
        ModelState,
        SlottedColumns,
        InitResult,
        SlowPathState,
        SlowWork,
        DetectionState,
        ReseedState,
        Geometry,
        RingRefreshState,
        FootprintStats,
        MotionState,
        PatchState,
        MotionInit,
        ModelUpdate,
        PreprocessState,
        InitCorrections,
    )
}


def _is_scalar_tree(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_scalar_tree(v) for v in value)
    return False


def _to_json(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return {"__seq__": type(value).__name__, "items": [_to_json(v) for v in value]}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "__seq__" in value:
        items = [_from_json(v) for v in value["items"]]
        return tuple(items) if value["__seq__"] == "tuple" else items
    return value


def _write(group: h5py.Group, name: str, value: Any, pace: Pace = None) -> None:
    if _is_scalar_tree(value):
        group.attrs[f"scalar:{name}"] = json.dumps(_to_json(value))
    elif isinstance(value, np.ndarray) and pace is not None and value.ndim and value.nbytes > BLOCK:
        dset = group.create_dataset(name, shape=value.shape, dtype=value.dtype)
        rows = max(1, BLOCK * value.shape[0] // value.nbytes)
        for start in range(0, value.shape[0], rows):  # h5py holds the GIL while it writes
            pace()
            dset[start : start + rows] = value[start : start + rows]
    elif isinstance(value, np.ndarray):
        group.create_dataset(name, data=value)
    elif scipy.sparse.issparse(value):
        sub = group.create_group(name)
        fmt = value.format
        m = value if fmt in ("csr", "csc") else scipy.sparse.csr_array(value)
        sub.attrs["__sparse__"] = m.format
        sub.attrs["shape"] = np.asarray(m.shape, np.int64)
        sub.attrs["array"] = isinstance(value, scipy.sparse.sparray)
        for part in ("data", "indices", "indptr"):
            sub.create_dataset(part, data=getattr(m, part))
    elif dataclasses.is_dataclass(value):
        sub = group.create_group(name)
        _write_dataclass(sub, value, pace)
    elif isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["__dict__"] = json.dumps([str(k) for k in value])
        for i, (_, v) in enumerate(value.items()):
            _write(sub, str(i), v, pace)
    elif isinstance(value, (list, tuple)):
        sub = group.create_group(name)
        sub.attrs["__list__"] = type(value).__name__
        sub.attrs["n"] = len(value)
        for i, v in enumerate(value):
            _write(sub, str(i), v, pace)
    else:
        raise TypeError(
            f"cannot save field {name!r} of type {type(value).__name__}; model state fields must "
            "be arrays, sparse matrices, scalars, dataclasses, dicts or lists of those"
        )


def _write_dataclass(group: h5py.Group, obj: Any, pace: Pace = None) -> None:
    cls = type(obj)
    group.attrs["__class__"] = f"{cls.__module__}:{cls.__qualname__}"
    for f in dataclasses.fields(obj):
        _write(group, f.name, getattr(obj, f.name), pace)


def _read(group: h5py.Group, name: str, classes: dict[str, type]) -> Any:
    key = f"scalar:{name}"
    if key in group.attrs:
        return _from_json(json.loads(group.attrs[key]))
    node = group[name]
    if isinstance(node, h5py.Dataset):
        return node[()]
    if "__sparse__" in node.attrs:
        fmt = node.attrs["__sparse__"]
        arrays = node.attrs.get("array", True)
        cls = {
            ("csr", True): scipy.sparse.csr_array,
            ("csc", True): scipy.sparse.csc_array,
            ("csr", False): scipy.sparse.csr_matrix,
            ("csc", False): scipy.sparse.csc_matrix,
        }[(fmt, bool(arrays))]
        parts = (node["data"][()], node["indices"][()], node["indptr"][()])
        return cls(parts, shape=tuple(int(s) for s in node.attrs["shape"]))
    if "__class__" in node.attrs:
        return _read_dataclass(node, classes)
    if "__dict__" in node.attrs:
        keys = json.loads(node.attrs["__dict__"])
        return {k: _read(node, str(i), classes) for i, k in enumerate(keys)}
    if "__list__" in node.attrs:
        items = [_read(node, str(i), classes) for i in range(int(node.attrs["n"]))]
        return tuple(items) if node.attrs["__list__"] == "tuple" else items
    raise StateFileError(f"unrecognised entry {node.name!r} in the model file")


def _read_dataclass(group: h5py.Group, classes: dict[str, type]) -> Any:
    qualname = str(group.attrs["__class__"]).rpartition(":")[2]
    cls = classes.get(qualname)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise StateFileError(
            f"the model file holds an object of class {qualname!r}, which is not a state class "
            "of this version of online-cnmfe (nothing was imported); the file is damaged, "
            "crafted, or written by another version"
        )
    values = {}
    for f in dataclasses.fields(cls):
        if f"scalar:{f.name}" not in group.attrs and f.name not in group:
            if f.default is not dataclasses.MISSING:  # a field added later, with a default
                continue
            raise StateFileError(
                f"the model file lacks field {f.name!r} of {qualname}; it was written by another "
                "version of online-cnmfe"
            )
        values[f.name] = _read(group, f.name, classes)
    return cls(**values)


def save_model(
    path: str | Path, params: CNMFEParams, state: Any, fmt: str = FORMAT,
    attrs: dict[str, str] | None = None, pace: Pace = None,
) -> None:  # fmt: skip
    """Write params and ``state`` (a dataclass, e.g. ModelState) to ``path`` (overwritten).

    ``fmt`` names the kind of file (:data:`FORMAT` for a model, :data:`INIT_FORMAT` for an
    InitResult); ``attrs`` are extra string attributes of the root (e.g. a checkpoint's
    ``results_file_id``, read back with :func:`read_attrs`). ``pace``: called before each
    block of ``BLOCK`` bytes of a large array (arrays are then written block by block, the
    same file): a writer thread can let another thread have the GIL between blocks.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[f"extra:{key}"] = str(value)
        f.attrs["format"] = fmt
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["software_version"] = __version__
        f.attrs["params"] = params.to_json()
        _write_dataclass(f.create_group("state"), state, pace)
    tmp.replace(path)


def load_model(
    path: str | Path, fmt: str = FORMAT, classes: dict[str, type] | None = None
) -> tuple[CNMFEParams, Any]:
    """Read (params, state) written by :func:`save_model`.

    ``classes`` adds dataclasses (by ``__qualname__``) to the allow-list :data:`STATE_CLASSES`.

    Raises
    ------
    StateFileError
        If the file is missing, not a model file, or of another format version.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StateFileError(f"cannot open model file {path}: {exc}") from exc
    with f:
        if f.attrs.get("format") != fmt:
            kind = "model" if fmt == FORMAT else "initialisation"
            raise StateFileError(
                f"{path} is not an online-cnmfe {kind} file (format attribute "
                f"{f.attrs.get('format')!r}, expected {fmt!r})"
            )
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise StateFileError(
                f"{path} has model format version {version}; this software reads version "
                f"{FORMAT_VERSION}"
            )
        try:
            params = CNMFEParams.from_dict(json.loads(f.attrs["params"]))
            state = _read_dataclass(f["state"], {**STATE_CLASSES, **(classes or {})})
        except (KeyError, ValueError, TypeError, IndexError, OSError, RuntimeError) as exc:
            raise StateFileError(
                f"{path} cannot be read back ({type(exc).__name__}: {exc}); the file is "
                "damaged or incomplete: delete it or restore a copy"
            ) from exc
    return params, state


def read_attrs(path: str | Path) -> dict[str, str]:
    """The extra attributes :func:`save_model` wrote (empty when none or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return {
                k[len("extra:") :]: str(v) for k, v in f.attrs.items() if k.startswith("extra:")
            }
    except OSError:
        return {}


def save_online_model(
    path: str | Path, model: OnlineCNMFE, attrs: dict[str, str] | None = None
) -> None:
    """Write an initialised :class:`OnlineCNMFE` (params + complete state) to ``path``."""
    if not model.is_initialized:
        raise ValueError("the model is not initialised: there is no state to save")
    model.settle_slow_path()
    save_model(path, model.params, model.state, attrs=attrs)


def load_online_model(path: str | Path, cls: type[OnlineCNMFE] = OnlineCNMFE) -> OnlineCNMFE:
    """Read a model written by :func:`save_online_model`; its next frames give identical results."""
    params, state = load_model(path)
    if not isinstance(state, ModelState):
        raise StateFileError(f"{path} holds a {type(state).__name__}, not a model state")
    try:
        return cls.from_state(params, state)
    except StateError as exc:
        raise StateFileError(
            f"{path} is inconsistent ({exc}); it is damaged or was not written by this engine"
        ) from exc
