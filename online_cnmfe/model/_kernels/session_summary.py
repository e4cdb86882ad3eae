"""Compiled kernel of the session's summary images: running sum and maximum of every frame.

One pass over the frame updates both, so the mean and max-projection images of a whole session
cost about 0.1 ms per 608 x 608 frame (BENCHMARKS.md), cheap enough for every frame.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def accumulate_sum_max(frame, total, peak):
    """``total += frame`` and ``peak = max(peak, frame)``, skipping NaN pixels.

    frame (H, W) of any real dtype; total (H, W) float64 and peak (H, W) float32 are
    written in place (start ``peak`` at -inf). Returns the number of NaN pixels skipped.
    """
    H, W = frame.shape
    n_nan = 0
    for i in range(H):
        for j in range(W):
            v = np.float32(frame[i, j])
            if v != v:
                n_nan += 1
                continue
            total[i, j] += v
            if v > peak[i, j]:
                peak[i, j] = v
    return n_nan
