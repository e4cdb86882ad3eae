"""A tiny 1p movie with known footprints and traces for initialisation tests.

4 separated and 4 touching neurons (two pairs 0.7 diameters apart) on a 64x64 field, a strong
smooth background (vignetted baseline and two large slowly fluctuating blobs) and white noise.
"""

from __future__ import annotations

import numpy as np

DIAMETER = 10.0
CENTRES = [(12, 12), (12, 52), (52, 12), (52, 52), (30, 28), (30, 35), (40, 44), (45, 48)]


def tiny_movie(T: int = 300, seed: int = 0, noise: float = 1.0, pnr=(8.0, 15.0)):
    """Return (frames (T, 64, 64) float32, A_true (4096, 8), C_true (8, T))."""
    rng = np.random.default_rng(seed)
    H = W = 64
    yy, xx = np.mgrid[:H, :W]
    sigma = DIAMETER / 4
    A = np.stack(
        [np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2)).ravel() for r, c in CENTRES],
        axis=1,
    )
    K = len(CENTRES)
    g = 0.9
    C = np.zeros((K, T))
    spikes = rng.random((K, T)) < 0.03
    for t in range(T):
        C[:, t] = (g * C[:, t - 1] if t else 0) + spikes[:, t] * rng.uniform(0.5, 1.5, K)
    peaks = rng.uniform(*pnr, K) * noise
    C *= (peaks / np.maximum(C.max(axis=1), 1e-9))[:, None]
    vignette = 1 - 0.3 * (((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 32**2))
    blobs = np.stack(
        [
            np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / (2 * 18.0**2)),
            np.exp(-((yy - 50) ** 2 + (xx - 20) ** 2) / (2 * 22.0**2)),
        ]
    )
    f = np.zeros((2, T))
    for t in range(1, T):
        f[:, t] = 0.98 * f[:, t - 1] + rng.standard_normal(2) * 0.2
    amp = 30 * noise * (1 + 0.5 * np.tanh(f))
    background = 200 * vignette + np.tensordot(amp.T, blobs, axes=1)
    frames = background + (A @ C).T.reshape(T, H, W) + noise * rng.standard_normal((T, H, W))
    return frames.astype(np.float32), A.astype(np.float32), C.astype(np.float32)
