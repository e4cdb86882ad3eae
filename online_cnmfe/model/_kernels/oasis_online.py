"""Online OASIS AR(1) for all neurons at once, pools held as struct-of-arrays.

Model (Friedrich et al. 2017): c_t = g c_{t-1} + s_t, s_t ≥ s_min or 0, fitted to the noisy
trace y (the demixed C_raw) by pool-adjacent-violators. A pool i covers frames
[t_i, t_i + l_i) with c_τ = max(v_i, 0) g^(τ − t_i); merging pools i, i+1:
  v = (w_i v_i + g^l_i w_{i+1} v_{i+1}) / (w_i + g^(2 l_i) w_{i+1}),  w = w_i + g^(2 l_i) w_{i+1}.
A new pool is merged into its predecessor while v_prev g^l_prev + s_min > v_new.

Per neuron the pools live in a circular stack of ``capacity`` slots: rows of
pool_v, pool_w (float64) and pool_t, pool_l (int64), with ``first`` (oldest slot) and
``count``. When the stack is full the oldest pool is frozen (dropped), which bounds memory;
a merge can then no longer reach back past the ``capacity`` most recent pools.

Causal outputs at frame t (never revised): C_t = max(v_top, 0) g^(t − t_top) and the
spike S_t = max(v_top, 0) − g^l_prev max(v_prev, 0) if the top pool started at t, else 0.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, nogil=True)
def oasis_ar1_step(y, t, g, lam, s_min, pool_v, pool_w, pool_t, pool_l, first, count, c_out, s_out):
    """One frame of online OASIS AR(1) for every neuron.

    y (K,) float32 demixed traces at frame t; g, lam, s_min (K,) float32.
    Written in place: pool_v, pool_w (K, P) float64; pool_t, pool_l (K, P) int64;
    first, count (K,) int64; c_out, s_out (K,) float32.
    """
    K = y.shape[0]
    P = pool_v.shape[1]
    for k in range(K):
        gk = float(g[k])
        n = count[k]
        if n == P:  # freeze the oldest pool
            first[k] = (first[k] + 1) % P
            n -= 1
        top = (first[k] + n) % P
        pool_v[k, top] = float(y[k]) - float(lam[k]) * (1.0 - gk)
        pool_w[k, top] = 1.0
        pool_t[k, top] = t
        pool_l[k, top] = 1
        n += 1
        smin = float(s_min[k])
        while n > 1:
            top = (first[k] + n - 1) % P
            prev = (first[k] + n - 2) % P
            gl = math.pow(gk, pool_l[k, prev])
            if pool_v[k, prev] * gl + smin <= pool_v[k, top]:
                break
            w_new = pool_w[k, prev] + gl * gl * pool_w[k, top]
            pool_v[k, prev] = (
                pool_w[k, prev] * pool_v[k, prev] + gl * pool_w[k, top] * pool_v[k, top]
            ) / w_new
            pool_w[k, prev] = w_new
            pool_l[k, prev] += pool_l[k, top]
            n -= 1
        count[k] = n
        top = (first[k] + n - 1) % P
        vt = max(pool_v[k, top], 0.0)
        c_out[k] = vt * math.pow(gk, t - pool_t[k, top])
        s = 0.0
        if pool_t[k, top] == t and n > 1:
            prev = (first[k] + n - 2) % P
            s = vt - math.pow(gk, pool_l[k, prev]) * max(pool_v[k, prev], 0.0)
        s_out[k] = s if s > 0.0 else 0.0


@njit(cache=True, nogil=True)
def oasis_ar1_reset(k, pool_v, pool_w, pool_t, pool_l, first, count):
    """Empty neuron k's pools (a new neuron takes a free row). Written in place: all arrays."""
    first[k] = 0
    count[k] = 0
    for j in range(pool_v.shape[1]):
        pool_v[k, j] = 0.0
        pool_w[k, j] = 0.0
        pool_t[k, j] = 0
        pool_l[k, j] = 0


@njit(cache=True, nogil=True)
def oasis_ar1_reconstruct(g, pool_v, pool_t, pool_l, first, count, t_start, out):
    """Denoised C over frames [t_start, t_start + L) from the current (revised) pools.

    Frames before the oldest kept pool are 0. Written in place: out (K, L) float32.
    """
    K = out.shape[0]
    L = out.shape[1]
    P = pool_v.shape[1]
    for k in range(K):
        for j in range(L):
            out[k, j] = 0.0
        for m in range(count[k]):
            slot = (first[k] + m) % P
            v = max(pool_v[k, slot], 0.0)
            t0 = pool_t[k, slot]
            for tau in range(max(t0, t_start), min(t0 + pool_l[k, slot], t_start + L)):
                out[k, tau - t_start] = v * math.pow(float(g[k]), tau - t0)
