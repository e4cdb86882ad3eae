"""What the motion stage keeps between frames, and what the initialisation hands to it.

Symbols (see ``_kernels/registration.py``): the registration grid is the frame block-averaged
by ``ds`` (h, w); the registration image x = (G_σs − G_σl) * grid · taper, zero-padded to the
FFT shape (Fh, Fw); T the template in that domain (h, w), ``spectrum`` = conj(rfft2(taper ·
T)). Shifts d = (dy, dx) in pixels of the frame: the content of the frame moved by +d relative
to the template (frame[r, c] ≈ template[r − dy, c − dx]); the corrected frame samples the
frame at (r + dy, c + dx).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.ndimage as ndi

from online_cnmfe.params import MotionParams

N_BOXES = 2  # box filters per axis approximating a Gaussian (a smooth enough kernel here)
TAPER_SIGMAS = 2.0  # edge taper of the registration image, in background sigmas
MIN_RELIABILITY = 0.3  # split-half template correlation below which there is nothing to register
# frames above the null quality needed to register: realistic movies (simulators, held-out
# regimes, textured tissue) have 0.96-1.0, toy movies of a few sparse cells 0.3-0.6
MIN_INFORMATIVE_FRACTION = 0.8


@dataclass(slots=True)
class PatchState:
    """Piecewise-rigid registration: overlapping patches of the registration grid.

    Attributes
    ----------
    starts_r, starts_c : ndarray of shape (ny,), (nx,), int64
        Grid row / column of each patch's top-left corner; patch p = i · nx + j.
    taper : ndarray of shape (ph, pw), float32
    inv_env : ndarray of shape (Fph, Fpw), float32
        Overlap correction of the patch correlations (:func:`inverse_envelope`).
    spectra : ndarray of shape (P, Fph, Fpw // 2 + 1), complex64
        conj(rfft2) of each tapered template patch; ``norms2`` (P,) their squared norms.
    radius : int
        Search radius (grid pixels) around the rigid shift.
    field_y, field_x : ndarray of shape (ny, nx), float32
        Last shift of each patch centre, frame pixels (``grid_y``, ``grid_x``: grid pixels).
    row_i, row_w, col_i, col_w : ndarray
        Per-row/column interpolation maps of the patch-centre field onto the frame (int64
        index below, float32 weight of the next); ``grid_*`` the same on the grid.
    quality : ndarray of shape (P,), float32
        Last registration quality of each patch.
    n_own : int
        Patches of the last frame that kept their own shift (the others took the rigid one).
    pin, power, peaks, norms2_frame, off_r, off_c, line_y, line_x : ndarray
        Per-frame buffers.
    """

    starts_r: np.ndarray
    starts_c: np.ndarray
    taper: np.ndarray
    inv_env: np.ndarray
    spectra: np.ndarray
    norms2: np.ndarray
    radius: int
    field_y: np.ndarray
    field_x: np.ndarray
    grid_y: np.ndarray
    grid_x: np.ndarray
    row_i: np.ndarray
    row_w: np.ndarray
    col_i: np.ndarray
    col_w: np.ndarray
    grid_row_i: np.ndarray
    grid_row_w: np.ndarray
    grid_col_i: np.ndarray
    grid_col_w: np.ndarray
    quality: np.ndarray
    n_own: int
    pin: np.ndarray
    power: np.ndarray
    peaks: np.ndarray
    norms2_frame: np.ndarray
    off_r: np.ndarray
    off_c: np.ndarray
    line_y: np.ndarray
    line_x: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.starts_r.shape[0]), int(self.starts_c.shape[0])


@dataclass(slots=True)
class MotionState:
    """The motion stage's complete state (saved with the model).

    Attributes
    ----------
    dims : tuple (H, W)
    ds : int
        Registration grid downsampling.
    radii_small, radii_large, radii_again : ndarray of shape (3,), int64
        Box radii of the smoothing Gaussian, of the background Gaussian applied to the smoothed
        image (σ' = sqrt(σl² − σs²)) and of the second high-pass (σl), on the grid.
    search : ndarray of shape (2,), int64
        Search radius of the rigid shift (grid pixels).
    max_shift_px, min_quality : float
        Flag thresholds (``min_quality`` calibrated at initialisation unless given).
    min_informative : float
        Quality below which a frame says nothing about its position (it keeps the last good
        shift): the 95th percentile of what the initialisation frames reach against an
        unrelated template (the template turned by 180 degrees).
    alpha : float
        Template forgetting rate per frame.
    taper : ndarray of shape (h, w), float32
    inv_env : ndarray of shape (Fh, Fw), float32
        Overlap correction of the correlation (:func:`inverse_envelope`).
    template : ndarray of shape (h, w), float32
    spectrum : ndarray of shape (Fh, Fw // 2 + 1), complex64; template_norm2 : float
    n_updates : int
        Template updates since the last spectrum refresh.
    n_flagged : int
        Frames flagged by the motion stage so far.
    n_informative : int
        Frames that updated the shift so far (every other one updates the template).
    last : ndarray of shape (3,), float64
        (dy, dx, quality) of the last frame (the shift applied).
    held : ndarray of shape (2,), float64
        The last shift that passed (the coarse search keeps near it; a failed registration is
        corrected by it).
    registered : ndarray of shape (n_pixels,), float32
        The last corrected frame; ``valid`` (n_pixels,) uint8 its pixels inside the frame,
        ``n_filled`` how many were not.
    patches : PatchState or None
        Piecewise-rigid part (None in rigid mode).
    scratch_* : ndarray
        Per-frame work arrays.
    band : ndarray of shape (4,), int64
        (top, bottom, left, right): rows and columns at the frame's edges that some corrected
        frame so far filled from outside (:func:`border_band`); the residual is zero there, so
        detection never sees them (no component forms along the border).
    band_grew : int
        1 when the last frame widened ``band`` (every residual slot is then masked again).
    lens : ndarray of shape (h, w), float32, or None
        Weight of the registration image inside the lens's field of view
        (:func:`lens_weight`; None without a lens margin).
    still_limit_px : float
        While > 0 the tissue is taken as still (``MotionInit.still_limit_px``): the correction
        is zero (no resampling jitter) until an informative frame's shift exceeds this many
        pixels; it is then set to 0 and every frame is corrected from that frame on.
    lens_outside : ndarray of shape (H·W,), float32, or None
        1 outside the lens on the sensor (``MotionInit.lens_outside``), 0 inside; None without
        a lens margin. Resampled by each frame's correction into ``scratch_gap`` (with
        ``scratch_gap_valid``), it marks the pixels that saw no tissue (``lens_gaps``).
    """

    dims: tuple[int, int]
    ds: int
    radii_small: np.ndarray
    radii_large: np.ndarray
    radii_again: np.ndarray
    search: np.ndarray
    max_shift_px: float
    min_quality: float
    min_informative: float
    alpha: float
    taper: np.ndarray
    inv_env: np.ndarray
    template: np.ndarray
    spectrum: np.ndarray
    template_norm2: float
    n_updates: int
    n_flagged: int
    n_informative: int
    last: np.ndarray
    held: np.ndarray
    registered: np.ndarray
    valid: np.ndarray
    n_filled: int
    patches: PatchState | None
    scratch_grid: np.ndarray
    scratch_small: np.ndarray
    scratch_large: np.ndarray
    scratch_tmp: np.ndarray
    scratch_acc: np.ndarray
    scratch_bp: np.ndarray
    scratch_xin: np.ndarray
    scratch_power: np.ndarray
    scratch_peak: np.ndarray
    scratch_near: np.ndarray
    scratch_rigid: np.ndarray
    scratch_warp: np.ndarray
    scratch_valid: np.ndarray
    band: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    band_grew: int = 0
    lens: np.ndarray | None = None
    still_limit_px: float = 0.0
    lens_outside: np.ndarray | None = None
    scratch_gap: np.ndarray | None = None
    scratch_gap_valid: np.ndarray | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.template.shape[0]), int(self.template.shape[1])

    @property
    def fft_shape(self) -> tuple[int, int]:
        return int(self.scratch_xin.shape[0]), int(self.scratch_xin.shape[1])


@dataclass(slots=True)
class MotionInit:
    """The motion stage after initialisation: template, threshold, and the initial frames.

    Attributes
    ----------
    template : ndarray of shape (h, w), float32
        Band-passed template on the registration grid.
    min_quality : float
        Registration quality below which a frame is flagged.
    shifts : ndarray of shape (T, 2), float32
        Rigid shift (dy, dx) of each initialisation frame, frame pixels (sign: module doc).
    quality : ndarray of shape (T,), float32
    fields : ndarray of shape (T, 2, ny, nx), float32, or None
        Piecewise-rigid shift of each patch centre (None in rigid mode).
    flags : tuple of str
        Per frame, why it was flagged ('' when it was not).
    min_informative : float
        See :class:`MotionState`.
    informative_fraction : float
        Fraction of the frames above ``min_informative``: under
        ``MIN_INFORMATIVE_FRACTION`` most frames cannot be placed (movies with nothing but
        noise, a smooth background and a few sparse cells) and motion correction stays off.
    reliability : float
        Registration quality of the template built from the even frames against the one built
        (independently) from the odd frames; below
        ``initial.MIN_RELIABILITY`` the recording has no stable structure to register to and
        motion correction stays off (``active`` is False, the frames are left as they are).
    band : ndarray of shape (4,), int64
        (top, bottom, left, right) border rows/columns some unflagged initialisation frame
        filled from outside: left out of the seeding (see :attr:`MotionState.band`).
    lens : ndarray of shape (h, w), float32, or None
        See :attr:`MotionState.lens`.
    still_limit_px : float
        > 0 when the unflagged initialisation frames stood still (their shifts spread within
        the measurement noise, ``still.still_limit``): their shifts (and fields) are then
        exactly 0, and online a shift beyond this many pixels is the first movement. 0 when
        the tissue moved.
    lens_outside : ndarray of shape (H, W), bool, or None
        Outside the lens on the sensor (preprocessing's field of view); None without a margin.
    gap_fill : ndarray of shape (H, W), float32, or None
        Mean of each pixel's samples inside the lens over the unflagged registered frames (NaN
        where it never saw the lens): what an initialisation frame's gaps are filled with
        (``lens_gaps.InitialGaps``); None when there is nothing to fill.
    lens_seen : ndarray of shape (H, W), float32, or None
        Fraction of the unflagged registered frames in which each pixel saw the lens.
    """

    template: np.ndarray
    min_quality: float
    shifts: np.ndarray
    quality: np.ndarray
    fields: np.ndarray | None
    flags: tuple[str, ...]
    reliability: float = 1.0
    min_informative: float = -1.0
    informative_fraction: float = 1.0
    band: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    lens: np.ndarray | None = None
    still_limit_px: float = 0.0
    lens_outside: np.ndarray | None = None
    gap_fill: np.ndarray | None = None
    lens_seen: np.ndarray | None = None

    @property
    def active(self) -> bool:
        return (
            self.reliability >= MIN_RELIABILITY
            and self.informative_fraction >= MIN_INFORMATIVE_FRACTION
        )


def border_band(dy: np.ndarray, dx: np.ndarray, cap: int) -> np.ndarray:
    """(top, bottom, left, right) rows/columns that corrections by shifts dy, dx fill.

    The corrected frame samples the frame at (r + dy, c + dx): a negative dy brings rows in
    from above the frame (the top |dy| rows are filled), a positive one from below; the same
    for columns. A sample up to half a pixel outside counts as inside (``warp``), so a shift
    of v fills ceil(v − 0.5) rows; each side at most ``cap``.
    """
    dy, dx = np.asarray(dy, np.float64).ravel(), np.asarray(dx, np.float64).ravel()
    ok = np.isfinite(dy) & np.isfinite(dx)
    dy, dx = dy[ok], dx[ok]
    if dy.size == 0:
        return np.zeros(4, np.int64)
    ext = [-dy.min(), dy.max(), -dx.min(), dx.max()]
    return np.array([min(cap, math.ceil(max(0.0, v - 0.5))) for v in ext], np.int64)


def zero_border(image: np.ndarray, band: np.ndarray, step: int = 1) -> None:
    """Zero the ``band`` (top, bottom, left, right; frame pixels) of a 2-D image in place; the
    image may be the frame block-averaged by ``step`` (the band is rounded up)."""
    top, bottom, left, right = (-(-int(v) // step) for v in band)
    h, w = image.shape
    image[:top] = 0
    image[h - bottom :] = 0  # (h - 0 = h: nothing)
    image[:, :left] = 0
    image[:, w - right :] = 0


def box_radii(sigma: float, n: int = N_BOXES) -> np.ndarray:
    """Radii of ``n`` box filters whose succession approximates a Gaussian of ``sigma``.

    The standard construction (widths wl and wl + 2 around sqrt(12σ²/n + 1)); σ ≤ 0.3 gives
    zero radii (no blur).
    """
    if sigma <= 0.3:
        return np.zeros(n, np.int64)
    ideal = math.sqrt(12.0 * sigma * sigma / n + 1.0)
    wl = int(math.floor(ideal))
    if wl % 2 == 0:
        wl -= 1
    wl = max(wl, 1)
    wu = wl + 2
    m = round((12 * sigma * sigma - n * wl * wl - 4 * n * wl - 3 * n) / (-4 * wl - 4))
    m = min(max(m, 0), n)
    widths = [wl] * m + [wu] * (n - m)
    return np.array([(w - 1) // 2 for w in widths], np.int64)


def inverse_envelope(taper: np.ndarray, fft_shape: tuple[int, int]) -> np.ndarray:
    """env[0] / env[k], env the circular autocorrelation of ``taper`` zero-padded to fft_shape.

    Correlating two tapered images weighs shift k by env[k] (the overlap of the tapers); the
    cross-correlation times this ratio has no pull towards zero shift.
    """
    pad = np.zeros(fft_shape, np.float64)
    pad[: taper.shape[0], : taper.shape[1]] = taper
    spec = scipy.fft.rfft2(pad)
    env = scipy.fft.irfft2(spec * np.conj(spec), s=fft_shape)
    return (env[0, 0] / np.maximum(env, 1e-3 * env[0, 0])).astype(np.float32)


def cosine_taper(n: int, margin: int) -> np.ndarray:
    """1-D window: 1 inside, a raised-cosine ramp over ``margin`` samples at each end."""
    w = np.ones(n, np.float32)
    m = min(margin, n // 2)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        w[:m] = ramp
        w[n - m :] = ramp[::-1]
    return w


@dataclass(frozen=True, slots=True)
class Geometry:
    """Derived sizes of the registration (computed once from dims and params)."""

    dims: tuple[int, int]
    ds: int
    grid: tuple[int, int]
    sigma_small: float  # grid pixels
    sigma_large: float
    search: tuple[int, int]
    fft_shape: tuple[int, int]
    margin: int  # taper ramp (twice the background sigma: the band-pass's edge zone), grid px


def geometry(dims: tuple[int, int], params: MotionParams, neuron_diameter_px: float) -> Geometry:
    """Registration geometry of frames of ``dims`` (H, W).

    The search radius is ``max_shift_px`` plus a quarter (so shifts just beyond the limit are
    measured and flagged rather than aliased), limited to a quarter of the grid.

    Raises
    ------
    ValueError
        If the frames are too small to register (grid under 8 × 8 pixels).
    """
    H, W = dims
    smooth, background = params.sigmas_px(neuron_diameter_px)
    ds = params.grid_downsample(neuron_diameter_px)
    h, w = H // ds, W // ds
    if min(h, w) < 8:
        raise ValueError(
            f"frames of {H}x{W} pixels are too small to register on a grid downsampled by {ds} "
            f"({h}x{w}); set motion.downsample=1 or motion.enabled=false"
        )
    reach = (params.max_shift_px * 1.25 + 1.0) / ds
    search = (int(min(math.ceil(reach), h // 4)), int(min(math.ceil(reach), w // 4)))
    fft_shape = (
        scipy.fft.next_fast_len(h + search[0], real=True),
        scipy.fft.next_fast_len(w + search[1], real=True),
    )
    margin = int(min(math.ceil(TAPER_SIGMAS * background / ds), h // 4, w // 4))
    return Geometry(
        dims=(int(H), int(W)), ds=ds, grid=(h, w), sigma_small=smooth / ds,
        sigma_large=background / ds, search=search, fft_shape=fft_shape, margin=margin,
    )  # fmt: skip


def lens_weight(fov: np.ndarray, geom: Geometry) -> np.ndarray:
    """Weight (h, w) of the registration image: 0 near and beyond the lens's edge, 1 inside.

    The lens's edge stands still on the sensor and its step from tissue to the dark margin is
    the strongest structure of the band-passed frame (hundreds of counts against tissue
    texture of tens): registered as it is, every frame matches the template at zero shift
    whatever the tissue did. The band-pass's box filters spread the step over the sum of
    their radii on each side, and no further; the weight is 0 outside the lens and within
    that reach of its edge (grid pixels), then rises over the taper's ramp (``geom.margin``).

    Parameters
    ----------
    fov : ndarray of shape (H, W), bool
        Inside the lens, in the sensor's (raw) frame (``preprocessing.fov.find_fov``).
    geom : Geometry

    Returns
    -------
    ndarray of shape (h, w), float32
    """
    h, w = geom.grid
    ds = geom.ds
    inside = fov[: h * ds, : w * ds].reshape(h, ds, w, ds).all(axis=(1, 3))
    depth = ndi.distance_transform_edt(inside)  # grid pixels to the nearest pixel outside
    rest = math.sqrt(max(geom.sigma_large**2 - geom.sigma_small**2, 0.0))
    reach = sum(int(box_radii(sig).sum()) for sig in (geom.sigma_small, rest, geom.sigma_large))
    ramp = np.clip((depth - reach) / max(geom.margin, 1), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
