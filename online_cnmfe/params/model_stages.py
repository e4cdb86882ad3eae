"""Parameters of the model's stages: the recording (data), initialisation, background,
deconvolution, the online update and its slow path, and detection."""

from __future__ import annotations

from dataclasses import dataclass

from online_cnmfe.params._checks import check, fraction, int_at_least, positive


@dataclass(frozen=True, slots=True, kw_only=True)
class DataParams:
    """What the recording is: the user mainly sets these two or three values."""

    frame_rate_hz: float = 20.0
    neuron_diameter_px: float = 13.0
    decay_time_s: float = 0.4
    # size of one pixel in the sample (micrometres), for scale bars and exports; None: unknown
    pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        positive("frame_rate_hz", self.frame_rate_hz)
        if self.pixel_size_um is not None:
            positive("pixel_size_um", self.pixel_size_um)
        check(
            "neuron_diameter_px",
            self.neuron_diameter_px,
            3 <= self.neuron_diameter_px <= 100,
            "[3, 100] pixels",
        )
        positive("decay_time_s", self.decay_time_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitParams:
    """Batch CNMF-E on the first frames (corr-PNR seeding, ring background, alternating NMF)."""

    init_frames: int = 300
    gaussian_sigma_px: float | None = None  # None: neuron_diameter_px / 4
    # seeding thresholds are calibrated on the movie's noise: detection.false_seeds_per_fov
    seed_downsample: int = 1
    max_neurons: int = 5000
    n_alternations: int = 2
    reseed_passes: int = 1
    merge_corr_threshold: float = 0.7
    merge_overlap_threshold: float = 0.5
    # footprints wider than this x the expected neuron (half-maximum diameter) are treated as
    # out-of-focus neuropil/background, not neurons
    max_diameter_factor: float = 1.8
    # regress the movie's mean-intensity fluctuation out of the filtered movie before seeding
    # (a global illumination/bleaching change otherwise makes every textured pixel a seed)
    remove_global_fluctuation: bool = False
    # out-of-focus test: a seed whose raw/filtered amplitude ratio exceeds this x that of a
    # neuron of the expected size is rejected (fitted components at 1.5x this); inf disables
    out_of_focus_ratio: float = 2.0
    # acceptance of the fitted components (online_cnmfe.model.initialization.acceptance): a run of
    # decay_time_s * frame_rate_hz / 2 (>= 2) consecutive frames all above this robust z-score
    min_transient_snr: float = 2.0
    # correlation of the footprint with its event-triggered image (CaImAn r_values); -1 disables
    min_spatial_corr: float = 0.4
    # size of a fitted component, (sigma of its best-fitting Gaussian / (d / 4))^2 (1 for the
    # expected neuron, as detection.max_size_ratio online): above this it is out-of-focus
    # neuropil or background, not a cell (held-out 256² simulations: cells 0.6-1.6, such
    # components 2-5; BENCHMARKS.md "Detection"). The limit is this x the components' 25th
    # percentile when that is above 1 (cells bigger than data.neuron_diameter_px); inf disables
    max_size_ratio: float = 2.5
    # sharpness of a footprint, the share of its norm at the cell's scale
    # (footprint_shape.sharpness_of): a component under this x the median of the 30
    # strongest is a blurred, out-of-focus structure, not a cell (held-out 256² simulations:
    # cells 0.54-0.63, neuropil components 0.34-0.51 against a median 0.59-0.60; BENCHMARKS.md
    # "Out-of-focus components"). Applies to initial components and to neurons born online
    # once grown; 0 disables
    min_sharpness_ratio: float = 0.75
    # when the fitted footprints' median size is > 2x the expected neuron's (cells much wider
    # than data.neuron_diameter_px, e.g. after a median filter), fit again at the cells' own
    # diameter (logged with the value to set; the online search keeps the declared one)
    adapt_diameter: bool = True

    def __post_init__(self) -> None:
        int_at_least("init_frames", self.init_frames, 20)
        check("max_size_ratio", self.max_size_ratio, self.max_size_ratio > 1, "> 1")
        check(
            "min_sharpness_ratio",
            self.min_sharpness_ratio,
            0 <= self.min_sharpness_ratio < 1,
            "in [0, 1)",
        )
        check("min_transient_snr", self.min_transient_snr, self.min_transient_snr >= 0, ">= 0")
        check(
            "min_spatial_corr",
            self.min_spatial_corr,
            -1 <= self.min_spatial_corr <= 1,
            "[-1, 1]",
        )
        check(
            "max_diameter_factor", self.max_diameter_factor, self.max_diameter_factor >= 1, ">= 1"
        )
        if self.gaussian_sigma_px is not None:
            positive("gaussian_sigma_px", self.gaussian_sigma_px)
        check("out_of_focus_ratio", self.out_of_focus_ratio, self.out_of_focus_ratio >= 1, ">= 1")
        check("seed_downsample", self.seed_downsample, self.seed_downsample in (1, 2, 3, 4), "1-4")
        int_at_least("max_neurons", self.max_neurons, 1)
        int_at_least("n_alternations", self.n_alternations, 1)
        int_at_least("reseed_passes", self.reseed_passes, 0)
        fraction("merge_corr_threshold", self.merge_corr_threshold)
        fraction("merge_overlap_threshold", self.merge_overlap_threshold)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackgroundParams:
    """Ring model ``B = b0 + U W D (y - A c - b0)`` on a grid downsampled by ``downsample``."""

    ring_radius_factor: float = 0.8  # ring radius = factor x neuron diameter (CaImAn 1.4;
    # 0.8 models out-of-focus neuropil better: F1 0.93 vs 0.82, 128x128 sim, BENCHMARKS.md)
    downsample: int = 2  # ssub_B
    ridge: float = 1e-3  # relative to the trace of each pixel's ring covariance
    outlier_clip_sigma: float = 2.0  # activity above prediction + k*sigma is clipped before fitting
    forgetting_time_s: float = 300.0  # time constant of the exponential forgetting of statistics
    refresh_period_frames: int = 200  # a full W refresh is spread over this many frames

    def __post_init__(self) -> None:
        check(
            "ring_radius_factor",
            self.ring_radius_factor,
            0.5 <= self.ring_radius_factor <= 4,
            "[0.5, 4]",
        )
        check("downsample", self.downsample, self.downsample in (1, 2, 3, 4), "1, 2, 3 or 4")
        check("ridge", self.ridge, 0 <= self.ridge <= 1, "[0, 1]")
        positive("outlier_clip_sigma", self.outlier_clip_sigma)
        positive("forgetting_time_s", self.forgetting_time_s)
        int_at_least("refresh_period_frames", self.refresh_period_frames, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeconvParams:
    """OASIS deconvolution of each trace (AR(1) or AR(2))."""

    ar_order: int = 1
    estimate_kinetics: bool = True  # else g from DataParams.decay_time_s
    min_spike_sigma: float = 3.0  # s_min = min_spike_sigma * noise * sqrt(1 - sum(g))... (>=0)
    sparsity_penalty: float = 0.0  # OASIS lambda, in units of the trace noise (online)
    pool_capacity: int = 64  # online OASIS pools kept per neuron (older pools are frozen)

    def __post_init__(self) -> None:
        check("ar_order", self.ar_order, self.ar_order in (1, 2), "1 or 2")
        check("min_spike_sigma", self.min_spike_sigma, self.min_spike_sigma >= 0, ">= 0")
        check("sparsity_penalty", self.sparsity_penalty, self.sparsity_penalty >= 0, ">= 0")
        int_at_least("pool_capacity", self.pool_capacity, 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineParams:
    """The per-frame update and its amortised slow path."""

    n_trace_sweeps: int = 3
    residual_buffer_frames: int = 100
    stats_forgetting_time_s: float = 300.0
    footprint_update_period_frames: int = 400  # every footprint refreshed once per period
    nan_policy: str = "skip"  # skip frames with NaN (recorded), or "zero"
    # A frame with a pixel further outside the initialisation frames' [min, max] than this many
    # times its width is skipped (recorded with the reason); 0: only NaN/inf are refused.
    max_pixel_excursion_ranges: float = 10.0
    footprint_growth_px: int = 2  # allowed region = footprint support dilated by this
    slow_ring_refresh_period_frames: int = 2000  # every W row re-solved once per period
    slow_ring_samples: int = 32  # background frames kept (decayed) for the W refresh
    slow_ring_max_rows: int = 12  # W rows solved per frame at most (stretches the period)
    slow_ring_prior_samples: float = 16.0  # weight of the current W, in sample units
    slow_merge_checks_per_frame: int = 2  # neurons checked for a merge partner per frame
    slow_remove_inactive_s: float = 600.0  # silent this long (and faded) -> removed
    slow_stats_stride_frames: int = 2  # CY/CC accumulate every this many frames (halves cost)
    slow_emit_period_frames: int = 4  # footprint/W refreshes handed to the model this often
    slow_detect_period_frames: int = 4  # candidate evaluations only on one frame in this many
    slow_evaluations_per_step: int = 1  # candidates evaluated on such a frame at most
    slow_detect_stride_frames: int = 2  # detection images updated on one frame in this many
    # the re-seeding pass over the residual buffer (detection.reseed_period_s): buffer frames
    # read into its images per step, and queued candidates evaluated per evaluation step
    reseed_frames_per_step: int = 25
    reseed_evaluations_per_step: int = 4

    def __post_init__(self) -> None:
        int_at_least("n_trace_sweeps", self.n_trace_sweeps, 1)
        int_at_least("residual_buffer_frames", self.residual_buffer_frames, 10)
        positive("stats_forgetting_time_s", self.stats_forgetting_time_s)
        int_at_least("footprint_update_period_frames", self.footprint_update_period_frames, 1)
        check(
            "nan_policy", self.nan_policy, self.nan_policy in ("skip", "zero"), "'skip' or 'zero'"
        )
        check(
            "max_pixel_excursion_ranges",
            self.max_pixel_excursion_ranges,
            self.max_pixel_excursion_ranges >= 0,
            ">= 0 (0 disables the check)",
        )
        int_at_least("footprint_growth_px", self.footprint_growth_px, 0)
        int_at_least("slow_ring_refresh_period_frames", self.slow_ring_refresh_period_frames, 1)
        int_at_least("slow_ring_samples", self.slow_ring_samples, 1)
        int_at_least("slow_ring_max_rows", self.slow_ring_max_rows, 1)
        check(
            "slow_ring_prior_samples",
            self.slow_ring_prior_samples,
            self.slow_ring_prior_samples > 0,
            "> 0",
        )
        int_at_least("slow_merge_checks_per_frame", self.slow_merge_checks_per_frame, 0)
        positive("slow_remove_inactive_s", self.slow_remove_inactive_s)
        int_at_least("slow_stats_stride_frames", self.slow_stats_stride_frames, 1)
        int_at_least("slow_emit_period_frames", self.slow_emit_period_frames, 1)
        int_at_least("slow_detect_period_frames", self.slow_detect_period_frames, 1)
        int_at_least("slow_evaluations_per_step", self.slow_evaluations_per_step, 0)
        int_at_least("slow_detect_stride_frames", self.slow_detect_stride_frames, 1)
        int_at_least("reseed_frames_per_step", self.reseed_frames_per_step, 1)
        int_at_least("reseed_evaluations_per_step", self.reseed_evaluations_per_step, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionParams:
    """Detection of neurons: the initialisation's seeding and the online search in the residual.

    ``false_seeds_per_fov`` is the one sensitivity knob of both: their thresholds are where
    noise alone (a null measured on the movie) is expected to give this many seeds or
    candidates per field of view of 256 x 256 pixels (scaled by area for other frame sizes).
    Higher finds weaker cells and costs more candidates to test (the acceptance tests remove
    what is noise); lower is stricter.
    """

    enabled: bool = True
    false_seeds_per_fov: float = 3.0
    # seeds and online candidates found on frames averaged in time with the indicator's decay
    # (exponential, time constant data.decay_time_s): a matched filter for transients, 1.6x
    # the single-frame peak-to-noise at 10 Hz and 0.4 s; the nulls the thresholds come from
    # are filtered the same way. "auto": on when it gives more seeds above the calibrated
    # threshold at the initialisation (white noise in time, e.g. a preprocessed Miniscope
    # movie), off where slow fluctuations survive the spatial filter; "on" / "off" force it
    matched_filter: str = "auto"
    # where the matched filter is off, the online search's statistic (and its null, the
    # sign-flipped residual) is computed on the residual averaged in time over the transient's
    # rise (exponential, this time constant; every frame enters it, also those the detection
    # images skip): a deliberate noise filter, its threshold calibrated on the averaged null.
    # 0 (default): single frames. 0.1 finds late-born cells sooner (held-out late_born 32 of
    # 32 vs 30) but loses strong_background 0.970 -> 0.945 (BENCHMARKS, issue 12 evening)
    search_average_s: float = 0.0
    max_candidates_per_frame: int = 3
    confirm_events: int = 2  # a candidate must recur this many times before promotion ...
    promote_event_snr: float = 10.0  # ... unless one of its events is this strong
    max_neurons: int = 5000
    min_event_snr: float = 5.0  # transient z-score (N-frame mean / noise) of a counted event
    event_separation_s: float = 0.5  # two events closer than this count once
    min_space_corr: float = 0.6  # corr(footprint, mean active frame) of a candidate
    # a candidate's size, (sigma of its best-fitting Gaussian / (d / 4))^2, must lie in
    # [min_size_ratio, max_size_ratio]: 1 for the expected neuron; on the held-out 256²
    # simulation cells measured 0.6-1.6, the false candidates 2.5-5 (BENCHMARKS.md "Detection")
    min_size_ratio: float = 0.2
    max_size_ratio: float = 1.8
    min_compactness: float = 0.7  # footprint energy within 0.75 diameter of its centroid
    # a candidate whose trace, demixed jointly with its neighbours, correlates above this with
    # one of theirs is that neighbour's footprint error, not a new cell
    duplicate_corr: float = 0.5
    max_decay_s: float = 2.0  # time constant of the decaying max of the PNR image
    pool_size: int = 32  # candidates followed at once while awaiting confirmation
    pool_expiry_s: float = 30.0  # a candidate not seen again for this long is forgotten
    merge_corr_threshold: float = 0.8  # touching neurons with trace corr above this merge
    # a re-seeding pass over the residual buffer every this many seconds (0: none): the
    # initialisation's seeding statistic on the last online.residual_buffer_frames frames, its
    # threshold from the sign-flipped residual, its best reseed_max_candidates peaks tested as
    # the online search's candidates (slow_path/reseed.py). Off by default: it costs the slow
    # path's thread 1 ms of CPU per frame at 256² and 4.6 ms at 608² (every second), which on
    # two cores put arrival -> traces p99 over 5 ms at 256², for +5 visible cells covered on the
    # minian clip and no held-out regime better by more than 0.004 (BENCHMARKS.md)
    reseed_period_s: float = 0.0
    reseed_max_candidates: int = 32

    def __post_init__(self) -> None:
        check(
            "false_seeds_per_fov",
            self.false_seeds_per_fov,
            0 < self.false_seeds_per_fov <= 1000,
            "(0, 1000] expected false seeds per field of view",
        )
        check(
            "matched_filter",
            self.matched_filter,
            self.matched_filter in ("auto", "on", "off"),
            '"auto", "on" or "off"',
        )
        check(
            "search_average_s",
            self.search_average_s,
            0 <= self.search_average_s <= 10,
            "[0, 10] s (0: single frames)",
        )
        int_at_least("max_candidates_per_frame", self.max_candidates_per_frame, 1)
        int_at_least("confirm_events", self.confirm_events, 1)
        int_at_least("max_neurons", self.max_neurons, 1)
        positive("min_event_snr", self.min_event_snr)
        check(
            "promote_event_snr",
            self.promote_event_snr,
            self.promote_event_snr >= self.min_event_snr,
            f">= min_event_snr ({self.min_event_snr})",
        )
        positive("event_separation_s", self.event_separation_s)
        fraction("min_space_corr", self.min_space_corr, -1.0, 1.0)
        positive("min_size_ratio", self.min_size_ratio)
        check(
            "max_size_ratio",
            self.max_size_ratio,
            self.max_size_ratio > self.min_size_ratio,
            f"> min_size_ratio ({self.min_size_ratio})",
        )
        fraction("min_compactness", self.min_compactness)
        fraction("duplicate_corr", self.duplicate_corr, -1.0, 1.0)
        positive("max_decay_s", self.max_decay_s)
        int_at_least("pool_size", self.pool_size, 1)
        positive("pool_expiry_s", self.pool_expiry_s)
        check("reseed_period_s", self.reseed_period_s, self.reseed_period_s >= 0, ">= 0 (0: off)")
        int_at_least("reseed_max_candidates", self.reseed_max_candidates, 1)
        fraction("merge_corr_threshold", self.merge_corr_threshold)
