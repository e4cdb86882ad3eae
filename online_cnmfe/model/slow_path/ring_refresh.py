"""Amortised refresh of the ring-background weights W (slow path).

Symbols (see ``_kernels/ring.py``): X = D(y - A c - b0) on the background grid, W (n_bg, R)
ring weights, w0_p the initial W (``RingRefreshState.W_prior``).

Why not the full per-frame statistics: accumulating ``XXt[p] += x_ring x_ring^T`` every frame
costs n_bg R^2 (67 M multiply-adds at 256^2, R = 64) and n_bg R^2 floats (268 MB). Instead
every ``stride = refresh_period / n_samples`` frames one background frame X is kept in a ring
of ``n_samples`` (memory n_samples x n_bg floats), with MATLAB CNMF-E's outlier clipping: where
the residual D(r) = X - W X_ring exceeds ``outlier_clip_sigma`` times its noise, X is replaced
by the prediction. Each slow step re-solves a slice of ``ceil(n_bg / refresh_period)`` grid
pixels: their ring statistics are built from the kept samples, weighted by forgetting
``decay^age``, and solved with a prior pulling toward the initial W (a fixed anchor: a prior
toward the current W would drift to the unregularised solution over repeated refreshes):

    w_p = (XXt_p + rho_p I)^-1 (Xx_p + rho_p w0_p),
    rho_p = prior_samples * trace(XXt_p) / (R * n_eff)

(``n_eff`` = the summed sample weights), so with few samples W stays at w0, and the ridge is
relative to each pixel's variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from online_cnmfe.model._kernels import ring as kring
from online_cnmfe.model._kernels import stats as kst


@dataclass(slots=True)
class RingRefreshState:
    """Kept background samples, clipping noise and the solve cursor (arrays/scalars only)."""

    offsets: np.ndarray  # (R, 2) int32
    samples: np.ndarray  # (n_samples, hb, wb) float32
    sample_t: np.ndarray  # (n_samples,) int64, -1 = empty
    head: int
    noise_var: np.ndarray  # (hb, wb) float32, E[D(r)^2 | D(r) < 0]
    pending: np.ndarray  # (hb, wb) float32: D(y - A c) of the pending sample frame
    pending_dr: np.ndarray  # (hb, wb) float32: D(r) of that frame
    pending_t: int  # -1 = none
    W_out: np.ndarray  # (n_bg, R) float32 solve output
    W_prior: np.ndarray  # (n_bg, R) float32 the initial W, centre of the prior
    cursor: int
    stride: int
    ssub: int


def make_ring_refresh(
    offsets: np.ndarray, grid: tuple[int, int], ssub: int, n_samples: int, period: int
) -> RingRefreshState:
    hb, wb = grid
    return RingRefreshState(
        offsets=np.ascontiguousarray(offsets, np.int32),
        samples=np.zeros((n_samples, hb, wb), np.float32),
        sample_t=np.full(n_samples, -1, np.int64),
        head=0,
        noise_var=np.zeros((hb, wb), np.float32),
        pending=np.zeros((hb, wb), np.float32),
        pending_dr=np.zeros((hb, wb), np.float32),
        pending_t=-1,
        W_out=np.zeros((hb * wb, offsets.shape[0]), np.float32),
        W_prior=np.zeros((hb * wb, offsets.shape[0]), np.float32),
        cursor=0,
        stride=max(1, period // n_samples),
        ssub=ssub,
    )


def is_sample_frame(rs: RingRefreshState, t: int) -> bool:
    """One frame in ``stride``, on phase 1: with the slow path's 4-frame schedule (hand-over on
    phase 0, evaluations on 2) the O(n_pixels) sample and its ingestion fall on a light frame."""
    return t % rs.stride == 1 % rs.stride


def observe_sample(rs: RingRefreshState, t: int, y_minus_ac: np.ndarray, resid: np.ndarray):
    """Keep D(y - A c) and D(r) of frame t (both (H, W) float32) for the next slow step."""
    kring.downsample_mean(y_minus_ac, rs.ssub, rs.pending)
    kring.downsample_mean(resid, rs.ssub, rs.pending_dr)
    rs.pending_t = t


def ingest_pending(rs: RingRefreshState, b0: np.ndarray, clip_sigma: float) -> bool:
    """Turn the pending frame into a clipped sample X = D(y - A c - b0). b0 (H, W)."""
    if rs.pending_t < 0:
        return False
    db0 = np.empty_like(rs.pending)
    kring.downsample_mean(np.ascontiguousarray(b0, np.float32), rs.ssub, db0)
    x = rs.pending - db0
    dr = rs.pending_dr
    have_noise = rs.noise_var > 0
    neg = dr < 0
    first = ~have_noise
    rs.noise_var[first] = dr[first] ** 2 + 1e-12
    upd = neg & have_noise
    rs.noise_var[upd] += 0.1 * (dr[upd] ** 2 - rs.noise_var[upd])
    out = have_noise & (dr > clip_sigma * np.sqrt(rs.noise_var))
    x[out] -= dr[out]  # replaced by the ring prediction W x_ring
    rs.samples[rs.head] = x
    rs.sample_t[rs.head] = rs.pending_t
    rs.head = (rs.head + 1) % rs.samples.shape[0]
    rs.pending_t = -1
    return True


def solve_slice(
    rs: RingRefreshState, W0: np.ndarray, t: int, n_pixels: int, lam_frame: float,
    prior_samples: float,
) -> tuple[int, int, np.ndarray] | None:  # fmt: skip
    """Re-solve ``n_pixels`` grid pixels from the cursor; returns (start, stop, rows) or None
    when no sample is kept yet."""
    valid = rs.sample_t >= 0
    if not valid.any() or n_pixels <= 0:
        return None
    n_bg, R = W0.shape
    start = rs.cursor
    stop = min(start + n_pixels, n_bg)
    age = np.where(valid, t - rs.sample_t, 0)
    weights = np.where(valid, lam_frame ** age.astype(np.float64), 0.0).astype(np.float32)
    n = stop - start
    XXt = np.empty((n, R, R), np.float32)
    Xx = np.empty((n, R), np.float32)
    kst.weighted_ring_gram(rs.samples, weights, rs.offsets, XXt, Xx, start)
    n_eff = float(weights.sum())
    tr = np.trace(XXt, axis1=1, axis2=2)
    rho = prior_samples * tr / (R * n_eff) + 1e-12
    idx = np.arange(R)
    XXt[:, idx, idx] += rho[:, None]
    Xx += rho[:, None] * rs.W_prior[start:stop]
    kring.ring_solve(XXt, Xx, 0.0, rs.W_out, start, stop)
    rs.cursor = stop % n_bg
    return start, stop, rs.W_out[start:stop].copy()


def effective_period(n_bg: int, period: int, max_rows: int) -> int:
    """The refresh period in frames, stretched so no step solves more than ``max_rows`` rows
    (large grids: 608^2 / ssub 2 has 92k rows)."""
    return max(int(period), int(math.ceil(n_bg / max(int(max_rows), 1))))


def pixels_per_step(n_bg: int, period: int) -> int:
    """Upper bound of the grid pixels re-solved on one step."""
    return int(math.ceil(n_bg / period))


def pixels_at(t: int, n_bg: int, period: int) -> int:
    """Pixels to re-solve at frame t so that exactly n_bg are solved per ``period`` frames."""
    return (t + 1) * n_bg // period - t * n_bg // period
