"""What real miniscope recordings add to a clean simulation: line noise, a lens margin,
corrupt frames and photobleaching (used by :mod:`acquisition.simulator`).

Each nuisance is off by default (``SimulationParams``) and, when on, deterministic per frame
(its own random stream ``SeedSequence(seed, spawn_key=(stream, frame))``), so a movie with the
nuisance and its clean twin share every other draw:

* line noise (``line_noise_sigma``): an offset per row, drawn anew every frame, plus two slow
  sinusoidal row bands rolling through the frame (``row_band_amplitude``) - the look of
  Miniscope V4 sensors and cables;
* lens margin (``lens_radius_fraction``): the signal is multiplied by a disc with a 2-pixel soft
  edge and ``lens_dark_level`` is added everywhere, so outside the GRIN lens only the sensor's
  dark level and noise remain;
* corrupt frames (``corrupt_fraction``): missing lines (a band of rows set to 0), a band of
  random values (wireless transmission glitch) or a brightness flash (x 1.6);
* bleaching (``bleach_time_s``): the signal (tissue and neurons, not the dark level) decays as
  ``exp(-t / (bleach_time_s * frame_rate_hz))``.
"""

from __future__ import annotations

import math

import numpy as np

from acquisition.simulator_dynamics import block_rng

STREAM_LINES, STREAM_CORRUPT, STREAM_BANDS = 4, 5, 6
CORRUPT_KINDS = ("clean", "missing_lines", "noise_band", "flash")
_FLASH_GAIN = 1.6
_EDGE_PX = 2.0


def lens_geometry(dims: tuple[int, int], radius_fraction: float) -> tuple[float, float, float]:
    """(centre row, centre col, radius) of the lens disc in pixels."""
    h, w = dims
    return (h - 1) / 2.0, (w - 1) / 2.0, radius_fraction * min(h, w) / 2.0


def lens_map(dims: tuple[int, int], radius_fraction: float) -> np.ndarray:
    """Transmission of the lens: 1 inside the disc, 0 outside, a 2-pixel soft edge.

    Returns
    -------
    ndarray of shape (H, W), float32
    """
    cr, cc, radius = lens_geometry(dims, radius_fraction)
    rr = np.arange(dims[0])[:, None] - cr
    cols = np.arange(dims[1])[None, :] - cc
    dist = np.sqrt(rr * rr + cols * cols)
    return np.clip((radius - dist) / _EDGE_PX + 0.5, 0.0, 1.0).astype(np.float32)


def inside_lens(dims: tuple[int, int], radius_fraction: float, margin_px: float):
    """A predicate ``f((row, col)) -> bool``: the point is at least ``margin_px`` inside."""
    cr, cc, radius = lens_geometry(dims, radius_fraction)
    limit = max(radius - margin_px, 0.0)
    return lambda p: math.hypot(p[0] - cr, p[1] - cc) <= limit


def row_bands(seed: int) -> np.ndarray:
    """Parameters of the two rolling row bands: rows (period px, frequency Hz, phase)."""
    rng = block_rng(seed, STREAM_BANDS)
    return np.stack(
        [rng.uniform(40.0, 90.0, 2), rng.uniform(0.05, 0.2, 2), rng.uniform(0, 2 * math.pi, 2)],
        axis=1,
    )


def line_offsets(
    seed: int, frame: int, height: int, sigma: float, band_amplitude: float, fps: float, bands
) -> np.ndarray:
    """Row offsets of frame ``frame``: i.i.d. N(0, sigma^2) per row plus the rolling bands.

    Returns
    -------
    ndarray of shape (height,), float32
    """
    out = np.zeros(height, np.float64)
    if sigma > 0:
        out += sigma * block_rng(seed, STREAM_LINES, frame).standard_normal(height)
    if band_amplitude > 0:
        rows = np.arange(height)
        t = frame / fps
        for period, freq, phase in bands:
            out += band_amplitude * np.sin(2 * math.pi * (rows / period - freq * t) + phase)
    return out.astype(np.float32)


def corrupt_kind(seed: int, frame: int, fraction: float) -> int:
    """Index into :data:`CORRUPT_KINDS` of frame ``frame`` (0 = clean)."""
    if fraction <= 0:
        return 0
    rng = block_rng(seed, STREAM_CORRUPT, frame)
    if rng.random() >= fraction:
        return 0
    return 1 + int(rng.integers(len(CORRUPT_KINDS) - 1))


def corrupt_frame(image: np.ndarray, seed: int, frame: int, kind: int, high: float) -> None:
    """Apply corruption ``kind`` to ``image`` (H, W) float32 in place.

    Missing lines and noise bands cover 2-15 % of the rows at a random height; noise values
    are uniform in [0, ``high``].
    """
    if kind == 0:
        return
    if kind == 3:
        image *= np.float32(_FLASH_GAIN)
        return
    rng = block_rng(seed, STREAM_CORRUPT, frame)
    rng.random()  # the draws corrupt_kind made
    rng.integers(len(CORRUPT_KINDS) - 1)
    h, w = image.shape
    n = max(2, int(round(rng.uniform(0.02, 0.15) * h)))
    r0 = int(rng.integers(0, max(h - n, 1)))
    if kind == 1:
        image[r0 : r0 + n] = 0.0
    else:
        image[r0 : r0 + n] = rng.uniform(0.0, high, (min(n, h - r0), w)).astype(np.float32)


def bleach_factor(start: int, stop: int, fps: float, bleach_time_s: float) -> np.ndarray:
    """Signal scale of frames ``[start, stop)`` (ones when ``bleach_time_s`` is 0)."""
    t = np.arange(start, stop, dtype=np.float64)
    if bleach_time_s <= 0:
        return np.ones(t.size, np.float32)
    return np.exp(-t / (bleach_time_s * fps)).astype(np.float32)
