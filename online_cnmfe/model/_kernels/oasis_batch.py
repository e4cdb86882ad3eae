"""Batch OASIS AR(1) (Friedrich et al. 2017) for whole traces.

Model: ``c_t = g c_{t-1} + s_t`` with ``s_t = 0`` or ``s_t >= s_min``, ``c >= 0``, fitted to y by
pool-adjacent-violators with an L1 penalty ``lam`` on s. A pool i covers frames
``[t_i, t_i + l_i)`` with ``c = max(v_i, 0) g^(tau - t_i)``; merging pools i, i+1:
``v = (w_i v_i + g^l_i w_{i+1} v_{i+1}) / (w_i + g^(2 l_i) w_{i+1})``,
``w = w_i + g^(2 l_i) w_{i+1}``; a pool is merged into its predecessor while
``v_prev g^l_prev + s_min > v_new``.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def oasis_ar1(y, g, lam, s_min, c_out, s_out):
    """Deconvolve one trace. y (T,) float32; c_out, s_out (T,) float32 written in place."""
    T = y.shape[0]
    v = np.empty(T, dtype=np.float64)
    w = np.empty(T, dtype=np.float64)
    t0 = np.empty(T, dtype=np.int64)
    ln = np.empty(T, dtype=np.int64)
    n = 0
    for t in range(T):
        pen = lam if t == T - 1 else lam * (1.0 - g)
        v[n] = float(y[t]) - pen
        w[n] = 1.0
        t0[n] = t
        ln[n] = 1
        n += 1
        while n > 1:
            gl = math.pow(g, ln[n - 2])
            if v[n - 2] * gl + s_min <= v[n - 1]:
                break
            wn = w[n - 2] + gl * gl * w[n - 1]
            v[n - 2] = (w[n - 2] * v[n - 2] + gl * w[n - 1] * v[n - 1]) / wn
            w[n - 2] = wn
            ln[n - 2] += ln[n - 1]
            n -= 1
    prev_end = 0.0
    for i in range(n):
        vi = v[i] if v[i] > 0 else 0.0
        s = vi - prev_end if i > 0 else vi
        for k in range(ln[i]):
            tt = t0[i] + k
            c_out[tt] = vi * math.pow(g, k)
            s_out[tt] = 0.0
        s_out[t0[i]] = s if s > 0 else 0.0
        prev_end = vi * math.pow(g, ln[i])


@numba.njit(cache=True, nogil=True)
def oasis_ar1_all(Y, g, lam, s_min, C, S):
    """Deconvolve every row of Y (K, T) float32; g, lam, s_min (K,); C, S (K, T) written."""
    for k in range(Y.shape[0]):
        oasis_ar1(Y[k], float(g[k]), float(lam[k]), float(s_min[k]), C[k], S[k])


@numba.njit(cache=True, nogil=True)
def bcd_deconvolve(AtY, AtA, C, b, g, lam, s_min, C_raw, S, n_sweeps):
    """Block-coordinate descent on traces with OASIS as the per-neuron step (CaImAn
    ``update_temporal_components``), baselines b included in the model ``c_k + b_k``.

    For each neuron in turn: ``y = C[k] + (AtY[k] - AtA[k] (C + b)) / AtA[k, k]`` (the demixed
    trace above the baseline), ``C_raw[k] = y``, ``C[k], S[k] = OASIS(y)``, then
    ``b[k] += mean(y - C[k])``.

    AtY (K, T), AtA (K, K) float32; g, lam, s_min (K,) float32.
    C, b, C_raw, S written in place (C and b are also the warm start).
    """
    K, T = C.shape
    y = np.empty(T, dtype=np.float32)
    for _ in range(n_sweeps):
        for k in range(K):
            akk = AtA[k, k]
            if akk <= 0:
                for t in range(T):
                    C[k, t] = 0.0
                    C_raw[k, t] = 0.0
                    S[k, t] = 0.0
                continue
            for t in range(T):
                y[t] = AtY[k, t]
            for j in range(K):
                w = AtA[k, j]
                if w != 0.0:
                    bj = b[j]
                    for t in range(T):
                        y[t] -= w * (C[j, t] + bj)
            for t in range(T):
                y[t] = C[k, t] + y[t] / akk
                C_raw[k, t] = y[t]
            oasis_ar1(y, float(g[k]), float(lam[k]), float(s_min[k]), C[k], S[k])
            acc = 0.0
            for t in range(T):
                acc += y[t] - C[k, t]
            b[k] += acc / T
            for t in range(T):
                C_raw[k, t] -= acc / T
