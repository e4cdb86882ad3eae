"""Closed-loop trigger kernels: running z-score of traces and threshold crossings.

Symbols (per selected neuron i): ``x`` the frame's trace value (gathered from the full vector
through ``idx``), ``mu`` running baseline, ``mad`` running mean absolute first difference
(noise ``sigma = mad * sqrt(pi) / 2`` for white Gaussian noise), ``prev`` the previous sample,
``n_seen`` samples seen, ``n_diff`` informative (non-repeated) differences folded into ``mad``.

All kernels are per frame, allocate nothing and write into caller-owned arrays (named below).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}
_SQRT_PI_2 = math.sqrt(math.pi) / 2.0
_SQRT_2 = math.sqrt(2.0)
_WINSOR = 5.0
_CLIP_SIGMA = 3.0


@numba.njit(**_JIT)
def zscore_update(vec, idx, n_seen, n_diff, mu, mad, prev, alpha, warmup, rise, z_out):
    """z-score (or rise) of ``vec[idx]`` against the previous frames, then fold it in.

    ``z = (x - mu) / sigma`` (``rise``: ``(x - prev) / (sqrt(2) sigma)``), 0 until ``n_seen``
    and ``n_diff`` reach ``warmup``. Then: an informative difference (``x != prev``, after the
    first sample) updates ``mad += a_d (min(|x - prev|, 5 mad) - mad)`` (no winsorising for the
    first 3), ``a_d = max(1 / n_diff, alpha)``; the baseline moves by ``a (x - mu)``,
    ``a = max(1 / n_seen, alpha)``, the step clipped to ``+-3 sigma`` once ready.

    Writes ``n_seen``, ``n_diff``, ``mu``, ``mad``, ``prev`` (float64 / int64, shape (n,)) and
    ``z_out`` (float32, shape (n,)) in place.
    """
    for i in range(idx.shape[0]):
        x = numba.float64(vec[idx[i]])
        sigma = max(mad[i] * _SQRT_PI_2, 1e-12)
        ready = n_seen[i] >= warmup and n_diff[i] >= warmup
        d = x - mu[i]
        if not ready:
            z_out[i] = 0.0
        elif rise:
            z_out[i] = (x - prev[i]) / (sigma * _SQRT_2)
        else:
            z_out[i] = d / sigma
        if n_seen[i] >= 1 and x != prev[i]:
            n_diff[i] += 1
            ad = abs(x - prev[i])
            if n_diff[i] > 3:
                ad = min(ad, _WINSOR * mad[i])
            a_d = max(1.0 / n_diff[i], alpha)
            mad[i] += a_d * (ad - mad[i])
        n_seen[i] += 1
        a = max(1.0 / n_seen[i], alpha)
        if ready:
            d = min(max(d, -_CLIP_SIGMA * sigma), _CLIP_SIGMA * sigma)
        mu[i] += a * d
        prev[i] = x


@numba.njit(**_JIT)
def threshold_crossings(x, armed, threshold, release, cross_out):
    """Per-neuron upward crossings with hysteresis; returns how many neurons crossed.

    ``cross = armed & (x >= threshold)``; then ``armed`` is cleared where ``x >= threshold``
    and set where ``x < release``. Comparisons in the dtype of ``x`` (float32 traces, float32
    levels). Writes ``armed`` (bool, (n,)) and ``cross_out`` (bool, (n,)) in place.
    """
    n_cross = 0
    for i in range(x.shape[0]):
        above = x[i] >= threshold
        c = above and armed[i]
        cross_out[i] = c
        n_cross += c
        if above:
            armed[i] = False
        if x[i] < release:
            armed[i] = True
    return n_cross


def warm_up() -> None:
    """Load (or compile) both kernels with the argument types the evaluator passes (float32
    traces, contiguous or a strided view; intp indices), so the first frames a rule watches do
    not pay for it on the model thread (seen: 170 + 85 ms of compilation on the first online
    frames at 608²). Idempotent: numba keeps what it loaded."""
    n = 2
    idx = np.arange(n, dtype=np.intp)
    for vec in (np.zeros(n, np.float32), np.zeros(2 * n, np.float32)[::2]):
        zscore_update(
            vec, idx, np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros(n),
            np.zeros(n), 0.5, 1, False, np.zeros(n, np.float32),
        )  # fmt: skip
    threshold_crossings(
        np.zeros(n, np.float32), np.zeros(n, bool), np.float32(1.0), np.float32(0.5),
        np.zeros(n, bool),
    )  # fmt: skip
