"""Validation of what a results file claims, before anything indexes with it.

A results file may be damaged (a disk error, a copy cut short) or crafted: an index out of
range would otherwise reach NumPy fancy indexing, SciPy's sparse kernels or an export's dense
conversion (where an out-of-range pixel index is a segmentation fault, not an exception).
Every check raises :class:`~online_cnmfe.errors.StateFileError` with one line naming the
dataset, what it holds and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from online_cnmfe.errors import StateFileError

MAX_PIXELS = 2**31 - 1  # footprint pixel indices are int32


def damaged(path: Path, what: str) -> StateFileError:
    return StateFileError(f"{path}: {what}; the file is damaged or was not written by online-cnmfe")


def dataset(f: h5py.File, name: str, ndim: int, path: Path) -> h5py.Dataset:
    """``f[name]``, which must be a dataset of ``ndim`` dimensions."""
    node = f.get(name)
    if not isinstance(node, h5py.Dataset):
        raise damaged(path, f"'{name}' is missing")
    if node.ndim != ndim:
        raise damaged(path, f"'{name}' has shape {node.shape}; expected {ndim} dimension(s)")
    return node


def dims_of(f: h5py.File, path: Path) -> tuple[int, int]:
    """The root attribute ``dims`` = (H, W): two positive integers, H·W < 2^31."""
    raw = np.asarray(f.attrs.get("dims", ()))
    if raw.shape != (2,) or raw.dtype.kind not in "iu" or (raw <= 0).any():
        raise damaged(path, f"root attribute 'dims' is {raw.tolist()!r}; expected [H, W] > 0")
    dims = (int(raw[0]), int(raw[1]))
    if dims[0] * dims[1] > MAX_PIXELS:
        raise damaged(path, f"dims {dims} exceed {MAX_PIXELS} pixels")
    return dims


def footprint_arrays(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int, n_pixels: int,
    path: Path,
) -> bool:  # fmt: skip
    """True when the CSC arrays are consistent and in range; False when their lengths disagree
    (footprints being rewritten when the writer was killed: the caller ignores them).

    Raises
    ------
    StateFileError
        An index out of range, a decreasing ``indptr`` or a non-integer index array.
    """
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise damaged(path, "footprints/indices or indptr are not integers")
    if indptr.shape[0] != n_cols + 1 or indptr[-1] != data.shape[0]:
        return False
    if indices.shape[0] != data.shape[0]:
        return False
    if indptr[0] != 0 or (np.diff(indptr) < 0).any():
        raise damaged(path, "footprints/indptr does not start at 0 and increase")
    if indices.size and (indices.min() < 0 or indices.max() >= n_pixels):
        bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
        raise damaged(
            path, f"footprints/indices holds pixel {bad}, outside 0..{n_pixels - 1} of the dims"
        )
    return True


def same_length(path: Path, **arrays: np.ndarray) -> None:
    """Every array has the same first dimension."""
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{n.replace('__', '/')} {k}" for n, k in lengths.items())
        raise damaged(path, f"lengths disagree ({listed})")
