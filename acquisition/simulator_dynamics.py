"""Temporal building blocks of the simulator: AR filters, seeded streams, sub-pixel shifts.

Symbols: ``g`` (n, 2) AR(2) coefficients per row, ``y_t = g1 y_{t-1} + g2 y_{t-2} + x_t``
(AR(1) rows have g2 = 0); the filter state is ``(y_{t-1}, y_{t-2})``.
"""

from __future__ import annotations

import math

import numpy as np


def ar_coefficients(decay_frames: np.ndarray, rise_frames: np.ndarray | None) -> np.ndarray:
    """(n, 2) AR(2) coefficients (g2 = 0 for AR(1)) from time constants in frames."""
    d = np.exp(-1.0 / decay_frames)
    if rise_frames is None:
        return np.stack([d, np.zeros_like(d)], axis=1)
    r = np.exp(-1.0 / rise_frames)
    return np.stack([d + r, -d * r], axis=1)


def impulse_peak(g: np.ndarray, decay_frames: np.ndarray) -> np.ndarray:
    """Peak of the impulse response of each AR(2) row of ``g``."""
    n_steps = int(np.max(decay_frames, initial=0.0) * 3) + 10
    y1 = np.zeros(len(g))
    y2 = np.zeros(len(g))
    x = 1.0
    peak = np.zeros(len(g))
    for _ in range(n_steps):
        y = g[:, 0] * y1 + g[:, 1] * y2 + x
        peak = np.maximum(peak, y)
        y2, y1, x = y1, y, 0.0
    return peak


def ar_run(x: np.ndarray, g: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
    """Run ``y_t = g1 y_{t-1} + g2 y_{t-2} + x_t`` along axis 1; returns (y, new_state)."""
    y1, y2 = state
    g1, g2 = g[:, 0], g[:, 1]
    out = np.empty_like(x)
    for t in range(x.shape[1]):
        y = g1 * y1 + g2 * y2 + x[:, t]
        out[:, t] = y
        y2, y1 = y1, y
    return out, (y1.copy(), y2.copy())


def bilinear_shift(stack: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """Translate images (L, H, W) by ``shift`` = (d_row, d_col) pixels into ``out``.

    Content moves by +shift (``out[y, x] = stack[y - d_row, x - d_col]``), bilinear, edges
    extended; the same convention as ``scipy.ndimage.shift(order=1, mode='nearest')``.
    """
    _, h, w = stack.shape
    pad = int(math.ceil(float(np.abs(shift).max()))) + 1
    padded = np.pad(stack, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    iy, ix = math.floor(-shift[0]), math.floor(-shift[1])
    fy, fx = np.float32(-shift[0] - iy), np.float32(-shift[1] - ix)
    r, c = pad + iy, pad + ix
    top = (1 - fx) * padded[:, r : r + h, c : c + w] + fx * padded[:, r : r + h, c + 1 : c + w + 1]
    bottom = (1 - fx) * padded[:, r + 1 : r + h + 1, c : c + w]
    bottom += fx * padded[:, r + 1 : r + h + 1, c + 1 : c + w + 1]
    np.add((1 - fy) * top, fy * bottom, out=out)


def block_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))
