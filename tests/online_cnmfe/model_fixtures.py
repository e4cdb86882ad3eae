"""A tiny synthetic 1p movie with ground truth, and a truth-derived InitResult.

Neurons: Gaussian footprints, AR(1) calcium from Poisson spikes (some silent until a birth
frame). Background: smooth baseline + two broad blobs with slowly varying amplitudes (what the
ring model is for) + Gaussian noise. Small enough for tests (numba compile dominates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels.ring import ring_offsets
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.traces import grid_shape


@dataclass
class Movie:
    frames: np.ndarray  # (T, H, W) float32
    A: scipy.sparse.csc_array  # truth footprints (peak 1)
    C: np.ndarray  # (K, T) truth calcium (movie units at the footprint peak)
    S: np.ndarray
    background: np.ndarray  # (T, H, W) background without noise
    g: np.ndarray  # (K,)
    noise: float


def make_movie(
    dims=(64, 64), n_neurons=10, n_frames=600, seed=0, late=(), diameter=8.0, noise=1.0
) -> Movie:
    rng = np.random.default_rng(seed)
    H, W = dims
    rows, cols = np.mgrid[0:H, 0:W]
    sigma = diameter / 4
    centres = []
    while len(centres) < n_neurons:
        c = rng.uniform(5, [H - 5, W - 5])
        if all(np.hypot(*(c - o)) > 0.9 * diameter for o in centres):
            centres.append(c)
    fps = np.stack(
        [np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)).ravel() for r, c in centres],
        axis=1,
    )
    fps[fps < 0.05] = 0
    A = scipy.sparse.csc_array(fps.astype(np.float32))
    g = rng.uniform(0.85, 0.93, n_neurons)
    S = (rng.random((n_neurons, n_frames)) < 0.03) * rng.uniform(3, 8, (n_neurons, n_frames))
    for k, birth in late:
        S[k, :birth] = 0
    C = np.zeros_like(S)
    for t in range(n_frames):
        C[:, t] = (g * C[:, t - 1] if t else 0) + S[:, t]
    base = 20 + 5 * np.exp(-((rows - H / 2) ** 2 + (cols - W / 2) ** 2) / (2 * (0.6 * H) ** 2))
    blobs = []
    for _ in range(2):
        r, c = rng.uniform(0, [H, W])
        blobs.append(np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * (0.35 * H) ** 2)))
    amp = 2 + np.cumsum(rng.normal(0, 0.15, (2, n_frames)), axis=1)
    bg = base[None] + np.einsum("kt,khw->thw", amp, np.stack(blobs))
    sig = (fps @ C).T.reshape(n_frames, H, W)
    frames = bg + sig + rng.normal(0, noise, (n_frames, H, W))
    return Movie(
        frames.astype(np.float32), A, C.astype(np.float32), S.astype(np.float32),
        bg.astype(np.float32), g.astype(np.float32), noise,
    )  # fmt: skip


def fit_ring_weights(X: np.ndarray, offsets: np.ndarray, ssub: int, ridge=1e-3) -> np.ndarray:
    """Ridge ring weights (n_bg, R) from background fluctuations X (T, H, W) (dense numpy)."""
    T, H, W = X.shape
    hb, wb = grid_shape((H, W), ssub)
    pad = np.zeros((T, hb * ssub, wb * ssub))
    cnt = np.zeros((hb * ssub, wb * ssub))
    pad[:, :H, :W] = X
    cnt[:H, :W] = 1
    Xd = pad.reshape(T, hb, ssub, wb, ssub).sum((2, 4)) / cnt.reshape(hb, ssub, wb, ssub).sum(
        (1, 3)
    )
    rr, cc = np.divmod(np.arange(hb * wb), wb)
    R = len(offsets)
    Wout = np.zeros((hb * wb, R), np.float32)
    for p in range(hb * wb):
        r = rr[p] + offsets[:, 0]
        c = cc[p] + offsets[:, 1]
        ok = (r >= 0) & (r < hb) & (c >= 0) & (c < wb)
        Xr = Xd[:, r[ok], c[ok]]
        M = Xr.T @ Xr
        M += ridge * (np.trace(M) / R + 1e-6) * np.eye(len(M))
        Wout[p, ok] = np.linalg.solve(M, Xr.T @ Xd[:, rr[p], cc[p]])
    return Wout


def truth_init(movie: Movie, n_init: int, ssub=2, diameter=8.0, ring_factor=1.4) -> InitResult:
    """InitResult from the truth of the first ``n_init`` frames."""
    T, H, W = movie.frames.shape
    offsets = ring_offsets(int(round(ring_factor * diameter / ssub)))
    A = movie.A
    C = movie.C[:, :n_init]
    Y = movie.frames[:n_init].reshape(n_init, -1)
    AC = (A @ C).T
    b0 = (Y - AC).mean(axis=0)
    X = (Y - AC - b0).reshape(n_init, H, W)
    Wring = fit_ring_weights(X, offsets, ssub)
    K = A.shape[1]
    return InitResult(
        dims=(H, W), A=A, C=C.copy(), S=movie.S[:, :n_init].copy(), C_raw=C.copy(),
        b0=b0.astype(np.float32), W=Wring, ring_offsets=offsets, background_downsample=ssub,
        g=movie.g[:, None].copy(), trace_noise=np.full(K, movie.noise * 0.3, np.float32),
        pixel_noise=np.full(H * W, movie.noise, np.float32),
        corr_image=np.zeros((H, W), np.float32), pnr_image=np.zeros((H, W), np.float32),
    )  # fmt: skip
