"""Static (spatial) parts of a simulated miniscope scene: footprints, neuropil, blobs, vessels.

Used by :mod:`acquisition.simulator`. Every function takes a ``numpy.random.Generator`` and
returns float32 arrays; images are (H, W) row-major, pixel vectors are flattened in C order.

Symbols: A footprints of the in-focus neurons (n_pixels x K, each peak-normalised to 1),
G spatial profiles of the background components (broad blobs and out-of-focus neuropil cells),
``vessel`` a multiplicative attenuation map (1 = no vessel), ``vignette`` the optical fall-off.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
import scipy.sparse

_FOOTPRINT_FLOOR = 0.01  # footprint values below this fraction of the peak are set to 0


def place_centres(
    rng: np.random.Generator,
    dims: tuple[int, int],
    n: int,
    min_dist: float,
    margin: float,
    inside=None,
) -> np.ndarray:
    """Random (row, col) centres at least ``min_dist`` apart (relaxed if the image is full).

    ``inside``, if given, is a predicate on a candidate (row, col): candidates failing it are
    drawn again (e.g. to keep neurons inside a lens).

    Returns
    -------
    ndarray of shape (n, 2), float64
    """
    h, w = dims
    lo = np.array([margin, margin])
    hi = np.array([h - 1 - margin, w - 1 - margin])
    hi = np.maximum(hi, lo)
    centres = np.empty((n, 2))
    dist = min_dist
    placed = 0
    attempts = 0
    while placed < n:
        candidate = lo + rng.random(2) * (hi - lo)
        if inside is not None and not inside(candidate):
            continue
        if placed == 0 or np.min(np.hypot(*(centres[:placed] - candidate).T)) >= dist:
            centres[placed] = candidate
            placed += 1
            attempts = 0
        else:
            attempts += 1
            if attempts > 200:  # crowded: accept closer neighbours rather than loop forever
                dist *= 0.9
                attempts = 0
    return centres


def gaussian_footprints(
    rng: np.random.Generator,
    dims: tuple[int, int],
    centres: np.ndarray,
    sigma_px: float,
) -> scipy.sparse.csc_array:
    """Elliptical Gaussian footprints with random axes and orientation, peak pixel = 1.

    Each footprint has axes ``sigma_px * U(1.0, 1.3)`` and ``sigma_px * U(0.7, 1.0)`` at a
    uniformly random angle; values below 1 % of the peak are dropped (about 3 sigma).

    Returns
    -------
    scipy.sparse.csc_array of shape (H * W, K), float32
    """
    h, w = dims
    k = len(centres)
    major = sigma_px * rng.uniform(1.0, 1.3, k)
    minor = sigma_px * rng.uniform(0.7, 1.0, k)
    angle = rng.uniform(0, math.pi, k)
    data, rows, cols = [], [], []
    for j in range(k):
        radius = int(math.ceil(3.2 * major[j]))
        r0, c0 = centres[j]
        rr = np.arange(max(0, int(r0) - radius), min(h, int(r0) + radius + 2))
        cc = np.arange(max(0, int(c0) - radius), min(w, int(c0) + radius + 2))
        dr = rr[:, None] - r0
        dc = cc[None, :] - c0
        cos, sin = math.cos(angle[j]), math.sin(angle[j])
        u = dr * cos + dc * sin
        v = -dr * sin + dc * cos
        img = np.exp(-0.5 * ((u / major[j]) ** 2 + (v / minor[j]) ** 2))
        img /= img.max()
        keep = img >= _FOOTPRINT_FLOOR
        pix = (rr[:, None] * w + cc[None, :])[keep]
        data.append(img[keep].astype(np.float32))
        rows.append(pix)
        cols.append(np.full(pix.size, j))
    if k == 0:
        return scipy.sparse.csc_array((h * w, 0), dtype=np.float32)
    A = scipy.sparse.coo_array(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, k)
    ).tocsc()
    A.sort_indices()
    return A


def gaussian_image(dims: tuple[int, int], centre: np.ndarray, sigma: tuple[float, float]):
    """An axis-aligned Gaussian image of peak 1 (dense, float32)."""
    h, w = dims
    rr = (np.arange(h) - centre[0]) / sigma[0]
    cc = (np.arange(w) - centre[1]) / sigma[1]
    return np.exp(-0.5 * (rr[:, None] ** 2 + cc[None, :] ** 2)).astype(np.float32)


def neuropil_profiles(
    rng: np.random.Generator, dims: tuple[int, int], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dim out-of-focus cells: round-ish Gaussians of sigma 9–15 px, centres anywhere.

    Returns
    -------
    profiles : ndarray of shape (n, H, W), float32, peak 1
    centres : ndarray of shape (n, 2)
    """
    h, w = dims
    centres = rng.random((n, 2)) * np.array([h, w])
    sig = rng.uniform(9.0, 15.0, n)
    aspect = rng.uniform(0.85, 1.15, n)
    out = np.empty((n, h, w), np.float32)
    for j in range(n):
        out[j] = gaussian_image(dims, centres[j], (sig[j] * aspect[j], sig[j] / aspect[j]))
    return out, centres


def blob_profiles(rng: np.random.Generator, dims: tuple[int, int], n: int) -> np.ndarray:
    """Broad background blobs: Gaussians of sigma 15–35 % of the image size, peak 1.

    Returns
    -------
    ndarray of shape (n, H, W), float32
    """
    h, w = dims
    out = np.empty((n, h, w), np.float32)
    for j in range(n):
        centre = rng.uniform(-0.1, 1.1, 2) * np.array([h, w])
        sig = rng.uniform(0.15, 0.35, 2) * np.array([h, w])
        out[j] = gaussian_image(dims, centre, (sig[0], sig[1]))
    return out


def vignette_map(dims: tuple[int, int], strength: float) -> np.ndarray:
    """Optical fall-off: 1 at the centre, ``1 - strength`` at the corners (quadratic)."""
    h, w = dims
    rr = (np.arange(h) - (h - 1) / 2) / max((h - 1) / 2, 1)
    cc = (np.arange(w) - (w - 1) / 2) / max((w - 1) / 2, 1)
    r2 = (rr[:, None] ** 2 + cc[None, :] ** 2) / 2.0
    return (1.0 - strength * r2).astype(np.float32)


def vessel_map(rng: np.random.Generator, dims: tuple[int, int], n_vessels: int) -> np.ndarray:
    """Dark, curvy blood-vessel-like structures as a multiplicative map in (0.4, 1].

    Each vessel is a smooth random walk across the image (heading changes slowly), drawn
    with a width of 2–5 px and a darkening depth of 25–60 %.
    """
    h, w = dims
    attenuation = np.ones(dims, np.float32)
    for _ in range(n_vessels):
        mask = np.ones(dims, bool)
        pos = rng.random(2) * np.array([h, w])
        heading = rng.uniform(0, 2 * math.pi)
        turn = 0.0
        for _step in range(4 * (h + w)):
            turn = 0.98 * turn + rng.normal(0, 0.002)
            heading += turn
            pos = pos + 0.5 * np.array([math.sin(heading), math.cos(heading)])
            r, c = int(round(pos[0])), int(round(pos[1]))
            if not (-20 <= r < h + 20 and -20 <= c < w + 20):
                break
            if 0 <= r < h and 0 <= c < w:
                mask[r, c] = False
        if mask.all():
            continue
        dist = scipy.ndimage.distance_transform_edt(mask)
        width = rng.uniform(1.0, 2.5)
        depth = rng.uniform(0.25, 0.6)
        attenuation *= (1.0 - depth * np.exp(-0.5 * (dist / width) ** 2)).astype(np.float32)
    return attenuation
