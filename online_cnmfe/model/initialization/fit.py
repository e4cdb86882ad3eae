"""CNMF-E initialisation on the first frames: :func:`fit_initial` -> :class:`InitResult`.

Symbols (CNMF-E): Y (T, H, W) frames, A (n_pixels, K) footprints, C (K, T) denoised calcium,
C_raw the demixed traces above their baselines, S deconvolved activity, b0 baseline image, W the
ring background on the grid downsampled by ``ssub``; ``Y - B`` the background-subtracted movie.

Steps (CaImAn ``greedyROI_corr`` with the improvements of DESIGN.md section 4):

0. motion correction (``motion.enabled``): a template by iterative registration, and the frames
   registered to it (:func:`online_cnmfe.model.motion.register_initial`);
1. summary images of the mean-centred Gaussian filtered movie (noise, PNR, correlation);
2. greedy corr x PNR seeding with local regression footprints (:mod:`.seeding`), above a
   threshold calibrated on the movie's own noise (:mod:`.noise_null`:
   ``detection.false_seeds_per_fov`` noise peaks expected per field of view);
3. ``n_alternations`` times: ring background fit with outlier clipping
   (:mod:`.background`), traces by block-coordinate descent with OASIS
   (:mod:`.deconvolution`), footprints by HALS on the sufficient statistics with
   supports that may grow (:mod:`.footprints`), merging of duplicates, and in the
   first ``reseed_passes`` rounds seeding again on the residual (same calibrated threshold:
   the residual's noise is the movie's);
4. out-of-focus pruning, then the calibrated acceptance tests (:mod:`.acceptance`:
   a multi-frame transient above a robust z, footprint vs event-triggered image);
5. final background refit and traces.

A movie that looks preprocessed (quantised, background-removed; see
:func:`.checks.looks_preprocessed`) is logged; its thresholds need no change, because the
noise null is simulated with the movie's own spatial noise structure.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels.hals import hals_traces, trace_residuals
from online_cnmfe.model._kernels.oasis_batch import bcd_deconvolve
from online_cnmfe.model.footprint_shape import sharpness, sharpness_limit, size_ratios
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.initialization import background as bgmod
from online_cnmfe.model.initialization.acceptance import spatial_consistency, transient_score
from online_cnmfe.model.initialization.checks import (
    Progress,
    stage_weights,
    validate_frames,
    warn_if_preprocessed,
)
from online_cnmfe.model.initialization.deconvolution import (
    decay_root,
    default_g,
    estimate_ar,
    trace_noise,
)
from online_cnmfe.model.initialization.footprints import (
    clean_footprints,
    compute_cy,
    hals_footprints,
    search_regions,
)
from online_cnmfe.model.initialization.layout import residual_pair
from online_cnmfe.model.initialization.malloc_reuse import reuse_freed_memory
from online_cnmfe.model.initialization.merging import merge_components
from online_cnmfe.model.initialization.noise_null import (
    SeedingNull,
    log_calibration,
)
from online_cnmfe.model.initialization.out_of_focus import component_ratios, filter_response
from online_cnmfe.model.initialization.resample import (
    pixel_noise,
)
from online_cnmfe.model.initialization.seed_calibration import cell_diameter
from online_cnmfe.model.initialization.seed_pass import seed_pass
from online_cnmfe.model.initialization.summary_images import (
    center_psf_kernel,
)
from online_cnmfe.model.motion import register_initial
from online_cnmfe.model.preprocessing.fov import seen_fov
from online_cnmfe.model.preprocessing.initial import preprocess_initial
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

MIN_PIXELS = 3
FINAL_KAPPA_SCALE = 1.5  # fitted components: out-of-focus test at 1.5 x init.out_of_focus_ratio


def _column_norms(A) -> np.ndarray:
    A = scipy.sparse.csc_array(A)
    return np.sqrt(np.asarray(A.multiply(A).sum(axis=0)).ravel()).astype(np.float32)


class _Fit:
    """Working state of the batch fit.

    A (n_pixels, K) csc with unit-L2 columns; C (K, T) >= 0 above the baselines b (K,);
    C_raw, S (K, T); g (K, p); noise (K,).
    """

    def __init__(self, Y: np.ndarray, params: CNMFEParams) -> None:
        self.Y = Y
        self.p = params
        self.T, self.H, self.W = Y.shape
        self.dims = (self.H, self.W)
        d = params.data.neuron_diameter_px
        self.diameter = d
        self.gsig = params.init.gaussian_sigma_px or d / 4.0
        self.gsiz = max(3, int(round(d)))
        self.kernel = center_psf_kernel(self.gsig)
        self.order = params.deconv.ar_order
        # half-maximum area of a Gaussian footprint of sigma d / 4 is 0.272 d^2
        self.max_halfmax_area = 0.272 * (params.init.max_diameter_factor * d) ** 2
        self.kappa_neuron = 1.0 / filter_response(self.kernel, d / 4.0)
        # a transient lasts at least half the indicator decay time (and 3 frames)
        dp = params.data
        self.transient_frames = max(3, int(round(0.5 * dp.decay_time_s * dp.frame_rate_hz)))
        self.A = scipy.sparse.csc_array((self.H * self.W, 0), dtype=np.float32)
        self.C = np.zeros((0, self.T), np.float32)
        self.C_raw = np.zeros((0, self.T), np.float32)
        self.S = np.zeros((0, self.T), np.float32)
        self.b = np.zeros(0, np.float32)
        self.g = np.zeros((0, self.order), np.float32)
        self.noise = np.zeros(0, np.float32)
        self.bg = None
        self.Yt = None
        self.ring = None  # background.RingFitter, made at the first background fit
        self.band = None  # border band filled by motion correction: no seeds there
        self.pre = None  # PreprocessState (its field-of-view mask limits the seeds)
        # what the seeding learns from the movie (:mod:`.seed_calibration`): the matched
        # temporal filter (time constant the indicator's decay in frames; "auto" leaves the
        # choice, matched_filter None, to the first seeding), the seed tests' scale, and
        # whether the movie looks preprocessed (its strongest seeds are then cells)
        self.tau_decay = dp.decay_time_s * dp.frame_rate_hz
        mode = params.detection.matched_filter
        self.matched_filter = None if mode == "auto" else mode == "on"
        self.tau = self.tau_decay if self.matched_filter else 0.0
        self.kappa_scale = 1.0  # measured / expected out-of-focus ratio of the cells
        self.area_scale = 1.0  # measured / expected half-maximum area of the cells
        self.kappa_ref_grid = self.kappa_neuron
        self.preprocessed = False

    @property
    def K(self) -> int:
        return self.C.shape[0]

    # ---- seeding --------------------------------------------------------------------------
    def seed(self, data: np.ndarray, raw_pm=None, null: SeedingNull | None = None, residual=False):
        """Seed on ``data`` and append the new neurons (:func:`.seed_pass.seed_pass`)."""
        return seed_pass(self, data, raw_pm, null, residual)

    def append(self, A_new, C_new: np.ndarray) -> None:
        """Add neurons with footprints A_new and (any-baseline) traces C_new."""
        norms = _column_norms(A_new)
        keep = np.flatnonzero(norms > 0)
        A_new = scipy.sparse.csc_array(A_new[:, keep] @ scipy.sparse.diags_array(1 / norms[keep]))
        C_new = np.asarray(C_new, np.float32)[keep] * norms[keep, None]
        k = keep.size
        self.A = scipy.sparse.hstack([self.A, A_new], format="csc").astype(np.float32)
        self.C = np.concatenate([self.C, np.maximum(C_new, 0)]).astype(np.float32)
        self.C_raw = np.concatenate([self.C_raw, C_new]).astype(np.float32)
        self.S = np.concatenate([self.S, np.zeros((k, self.T), np.float32)])
        self.b = np.concatenate([self.b, np.zeros(k, np.float32)])
        self.g = np.concatenate([self.g, np.tile(default_g(self.p.data, self.order), (k, 1))])
        self.noise = np.concatenate([self.noise, np.ones(k, np.float32)])

    def select(self, keep: np.ndarray) -> None:
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        self.A = scipy.sparse.csc_array(self.A[:, idx])
        for name in ("C", "C_raw", "S", "b", "g", "noise"):
            setattr(self, name, getattr(self, name)[idx])

    # ---- background ---------------------------------------------------------------------
    def full_traces(self) -> np.ndarray:
        return (self.C + self.b[:, None]).astype(np.float32)

    def fit_background(self) -> None:
        if self.ring is None:  # the frames' pixel-major copy and tables, once per fit
            self.ring = bgmod.RingFitter(self.Y, self.p.background, self.diameter)
        # the new background-subtracted frames overwrite the previous ones (one movie-sized
        # array less, and no fresh pages to fault in)
        previous, self.Yt = self.Yt, None
        self.bg, self.Yt = self.ring.fit(self.A, self.full_traces(), out=previous)

    def residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Y - B) - A (C + b)`` as (T, H, W), and ``Y - A (C + b)`` (the frames without the
        known neurons) as (H, W, T): one ``A (C + b)`` for both; the second from the
        pixel-major frames the background fit keeps, so without a transpose."""
        AC = np.ascontiguousarray(self.A @ self.full_traces(), np.float32)
        residual = residual_pair(self.Yt, self.ring.Yt, AC, self.dims)  # fused: no temporary
        return residual, AC.reshape(self.H, self.W, self.T)

    # ---- traces -------------------------------------------------------------------------
    def update_traces(self, n_sweeps: int = 2, estimate: bool = True) -> None:
        if self.K == 0:
            return
        AtY = np.ascontiguousarray(np.asarray(self.A.T @ self.Yt, np.float32))
        AtA = np.ascontiguousarray(np.asarray((self.A.T @ self.A).toarray(), np.float32))
        if estimate:
            Cn = np.ascontiguousarray(np.maximum(self.full_traces(), 0))
            hals_traces(AtY, AtA, Cn, 5)
            R = np.empty_like(Cn)
            trace_residuals(AtY, AtA, Cn, R)
            raw = Cn + R
            self.noise = np.maximum(trace_noise(raw), 1e-6).astype(np.float32)
            self.g = self._kinetics(raw)
            self.b = (np.percentile(raw, 10, axis=1) + 1.28 * self.noise).astype(np.float32)
            self.C = np.ascontiguousarray(np.maximum(Cn - self.b[:, None], 0), np.float32)
        g1 = np.array([decay_root(g) for g in self.g], np.float32)
        dp = self.p.deconv
        s_min = dp.min_spike_sigma * self.noise * np.sqrt(np.maximum(1 - self.g.sum(axis=1), 0))
        lam = dp.sparsity_penalty * self.noise
        self.C_raw = np.empty_like(self.C)
        self.S = np.empty_like(self.C)
        bcd_deconvolve(
            AtY,
            AtA,
            self.C,
            self.b,
            g1,
            lam.astype(np.float32),
            s_min.astype(np.float32),
            self.C_raw,
            self.S,
            n_sweeps,
        )

    def _kinetics(self, raw: np.ndarray) -> np.ndarray:
        fallback = default_g(self.p.data, self.order)
        if not self.p.deconv.estimate_kinetics:
            return np.tile(fallback, (raw.shape[0], 1)).astype(np.float32)
        g = estimate_ar(raw, self.order, self.noise)
        ok = np.all(np.isfinite(g), axis=1)
        if ok.any():
            fallback = np.median(g[ok], axis=0).astype(np.float32)
        g[~ok] = fallback
        return g.astype(np.float32)

    # ---- footprints ---------------------------------------------------------------------
    def update_footprints(self, n_sweeps: int = 10) -> None:
        if self.K == 0:
            return
        allowed = search_regions(
            self.A, self.dims, max(1, int(round(self.gsig))), max_radius_px=0.75 * self.diameter
        )
        Cc = np.ascontiguousarray(self.C - self.C.mean(axis=1, keepdims=True), np.float32)
        CY = compute_cy(allowed, Cc, self.Yt)
        CC = Cc @ Cc.T
        A = hals_footprints(self.A, CY, CC, n_sweeps=n_sweeps)
        A = clean_footprints(A, self.dims)
        norms = _column_norms(A)
        ok = (np.diff(A.indptr) >= MIN_PIXELS) & (norms > 0)
        self.A = scipy.sparse.csc_array(A)
        self.select(ok)
        norms = norms[ok]
        self.A = scipy.sparse.csc_array(self.A @ scipy.sparse.diags_array(1 / norms))
        for name in ("C", "C_raw", "S"):
            setattr(self, name, (getattr(self, name) * norms[:, None]).astype(np.float32))
        self.b = (self.b * norms).astype(np.float32)
        self.noise = (self.noise * norms).astype(np.float32)

    # ---- out-of-focus pruning -------------------------------------------------------------
    def kappa(self) -> np.ndarray:
        """Out-of-focus ratio of every component (:func:`out_of_focus.component_ratios`)."""
        return component_ratios(self.Y, self.A, self.C, self.full_traces(), self.kernel)

    def prune_out_of_focus(self) -> int:
        """Drop components whose kappa says out-of-focus; returns how many."""
        if self.K == 0:
            return 0
        kap = self.kappa()
        limit = FINAL_KAPPA_SCALE * self.p.init.out_of_focus_ratio * self.kappa_neuron
        bad = kap > limit * self.kappa_scale
        if bad.any():
            self.select(~bad)
        return int(bad.sum())

    # ---- acceptance -----------------------------------------------------------------------
    def drop_without_transient(self) -> int:
        """Early transient test on the demixed traces (noise candidates cost fitting time)."""
        if self.K == 0:
            return 0
        bad = transient_score(self.C_raw, self.transient_frames) < self.p.init.min_transient_snr
        if bad.any():
            self.select(~bad)
        logger.debug("%d components without a transient dropped early", int(bad.sum()))
        return int(bad.sum())

    def accept(self) -> int:
        """Drop components failing the transient, spatial or size test (:mod:`acceptance`,
        :func:`..footprint_shape.size_ratios`)."""
        if self.K == 0:
            return 0
        ip = self.p.init
        n_frames = self.transient_frames
        score = transient_score(self.C_raw, n_frames)
        rval = spatial_consistency(
            self.Yt, self.dims, self.A, self.C_raw, max(2, int(round(self.diameter)))
        )
        bad_t = score < ip.min_transient_snr
        bad_s = rval < ip.min_spatial_corr
        size = size_ratios(self.A, self.dims, self.diameter)
        # relative to the typical component (most are cells) when the cells look bigger than
        # data.neuron_diameter_px says (e.g. after a preprocessing median filter)
        size_limit = ip.max_size_ratio * max(1.0, float(np.percentile(size, 25)))
        bad_z = size > size_limit
        sharp = sharpness(self.A, self.dims, self.diameter)
        sharp_limit = sharpness_limit(sharp, score, ip.min_sharpness_ratio)
        bad_f = sharp < sharp_limit
        bad = bad_t | bad_s | bad_z | bad_f
        logger.info(
            "acceptance: %d of %d components dropped (%d without a %d-frame transient above "
            "z %.1f, %d whose event image does not match the footprint, r < %.2f, %d larger "
            "than %.1f x the expected neuron's area, %d blurred: sharpness < %.2f)",
            int(bad.sum()), self.K, int(bad_t.sum()), n_frames, ip.min_transient_snr,
            int(bad_s.sum()), ip.min_spatial_corr, int(bad_z.sum()), size_limit,
            int(bad_f.sum()), sharp_limit,
        )  # fmt: skip
        if bad.any():
            self.select(~bad)
        return int(bad.sum())

    # ---- merging ------------------------------------------------------------------------
    def merge(self) -> int:
        if self.K < 2:
            return 0
        ip = self.p.init
        out = merge_components(
            self.A, self.C, self.C_raw, ip.merge_corr_threshold, ip.merge_overlap_threshold
        )
        if out is None:
            return 0
        A_new, C_new, keep, n_merged = out
        self.select(keep)
        self.A = scipy.sparse.csc_array(A_new)
        self.C = C_new
        return n_merged

    # ---- output -------------------------------------------------------------------------
    def result(self, images) -> InitResult:
        A = scipy.sparse.csc_array(self.A, dtype=np.float32)
        A.sort_indices()
        return InitResult(
            dims=self.dims,
            A=A,
            C=np.ascontiguousarray(self.C, np.float32),
            S=np.ascontiguousarray(self.S, np.float32),
            C_raw=np.ascontiguousarray(self.C_raw, np.float32),
            b0=np.ascontiguousarray(self.bg.b0, np.float32),
            W=np.ascontiguousarray(self.bg.W, np.float32),
            ring_offsets=np.ascontiguousarray(self.bg.offsets, np.int32),
            background_downsample=int(self.bg.ssub),
            g=np.ascontiguousarray(self.g, np.float32).reshape(self.K, self.order),
            trace_noise=np.ascontiguousarray(self.noise, np.float32),
            pixel_noise=self.pixel_noise,
            corr_image=np.ascontiguousarray(images.corr, np.float32),
            pnr_image=np.ascontiguousarray(images.pnr, np.float32),
            preprocess=self.pre,
            matched_filter=self.matched_filter,
            neuron_diameter_px=float(self.diameter),
        )


def _seeded(Y, params, pre, motion_init, preprocessed: bool):
    """A new fit of ``Y``, seeded (returns the fit, the summary images and the null)."""
    fit = _Fit(Y, params)
    fit.pre = pre
    fit.preprocessed = preprocessed
    fit.band = motion_init.band if motion_init is not None and motion_init.active else None
    # the background fit's pixel-major frames, made now: a copy of them is the seeding's
    # raw movie (a contiguous copy instead of a second transpose of the frames)
    fit.ring = bgmod.RingFitter(Y, params.background, fit.diameter)
    raw_pm = fit.ring.Yt.copy().reshape(Y.shape[1], Y.shape[2], Y.shape[0])
    # the frames' noise on a second thread: the seeding only reads Y, and much of it (the
    # greedy search, the images' single-threaded parts) leaves the other core idle
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="init-noise") as pool:
        noise = pool.submit(pixel_noise, Y)
        n0, images, null = fit.seed(Y, raw_pm=raw_pm)
        del raw_pm
        fit.pixel_noise = noise.result()
    log_calibration(null, images, f"initialisation on {Y.shape[0]} frames")
    return fit, images, null


def _alternate(fit, it: int, null, bar) -> None:
    """Alternation ``it``: background, traces, footprints, merges, then (within
    ``init.reseed_passes``) seeding on the residual."""
    bar.begin(f"background {it + 1}", f"{fit.K} neurons")
    fit.fit_background()
    bar.begin(f"traces and footprints {it + 1}", f"{fit.K} neurons")
    fit.update_traces(estimate=True)
    fit.drop_without_transient()
    fit.update_footprints()
    n_merged = fit.merge()
    logger.debug("alternation %d: %d neurons, %d merged", it + 1, fit.K, n_merged)
    if it < fit.p.init.reseed_passes:
        bar.begin(f"re-seeding {it + 1}", f"{fit.K} neurons")
        residual, raw_pm = fit.residuals()
        n_new, _, _ = fit.seed(residual, raw_pm=raw_pm, null=null, residual=True)
        del residual, raw_pm
        if n_new:
            fit.update_traces(estimate=True)


def fit_initial(frames, params: CNMFEParams, progress=None) -> InitResult:
    """Batch CNMF-E fit of the initialisation frames.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
        Any real dtype; ``T >= params.init.init_frames``. Frames with NaN/inf are replaced by
        the nearest finite frame (logged); fewer than 20 finite frames is an error. With
        ``motion.enabled`` the frames are registered first (a copy; frames whose registration
        fails are replaced by the nearest registered one and flagged in ``InitResult.motion``).
    params : CNMFEParams
    progress : bool or callable, optional
        ``True`` shows a tqdm bar on stderr (when it is a terminal); a callable is called as
        ``progress(stage, fraction_done)`` when each stage starts (``stage`` its name, e.g.
        ``"seeding"``, ``"background 1 (412 neurons)"``, ``"re-seeding 1 (380 neurons)"``;
        ``fraction_done`` the share of the fit done before it, stages weighted by their
        typical time) and ``("done", 1.0)`` at the end. It runs on the fitting thread and
        must return quickly.

    Returns
    -------
    InitResult
        Footprints with unit L2 norm; C, S, C_raw (K, T) for all T frames; b0 includes the
        neurons' baselines (``Y ~ A C + b0 + U W D (Y - A C - b0)``).

    Raises
    ------
    ValueError
        Wrong number of dimensions, fewer frames than ``init.init_frames``, constant movie.
    TypeError
        Non-numeric frames.
    OnlineCNMFEError
        Fewer than 20 finite frames.
    """
    if not isinstance(params, CNMFEParams):
        raise TypeError(f"params must be CNMFEParams, got {type(params).__name__}")
    t_start = time.perf_counter()
    ip = params.init
    n_alt = ip.n_alternations
    # (freed movie-sized arrays reused for the fit's length: no page faults for each new one)
    with reuse_freed_memory(), contextlib.closing(Progress(progress, stage_weights(params))) as bar:
        bar.begin("preprocessing")
        Y = validate_frames(frames, params)
        # on the frames as recorded; a preprocessed movie's seeds calibrate the seed tests
        preprocessed = warn_if_preprocessed(Y) is not None
        pre = preprocess_initial(Y, params)  # line noise, corrupt frames, FOV, bleaching
        # registered in place before the fit (template, shifts: online_cnmfe.model.motion)
        motion_init = None
        if params.motion.enabled:
            bar.begin("motion correction")
            fov = pre.fov if pre is not None and pre.fov_found else None  # the lens: not registered
            motion_init = register_initial(Y, params, fov)
            if pre is not None:  # where the registered frames saw the lens (else None)
                pre.fov_registered = seen_fov(motion_init.lens_seen, params.preprocess.fov_min_seen)
        bar.begin("seeding")
        fit, images, null = _seeded(Y, params, pre, motion_init, preprocessed)
        _alternate(fit, 0, null, bar)
        d_cells = cell_diameter(fit) if ip.adapt_diameter else None
        if d_cells is not None:  # cells much wider than declared: fit again at their size,
            # with the first seeding's temporal filter (the refit is about size; a second
            # "auto" choice on the same frames flipped on 54 vs 1.3 x 38 + 5 peaks on minian)
            keep = {"detection.matched_filter": "on" if fit.matched_filter else "off"}
            params = params.replace(**{"data.neuron_diameter_px": d_cells, **keep})
            bar.begin("seeding at the cells' diameter")
            fit, images, null = _seeded(Y, params, pre, motion_init, preprocessed)
            _alternate(fit, 0, null, bar)
        for it in range(1, n_alt):
            _alternate(fit, it, null, bar)
        bar.begin("acceptance", f"{fit.K} neurons")
        n_out = fit.prune_out_of_focus()
        logger.debug("%d out-of-focus components removed", n_out)
        fit.accept()
        bar.begin("final background and traces", f"{fit.K} neurons")
        fit.fit_background()
        fit.update_traces(estimate=True)
        # b0 of the result holds the neurons' baselines (the online model has no b)
        fit.bg.b0 = (fit.bg.b0 + fit.A @ fit.b).astype(np.float32)
        result = fit.result(images)
        result.motion = motion_init
        bar.finish()
    logger.info(
        "initialisation: %d neurons from %d frames of %dx%d in %.1f s",
        result.n_components,
        Y.shape[0],
        Y.shape[1],
        Y.shape[2],
        time.perf_counter() - t_start,
    )
    return result
