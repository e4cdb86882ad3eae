"""Small synthetic fixtures and a minimal frame loop to exercise the slow path on its own.

``MiniLoop`` plays the critical path's role with obvious NumPy (dense A, exact-ish NNLS by
coordinate descent, the ring residual) and applies every ``ModelUpdate`` the slow path returns,
so the slow path's contracts can be tested without the production model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels import ring as kring
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.slow_path import schedule as slow_path
from online_cnmfe.params import CNMFEParams


def gaussian_footprint(dims, centre, sigma, truncate=2.5) -> np.ndarray:
    H, W = dims
    rr, cc = np.mgrid[0:H, 0:W]
    img = np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma**2))
    img[img < math.exp(-(truncate**2) / 2)] = 0
    return (img / np.linalg.norm(img)).ravel().astype(np.float32)


def spike_traces(rng, n, T, rate_hz, fr, g, amp, first=None):
    """AR(1) traces (n, T) of Bernoulli spikes; neuron k silent before ``first[k]``."""
    S = (rng.random((n, T)) < rate_hz / fr) * amp * (0.7 + 0.6 * rng.random((n, T)))
    if first is not None:
        for k, f in enumerate(first):
            S[k, :f] = 0
    C = np.zeros_like(S)
    for t in range(T):
        C[:, t] = (g * C[:, t - 1] if t else 0) + S[:, t]
    return C.astype(np.float32)


@dataclass
class Movie:
    Y: np.ndarray  # (T, H, W)
    A: np.ndarray  # (n_pixels, K) dense truth
    C: np.ndarray  # (K, T)
    b0: np.ndarray
    dims: tuple[int, int]
    g: float
    noise: float


def make_movie(seed=0, dims=(48, 48), centres=((12, 12), (12, 34), (34, 12), (34, 34)),
               sigma=2.0, T=400, fr=20.0, rate_hz=1.0, amp=6.0, noise=1.0, first=None,
               background=None) -> Movie:  # fmt: skip
    rng = np.random.default_rng(seed)
    A = np.stack([gaussian_footprint(dims, c, sigma) for c in centres], axis=1)
    g = math.exp(-1 / (fr * 0.4))
    C = spike_traces(rng, len(centres), T, rate_hz, fr, g, amp, first)
    b0 = np.full(dims[0] * dims[1], 10.0, np.float32)
    Y = (A @ C).T + b0 + noise * rng.standard_normal((T, dims[0] * dims[1]))
    if background is not None:
        Y += background(T)
    return Movie(Y.reshape(T, *dims).astype(np.float32), A, C, b0, dims, g, noise)


def params_for(**dotted) -> CNMFEParams:
    base = {
        "data.neuron_diameter_px": 8.0,
        "data.frame_rate_hz": 20.0,
        "online.residual_buffer_frames": 60,
    }
    base.update(dotted)
    return CNMFEParams().replace(**base)


def init_result(movie: Movie, n_init: int, A=None, C=None, ssub=2, radius=3) -> InitResult:
    A = movie.A if A is None else A
    C = movie.C[:, :n_init] if C is None else C
    H, W = movie.dims
    off = kring.ring_offsets(radius)
    n_bg = (-(-H // ssub)) * (-(-W // ssub))
    K = A.shape[1]
    return InitResult(
        dims=movie.dims, A=scipy.sparse.csc_array(A.astype(np.float32)),
        C=C.astype(np.float32), S=np.zeros_like(C), C_raw=C.astype(np.float32),
        b0=movie.b0.copy(), W=np.zeros((n_bg, off.shape[0]), np.float32), ring_offsets=off,
        background_downsample=ssub, g=np.full(K, movie.g, np.float32),
        trace_noise=np.full(K, movie.noise, np.float32), pixel_noise=np.full(H * W, movie.noise),
        corr_image=np.zeros(movie.dims, np.float32), pnr_image=np.zeros(movie.dims, np.float32),
    )  # fmt: skip


class MiniLoop:
    """A reference critical path: traces by NNLS on A (dense), residual with the ring model."""

    def __init__(self, init: InitResult, frames: np.ndarray, params: CNMFEParams):
        self.params = params
        self.dims = init.dims
        self.A = init.A.toarray().astype(np.float32)
        self.W = init.W.copy()
        self.off = init.ring_offsets
        self.ssub = init.background_downsample
        self.b0 = init.b0.astype(np.float32)
        self.g = init.g.copy()
        L = params.online.residual_buffer_frames
        n_pix = self.dims[0] * self.dims[1]
        self.residual = np.zeros((L, n_pix), np.float32)
        self.residual_frame = np.full(L, -1, np.int64)
        self.c_buffer = np.zeros((self.A.shape[1], L), np.float32)
        self.c = init.C[:, -1].copy()
        self.t = init.C.shape[1]
        self.head = 0
        self.slow = slow_path.init_slow_path(init, frames, params)
        self.updates: list[slow_path.ModelUpdate] = []
        self.apply_w = True
        self.work_log: list[dict] = []

    def _background(self, x):
        H, W = self.dims
        hb, wb = -(-H // self.ssub), -(-W // self.ssub)
        X = np.empty((hb, wb), np.float32)
        kring.downsample_mean(np.ascontiguousarray(x.reshape(H, W)), self.ssub, X)
        WX = np.empty_like(X)
        kring.ring_apply(self.W, self.off, X, WX)
        up = np.empty((H, W), np.float32)
        kring.upsample_nearest(WX, self.ssub, up)
        return up.ravel()

    def step(self, frame: np.ndarray):
        y = frame.astype(np.float32).ravel()
        A = self.A
        c = self.c.copy()
        bg = self._background(y - A @ c - self.b0)
        rhs = A.T @ (y - self.b0 - bg)
        G = A.T @ A
        for _ in range(10):
            for k in range(c.size):
                if G[k, k] > 0:
                    c[k] = max(0.0, c[k] + (rhs[k] - G[k] @ c) / G[k, k])
        x = y - A @ c - self.b0
        r = x - self._background(x)
        slot = self.head
        self.residual[slot] = r
        self.residual_frame[slot] = self.t
        self.c_buffer[:, slot] = c
        self.head = (slot + 1) % self.residual.shape[0]
        self.c = c
        slow_path.observe_frame(self.slow, self.t, y, c, r, self.params)
        view = slow_path.SlowPathInputs(
            t=self.t, A=scipy.sparse.csc_array(A), W=self.W, b0=self.b0, g=self.g,
            residual=self.residual, residual_frame=self.residual_frame, c_buffer=self.c_buffer,
        )  # fmt: skip
        upd = slow_path.slow_step(self.slow, view, self.params)
        w = self.slow.work
        self.work_log.append(
            dict(hals=w.hals, ring_pixels=w.ring_pixels, candidates=w.candidates,
                 merge_checks=w.merge_checks, removals=w.removals, K=A.shape[1])
        )  # fmt: skip
        if upd is not None:
            self.apply(upd)
        self.t += 1

    def apply(self, upd: slow_path.ModelUpdate):
        self.updates.append(upd)
        if self.apply_w and upd.w_stop > upd.w_start:
            self.W[upd.w_start : upd.w_stop] = upd.w_rows
        if not upd.changes_footprints:
            return
        K = self.A.shape[1]
        self.A = upd.apply_footprints(scipy.sparse.csc_array(self.A)).toarray()
        for i, j in zip(upd.merged_kept, upd.merged_absorbed, strict=True):
            self.c[i] += self.c[j]
            self.c_buffer[i] += self.c_buffer[j]
        keep = upd.survivors(K)
        n_new = upd.new_footprints.shape[1]
        cb = np.zeros((keep.size + n_new, self.c_buffer.shape[1]), np.float32)
        cb[: keep.size] = self.c_buffer[keep]
        for m in range(n_new):
            for f, v in zip(upd.new_trace_frames, upd.new_traces[m], strict=True):
                cb[keep.size + m, self.residual_frame == f] = max(v, 0)
        self.c_buffer = cb
        c_new = np.maximum(upd.new_traces[:, -1], 0) if n_new else np.zeros(0, np.float32)
        self.c = np.concatenate([self.c[keep], c_new])
        self.g = np.concatenate([self.g[keep], upd.new_g.reshape(n_new)])

    def run(self, frames: np.ndarray):
        for f in frames:
            self.step(f)
        return self
