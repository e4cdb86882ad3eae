"""The per-frame motion stage: measure the shift, correct the frame, update the template.

Per frame (``correct_frame``), all on caller-owned buffers of the :class:`MotionState`:

1. registration image: block mean onto the grid, band-pass (Gaussian of σs minus Gaussian of
   σl, high-passed once more at σl; box filters), edge taper, zero padding
   (``_kernels/registration.py``);
2. cross-correlation with the template by FFT (scipy.fft, one thread), peak in the search
   window, sub-pixel by a Gaussian fit (rigid); piecewise-rigid mode adds one per patch;
3. quality = peak / (‖x‖ ‖T‖), the correlation of the frame with the template in [-1, 1];
   a frame is flagged when its shift exceeds ``max_shift_px``, its peak is on the edge of the
   search window, or its quality is below ``min_quality``;
4. the frame resampled at (r + dy, c + dx) (bilinear); pixels shifted in from outside the frame
   replicate its edge and are marked invalid (``valid`` = 0); the border band every such pixel
   so far lies in (``band``) is zeroed in the residual, so detection ignores it;
5. every ``TEMPLATE_EVERY``-th informative frame updates the template (running mean with
   forgetting, at ``TEMPLATE_EVERY`` times the rate); the template's spectra are recomputed
   every ``REFRESH_UPDATES`` updates.

scipy.fft returns new arrays (it has no ``out=``); they are the only per-frame allocations
(two or four small complex/float arrays of the grid's FFT size).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.fft

from online_cnmfe.model._kernels import registration as kr
from online_cnmfe.model._kernels import warp as kw
from online_cnmfe.model.motion import piecewise
from online_cnmfe.model.motion.state import (
    Geometry,
    MotionState,
    border_band,
    box_radii,
    cosine_taper,
    geometry,
    inverse_envelope,
)
from online_cnmfe.params import CNMFEParams, DataParams, MotionParams

logger = logging.getLogger(__name__)

REFRESH_UPDATES = 4  # template spectra are recomputed after this many template updates
TEMPLATE_EVERY = 2  # every second informative frame updates the template (at twice the rate)
_NO_CORRECTION = np.ones((1, 1), np.float32)  # the coarse search's peak, as correlated
JUMP_RATIO = 1.5  # a peak away from the last good shift must be this much higher to be taken


def make_state(
    geom: Geometry,
    params: CNMFEParams,
    template: np.ndarray,
    min_quality: float,
    min_informative: float = -1.0,
) -> MotionState:
    """A motion state for frames of ``geom`` with ``template`` (h, w) on the grid."""
    mp = params.motion
    h, w = geom.grid
    H, W = geom.dims
    fh, fw = geom.fft_shape
    rest = math.sqrt(max(geom.sigma_large**2 - geom.sigma_small**2, 0.0))
    frames = mp.template_forgetting_s * params.data.frame_rate_hz
    zeros = np.zeros((h, w), np.float32)
    taper = np.outer(cosine_taper(h, geom.margin), cosine_taper(w, geom.margin)).astype(np.float32)
    ms = MotionState(
        dims=(int(H), int(W)), ds=int(geom.ds), radii_small=box_radii(geom.sigma_small),
        radii_large=box_radii(rest), radii_again=box_radii(geom.sigma_large),
        search=np.array(geom.search, np.int64),
        max_shift_px=float(mp.max_shift_px), min_quality=float(min_quality),
        min_informative=float(min_informative),
        alpha=float(1.0 / max(frames, 1.0)),
        taper=taper, inv_env=inverse_envelope(taper, geom.fft_shape),
        template=np.ascontiguousarray(template, np.float32).copy(),
        spectrum=np.zeros((fh, fw // 2 + 1), np.complex64), template_norm2=0.0, n_updates=0,
        n_flagged=0, n_informative=0, last=np.full(3, np.nan), held=np.full(2, np.nan),
        registered=np.zeros(H * W, np.float32), valid=np.ones(H * W, np.uint8), n_filled=0,
        patches=piecewise.make_patches(geom, mp) if mp.mode == "piecewise" else None,
        scratch_grid=zeros.copy(), scratch_small=zeros.copy(), scratch_large=zeros.copy(),
        scratch_tmp=zeros.copy(), scratch_acc=np.zeros(w, np.float64), scratch_bp=zeros.copy(),
        scratch_xin=np.zeros((fh, fw), np.float32),
        scratch_power=np.zeros((fh, fw // 2 + 1), np.complex64),
        scratch_peak=np.zeros(4, np.float64), scratch_near=np.zeros(4, np.float64),
        scratch_rigid=np.zeros(3, np.float64),
        scratch_warp=np.zeros(h * w, np.float32), scratch_valid=np.zeros(h * w, np.uint8),
    )  # fmt: skip
    refresh_spectra(ms)
    return ms


def refresh_spectra(ms: MotionState) -> None:
    """Recompute the template's spectrum (and its patches') from ``ms.template``."""
    xin = ms.scratch_xin  # free between frames; its zero padding is never written
    ms.template_norm2 = float(kr.taper_into(ms.template, ms.taper, xin))
    np.conjugate(scipy.fft.rfft2(xin, workers=1), out=ms.spectrum)
    if ms.patches is not None:
        piecewise.refresh_patch_spectra(ms.patches, ms.template)
    ms.n_updates = 0


def bandpass(ms: MotionState, y: np.ndarray) -> None:
    """Registration image of frame y (n_pixels,) into ``scratch_bp``, times ``ms.lens`` when
    there is a lens margin (``scratch_xin``: the band-pass tapered, without it)."""
    kr.bin_frame(y, ms.dims[0], ms.dims[1], ms.ds, ms.scratch_grid)
    kr.gauss_blur(ms.scratch_grid, ms.radii_small, ms.scratch_tmp, ms.scratch_acc,
                  ms.scratch_small)  # fmt: skip
    kr.gauss_blur(ms.scratch_small, ms.radii_large, ms.scratch_tmp, ms.scratch_acc,
                  ms.scratch_large)  # fmt: skip
    kr.subtract(ms.scratch_small, ms.scratch_large, ms.scratch_small)  # the DoG
    kr.gauss_blur(ms.scratch_small, ms.radii_again, ms.scratch_tmp, ms.scratch_acc,
                  ms.scratch_large)  # fmt: skip
    kr.bandpass_taper(ms.scratch_small, ms.scratch_large, ms.taper, ms.scratch_bp, ms.scratch_xin)
    if ms.lens is not None:  # the lens's edge stands still: not registered (state.lens_weight)
        np.multiply(ms.scratch_bp, ms.lens, out=ms.scratch_bp)


SPECTRA_PER_FRAME = 2  # taper positions whose spectra the cache keeps per frame (measure)


def _correlate(ms: MotionState, spectra: dict | None = None, key=None) -> np.ndarray:
    """Cross-correlation of ``scratch_xin`` with the template (Fh, Fw).

    ``spectra``: a cache of the frames' spectra (``rfft2`` of ``scratch_xin``), for callers
    that register the same frames again and again (the initialisation's passes);
    ``key`` = (frame, oy, ox), the frame's index and the taper's position. At most
    ``SPECTRA_PER_FRAME`` positions per frame are kept (the latest): the cache holds at most
    that many spectra per frame whatever the motion.
    """
    kept = None if spectra is None else spectra.setdefault(key[0], {})
    X = None if kept is None else kept.get(key[1:])
    if X is None:
        X = scipy.fft.rfft2(ms.scratch_xin, workers=1)
        if kept is not None:
            if len(kept) >= SPECTRA_PER_FRAME:
                del kept[next(iter(kept))]
            kept[key[1:]] = X
    kr.cross_power(X.reshape(-1), ms.spectrum.reshape(-1), ms.scratch_power.reshape(-1))
    return scipy.fft.irfft2(ms.scratch_power, s=ms.fft_shape, workers=1, overwrite_x=True)


def measure(ms: MotionState, spectra: dict | None = None, frame: int = -1) -> bool:
    """Rigid shift of the registration image in ``scratch_bp``.

    The frame's taper is placed at the last good shift (``held``, rounded to the grid), so
    frame and template are weighed alike around the same content — a fixed taper biases large
    shifts towards zero; the coarse peak is searched in the whole window, then refined on the
    overlap-corrected correlation. When the coarse peak lies a grid pixel or more away from
    the taper (a jump), a second pass moves the taper there. The coarse peak keeps to the held
    shift unless a peak elsewhere is ``JUMP_RATIO`` times higher: where the frame has little
    structure (sparse activity, no vessels) chance correlations must not make it jump.
    Writes ``scratch_rigid`` = (dy, dx, quality) in grid pixels; returns True when the coarse
    peak is on the edge of the search window (the shift is beyond it).

    ``spectra`` (a dict, filled as it goes) and ``frame`` (the registration image's index
    among the frames the dict is for): the tapered image's spectrum at each taper position
    is computed once per frame and reused when the frame is registered again (to another
    template); the results are the same.
    """
    peak = ms.scratch_peak
    held = math.isfinite(ms.held[0])
    oy, ox = (round(ms.held[0] / ms.ds), round(ms.held[1] / ms.ds)) if held else (0, 0)
    norm2 = kr.taper_shifted(ms.scratch_bp, ms.taper, oy, ox, ms.scratch_xin)
    cc = _correlate(ms, spectra, (frame, oy, ox))
    kr.peak_subpixel(cc, _NO_CORRECTION, 0, 0, int(ms.search[0]), int(ms.search[1]), 0, 0, peak)
    edge = bool(peak[3])
    if held and (abs(round(peak[0]) - oy) > 1 or abs(round(peak[1]) - ox) > 1):
        kr.peak_subpixel(cc, _NO_CORRECTION, oy, ox, 1, 1, 0, 0, ms.scratch_near)
        if ms.scratch_near[2] * JUMP_RATIO >= peak[2]:
            peak[:] = ms.scratch_near
            peak[3] = 0.0
            edge = False
    cy, cx = round(peak[0]), round(peak[1])
    if cy != oy or cx != ox:  # the taper is a grid pixel or more away: move it there
        oy, ox = cy, cx
        norm2 = kr.taper_shifted(ms.scratch_bp, ms.taper, oy, ox, ms.scratch_xin)
        cc = _correlate(ms, spectra, (frame, oy, ox))
    kr.peak_subpixel(cc, ms.inv_env, cy, cx, 2, 2, oy, ox, peak)
    den = math.sqrt(norm2 * ms.template_norm2)
    ms.scratch_rigid[0] = peak[0]
    ms.scratch_rigid[1] = peak[1]
    ms.scratch_rigid[2] = peak[2] / den if den > 0 else 0.0
    return edge


def flag_reason(ms: MotionState, dy: float, dx: float, quality: float, edge: bool) -> str | None:
    """Why a registration failed (None when it did not)."""
    if edge:
        reach = ms.ds * int(min(ms.search))
        return (
            f"motion: shift beyond the {reach} px search window (max_shift_px {ms.max_shift_px:g})"
        )
    size = math.hypot(dy, dx)
    if size > ms.max_shift_px:
        return f"motion: shift {size:.1f} px > max {ms.max_shift_px:g}"
    if not quality >= ms.min_quality:
        return f"motion: registration quality {quality:.2f} < {ms.min_quality:.2f}"
    return None


def correct_frame(ms: MotionState, y: np.ndarray) -> str | None:
    """Register frame y (n_pixels,) float32; the corrected frame is left in ``ms.registered``.

    Parameters
    ----------
    ms : MotionState
    y : ndarray of shape (n_pixels,), float32
        The frame (row-major); not modified.

    Returns
    -------
    str or None
        The flag reason when the registration failed (the frame must not update the model),
        else None. ``ms.last`` = (dy, dx, quality) of the correction applied (sign:
        ``state.py``): the measured shift, or after a failed registration (the reason names the
        measured one) or an uninformative frame the last good one.

    Notes
    -----
    A frame whose quality is below ``ms.min_informative`` — what frames reach against an
    unrelated template (``initial.register_initial``) — carries no information on its
    position (e.g. a frame with nothing but noise and a smooth background): it keeps the last
    good shift and does not update the template, but it is not flagged unless it also fails.

    While the tissue is taken as still (``ms.still_limit_px`` > 0, from the initialisation:
    ``still.still_limit``) the correction is zero and the template is updated unshifted;
    the first informative frame whose shift exceeds the limit is corrected, and so is every
    frame after it.
    """
    bandpass(ms, y)
    edge = measure(ms)
    dy_g, dx_g, quality = ms.scratch_rigid
    dy, dx = dy_g * ms.ds, dx_g * ms.ds
    flag = flag_reason(ms, dy, dx, quality, edge)
    informative = flag is None and quality >= ms.min_informative
    if informative:
        ms.held[0], ms.held[1] = dy, dx
    elif math.isfinite(ms.held[0]):  # failed or uninformative: correct by the last good shift
        dy, dx = ms.held[0], ms.held[1]
        ms.scratch_rigid[0], ms.scratch_rigid[1] = dy / ms.ds, dx / ms.ds
    if ms.patches is not None and informative:  # else the last good field stays
        piecewise.measure_patches(ms)
    still = _still(ms, dy, dx, informative)
    if still:  # the measured shift is noise: no correction, the template stays put
        dy = dx = 0.0
        ms.scratch_rigid[0] = ms.scratch_rigid[1] = 0.0
        if ms.patches is not None:
            piecewise.zero_field(ms.patches)
    ms.last[0], ms.last[1], ms.last[2] = dy, dx, quality
    H, W = ms.dims
    if still:  # what the bilinear warp returns at a zero shift: the frame as recorded
        np.copyto(ms.registered, y)
        ms.valid.fill(1)
        ms.n_filled = 0
    elif ms.patches is None:
        ms.n_filled = kw.warp_rigid(y, H, W, dy, dx, ms.registered, ms.valid)
    else:
        ps = ms.patches
        ms.n_filled = kw.warp_field(
            y, H, W, ps.row_i, ps.row_w, ps.col_i, ps.col_w, ps.field_y, ps.field_x,
            ms.registered, ms.valid, ps.line_y, ps.line_x,
        )  # fmt: skip
    if informative:
        ms.n_informative += 1
        if ms.n_informative % TEMPLATE_EVERY == 0:
            update_template(ms)
    if flag is not None:
        ms.n_flagged += 1
    elif still:  # a zero correction fills no border
        ms.band_grew = 0
    else:
        _grow_band(ms, dy, dx)
    return flag


def _still(ms: MotionState, dy: float, dx: float, informative: bool) -> bool:
    """True while the tissue is taken as still (``ms.still_limit_px``); the first informative
    frame whose shift (or a patch's, piecewise) exceeds the limit ends it (and is corrected)."""
    if ms.still_limit_px <= 0.0:
        return False
    if not informative:
        return True
    size = math.hypot(dy, dx)
    if ms.patches is not None:
        size = max(size, float(np.hypot(ms.patches.field_y, ms.patches.field_x).max()))
    if size > ms.still_limit_px:
        logger.info(
            "motion: the tissue moved (%.1f px > %.2f px, after %d informative online "
            "frames): every frame is corrected from now on",
            size, ms.still_limit_px, ms.n_informative,
        )  # fmt: skip
        ms.still_limit_px = 0.0
        return False
    return True


def _grow_band(ms: MotionState, dy: float, dx: float) -> None:
    """Widen ``ms.band`` to the border this frame's correction filled (``band_grew``)."""
    ps = ms.patches
    if ps is None:
        band = border_band(np.array([dy]), np.array([dx]), band_cap(ms.max_shift_px))
    else:
        band = border_band(ps.field_y, ps.field_x, band_cap(ms.max_shift_px))
    ms.band_grew = int((band > ms.band).any())
    if ms.band_grew:
        np.maximum(ms.band, band, out=ms.band)


def band_cap(max_shift_px: float) -> int:
    """Widest border band kept (the search reach; shifts beyond max_shift_px are flagged)."""
    return int(math.ceil(1.25 * max_shift_px)) + 1


def update_template(ms: MotionState) -> None:
    """Blend the registered band-passed frame (``scratch_bp``) into the template."""
    h, w = ms.grid
    bp = ms.scratch_bp.reshape(-1)
    tpl = ms.template.reshape(-1)
    if ms.patches is None:
        dy_g, dx_g = ms.scratch_rigid[0], ms.scratch_rigid[1]
        kw.warp_rigid(bp, h, w, dy_g, dx_g, ms.scratch_warp, ms.scratch_valid)
    else:
        ps = ms.patches
        kw.warp_field(
            bp, h, w, ps.grid_row_i, ps.grid_row_w, ps.grid_col_i, ps.grid_col_w, ps.grid_y,
            ps.grid_x, ms.scratch_warp, ms.scratch_valid, ps.line_y, ps.line_x,
        )  # fmt: skip
    kw.blend(tpl, ms.scratch_warp, ms.scratch_valid, min(1.0, TEMPLATE_EVERY * ms.alpha))
    ms.n_updates += 1
    if ms.n_updates >= REFRESH_UPDATES:
        refresh_spectra(ms)


def mask_residual(ms: MotionState, ring: np.ndarray, slot: int | None = None) -> None:
    """Zero the border band (``ms.band``) of residual slot ``slot`` of ``ring`` (L, n_pixels).

    Every slot when ``slot`` is None or the band just grew: detection never sees a pixel that
    some corrected frame filled from outside, so no component forms along the border.
    """
    top, bottom, left, right = (int(v) for v in ms.band)
    if top + bottom + left + right == 0:
        return
    H, W = ms.dims
    slots = range(ring.shape[0]) if slot is None or ms.band_grew else (slot,)
    for s in slots:
        kw.zero_band(ring[s], H, W, top, bottom, left, right)


def outputs(ms: MotionState | None) -> tuple[tuple[float, float] | None, float | None]:
    """((dy, dx), quality) of the last frame, for the FrameResult (None, None without motion)."""
    if ms is None:
        return None, None
    return (float(ms.last[0]), float(ms.last[1])), float(ms.last[2])


_WARMED = False


def warm_up() -> None:
    """Compile (or load from numba's cache) the per-frame kernels on a tiny frame, once."""
    global _WARMED
    if _WARMED:
        return
    for mode in ("rigid", "piecewise"):
        mp = MotionParams(mode=mode, max_shift_px=2.0, max_deviation_px=1.0, patch_size_px=16,
                          patch_overlap_px=8, downsample=1)  # fmt: skip
        params = CNMFEParams(motion=mp, data=DataParams(neuron_diameter_px=8.0))
        geom = geometry((24, 24), mp, 8.0)
        ms = make_state(geom, params, np.ones(geom.grid, np.float32), 0.0)
        y = np.ones(24 * 24, np.float32)
        correct_frame(ms, y)
        update_template(ms)  # (every few frames on the model thread: its first call too)
        ms.band[:] = 1
        mask_residual(ms, y.reshape(1, -1).copy())
    _WARMED = True
