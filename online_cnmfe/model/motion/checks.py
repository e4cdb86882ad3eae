"""Consistency of a motion state read back from a file, before the kernels index with it.

The registration and warp kernels do not bound-check: a template, buffer or interpolation map
of the wrong size (a damaged or crafted checkpoint) would read or write outside its array. A
state read back is compared with the one its own parameters build: every array must have the
same shape and dtype, and the geometry (grid, search radius, filter radii, patch corners,
interpolation indices) must be identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from online_cnmfe.model.motion.register import make_state
from online_cnmfe.model.motion.state import MotionState, PatchState, geometry
from online_cnmfe.model.state_checks import StateError
from online_cnmfe.params import CNMFEParams

# integer arrays and sizes that must equal what the parameters give (indices into the others)
# (and the interpolation weights: the warp's interior path trusts them to ascend in [0, 1])
_GEOMETRY = {
    "dims", "ds", "radii_small", "radii_large", "radii_again", "search", "starts_r", "starts_c",
    "radius", "row_i", "col_i", "grid_row_i", "grid_col_i", "row_w", "col_w", "grid_row_w",
    "grid_col_w",
}  # fmt: skip


def check_motion_state(ms: object, dims: tuple[int, int], params: CNMFEParams) -> None:
    """Raise :class:`StateError` unless ``ms`` is the motion state ``params`` build for ``dims``.

    Parameters
    ----------
    ms : MotionState
        The state read back.
    dims : tuple (H, W)
        The model's frame size.
    params : CNMFEParams
        The parameters saved with the state.
    """
    if not isinstance(ms, MotionState):
        raise StateError(f"motion holds a {type(ms).__name__}; expected a MotionState")
    try:
        geom = geometry(tuple(int(d) for d in dims), params.motion, params.data.neuron_diameter_px)
    except ValueError as exc:
        raise StateError(f"motion: {exc}") from None
    ref = make_state(geom, params, np.zeros(geom.grid, np.float32), 0.0)
    _same("motion", ms, ref)
    lens = ms.lens  # optional (a lens margin): the grid's shape when present
    if lens is not None and (
        not isinstance(lens, np.ndarray) or lens.shape != geom.grid
        or lens.dtype != np.float32 or not lens.flags.c_contiguous
    ):  # fmt: skip
        got = lens.shape if isinstance(lens, np.ndarray) else type(lens).__name__
        raise StateError(f"motion.lens has shape {got}; expected {geom.grid} float32 or None")
    n = int(dims[0]) * int(dims[1])  # the lens's outside (lens_gaps): one per pixel, or none
    gaps = {"lens_outside": np.float32, "scratch_gap": np.float32, "scratch_gap_valid": np.uint8}
    present = [getattr(ms, name) is not None for name in gaps]
    if any(present) and not all(present):
        raise StateError("motion: lens_outside, scratch_gap and scratch_gap_valid go together")
    for name, dtype in gaps.items():
        v = getattr(ms, name)
        if v is not None and (
            not isinstance(v, np.ndarray) or v.shape != (n,) or v.dtype != dtype
            or not v.flags.c_contiguous
        ):  # fmt: skip
            got = v.shape if isinstance(v, np.ndarray) else type(v).__name__
            raise StateError(f"motion.{name} has shape {got}; expected ({n},) {dtype.__name__}")


def _same(name: str, got: object, ref: object) -> None:
    for fld in dataclasses.fields(ref):
        key, a, b = f"{name}.{fld.name}", getattr(got, fld.name), getattr(ref, fld.name)
        if isinstance(b, PatchState) or isinstance(a, PatchState):
            if not (isinstance(a, PatchState) and isinstance(b, PatchState)):
                raise StateError(f"{key}: the saved state and the saved motion.mode disagree")
            _same(key, a, b)
        elif isinstance(b, np.ndarray):
            if not isinstance(a, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
                got_shape = a.shape if isinstance(a, np.ndarray) else type(a).__name__
                raise StateError(f"{key} has shape {got_shape}; expected {b.shape} {b.dtype}")
            if not a.flags.c_contiguous:
                raise StateError(f"{key} is not C-contiguous")
            if fld.name in _GEOMETRY and not np.array_equal(a, b):
                raise StateError(f"{key} differs from what the saved parameters give")
        elif fld.name in _GEOMETRY and tuple(np.atleast_1d(a)) != tuple(np.atleast_1d(b)):
            raise StateError(f"{key} is {a!r}; the saved parameters give {b!r}")
