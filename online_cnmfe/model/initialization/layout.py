"""Frame-major (T, H, W) <-> pixel-major (H, W, T) copies of a movie
(:func:`online_cnmfe.model._kernels.layout.transpose_into`: tiled, in parallel threads,
bit-identical to ``np.ascontiguousarray(x.T)`` at a third of its CPU time on 608² x 300)."""

from __future__ import annotations

import numpy as np

from online_cnmfe.model._kernels.layout import transpose_into


def transposed(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of the transpose of a 2-D array.

    Parameters
    ----------
    x : ndarray of shape (n, m)

    Returns
    -------
    ndarray of shape (m, n), float32

    Examples
    --------
    >>> transposed(np.arange(6).reshape(2, 3)).tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    src = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((src.shape[1], src.shape[0]), np.float32)
    transpose_into(src, out)
    return out


def pixel_major(X: np.ndarray) -> np.ndarray:
    """(T, H, W) -> a C-contiguous float32 (H, W, T) copy: each pixel's time series contiguous."""
    T, H, W = X.shape
    return transposed(X.reshape(T, H * W)).reshape(H, W, T)


def frame_major(Xt: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """(n_pixels, T) or (H, W, T) -> a C-contiguous float32 (T, H, W) copy."""
    H, W = dims
    T = Xt.shape[-1]
    return transposed(Xt.reshape(H * W, T)).reshape(T, H, W)
