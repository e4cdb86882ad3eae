"""A small moving 1-photon-like movie with known shifts (shared by the motion tests).

A canvas larger than the frame holds static tissue texture (vessel-like dark lines, cells
with a baseline) and a smooth background; each frame is the canvas moved by ``shifts[t]``
(content moved by +d: ``frame[r, c] = canvas[r - dy, c - dx]``), times a static vignetting
(it stays with the sensor), plus sparse activity and Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

PAD = 24


def canvas(rng: np.random.Generator, dims: tuple[int, int], n_cells: int = 40) -> np.ndarray:
    H, W = dims[0] + 2 * PAD, dims[1] + 2 * PAD
    rows, cols = np.mgrid[0:H, 0:W]
    tissue = 400 + 150 * ndi.gaussian_filter(rng.standard_normal((H, W)), 12) * 12
    for _ in range(6):  # vessels: dark smooth curves
        r0, c0, a = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0, np.pi)
        d = np.abs((rows - r0) * np.cos(a) - (cols - c0) * np.sin(a))
        tissue -= 60 * np.exp(-(d**2) / (2 * 1.5**2))
    for _ in range(n_cells):  # cells with a baseline
        r0, c0 = rng.uniform(0, H), rng.uniform(0, W)
        tissue += 40 * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * 2.0**2))
    return tissue


def moving_movie(shifts: np.ndarray, dims=(96, 96), seed: int = 0, noise: float = 5.0):
    """(frames (T, H, W) float32, the static canvas) for content displacements ``shifts``."""
    rng = np.random.default_rng(seed)
    tissue = canvas(rng, dims)
    H, W = dims
    rows, cols = np.mgrid[0:H, 0:W]
    vignette = 1.0 - 0.3 * (((rows - H / 2) / H) ** 2 + ((cols - W / 2) / W) ** 2) * 4
    frames = np.empty((len(shifts), H, W), np.float32)
    for t, d in enumerate(shifts):
        moved = ndi.shift(tissue, d, order=3, mode="nearest")[PAD : PAD + H, PAD : PAD + W]
        frames[t] = moved * vignette + rng.normal(0, noise, dims)
    return frames, tissue


def walk(rng: np.random.Generator, n: int, std: float, jumps=()) -> np.ndarray:
    """A smooth random walk (n, 2) of about ``std`` pixels plus held jumps ((t0, t1, dy, dx))."""
    steps = ndi.gaussian_filter1d(rng.standard_normal((n, 2)), 6, axis=0)
    m = steps / max(steps.std(), 1e-9) * std
    for t0, t1, dy, dx in jumps:
        m[t0:t1] += (dy, dx)
    return m
