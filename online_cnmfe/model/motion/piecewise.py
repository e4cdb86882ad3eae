"""Piecewise-rigid registration: a shift per overlapping patch, interpolated to every pixel.

Patches tile the registration grid with the stride ``patch_size_px − patch_overlap_px`` (the
last one flush with the far edge). Each patch of the frame is correlated with the same patch of
the template; its peak is searched within ``max_deviation_px`` of the rigid shift, and a patch
whose correlation is weak (or whose peak sits on the window's edge) takes the rigid shift. The
field of patch-centre shifts is interpolated bilinearly to the frame (constant beyond the outer
centres), see ``_kernels/warp.py``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from online_cnmfe.model._kernels import registration as kr
from online_cnmfe.model.motion.state import (
    Geometry,
    MotionState,
    PatchState,
    cosine_taper,
    inverse_envelope,
)
from online_cnmfe.params import MotionParams

MIN_PATCH_RATIO = 0.5  # a patch keeps its own shift when its quality is >= this x the rigid one


def _starts(n: int, size: int, stride: int) -> np.ndarray:
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)
    return np.array(starts, np.int64)


def _interp_map(centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(index below, weight of the next) of every coordinate 0 … n−1 between the centres."""
    pos = np.arange(n, dtype=np.float64)
    i0 = np.clip(np.searchsorted(centres, pos, side="right") - 1, 0, len(centres) - 1)
    i1 = np.minimum(i0 + 1, len(centres) - 1)
    gap = centres[i1] - centres[i0]
    w = np.where(gap > 0, (pos - centres[i0]) / np.where(gap > 0, gap, 1.0), 0.0)
    return i0.astype(np.int64), np.clip(w, 0.0, 1.0).astype(np.float32)


def make_patches(geom: Geometry, params: MotionParams) -> PatchState:
    """Patch layout, tapers, interpolation maps and buffers for frames of ``geom``."""
    h, w = geom.grid
    ds = geom.ds
    size = max(8, round(params.patch_size_px / ds))
    ph, pw = min(size, h), min(size, w)
    stride = max(1, round((params.patch_size_px - params.patch_overlap_px) / ds))
    starts_r, starts_c = _starts(h, ph, stride), _starts(w, pw, stride)
    ny, nx = len(starts_r), len(starts_c)
    n_patches = ny * nx
    radius = int(math.ceil(params.max_deviation_px / ds)) + 1
    fft = (  # the frame patch is cut at the rigid shift: only the deviation is searched
        scipy.fft.next_fast_len(ph + radius + 1, real=True),
        scipy.fft.next_fast_len(pw + radius + 1, real=True),
    )
    margin = min(geom.margin, ph // 4, pw // 4)
    taper = np.outer(cosine_taper(ph, margin), cosine_taper(pw, margin)).astype(np.float32)
    grid_centres_r = starts_r + (ph - 1) / 2.0
    grid_centres_c = starts_c + (pw - 1) / 2.0
    row_i, row_w = _interp_map(ds * grid_centres_r + (ds - 1) / 2.0, geom.dims[0])
    col_i, col_w = _interp_map(ds * grid_centres_c + (ds - 1) / 2.0, geom.dims[1])
    g_row_i, g_row_w = _interp_map(grid_centres_r, h)
    g_col_i, g_col_w = _interp_map(grid_centres_c, w)
    half = fft[1] // 2 + 1
    zeros2 = np.zeros((ny, nx), np.float32)
    return PatchState(
        starts_r=starts_r, starts_c=starts_c, taper=taper, inv_env=inverse_envelope(taper, fft),
        spectra=np.zeros((n_patches, fft[0], half), np.complex64),
        norms2=np.zeros(n_patches, np.float64), radius=radius,
        field_y=zeros2.copy(), field_x=zeros2.copy(), grid_y=zeros2.copy(),
        grid_x=zeros2.copy(), row_i=row_i, row_w=row_w, col_i=col_i, col_w=col_w,
        grid_row_i=g_row_i, grid_row_w=g_row_w, grid_col_i=g_col_i, grid_col_w=g_col_w,
        quality=np.zeros(n_patches, np.float32), n_own=0,
        pin=np.zeros((n_patches, fft[0], fft[1]), np.float32),
        power=np.zeros((n_patches, fft[0], half), np.complex64),
        peaks=np.zeros((n_patches, 4), np.float64),
        norms2_frame=np.zeros(n_patches, np.float64), off_r=np.zeros(ny, np.int64),
        off_c=np.zeros(nx, np.int64), line_y=np.zeros(nx, np.float32),
        line_x=np.zeros(nx, np.float32),
    )  # fmt: skip


def refresh_patch_spectra(ps: PatchState, template: np.ndarray) -> None:
    """conj(rfft2) of the tapered template patches (after a template update)."""
    kr.extract_patches(template, ps.starts_r, ps.starts_c, 0, 0, ps.taper, ps.pin, ps.norms2,
                       ps.off_r, ps.off_c)  # fmt: skip
    spectra = scipy.fft.rfft2(ps.pin, axes=(-2, -1), workers=1)
    np.conjugate(spectra, out=ps.spectra)


def measure_patches(ms: MotionState) -> None:
    """Patch shifts of the frame whose band-passed image is in ``ms.scratch_bp``.

    Each frame patch is cut at the rounded rigid shift (``ms.scratch_rigid``, grid pixels) from
    its template patch, so only the deviation from the rigid shift is left to measure (within
    ``radius``) and both tapers weigh the same content. Writes ``ps.field_*`` (frame pixels),
    ``ps.grid_*``, ``ps.quality``, ``ps.n_own``.
    """
    ps = ms.patches
    oy, ox = round(ms.scratch_rigid[0]), round(ms.scratch_rigid[1])
    kr.extract_patches(ms.scratch_bp, ps.starts_r, ps.starts_c, oy, ox, ps.taper, ps.pin,
                       ps.norms2_frame, ps.off_r, ps.off_c)  # fmt: skip
    spectra = scipy.fft.rfft2(ps.pin, axes=(-2, -1), workers=1)
    kr.cross_power(spectra.reshape(-1), ps.spectra.reshape(-1), ps.power.reshape(-1))
    cc = scipy.fft.irfft2(ps.power, s=ps.pin.shape[1:], axes=(-2, -1), workers=1)
    kr.patch_peaks(cc, ps.inv_env, oy, ox, ps.off_r, ps.off_c, ps.radius, ps.peaks)
    ps.n_own = kr.patch_field(
        ps.peaks, ps.norms2_frame, ps.norms2, ms.scratch_rigid, MIN_PATCH_RATIO, ms.ds,
        ps.quality, ps.grid_y, ps.grid_x, ps.field_y, ps.field_x,
    )  # fmt: skip


def zero_field(ps: PatchState) -> None:
    """No deviation anywhere: every patch's shift (frame and grid pixels) set to 0."""
    for a in (ps.field_y, ps.field_x, ps.grid_y, ps.grid_x):
        a[:] = 0.0
