"""One pass over a frame: the range of its finite pixels and the count of the others.

  lo = min{y_i : y_i finite},  hi = max{y_i : y_i finite},  n_bad = #{i : y_i NaN or ±inf}

(lo = +inf, hi = -inf when no pixel is finite.) Used to refuse a frame before it reaches the
model: NaN/inf pixels, or values far outside the range the model was initialised on.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, nogil=True)
def finite_range(y, out):
    """Write (lo, hi, n_bad) of the float32 vector ``y`` into ``out`` (float64, shape (3,)).

    ``out`` is written in place; ``y`` is read only.
    """
    lo = math.inf
    hi = -math.inf
    n_bad = 0
    for i in range(y.shape[0]):
        v = y[i]
        if math.isfinite(v):
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        else:
            n_bad += 1
    out[0] = lo
    out[1] = hi
    out[2] = n_bad
