"""One seeding pass of the initialisation (:mod:`.fit`): summary images, the calibrated
threshold and the greedy search (:mod:`.seeding`) on the frames or on a residual, the new
neurons appended to the fit's working state.

Symbols as in :mod:`.fit`: Y (T, H, W) frames, ``raw_pm`` the (H, W, T) pixel-major movie the
footprints are regressed on, ``null`` the calibrated seeding threshold (:mod:`.noise_null`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse

from online_cnmfe.model.initialization import background as bgmod
from online_cnmfe.model.initialization.layout import pixel_major, pixel_major_centred
from online_cnmfe.model.initialization.noise_null import (
    SeedingNull,
    data_floor,
    log_calibration,
    residual_threshold,
    seeding_threshold,
)
from online_cnmfe.model.initialization.resample import upsample_columns, upsample_images
from online_cnmfe.model.initialization.seed_calibration import (
    calibrate_seed_tests,
    choose_matched_filter,
    seed_image,
)
from online_cnmfe.model.initialization.seeding import seed_neurons_pixel_major
from online_cnmfe.model.initialization.summary_images import (
    center_psf_kernel,
    filter_frames,
    smooth_in_time,
    smoothing_coefficient,
    summary_images,
)
from online_cnmfe.model.motion import zero_border
from online_cnmfe.model.null_threshold import rate_for_frame
from online_cnmfe.model.preprocessing.fov import fov_in_model, fov_on_grid


def seed_pass(fit, data: np.ndarray, raw_pm=None, null: SeedingNull | None = None, residual=False):
    """Seed on ``data`` (frames or a residual) and append the new neurons to ``fit``
    (the initialisation's working state, :class:`.fit._Fit`).

    The footprints are regressed on ``raw_pm`` (pixel-major (H, W, T), modified), by
    default a pixel-major copy of ``data``.

    The threshold comes from ``null`` or, when None, is calibrated on ``data``'s noise
    (:func:`.noise_null.seeding_threshold`); on a ``residual`` it is raised where the
    sign-flipped residual needs it (:func:`.noise_null.residual_threshold`). Returns
    (n_new, images, the threshold's SeedingNull).

    With ``init.seed_downsample = s > 1`` the search runs on s x s block averages (sizes
    divided by s, the threshold calibrated on the block averages' own noise) and the
    footprints are upsampled back (nearest neighbour) for HALS.
    Meant for neurons of at least ~12 px: smaller ones are only a few grid pixels wide.
    """
    s = fit.p.init.seed_downsample
    if s > 1:
        raw = data if raw_pm is None else raw_pm.reshape(-1, fit.T).T.reshape(data.shape)
        data = bgmod.downsample_movie(data, s)
        raw_pm = pixel_major(bgmod.downsample_movie(raw, s))
        del raw
    elif raw_pm is None:
        raw_pm = pixel_major(data)
    gsig = fit.gsig / s
    kernel = center_psf_kernel(gsig)
    gsiz = max(3, int(round(fit.gsiz / s)))
    rate = rate_for_frame(fit.p.detection.false_seeds_per_fov, fov_pixels(fit))
    filtered = images = None
    calibrate_here = null is None and not residual
    if fit.matched_filter is None and null is None:  # "auto": the first seeding chooses
        if fit.preprocessed:
            filtered, images, null = choose_matched_filter(fit, data, gsig, gsiz, rate, s)
            calibrate_here = False  # the choice's nulls are floored by the data's peaks
        else:  # raw frames: slow fluctuations survive the spatial filter (module docstring)
            fit.matched_filter, fit.tau = False, 0.0
    if filtered is None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="init-null") as pool:
            # the noise null (its own small movie; it only reads data) alongside the filter,
            # whose edge padding and copies run in one thread
            pending = None
            if null is None:
                pending = pool.submit(seeding_threshold, data, gsig, gsiz, rate, tau_frames=fit.tau)
            filtered = filter_frames(data, kernel)  # once: the residual's threshold uses it too
            if pending is not None:
                null = pending.result()
        if residual:
            null = residual_threshold(
                data, gsig, gsiz, rate, null, tau_frames=fit.tau, filtered=filtered
            )
        filtered, images = summary_images(
            data,
            gsig,
            remove_global=fit.p.init.remove_global_fluctuation,
            tau_frames=fit.tau,
            filtered=filtered,
        )
    if calibrate_here:  # the recording's own peaks may say its noise reaches less far
        null = data_floor(null, seed_image(fit, images, gsiz, s), gsiz, rate)
    if residual:
        log_calibration(null, images, "re-seeding on the residual")
    # the footprints are regressed on frames averaged like the seeding images (the seeds'
    # traces are), so the out-of-focus ratio compares like with like
    smooth_in_time(raw_pm, smoothing_coefficient(fit.tau), axis=-1)
    cn, pnr = images.corr.copy(), images.pnr.copy()
    fov = fov_in_model(fit.pre, fit.band)  # the lens in the corrected frame
    if fov is not None:  # no seed outside the lens
        pnr[~fov_on_grid(fov, s)] = 0.0
    if fit.band is not None:  # nor in the border motion correction filled
        zero_border(cn, fit.band, s)
    # the filtered frames minus their temporal mean, pixel-major (one pass, no temporary)
    filtered_pm = pixel_major_centred(filtered, images.filtered_mean)
    del filtered
    if not residual:
        calibrate_seed_tests(fit, filtered_pm, raw_pm, cn * pnr, gsiz, null.threshold, kernel, s)
    res = seed_neurons_pixel_major(
        filtered_pm,
        raw_pm,
        images.noise,
        cn,
        pnr,
        gsiz=gsiz,
        threshold=null.threshold,
        kernel=kernel,
        max_neurons=max(0, fit.p.init.max_neurons - fit.K),
        max_halfmax_area=fit.max_halfmax_area * fit.area_scale / s**2,
        max_kappa=fit.p.init.out_of_focus_ratio * fit.kappa_ref_grid,
    )
    del filtered_pm, raw_pm
    if s > 1:
        images = upsample_images(images, s, fit.dims)
    if res.n_components:
        if s > 1:
            dense = upsample_columns(
                res.dense_footprints(data.shape[1:]), data.shape[1:], s, fit.dims
            )
            fit.append(scipy.sparse.csc_array(dense), res.traces)
        else:
            fit.append(res.sparse_footprints(fit.dims), res.traces)
    return res.n_components, images, null


def fov_pixels(fit) -> int:
    """Pixels where a neuron can be: inside the lens's field of view when one was found
    (the false-seed rate is per area of tissue), else the whole frame."""
    fov = fov_in_model(fit.pre, fit.band)
    if fov is not None:
        return max(1, int(np.count_nonzero(fov)))
    return fit.H * fit.W
