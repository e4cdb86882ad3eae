"""Layout kernel of the initialisation: transposes between frame-major and pixel-major movies.

A movie is frame-major as (T, n_pixels) (each frame contiguous: FFT filtering, registration)
and pixel-major as (n_pixels, T) (each pixel's time series contiguous: ring statistics, seeds'
traces, HALS). NumPy's ``ascontiguousarray(x.T)`` copies element by element along one strided
axis, which misses the cache on every read or write of a movie-sized array; these kernels copy
in square tiles that fit in L1, tile rows split over threads. Values are copied, not computed:
the results are bit-identical to NumPy's.
"""

from __future__ import annotations

import numba

_TILE = 32


@numba.njit(cache=True, nogil=True, parallel=True)
def transpose_into(src, out):
    """``out[j, i] = src[i, j]``: the transpose of a 2-D array, tile by tile.

    src (n, m) and out (m, n), same dtype, both C-contiguous; out written in place (must not
    overlap src). Bands of ``_TILE`` rows of src run in parallel threads.
    """
    n, m = src.shape
    n_bands = (n + _TILE - 1) // _TILE
    for b in numba.prange(n_bands):
        i0 = b * _TILE
        i1 = min(n, i0 + _TILE)
        for j0 in range(0, m, _TILE):
            j1 = min(m, j0 + _TILE)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    out[j, i] = src[i, j]
