"""Nearest-neighbour upsampling from the seeding grid (``init.seed_downsample``) and the
per-pixel noise of the initialisation frames (helpers of :mod:`.fit`)."""

from __future__ import annotations

import numpy as np

from online_cnmfe.model.initialization.summary_images import SummaryImages, noise_psd


def upsample(img: np.ndarray, s: int, dims: tuple[int, int]) -> np.ndarray:
    """``img`` repeated s x s per pixel, cut to ``dims``."""
    return np.kron(img, np.ones((s, s), img.dtype))[: dims[0], : dims[1]]


def upsample_columns(dense: np.ndarray, small: tuple[int, int], s: int, dims) -> np.ndarray:
    """Nearest-neighbour upsampling of (n_small_pixels, K) footprints to (n_pixels, K)."""
    K = dense.shape[1]
    out = np.empty((dims[0] * dims[1], K), np.float32)
    for k in range(K):
        out[:, k] = upsample(dense[:, k].reshape(small), s, dims).ravel()
    return out


def upsample_images(images: SummaryImages, s: int, dims) -> SummaryImages:
    """Every summary image upsampled to ``dims``."""
    return SummaryImages(
        **{name: upsample(getattr(images, name), s, dims) for name in SummaryImages.__slots__}
    )


def pixel_noise(Y: np.ndarray) -> np.ndarray:
    """Per-pixel noise (flat, float32) of the frames ``Y`` (T, H, W)."""
    return noise_psd(Y).ravel().astype(np.float32)
