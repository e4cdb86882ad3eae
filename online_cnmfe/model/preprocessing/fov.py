"""The field of view: pixels inside the GRIN lens (:func:`find_fov`), and how the mask reaches
seeding (:func:`fov_on_grid`) and online detection (:func:`block_detection_outside`).

Outside the lens the sensor sees only its dark level: those pixels are dark, have little
temporal noise (no shot noise) and no structure. :func:`find_fov` smooths the mean and noise
images over a neuron diameter, calls "dark" what lies below ``dark + fov_threshold x (bright -
dark)`` (1st and 90th percentiles of the smoothed mean) and keeps only dark regions connected to
the image border (vessels and dim tissue inside the lens are enclosed, not connected). The result
is trusted only when the lens is at least ``fov_min_contrast`` times brighter or noisier than
that margin and the margin is between 1 % and 80 % of the frame; otherwise there is no margin.
(A margin sits at the sensor's black level, many times darker than tissue; vignetting, dim
tissue and dark background patches are only 2-3x darker: at the former default of 2 the
held-out movies without a margin lost 7-16 % of their frame, and 0.03-0.06 of their recall,
to such corners.)
A band of ``fov_margin_px`` along the lens edge is excluded too (half-visible cells and the
edge's own glare would be tiled by ragged components).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.ndimage as ndi

from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

MIN_MARGIN_FRACTION = 0.01
MAX_MARGIN_FRACTION = 0.8
_NOISE_PAIRS = 100


def noise_image(frames: np.ndarray) -> np.ndarray:
    """Temporal noise per pixel from successive differences of up to 100 frame pairs."""
    T = frames.shape[0]
    step = max(1, (T - 1) // _NOISE_PAIRS)
    acc = np.zeros(frames.shape[1:], np.float64)
    n = 0
    for t in range(0, T - 1, step):
        d = frames[t + 1] - frames[t]
        acc += d * d
        n += 1
    return np.sqrt(acc / max(2 * n, 1)).astype(np.float32)


def find_fov(frames: np.ndarray, mean_img: np.ndarray, params: CNMFEParams):
    """The pixels inside the lens, from the (corrected, usable) initialisation frames.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W), float32
    mean_img : ndarray of shape (H, W), float32
        Their mean.
    params : CNMFEParams
        ``preprocess.fov_*`` and ``data.neuron_diameter_px``.

    Returns
    -------
    mask : ndarray of shape (H, W), bool, or None
        True inside the field of view; None when no lens margin was found.
    dark : float
        The margin's median level (the sensor's dark level); 0 without a margin.
    """
    p = params.preprocess
    d = params.data.neuron_diameter_px
    size = max(3, int(round(d)))
    mb = ndi.uniform_filter(mean_img.astype(np.float32), size, mode="nearest")
    nb = ndi.uniform_filter(noise_image(frames), size, mode="nearest")
    lo, hi = np.percentile(mb, [1, 90])
    if not hi > lo:
        return None, 0.0
    dark = mb < lo + p.fov_threshold * (hi - lo)
    labels, n = ndi.label(dark)
    if n == 0:
        return None, 0.0
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, border[border > 0])
    frac = float(outside.mean())
    if not MIN_MARGIN_FRACTION <= frac <= MAX_MARGIN_FRACTION:
        if frac > MAX_MARGIN_FRACTION:
            logger.warning(
                "field of view: %.0f %% of the frame looks dark; no lens margin is used (check "
                "the focus and the LED, or set preprocess.fov_mask=false)",
                100 * frac,
            )
        return None, 0.0
    if not _contrast_ok(mb, nb, outside, p.fov_min_contrast):
        return None, 0.0
    margin = d / 2.0 if p.fov_margin_px is None else p.fov_margin_px
    inside = ndi.distance_transform_edt(~outside) > margin
    inside = ndi.binary_fill_holes(inside)
    return inside, float(np.median(mean_img[outside]))


def _contrast_ok(mb, nb, outside, min_contrast: float) -> bool:
    m_in, m_out = float(np.median(mb[~outside])), float(np.median(mb[outside]))
    n_in, n_out = float(np.median(nb[~outside])), float(np.median(nb[outside]))
    bright = m_in >= min_contrast * max(m_out, 1e-12) and m_out >= 0
    noisy = n_in >= min_contrast * max(n_out, 1e-12)
    logger.debug(
        "field of view candidate: mean %.3g inside vs %.3g outside, noise %.3g vs %.3g",
        m_in,
        m_out,
        n_in,
        n_out,
    )
    return bright or noisy


def fov_on_grid(mask: np.ndarray, ds: int) -> np.ndarray:
    """The mask on a grid block-averaged by ``ds``: a block is inside if any pixel is."""
    if ds <= 1:
        return mask.astype(bool)
    H, W = mask.shape
    h, w = -(-H // ds), -(-W // ds)
    pad = np.zeros((h * ds, w * ds), bool)
    pad[:H, :W] = mask
    return pad.reshape(h, ds, w, ds).any(axis=(1, 3))


def block_detection_outside(det, mask: np.ndarray) -> int:
    """Exclude the detection grid outside the FOV from the online search for new neurons.

    ``det`` is the slow path's ``DetectionState``; its ``blocked_until`` (frame until which a
    grid pixel may not hold a candidate) is set to "forever" outside. Returns the number of
    grid pixels excluded.
    """
    grid = fov_on_grid(mask, int(det.ds))
    H, W = det.blocked_until.shape
    outside = ~grid[:H, :W]
    det.blocked_until[outside] = np.iinfo(np.int64).max // 2
    return int(outside.sum())


def fov_in_model(pre, band) -> np.ndarray | None:
    """The field of view in the model's frame: the lens's mask ``pre.fov`` (None without a
    lens margin); with motion correction (``band`` not None) ``pre.fov_registered`` when the
    initialisation recorded where its registered frames saw the lens (:func:`seen_fov`), else
    the lens at every shift of the motion correction's border ``band``
    (:func:`registered_fov`)."""
    if pre is None or not pre.fov_found:
        return None
    if band is None:
        return pre.fov
    if pre.fov_registered is not None:
        return pre.fov_registered
    return registered_fov(pre.fov, band)


def seen_fov(lens_seen: np.ndarray | None, min_seen: float) -> np.ndarray | None:
    """The field of view in the motion-corrected frame from where the registered
    initialisation frames saw the lens (``MotionInit.lens_seen``, the fraction of them per
    pixel): at least ``min_seen`` (``preprocess.fov_min_seen``) of them. None without a record.

    The pixels that saw the margin in some frames are filled there (``motion.lens_gaps``), so
    a cell near the lens's edge is measured in the frames that saw it. The erosion by the
    rectangle of the extreme shifts (:func:`registered_fov`) lost the cells 12-24 px inside the
    edge on held-out ``lens_motion`` (shifts up to 19.8 px); without the filling, the lens at
    every shift seen lost more than it gained (their footprints took in the dark margin).

    Examples
    --------
    >>> seen_fov(np.array([[0.2, 0.95, 1.0]], np.float32), 0.9).astype(int)
    array([[0, 1, 1]])
    """
    return None if lens_seen is None else np.asarray(lens_seen) >= min_seen


def registered_fov(mask: np.ndarray, band) -> np.ndarray:
    """The field of view in the motion-corrected frame: pixels inside the lens at every shift.

    The lens moves with the sensor, the tissue under it; motion correction samples the frame
    at (r + dy, c + dx), so corrected pixel (r, c) saw the lens's inside only if ``mask``
    holds at every such sample. With shifts dy in [−top, bottom] and dx in [−left, right]
    (``band`` = (top, bottom, left, right), the border band of
    :class:`~online_cnmfe.model.motion.MotionState`: the extreme shifts so far, rounded
    up), that is the erosion of ``mask`` by that rectangle (outside the frame counts as
    inside: the band covers it).

    Parameters
    ----------
    mask : ndarray of shape (H, W), bool
        The field of view in the sensor's frame (:func:`find_fov`, on the raw frames).
    band : sequence of 4 int
        (top, bottom, left, right) pixels.

    Returns
    -------
    ndarray of shape (H, W), bool
        A new array; ``mask`` itself when the band is zero.

    Examples
    --------
    >>> m = np.zeros((1, 7), bool); m[0, 2:6] = True
    >>> registered_fov(m, (0, 0, 1, 0)).astype(int)  # samples up to 1 px to the left
    array([[0, 0, 0, 1, 1, 1, 0]])
    """
    top, bottom, left, right = (int(v) for v in band)
    if top + bottom + left + right == 0:
        return mask
    out = _all_in_window(mask.astype(bool), top, bottom, axis=0)
    return _all_in_window(out, left, right, axis=1)


def _all_in_window(x: np.ndarray, lo: int, hi: int, axis: int) -> np.ndarray:
    """out[i] = all of x[i − lo … i + hi] along ``axis`` (beyond the ends counts as True)."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    bad = np.zeros((n + lo + hi + 1, *x.shape[1:]), np.int64)
    np.cumsum(~x, axis=0, out=bad[lo + 1 : lo + 1 + n])
    bad[lo + 1 + n :] = bad[lo + n]  # the padding after the end adds nothing
    return np.moveaxis(bad[lo + hi + 1 :] - bad[:n] == 0, 0, axis)
