"""Tiny PNG writing and drawing with numpy + zlib only (matplotlib and PIL are not installed).

Images are (H, W, 3) uint8 RGB, (row, col) coordinates.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_png(path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 (or (H, W) grey) image as an 8-bit PNG."""
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.write_bytes(png)
    return path


def to_grey(image: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.7) -> np.ndarray:
    """Scale an image to uint8 between two percentiles, as an (H, W, 3) RGB array."""
    x = np.asarray(image, np.float64)
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    g = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    g = (255 * g).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling (so dots and contours stay readable on small images)."""
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def draw_mask_outline(rgb: np.ndarray, mask: np.ndarray, colour) -> None:
    """Colour the boundary pixels of a boolean mask (in place)."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    rgb[m & ~inner] = colour


def draw_dot(rgb: np.ndarray, row: float, col: float, colour, radius: int = 1) -> None:
    """A filled square dot of half-size ``radius`` (in place, clipped at the edges)."""
    h, w = rgb.shape[:2]
    r, c = int(round(row)), int(round(col))
    rgb[
        max(r - radius, 0) : min(r + radius + 1, h), max(c - radius, 0) : min(c + radius + 1, w)
    ] = colour


def draw_cross(rgb: np.ndarray, row: float, col: float, colour, size: int = 3) -> None:
    """An x-shaped cross (in place, clipped)."""
    h, w = rgb.shape[:2]
    r, c = int(round(row)), int(round(col))
    for d in range(-size, size + 1):
        for rr, cc in ((r + d, c + d), (r + d, c - d)):
            if 0 <= rr < h and 0 <= cc < w:
                rgb[rr, cc] = colour
