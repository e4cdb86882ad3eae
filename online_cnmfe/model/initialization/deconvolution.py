"""Batch deconvolution of demixed traces: noise, AR kinetics, baseline and OASIS.

Symbols: y (T,) a demixed trace (``C_raw``), sn its noise standard deviation, g the AR
coefficients (``c_t = g_1 c_{t-1} + ... + s_t``), b the baseline, c the denoised calcium, s the
deconvolved activity, ``s_min = min_spike_sigma * sn * sqrt(1 - sum(g))`` the smallest spike
(CaImAn's negative ``s_min`` convention, as the online OASIS).

* noise: the power spectrum averaged over normalised frequencies (0.25, 0.5] (``get_noise_fft``);
* kinetics: Yule-Walker on the autocovariance with the noise removed from lag 0 (CaImAn
  ``estimate_time_constant``), falling back to ``exp(-1 / (decay_time_s * frame_rate_hz))``
  when the estimate is not a stable decaying AR process;
* baseline: start at the 10th percentile plus 1.28 sn, then alternate OASIS and
  ``b = mean(y - c)``;
* OASIS AR(1) on ``y - b`` (for ``ar_order = 2`` the slower root of the AR(2) polynomial drives
  the AR(1) deconvolution, and g keeps both coefficients for the online model).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg

from online_cnmfe.model._kernels.oasis_batch import oasis_ar1_all
from online_cnmfe.model.initialization.summary_images import noise_psd
from online_cnmfe.params import DataParams, DeconvParams

logger = logging.getLogger(__name__)

_G_MAX = 0.995


def trace_noise(traces: np.ndarray) -> np.ndarray:
    """Noise std of each row of traces (K, T) from the high-frequency power spectrum."""
    traces = np.asarray(traces, np.float32)
    if traces.shape[0] == 0:
        return np.zeros(0, np.float32)
    return noise_psd(np.ascontiguousarray(traces.T)).astype(np.float32)


def default_g(data: DataParams, ar_order: int) -> np.ndarray:
    """AR coefficients from the indicator decay time: ``exp(-1 / (tau * fs))`` (then 0)."""
    g = np.zeros(ar_order, np.float32)
    g[0] = np.exp(-1.0 / (data.decay_time_s * data.frame_rate_hz))
    return g


def estimate_ar(
    traces: np.ndarray, ar_order: int, noise: np.ndarray | None = None, lags: int = 5
) -> np.ndarray:
    """Estimate AR(p) coefficients of each trace by noise-corrected Yule-Walker.

    Parameters
    ----------
    traces : ndarray of shape (K, T)
    ar_order : {1, 2}
    noise : ndarray of shape (K,), optional (default: :func:`trace_noise`)
    lags : int
        Extra autocovariance lags used (least squares over ``ar_order + lags`` equations).

    Returns
    -------
    ndarray of shape (K, ar_order), float32
        NaN rows where the estimate is not a stable, decaying process.
    """
    traces = np.asarray(traces, np.float64)
    K, T = traces.shape
    if noise is None:
        noise = trace_noise(traces)
    p = ar_order
    n_lag = p + lags
    out = np.full((K, p), np.nan, np.float32)
    yc = traces - traces.mean(axis=1, keepdims=True)
    xc = np.stack(
        [np.einsum("kt,kt->k", yc[:, : T - j], yc[:, j:]) / T for j in range(n_lag + 1)], axis=1
    )
    for k in range(K):
        Amat = scipy.linalg.toeplitz(xc[k, :n_lag], xc[k, :p]) - noise[k] ** 2 * np.eye(n_lag, p)
        try:
            g = np.linalg.lstsq(Amat, xc[k, 1 : n_lag + 1], rcond=None)[0]
        except np.linalg.LinAlgError:
            continue
        if _stable(g):
            out[k] = g
    return out


def _stable(g: np.ndarray) -> bool:
    if not np.all(np.isfinite(g)):
        return False
    if g.size == 1:
        return 0 < g[0] < _G_MAX
    roots = np.roots(np.concatenate([[1.0], -g]))
    return bool(np.all(np.abs(roots) < _G_MAX) and np.max(np.abs(roots)) > 0 and g.sum() < 1)


def decay_root(g: np.ndarray) -> float:
    if g.size == 1 or g[1] == 0:
        return float(g[0])
    roots = np.roots(np.concatenate([[1.0], -np.asarray(g, np.float64)]))
    return float(np.max(np.abs(roots)))


def deconvolve_batch(
    traces: np.ndarray,
    g: np.ndarray,
    noise: np.ndarray,
    params: DeconvParams,
    baseline_iters: int = 3,
):
    """Denoise and deconvolve traces with OASIS after removing each trace's baseline.

    Parameters
    ----------
    traces : ndarray of shape (K, T)
        Demixed traces (C_raw).
    g : ndarray of shape (K, p)
    noise : ndarray of shape (K,)
    params : DeconvParams
    baseline_iters : int

    Returns
    -------
    C, S : ndarrays of shape (K, T), float32
    baseline : ndarray of shape (K,), float32
    """
    Y = np.ascontiguousarray(traces, np.float32)
    K, T = Y.shape
    if K == 0:
        return np.zeros((0, T), np.float32), np.zeros((0, T), np.float32), np.zeros(0, np.float32)
    g = np.asarray(g, np.float64).reshape(K, -1)
    g1 = np.array([decay_root(g[k]) for k in range(K)], np.float32)
    sn = np.asarray(noise, np.float32).reshape(K)
    s_min = (params.min_spike_sigma * sn * np.sqrt(np.maximum(1.0 - g.sum(axis=1), 0))).astype(
        np.float32
    )
    lam = (params.sparsity_penalty * sn).astype(np.float32)
    C = np.zeros((K, T), np.float32)
    S = np.zeros((K, T), np.float32)
    b = (np.percentile(Y, 10, axis=1) + 1.28 * sn).astype(np.float32)
    for it in range(baseline_iters + 1):
        oasis_ar1_all(Y - b[:, None], g1, lam, s_min, C, S)
        if it < baseline_iters:
            b = (Y - C).mean(axis=1).astype(np.float32)
    return C, S, b
