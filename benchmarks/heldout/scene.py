"""Spatial content of a held-out movie: footprints, static background, blobs, neuropil, lens.

Every field is an analytic function of the pixel coordinates (Gaussians, random cosines), so
the reference scene does not depend on the padded canvas it is rendered on: a movie and its
motion-free twin (same seed) show the same scene. Coordinates are (row, col) of the image;
the canvas extends ``pad`` pixels beyond every edge (rows ``-pad .. H + pad - 1``).

Symbols: A (n_pixels x K) in-focus footprints, each peak-normalised (brightest pixel = 1), cut
at ``CUT`` of the peak; pixels flattened row-major (index = row * W + col).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from benchmarks.heldout.params import HeldoutParams

CUT = 0.02  # footprints are zero below this fraction of their peak
KIND_NAMES = ("gaussian", "textured", "donut")
NEUROPIL_MARGIN_PX = 24  # out-of-focus cells may sit this far outside the image


@dataclass(frozen=True, slots=True)
class Footprint:
    """One footprint as a small patch: values (h, w) and the image (row, col) of its corner."""

    patch: np.ndarray
    row0: int
    col0: int


@dataclass(slots=True)
class Neurons:
    centres: np.ndarray  # (K, 2) float64, (row, col)
    sigmas: np.ndarray  # (K, 2) float64, (major, minor)
    angles: np.ndarray  # (K,) radians
    kinds: np.ndarray  # (K,) uint8 index into KIND_NAMES
    patches: list[Footprint]


# ---- in-focus neurons ----------------------------------------------------------------------
def _gauss(rr, cc, r0, c0, s1, s2, angle):
    ca, sa = math.cos(angle), math.sin(angle)
    u = (rr - r0) * ca + (cc - c0) * sa
    v = -(rr - r0) * sa + (cc - c0) * ca
    return np.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2))


def footprint_patch(rng, centre, sigmas, angle, kind: int) -> Footprint:
    """Peak-normalised footprint around ``centre`` (sub-pixel), zero below CUT of the peak.

    ``kind`` 0: elliptical Gaussian; 1: Gaussian x a smooth random texture (irregular soma);
    2: a ring (Gaussian minus a dimmer, narrower nucleus).
    """
    s1, s2 = sigmas
    half = int(math.ceil(3.2 * s1)) + 1
    r0, c0 = int(round(centre[0])) - half, int(round(centre[1])) - half
    rr, cc = np.mgrid[r0 : r0 + 2 * half + 1, c0 : c0 + 2 * half + 1].astype(np.float64)
    g = _gauss(rr, cc, centre[0], centre[1], s1, s2, angle)
    if kind == 1:
        texture = scipy.ndimage.gaussian_filter(rng.random(g.shape), 0.35 * s2 + 0.5)
        texture = (texture - texture.min()) / max(np.ptp(texture), 1e-9)
        g = g * (0.45 + 1.1 * texture)
    elif kind == 2:
        g = g - 0.65 * _gauss(rr, cc, centre[0], centre[1], 0.5 * s1, 0.5 * s2, angle)
    g = np.clip(g, 0.0, None)
    g /= g.max()
    g[g < CUT] = 0.0
    return Footprint(g.astype(np.float32), r0, c0)


def place_neurons(rng, p: HeldoutParams) -> Neurons:
    """Centres by rejection sampling (min distance ``min_separation`` x mean sigma) inside the
    image (and inside the lens, with a margin), shapes drawn per neuron."""
    H, W = p.height, p.width
    k = p.n_neurons
    sig = rng.uniform(p.sigma_px[0], p.sigma_px[1], size=(k, 2))
    sig = np.sort(sig, axis=1)[:, ::-1]  # (major, minor)
    min_dist = p.min_separation * 0.5 * (p.sigma_px[0] + p.sigma_px[1])
    border = 1.5 * p.sigma_px[1]
    lens_r = _lens_radius(p)
    centres = np.zeros((k, 2))
    placed = 0
    for attempt in range(200 * max(k, 1)):
        if placed == k:
            break
        c = rng.uniform((border, border), (H - 1 - border, W - 1 - border))
        if (
            lens_r
            and math.hypot(c[0] - (H - 1) / 2, c[1] - (W - 1) / 2) > lens_r - 3 * sig[placed, 0]
        ):
            continue
        # relax the spacing if the field is too crowded to fit everyone
        relax = 1.0 if attempt < 50 * k else 0.6
        if placed and np.min(np.hypot(*(centres[:placed] - c).T)) < relax * min_dist:
            continue
        centres[placed] = c
        placed += 1
    if placed < k:
        raise ValueError(
            f"could only place {placed} of {k} neurons at min_separation={p.min_separation}; "
            "use fewer neurons, smaller cells or a smaller min_separation"
        )
    angles = rng.uniform(0, math.pi, size=k)
    u = rng.random(k)
    kinds = np.where(
        u < p.textured_fraction, 1, np.where(u < p.textured_fraction + p.donut_fraction, 2, 0)
    ).astype(np.uint8)
    patches = [footprint_patch(rng, centres[i], sig[i], angles[i], kinds[i]) for i in range(k)]
    return Neurons(centres, sig, angles, kinds, patches)


def patches_to_csc(patches, rows: int, cols: int, pad: int = 0) -> scipy.sparse.csc_array:
    """Stack patches into an (rows * cols) x K CSC matrix on a grid starting at image pixel
    (-pad, -pad) (patch corners are image coordinates); pixels off the grid are dropped."""
    data, indices, indptr = [], [], [0]
    for fp in patches:
        h, w = fp.patch.shape
        rr, cc = np.mgrid[0:h, 0:w]
        rr = (rr + fp.row0 + pad).ravel()
        cc = (cc + fp.col0 + pad).ravel()
        v = fp.patch.ravel()
        keep = (v > 0) & (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        idx = rr[keep] * cols + cc[keep]
        order = np.argsort(idx)
        data.append(v[keep][order])
        indices.append(idx[order])
        indptr.append(indptr[-1] + int(keep.sum()))
    n = len(patches)
    return scipy.sparse.csc_array(
        (
            np.concatenate(data) if n else np.zeros(0, np.float32),
            np.concatenate(indices).astype(np.int32) if n else np.zeros(0, np.int32),
            np.asarray(indptr, np.int64),
        ),
        shape=(rows * cols, n),
    )


# ---- background fields (analytic in the coordinates) ----------------------------------------
def canvas_grid(p: HeldoutParams, pad: int) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.mgrid[-pad : p.height + pad, -pad : p.width + pad]
    return rr.astype(np.float64), cc.astype(np.float64)


@dataclass(slots=True)
class BackgroundScene:
    """Parameters of the analytic background fields (drawn once; evaluated on any canvas)."""

    wave_k: np.ndarray  # (n, 2) cycles per pixel of the static texture
    wave_phase: np.ndarray  # (n,)
    blob_centres: np.ndarray  # (n_blobs, 2)
    blob_sigmas: np.ndarray  # (n_blobs, 2)
    blob_angles: np.ndarray  # (n_blobs,)
    np_centres: np.ndarray  # (n_neuropil, 2)
    np_sigmas: np.ndarray  # (n_neuropil,)


def draw_background(rng, p: HeldoutParams) -> BackgroundScene:
    size = min(p.height, p.width)
    n_waves = 12
    wavelength = rng.uniform(0.35, 1.2, n_waves) * size
    theta = rng.uniform(0, 2 * math.pi, n_waves)
    wave_k = np.stack([np.cos(theta), np.sin(theta)], axis=1) / wavelength[:, None]
    m = NEUROPIL_MARGIN_PX
    return BackgroundScene(
        wave_k=wave_k,
        wave_phase=rng.uniform(0, 2 * math.pi, n_waves),
        blob_centres=rng.uniform(
            (-0.1 * p.height, -0.1 * p.width), (1.1 * p.height, 1.1 * p.width), (p.n_blobs, 2)
        ),
        blob_sigmas=rng.uniform(p.blob_sigma_frac[0], p.blob_sigma_frac[1], (p.n_blobs, 2)) * size,
        blob_angles=rng.uniform(0, math.pi, p.n_blobs),
        np_centres=rng.uniform((-m, -m), (p.height + m, p.width + m), (p.n_neuropil, 2)),
        np_sigmas=rng.uniform(p.neuropil_sigma_px[0], p.neuropil_sigma_px[1], p.n_neuropil),
    )


def static_background(bg: BackgroundScene, p: HeldoutParams, rr, cc) -> np.ndarray:
    """Smooth static baseline: a random-cosine texture (+-25 %) under a radial fall-off."""
    field = np.zeros(rr.shape)
    for (kr, kc), ph in zip(bg.wave_k, bg.wave_phase):
        field += np.cos(2 * math.pi * (kr * rr + kc * cc) + ph)
    field /= math.sqrt(len(bg.wave_phase) / 2)
    half_diag = 0.5 * math.hypot(p.height, p.width)
    d2 = ((rr - (p.height - 1) / 2) ** 2 + (cc - (p.width - 1) / 2) ** 2) / half_diag**2
    falloff = np.clip(1.0 - 0.35 * d2, 0.3, None)
    return p.background_level * np.clip(1.0 + 0.25 * field, 0.2, None) * falloff


def blob_fields(bg: BackgroundScene, rr, cc) -> np.ndarray:
    """(n_blobs, rows, cols) peak-1 anisotropic Gaussians."""
    out = np.empty((len(bg.blob_angles), *rr.shape))
    for j in range(len(bg.blob_angles)):
        s1, s2 = bg.blob_sigmas[j]
        out[j] = _gauss(rr, cc, *bg.blob_centres[j], s1, s2, bg.blob_angles[j])
    return out


def neuropil_csc(bg: BackgroundScene, p: HeldoutParams, pad: int) -> scipy.sparse.csc_array:
    """Out-of-focus cells on the canvas: round blurred Gaussians, peak 1, cut at CUT."""
    patches = []
    for centre, s in zip(bg.np_centres, bg.np_sigmas):
        half = int(math.ceil(2.8 * s)) + 1
        r0, c0 = int(round(centre[0])) - half, int(round(centre[1])) - half
        rr, cc = np.mgrid[r0 : r0 + 2 * half + 1, c0 : c0 + 2 * half + 1].astype(np.float64)
        g = _gauss(rr, cc, centre[0], centre[1], s, s, 0.0)
        g[g < CUT] = 0.0
        patches.append(Footprint(g.astype(np.float32), r0, c0))
    return patches_to_csc(patches, p.height + 2 * pad, p.width + 2 * pad, pad=pad)


# ---- lens --------------------------------------------------------------------------------
def _lens_radius(p: HeldoutParams) -> float:
    return p.lens_radius_frac * 0.5 * min(p.height, p.width)


def lens_mask(p: HeldoutParams, taper_px: float = 6.0) -> np.ndarray | None:
    """(H, W) float32 transmission: 1 inside the circular field of view, a cosine taper over
    ``taper_px`` at its edge, 0 outside; None without a lens margin."""
    radius = _lens_radius(p)
    if radius <= 0:
        return None
    rr, cc = np.mgrid[0 : p.height, 0 : p.width]
    d = np.hypot(rr - (p.height - 1) / 2, cc - (p.width - 1) / 2)
    x = np.clip((d - (radius - taper_px)) / taper_px, 0.0, 1.0)
    return (0.5 * (1 + np.cos(math.pi * x))).astype(np.float32)
