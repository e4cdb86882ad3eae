"""CNMF-E initialisation on the first frames: :func:`fit_initial` -> :class:`InitResult`.

Symbols (CNMF-E): Y (T, H, W) frames, A (n_pixels, K) footprints, C (K, T) denoised calcium,
C_raw the demixed traces above their baselines, S deconvolved activity, b0 baseline image, W the
ring background on the grid downsampled by ``ssub``; ``Y - B`` the background-subtracted movie.

Steps (CaImAn ``greedyROI_corr`` with the improvements of DESIGN.md section 4):

1. summary images of the mean-centred Gaussian filtered movie (noise, PNR, correlation);
2. greedy corr x PNR seeding with local regression footprints (:mod:`online_cnmfe.seeding`);
3. ``n_alternations`` times: ring background fit with outlier clipping
   (:mod:`online_cnmfe.background`), traces by block-coordinate descent with OASIS
   (:mod:`online_cnmfe.deconvolution`), footprints by HALS on the sufficient statistics with
   supports that may grow (:mod:`online_cnmfe.footprints`), merging of duplicates, and in the
   first ``reseed_passes`` rounds seeding again on the residual;
4. final background refit and traces.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import scipy.sparse

from online_cnmfe import background as bgmod
from online_cnmfe._kernels.hals import hals_traces, trace_residuals
from online_cnmfe._kernels.oasis_batch import bcd_deconvolve
from online_cnmfe.deconvolution import decay_root, default_g, estimate_ar, trace_noise
from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.footprints import clean_footprints, compute_cy, hals_footprints, search_regions
from online_cnmfe.init_result import InitResult
from online_cnmfe.merging_batch import merge_components
from online_cnmfe.params import CNMFEParams
from online_cnmfe.seeding import seed_neurons
from online_cnmfe.summary_images import center_psf_kernel, summary_images

logger = logging.getLogger(__name__)

MIN_PIXELS = 3
FINAL_KAPPA_SCALE = 1.5  # fitted components: out-of-focus test at 1.5 x init.out_of_focus_ratio


def _filter_response(kernel: np.ndarray, sigma: float, ssub: int = 1) -> float:
    """Peak of the filtered image of a unit-peak Gaussian of ``sigma`` (full-resolution) pixels,
    block-averaged by ``ssub`` before filtering, relative to the averaged Gaussian's peak."""
    r = kernel.shape[0] // 2
    half = (r + 1) * ssub + int(4 * sigma)
    yy, xx = np.mgrid[-half : half + ssub, -half : half + ssub] + 0.5 * (ssub - 1)
    g = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    n = g.shape[0] // ssub
    g = g[: n * ssub, : n * ssub].reshape(n, ssub, n, ssub).mean(axis=(1, 3))
    c = int(np.argmax(g.max(axis=1)))
    c2 = int(np.argmax(g[c]))
    win = g[c - r : c + r + 1, c2 - r : c2 + r + 1]
    return float((kernel * win).sum() / g[c, c2])


class _Progress:
    """Stage progress: a tqdm bar (``True``), a callable ``f(stage, fraction)`` or nothing."""

    def __init__(self, progress, n_stages: int) -> None:
        self._bar = None
        self._fn = progress if callable(progress) else None
        self._n = n_stages
        self._i = 0
        if progress is True:
            from tqdm import tqdm

            self._bar = tqdm(
                total=n_stages,
                desc="init",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
                leave=False,
            )

    def step(self, stage: str) -> None:
        self._i += 1
        logger.debug("init stage %s done", stage)
        if self._bar is not None:
            self._bar.set_postfix_str(stage)
            self._bar.update(1)
        if self._fn is not None:
            self._fn(stage, self._i / self._n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _validate(frames, params: CNMFEParams) -> np.ndarray:
    """float32 (T, H, W) copy with non-finite frames replaced by the nearest finite frame."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(
            f"frames must be a (T, H, W) array; got {frames.ndim} dimension(s) with shape "
            f"{frames.shape}. Stack the frames along axis 0."
        )
    if not (np.issubdtype(frames.dtype, np.number) and not np.iscomplexobj(frames)):
        raise TypeError(f"frames must be a real numeric array, got dtype {frames.dtype}")
    T, H, W = frames.shape
    need = params.init.init_frames
    if T < need:
        raise ValueError(
            f"got {T} frames for the initialisation but init.init_frames={need}; pass at least "
            f"{need} frames or lower init.init_frames (minimum 20), e.g. "
            f"--set init.init_frames={max(20, T)}"
        )
    if H < 3 or W < 3:
        raise ValueError(f"frames of {H}x{W} pixels are too small; expected at least 3x3")
    Y = np.ascontiguousarray(frames, dtype=np.float32)
    if Y is frames:
        Y = Y.copy()
    bad = ~np.isfinite(Y).all(axis=(1, 2))
    n_bad = int(bad.sum())
    if n_bad:
        good = np.flatnonzero(~bad)
        if good.size < 20:
            raise OnlineCNMFEError(
                f"{n_bad} of {T} initialisation frames contain NaN or infinite values and only "
                f"{good.size} remain; at least 20 finite frames are needed"
            )
        idx = np.flatnonzero(bad)
        nearest = good[np.clip(np.searchsorted(good, idx), 0, good.size - 1)]
        Y[idx] = Y[nearest]
        logger.warning(
            "initialisation: %d frame(s) with NaN/inf replaced by the nearest finite frame", n_bad
        )
    lo, hi = float(Y.min()), float(Y.max())
    if hi - lo <= 1e-6 * max(abs(hi), abs(lo), 1.0):
        raise ValueError(
            f"the initialisation movie is constant (every pixel = {lo:g}); check the source "
            "(lens cap, wrong channel, dropped frames)"
        )
    return Y


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
        self.kappa_neuron = 1.0 / _filter_response(self.kernel, d / 4.0)
        self.max_kappa = params.init.out_of_focus_ratio * self.kappa_neuron
        self.A = scipy.sparse.csc_array((self.H * self.W, 0), dtype=np.float32)
        self.C = np.zeros((0, self.T), np.float32)
        self.C_raw = np.zeros((0, self.T), np.float32)
        self.S = np.zeros((0, self.T), np.float32)
        self.b = np.zeros(0, np.float32)
        self.g = np.zeros((0, self.order), np.float32)
        self.noise = np.zeros(0, np.float32)
        self.bg = None
        self.Yt = None

    @property
    def K(self) -> int:
        return self.C.shape[0]

    # ---- seeding --------------------------------------------------------------------------
    def seed(self, data: np.ndarray, min_corr: float, min_pnr: float, raw=None):
        """Seed on ``data`` (frames or a residual) and append the new neurons.

        With ``init.seed_downsample = s > 1`` the search runs on s x s block averages (sizes
        divided by s, thresholds unchanged: CaImAn's ``min_pnr x s`` loses a quarter of the
        neurons at s = 2 on the 256x256 simulation, unchanged thresholds find 97 % with no
        false positive) and the footprints are upsampled back (nearest neighbour) for HALS.
        Meant for neurons of at least ~12 px: smaller ones are only a few grid pixels wide.
        """
        s = self.p.init.seed_downsample
        if raw is None:
            raw = data.copy()
        if s > 1:
            data = bgmod.downsample_movie(data, s)
            raw = bgmod.downsample_movie(raw, s)
        gsig = self.gsig / s
        kernel = center_psf_kernel(gsig)
        filtered, images = summary_images(
            data, gsig, remove_global=self.p.init.remove_global_fluctuation
        )
        filtered -= images.filtered_mean[None]
        res = seed_neurons(
            filtered,
            raw,
            images.noise,
            images.corr.copy(),
            images.pnr.copy(),
            gsiz=max(3, int(round(self.gsiz / s))),
            min_corr=min_corr,
            min_pnr=min_pnr,
            kernel=kernel,
            max_neurons=max(0, self.p.init.max_neurons - self.K),
            max_halfmax_area=self.max_halfmax_area / s**2,
            max_kappa=self.p.init.out_of_focus_ratio
            / _filter_response(kernel, self.diameter / 4.0, s),
        )
        del filtered, raw
        if s > 1:
            images = _upsample_images(images, s, self.dims)
        if res.n_components:
            dense = res.dense_footprints(data.shape[1:])
            if s > 1:
                dense = _upsample_columns(dense, data.shape[1:], s, self.dims)
            self.append(scipy.sparse.csc_array(dense), res.traces)
        return res.n_components, images

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
        Ctot = self.full_traces()
        self.bg, grid = bgmod.fit_ring_background(
            self.Y, self.A, Ctot, self.p.background, self.diameter, return_grid=True
        )
        Yb = bgmod.subtract_background(self.Y, self.A, Ctot, self.bg, grid=grid)
        del grid
        self.Yt = np.ascontiguousarray(Yb.reshape(self.T, -1).T)

    def residual(self) -> np.ndarray:
        """``(Y - B) - A (C + b)`` as (T, H, W)."""
        R = self.Yt - np.asarray(self.A @ self.full_traces(), np.float32)
        return np.ascontiguousarray(R.T).reshape(self.T, self.H, self.W)

    def raw_residual(self) -> np.ndarray:
        """``Y - A (C + b)`` as (T, H, W): the frames without the known neurons."""
        AC = np.asarray(self.A @ self.full_traces(), np.float32)
        return self.Y - np.ascontiguousarray(AC.T).reshape(self.T, self.H, self.W)

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
        """Raw-to-filtered amplitude ratio of each component at its peak pixel.

        ``kappa_k = cov(r, c_k) / cov(f, c_k)`` with r the frames and f the filtered frames at
        the footprint's peak, both without the other components. A neuron of the expected size
        gives about ``1 / (kernel * gaussian(d / 4))(0)``; broad out-of-focus cells give several
        times more (the mean-centred filter removes them). Single-pixel estimates are noisy for
        weak neurons under a strong background (even negative), so only the upper side is used.
        """
        K = self.K
        if K == 0:
            return np.zeros(0)
        H, W = self.dims
        kr = self.kernel.shape[0] // 2
        A = scipy.sparse.csc_array(self.A)
        full = self.full_traces()
        peaks = np.array(
            [
                A.indices[A.indptr[k] + np.argmax(A.data[A.indptr[k] : A.indptr[k + 1]])]
                for k in range(K)
            ]
        )
        pr, pc = np.divmod(peaks, W)
        # kernel windows around the peaks as rows of a sparse (K, n_pixels) matrix
        rows, cols, vals, f_own = [], [], [], np.empty((K, self.T))
        for k in range(K):
            r0, r1 = max(0, pr[k] - kr), min(H, pr[k] + kr + 1)
            c0, c1 = max(0, pc[k] - kr), min(W, pc[k] + kr + 1)
            kw = self.kernel[r0 - pr[k] + kr : r1 - pr[k] + kr, c0 - pc[k] + kr : c1 - pc[k] + kr]
            # borders: the kernel is cut at the image edge (no replication)
            f_own[k] = np.tensordot(self.Y[:, r0:r1, c0:c1], kw, axes=([1, 2], [0, 1]))
            pix = (np.arange(r0, r1)[:, None] * W + np.arange(c0, c1)[None]).ravel()
            rows.append(np.full(pix.size, k))
            cols.append(pix)
            vals.append(kw.ravel())
        Kmat = scipy.sparse.csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(K, H * W),
        )
        AF = (Kmat @ A).toarray()  # filtered footprints of all components at each peak
        AP = A[peaks].toarray()  # footprints of all components at each peak
        np.fill_diagonal(AF, 0.0)
        np.fill_diagonal(AP, 0.0)
        f = f_own - AF @ full
        r = self.Y.reshape(self.T, -1)[:, peaks].T - AP @ full
        c = self.C - self.C.mean(axis=1, keepdims=True)
        num = np.einsum("kt,kt->k", r, c)
        den = np.einsum("kt,kt->k", f, c)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), -np.inf)

    def prune_out_of_focus(self) -> int:
        """Drop components whose kappa says out-of-focus; returns how many."""
        if self.K == 0:
            return 0
        kap = self.kappa()
        bad = kap > FINAL_KAPPA_SCALE * self.p.init.out_of_focus_ratio * self.kappa_neuron
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
        )


def fit_initial(frames, params: CNMFEParams, progress=None) -> InitResult:
    """Batch CNMF-E fit of the initialisation frames.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W)
        Any real dtype; ``T >= params.init.init_frames``. Frames with NaN/inf are replaced by
        the nearest finite frame (logged); fewer than 20 finite frames is an error.
    params : CNMFEParams
    progress : bool or callable, optional
        ``True`` shows a tqdm bar on stderr (when it is a terminal); a callable is called as
        ``progress(stage_name, fraction_done)``.

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
    bar = _Progress(progress, 3 + 2 * n_alt)
    try:
        Y = _validate(frames, params)
        fit = _Fit(Y, params)
        n0, images = fit.seed(Y, ip.min_corr, ip.min_pnr)
        _warn_if_thresholds_too_high(images, ip)
        fit.pixel_noise = _pixel_noise(Y)
        bar.step(f"seeding ({n0} neurons)")
        for it in range(n_alt):
            fit.fit_background()
            fit.update_traces(estimate=True)
            fit.update_footprints()
            n_merged = fit.merge()
            bar.step(f"alternation {it + 1}: {fit.K} neurons, {n_merged} merged")
            if it < ip.reseed_passes:
                n_new, _ = fit.seed(
                    fit.residual(), ip.reseed_min_corr, ip.reseed_min_pnr, raw=fit.raw_residual()
                )
                if n_new:
                    fit.update_traces(estimate=True)
            bar.step(f"reseeding {it + 1}")
        n_out = fit.prune_out_of_focus()
        logger.debug("%d out-of-focus components removed", n_out)
        fit.fit_background()
        fit.update_traces(estimate=True)
        bar.step("final background and traces")
        # b0 of the result holds the neurons' baselines (the online model has no b)
        fit.bg.b0 = (fit.bg.b0 + fit.A @ fit.b).astype(np.float32)
        result = fit.result(images)
        bar.step("done")
    finally:
        bar.close()
    logger.info(
        "initialisation: %d neurons from %d frames of %dx%d in %.1f s",
        result.n_components,
        Y.shape[0],
        Y.shape[1],
        Y.shape[2],
        time.perf_counter() - t_start,
    )
    return result


def _warn_if_thresholds_too_high(images, ip) -> None:
    """Say so when hardly any pixel passes both seeding thresholds (preprocessed or very
    smooth data have a different PNR scale), with the percentiles to choose new ones."""
    ok = (images.pnr >= ip.min_pnr) & (images.corr >= ip.min_corr)
    if ok.mean() >= 1e-3:
        return
    p_pnr = np.percentile(images.pnr, [90, 99, 99.9])
    p_corr = np.percentile(images.corr, [90, 99, 99.9])
    logger.warning(
        "only %d pixels pass init.min_pnr=%g and init.min_corr=%g; the PNR image's 90/99/99.9th "
        "percentiles are %.1f/%.1f/%.1f and the correlation image's %.2f/%.2f/%.2f. If neurons "
        "are missed, lower init.min_pnr / init.min_corr (and init.reseed_min_*) towards these "
        "values",
        int(ok.sum()),
        ip.min_pnr,
        ip.min_corr,
        *p_pnr,
        *p_corr,
    )


def _upsample(img: np.ndarray, s: int, dims: tuple[int, int]) -> np.ndarray:
    return np.kron(img, np.ones((s, s), img.dtype))[: dims[0], : dims[1]]


def _upsample_columns(dense: np.ndarray, small: tuple[int, int], s: int, dims) -> np.ndarray:
    """Nearest-neighbour upsampling of (n_small_pixels, K) footprints to (n_pixels, K)."""
    K = dense.shape[1]
    out = np.empty((dims[0] * dims[1], K), np.float32)
    for k in range(K):
        out[:, k] = _upsample(dense[:, k].reshape(small), s, dims).ravel()
    return out


def _upsample_images(images, s: int, dims):
    from online_cnmfe.summary_images import SummaryImages

    return SummaryImages(
        **{name: _upsample(getattr(images, name), s, dims) for name in SummaryImages.__slots__}
    )


def _pixel_noise(Y: np.ndarray) -> np.ndarray:
    from online_cnmfe.summary_images import noise_psd

    return noise_psd(Y).ravel().astype(np.float32)
