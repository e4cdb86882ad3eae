"""Ring background model fitted on a batch of frames (CNMF-E ``compute_W`` + MATLAB
``fit_ring_model`` outlier clipping).

Symbols: Y (T, H, W) frames, A (n_pixels, K) footprints, C (K, T) traces, ``b0 = mean_t(Y) - A
mean_t(C)``, ``X = D (Y - A C - b0)`` (T, hb, wb) on the background grid (block average by
``ssub``), W (n_bg, R) ring weights with ``ring_offsets`` (R, 2). The background of a frame is
``B = b0 + U W X`` (U nearest-neighbour upsampling).

Fit: per grid pixel the ridge solution of ``x_p ~ W_p x_ring`` over the frames; then the
prediction ``P = W X`` is compared with X and entries above ``P + outlier_clip_sigma * sigma_p``
(sigma_p: robust std of ``X - P`` of the pixel) are replaced by P, and W is refitted on the
clipped X, so neural activity missing from A C does not leak into the background.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels.ring import (
    downsample_mean,
    ring_apply_frames,
    ring_gram_from_lags,
    ring_lag_products,
    ring_lag_table,
    ring_offsets,
    ring_solve_parallel,
    upsample_nearest,
)
from online_cnmfe.model._kernels.ring_batch import (
    clip_above_prediction,
    grid_residual_pixel_major,
    ring_apply_pixel_major,
    ring_gram_solve,
    subtract_background_pixel_major,
)
from online_cnmfe.model.initialization.layout import transposed
from online_cnmfe.params import BackgroundParams

logger = logging.getLogger(__name__)

_SOLVE_BLOCK = 2048
_CHUNK = 64
_BAND_ROWS = 32  # image rows per band of the pixel-major grid residual


@dataclass(slots=True)
class RingBackground:
    """A fitted ring background.

    Attributes
    ----------
    W : ndarray of shape (n_bg, R), float32
    b0 : ndarray of shape (n_pixels,), float32
    offsets : ndarray of shape (R, 2), int32
    ssub : int
    dims : (H, W)
    """

    W: np.ndarray
    b0: np.ndarray
    offsets: np.ndarray
    ssub: int
    dims: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        return (-(-self.dims[0] // self.ssub), -(-self.dims[1] // self.ssub))


def ring_radius(params: BackgroundParams, neuron_diameter_px: float) -> int:
    """Ring radius on the background grid: ``round(factor * diameter / ssub)`` (>= 1)."""
    return max(1, int(round(params.ring_radius_factor * neuron_diameter_px / params.downsample)))


def downsample_movie(X: np.ndarray, ssub: int) -> np.ndarray:
    """``D`` applied to every frame of X (T, H, W) -> (T, hb, wb) float32."""
    T, H, W = X.shape
    out = np.empty((T, -(-H // ssub), -(-W // ssub)), np.float32)
    for t in range(T):
        downsample_mean(X[t], ssub, out[t])
    return out


def residual_grid(Y: np.ndarray, A, C: np.ndarray, b0: np.ndarray, ssub: int) -> np.ndarray:
    """``X = D (Y - A C - b0)`` for every frame, in chunks; Y (T, H, W)."""
    T, H, W = Y.shape
    out = np.empty((T, -(-H // ssub), -(-W // ssub)), np.float32)
    frame = np.empty((H, W), np.float32)
    b0img = b0.reshape(H, W)
    for s in range(0, T, _CHUNK):
        e = min(T, s + _CHUNK)
        AC = np.asarray(A @ C[:, s:e], dtype=np.float32).T.reshape(e - s, H, W)
        for t in range(s, e):
            np.subtract(Y[t], AC[t - s], out=frame)
            frame -= b0img
            downsample_mean(frame, ssub, out[t])
    return out


def solve_ring_weights(X: np.ndarray, offsets: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge ring weights from grid frames X (T, hb, wb) via lagged products.

    Returns
    -------
    ndarray of shape (hb * wb, R), float32
    """
    T, hb, wb = X.shape
    n = hb * wb
    R = len(offsets)
    lags, pair_index = ring_lag_table(offsets)
    Xt = np.ascontiguousarray(X.reshape(T, n).T)
    lagprod = np.empty((n, len(lags)), np.float32)
    ring_lag_products(Xt, hb, wb, lags, lagprod)
    W = np.zeros((n, R), np.float32)
    blk = min(_SOLVE_BLOCK, n)
    XXt = np.empty((blk, R, R), np.float32)
    Xx = np.empty((blk, R), np.float32)
    for s in range(0, n, blk):
        e = min(n, s + blk)
        ring_gram_from_lags(lagprod, hb, wb, offsets, pair_index, XXt[: e - s], Xx[: e - s], s)
        ring_solve_parallel(XXt[: e - s], Xx[: e - s], float(ridge), W, s, e)
    return W


def predict_grid(W: np.ndarray, offsets: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``P[t] = W X[t]`` for every grid frame."""
    P = np.empty_like(X)
    ring_apply_frames(W, offsets, X, P)
    return P


def fit_ring_background(
    Y: np.ndarray,
    A,
    C: np.ndarray,
    params: BackgroundParams,
    neuron_diameter_px: float,
    return_grid: bool = False,
):
    """Fit b0 and the ring weights W from frames, footprints and traces.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32
    A : sparse or ndarray of shape (n_pixels, K)
    C : ndarray of shape (K, T), float32
    params : BackgroundParams
    neuron_diameter_px : float
    return_grid : bool
        Also return the grid residual ``X = D (Y - A C - b0)`` (T, hb, wb) it was fitted on
        (before clipping), for :func:`subtract_background`.

    Returns
    -------
    RingBackground, or (RingBackground, X) with ``return_grid``
    """
    T, H, W_ = Y.shape
    if A.shape[0] != H * W_ or C.shape != (A.shape[1], T):
        raise ValueError(
            f"A {A.shape} and C {C.shape} do not match frames {Y.shape}; expected A "
            f"({H * W_}, K) and C (K, {T})"
        )
    ssub = params.downsample
    offsets = ring_offsets(ring_radius(params, neuron_diameter_px))
    C = np.ascontiguousarray(C, np.float32)
    A = scipy.sparse.csc_array(A, dtype=np.float32)
    b0 = Y.mean(axis=0, dtype=np.float64).ravel() - A @ C.mean(axis=1, dtype=np.float64)
    b0 = b0.astype(np.float32)
    X = residual_grid(Y, A, C, b0, ssub)
    W = solve_ring_weights(X, offsets, params.ridge)
    if params.outlier_clip_sigma > 0:
        P = predict_grid(W, offsets, X)
        E = X - P
        # robust residual scale per grid pixel (MAD over at most ~128 evenly spread frames)
        sub = E[:: max(1, T // 128)]
        med = np.median(sub, axis=0)
        sigma = 1.4826 * np.median(np.abs(sub - med), axis=0) + 1e-12
        clip = E > params.outlier_clip_sigma * sigma
        logger.debug("ring fit: %.2f%% of grid entries clipped", 100 * clip.mean())
        Xc = np.where(clip, P, X)
        del P, E
        W = solve_ring_weights(Xc, offsets, params.ridge)
    bg = RingBackground(W=W, b0=b0, offsets=offsets, ssub=ssub, dims=(H, W_))
    if return_grid:
        return bg, X
    return bg


def subtract_background(
    Y: np.ndarray,
    A,
    C: np.ndarray,
    bg: RingBackground,
    out: np.ndarray | None = None,
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """``Y - B`` with ``B = b0 + U W D (Y - A C - b0)`` for every frame.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32
    A, C : footprints (n_pixels, K) and traces (K, T)
    bg : RingBackground
    out : ndarray of shape (T, H, W), float32, optional
    grid : ndarray of shape (T, hb, wb), optional
        ``D (Y - A C - b0)`` when already computed (see :func:`fit_ring_background`).

    Returns
    -------
    ndarray of shape (T, H, W), float32
    """
    T, H, W_ = Y.shape
    if out is None:
        out = np.empty((T, H, W_), np.float32)
    X = residual_grid(Y, A, C, bg.b0, bg.ssub) if grid is None else grid
    pred = predict_grid(bg.W, bg.offsets, X)
    up = np.empty((H, W_), np.float32)
    b0img = bg.b0.reshape(H, W_)
    for t in range(T):
        upsample_nearest(pred[t], bg.ssub, up)
        np.subtract(Y[t], b0img, out=out[t])
        out[t] -= up
    return out


class RingFitter:
    """The ring-background fit of the initialisation, repeated on one movie (pixel-major).

    Same model and results (to float rounding) as :func:`fit_ring_background` followed by
    :func:`subtract_background`, but what does not change between the fits is computed once
    (the frames transposed to pixel-major, their temporal mean, the ring and lag tables) and
    the whole fit works on pixel-major arrays (:mod:`.._kernels.ring_batch`): the grid
    residual, the ring statistics and solve, the clipping and the subtraction read every
    pixel's time series contiguously, and the result is already the ``(n_pixels, T)``
    background-subtracted movie the trace and footprint updates use.

    Parameters
    ----------
    Y : ndarray of shape (T, H, W), float32
        The frames (not modified; a pixel-major copy is kept).
    params : BackgroundParams
    neuron_diameter_px : float
    """

    def __init__(self, Y: np.ndarray, params: BackgroundParams, neuron_diameter_px: float):
        T, H, W_ = Y.shape
        self.T, self.dims, self.params = T, (H, W_), params
        self.ssub = params.downsample
        self.grid = (-(-H // self.ssub), -(-W_ // self.ssub))
        self.offsets = ring_offsets(ring_radius(params, neuron_diameter_px))
        self.lags, self.pair_index = ring_lag_table(self.offsets)
        self.Yt = transposed(Y.reshape(T, H * W_))
        self.mean = Y.mean(axis=0, dtype=np.float64).ravel()

    def fit(self, A, C: np.ndarray, out: np.ndarray | None = None):
        """Fit b0 and W for footprints A (n_pixels, K) and traces C (K, T).

        ``out`` (n_pixels, T) float32, optional, receives the background-subtracted frames
        (e.g. the previous fit's, no longer needed: writing into memory already mapped
        costs a tenth of a fresh movie-sized array's page faults).

        Returns
        -------
        bg : RingBackground
        Yb : ndarray of shape (n_pixels, T), float32
            The background-subtracted frames ``Y - b0 - U W D (Y - A C - b0)``, pixel-major.
        """
        (H, W_), T, p = self.dims, self.T, self.params
        if A.shape[0] != H * W_ or C.shape != (A.shape[1], T):
            raise ValueError(
                f"A {A.shape} and C {C.shape} do not match frames ({T}, {H}, {W_}); expected "
                f"A ({H * W_}, K) and C (K, {T})"
            )
        C = np.ascontiguousarray(C, np.float32)
        A = scipy.sparse.csr_array(A, dtype=np.float32)
        A.sort_indices()
        b0 = (self.mean - A @ C.mean(axis=1, dtype=np.float64)).astype(np.float32)
        X = self._grid_residual(A, C, b0)
        W = self._solve(X)
        if p.outlier_clip_sigma > 0:
            P = self._predict(W, X)
            # robust residual scale per grid pixel (MAD over at most ~128 evenly spread frames)
            Xc = np.empty_like(X)
            n_clip = clip_above_prediction(X, P, p.outlier_clip_sigma, max(1, T // 128), Xc)
            logger.debug("ring fit: %.2f%% of grid entries clipped", 100 * n_clip / X.size)
            del P
            W = self._solve(Xc)
            del Xc
        bg = RingBackground(W=W, b0=b0, offsets=self.offsets, ssub=self.ssub, dims=self.dims)
        P = self._predict(W, X)
        if out is None:
            Yb = np.empty_like(self.Yt)
        elif out.shape != self.Yt.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous float32 array of shape {self.Yt.shape}, got "
                f"{out.dtype} {out.shape}"
            )
        else:
            Yb = out
        subtract_background_pixel_major(self.Yt, b0, P, self.ssub, W_, Yb)
        return bg, Yb

    def _grid_residual(self, A, C: np.ndarray, b0: np.ndarray) -> np.ndarray:
        """``X = D (Y - A C - b0)`` (n_bg, T), in bands of image rows (A csr)."""
        (H, W_), T = self.dims, self.T
        X = np.empty((self.grid[0] * self.grid[1], T), np.float32)
        band = _BAND_ROWS - _BAND_ROWS % self.ssub or self.ssub
        for r0 in range(0, H, band):
            r1 = min(H, r0 + band)
            ACt = np.asarray(A[r0 * W_ : r1 * W_] @ C, np.float32)
            Yt = self.Yt[r0 * W_ : r1 * W_]
            grid_residual_pixel_major(Yt, ACt, b0, r0, W_, self.ssub, X)
        return X

    def _solve(self, X: np.ndarray) -> np.ndarray:
        hb, wb = self.grid
        lagprod = np.empty((hb * wb, len(self.lags)), np.float32)
        ring_lag_products(X, hb, wb, self.lags, lagprod)
        W = np.zeros((hb * wb, len(self.offsets)), np.float32)
        ring_gram_solve(lagprod, hb, wb, self.offsets, self.pair_index, float(self.params.ridge), W)
        return W

    def _predict(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        P = np.empty_like(X)
        ring_apply_pixel_major(W, self.offsets, X, self.grid[0], self.grid[1], P)
        return P
