"""Regions of the field of view for trigger rules, in (row, col) pixel coordinates.

A region rule selects the neurons whose footprint centroid lies in the region; the selection is
re-resolved whenever the centroids change (see :class:`~online_cnmfe.triggers.TriggerEngine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from online_cnmfe.errors import ConfigError
from online_cnmfe.triggers._validate import number, point, unknown_keys

__all__ = ["REGION_SHAPES", "Region", "parse_region"]

REGION_SHAPES = ("rectangle", "circle", "polygon")


@dataclass(frozen=True, slots=True)
class Region:
    """A region of the field of view in (row, col) pixel coordinates.

    Attributes
    ----------
    shape : str
        ``"rectangle"`` (``rows`` = (r0, r1), ``cols`` = (c0, c1), half-open), ``"circle"``
        (``center`` = (row, col), ``radius``) or ``"polygon"`` (``vertices``, >= 3 (row, col)
        points, even-odd rule).
    """

    shape: str
    rows: tuple[float, float] = (0.0, 0.0)
    cols: tuple[float, float] = (0.0, 0.0)
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    vertices: tuple[tuple[float, float], ...] = ()

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which (row, col) points lie in the region.

        Parameters
        ----------
        points : ndarray of shape (n, 2)
            (row, col) coordinates, e.g. footprint centroids.

        Returns
        -------
        ndarray of shape (n,), bool
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        r, c = pts[:, 0], pts[:, 1]
        if self.shape == "rectangle":
            return (
                (r >= self.rows[0]) & (r < self.rows[1]) & (c >= self.cols[0]) & (c < self.cols[1])
            )
        if self.shape == "circle":
            return (r - self.center[0]) ** 2 + (c - self.center[1]) ** 2 <= self.radius**2
        verts = np.asarray(self.vertices, dtype=np.float64)
        inside = np.zeros(len(pts), dtype=bool)
        vr, vc = verts[:, 0], verts[:, 1]
        pr, pc = np.roll(vr, 1), np.roll(vc, 1)
        for i in range(len(verts)):  # loop over vertices (few), vectorised over points
            straddles = (vr[i] > r) != (pr[i] > r)
            with np.errstate(divide="ignore", invalid="ignore"):
                cross = (pc[i] - vc[i]) * (r - vr[i]) / (pr[i] - vr[i]) + vc[i]
            inside ^= straddles & (c < cross)
        return inside

    def to_dict(self) -> dict[str, Any]:
        if self.shape == "rectangle":
            return {"shape": "rectangle", "rows": list(self.rows), "cols": list(self.cols)}
        if self.shape == "circle":
            return {"shape": "circle", "center": list(self.center), "radius": self.radius}
        return {"shape": "polygon", "vertices": [list(v) for v in self.vertices]}


def parse_region(value: Any, where: str = "region") -> Region:
    """Validate a region table (see :class:`Region`); raises ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is {value!r}; expected a table with a 'shape' key")
    shape = value.get("shape")
    if shape not in REGION_SHAPES:
        raise ConfigError(f"{where}: shape is {shape!r}; expected one of {REGION_SHAPES}")
    if shape == "rectangle":
        unknown_keys(where, value, ("shape", "rows", "cols"))
        rows, cols = (
            point(where, "rows", value.get("rows")),
            point(where, "cols", value.get("cols")),
        )
        if rows[1] <= rows[0] or cols[1] <= cols[0]:
            raise ConfigError(
                f"{where}: rows {rows} / cols {cols} must be [low, high] with low < high"
            )
        return Region(shape, rows=rows, cols=cols)
    if shape == "circle":
        unknown_keys(where, value, ("shape", "center", "radius"))
        radius = number(where, "radius", value.get("radius"), minimum=0.0)
        if radius <= 0:
            raise ConfigError(f"{where}: radius is {radius}; expected > 0 pixels")
        return Region(shape, center=point(where, "center", value.get("center")), radius=radius)
    unknown_keys(where, value, ("shape", "vertices"))
    verts = value.get("vertices")
    if not isinstance(verts, list) or len(verts) < 3:
        raise ConfigError(f"{where}: vertices is {verts!r}; expected >= 3 [row, col] points")
    return Region(shape, vertices=tuple(point(where, "vertices", v) for v in verts))
