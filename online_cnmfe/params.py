"""Validated parameter objects, one per stage, composed into :class:`CNMFEParams`.

Each key exists in exactly one place; units are in the names. Parameters are never mutated:
values derived from them (ring radius in pixels, filter sizes, AR coefficients) are computed
once into frozen objects elsewhere. ``__post_init__`` raises ``ValueError`` naming the field,
the value received and the allowed range; it never corrects silently.

Stage functions take the params of their own stage (plus :class:`DataParams`, which describes
the recording: frame rate, neuron size, indicator kinetics).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _positive(name: str, value: float) -> None:
    _check(name, value, value is not None and value > 0 and math.isfinite(value), "> 0")


def _fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    _check(name, value, low <= value <= high, f"[{low}, {high}]")


def _int_at_least(name: str, value: int, low: int) -> None:
    _check(name, value, isinstance(value, int) and value >= low, f"an integer >= {low}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DataParams:
    """What the recording is: the user mainly sets these two or three values."""

    frame_rate_hz: float = 20.0
    neuron_diameter_px: float = 13.0
    decay_time_s: float = 0.4

    def __post_init__(self) -> None:
        _positive("frame_rate_hz", self.frame_rate_hz)
        _check(
            "neuron_diameter_px",
            self.neuron_diameter_px,
            3 <= self.neuron_diameter_px <= 100,
            "[3, 100] pixels",
        )
        _positive("decay_time_s", self.decay_time_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitParams:
    """Batch CNMF-E on the first frames (corr-PNR seeding, ring background, alternating NMF)."""

    init_frames: int = 300
    gaussian_sigma_px: float | None = None  # None: neuron_diameter_px / 4
    min_corr: float = 0.8
    min_pnr: float = 8.0
    seed_downsample: int = 1
    max_neurons: int = 5000
    n_alternations: int = 2
    reseed_passes: int = 1
    merge_corr_threshold: float = 0.7
    merge_overlap_threshold: float = 0.5
    # footprints wider than this x the expected neuron (half-maximum diameter) are treated as
    # out-of-focus neuropil/background, not neurons
    max_diameter_factor: float = 1.8
    # thresholds of the search on the residual (MATLAB CNMF-E min_corr_res, min_pnr_res)
    reseed_min_corr: float = 0.7
    reseed_min_pnr: float = 6.0
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
    # on a movie that looks preprocessed (quantised / background-removed) where < 0.1 % of the
    # pixels pass min_pnr and min_corr, seed with thresholds from its PNR/corr images instead
    auto_thresholds: bool = True

    def __post_init__(self) -> None:
        _int_at_least("init_frames", self.init_frames, 20)
        _check("min_transient_snr", self.min_transient_snr, self.min_transient_snr >= 0, ">= 0")
        _check(
            "min_spatial_corr",
            self.min_spatial_corr,
            -1 <= self.min_spatial_corr <= 1,
            "[-1, 1]",
        )
        _check(
            "max_diameter_factor", self.max_diameter_factor, self.max_diameter_factor >= 1, ">= 1"
        )
        if self.gaussian_sigma_px is not None:
            _positive("gaussian_sigma_px", self.gaussian_sigma_px)
        _fraction("min_corr", self.min_corr)
        _positive("min_pnr", self.min_pnr)
        _check("out_of_focus_ratio", self.out_of_focus_ratio, self.out_of_focus_ratio >= 1, ">= 1")
        _fraction("reseed_min_corr", self.reseed_min_corr)
        _positive("reseed_min_pnr", self.reseed_min_pnr)
        _check("seed_downsample", self.seed_downsample, self.seed_downsample in (1, 2, 3, 4), "1-4")
        _int_at_least("max_neurons", self.max_neurons, 1)
        _int_at_least("n_alternations", self.n_alternations, 1)
        _int_at_least("reseed_passes", self.reseed_passes, 0)
        _fraction("merge_corr_threshold", self.merge_corr_threshold)
        _fraction("merge_overlap_threshold", self.merge_overlap_threshold)


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
        _check(
            "ring_radius_factor",
            self.ring_radius_factor,
            0.5 <= self.ring_radius_factor <= 4,
            "[0.5, 4]",
        )
        _check("downsample", self.downsample, self.downsample in (1, 2, 3, 4), "1, 2, 3 or 4")
        _check("ridge", self.ridge, 0 <= self.ridge <= 1, "[0, 1]")
        _positive("outlier_clip_sigma", self.outlier_clip_sigma)
        _positive("forgetting_time_s", self.forgetting_time_s)
        _int_at_least("refresh_period_frames", self.refresh_period_frames, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeconvParams:
    """OASIS deconvolution of each trace (AR(1) or AR(2))."""

    ar_order: int = 1
    estimate_kinetics: bool = True  # else g from DataParams.decay_time_s
    min_spike_sigma: float = 3.0  # s_min = min_spike_sigma * noise * sqrt(1 - sum(g))... (>=0)
    sparsity_penalty: float = 0.0  # OASIS lambda, in units of the trace noise (online)
    pool_capacity: int = 64  # online OASIS pools kept per neuron (older pools are frozen)

    def __post_init__(self) -> None:
        _check("ar_order", self.ar_order, self.ar_order in (1, 2), "1 or 2")
        _check("min_spike_sigma", self.min_spike_sigma, self.min_spike_sigma >= 0, ">= 0")
        _check("sparsity_penalty", self.sparsity_penalty, self.sparsity_penalty >= 0, ">= 0")
        _int_at_least("pool_capacity", self.pool_capacity, 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineParams:
    """The per-frame update and its amortised slow path."""

    n_trace_sweeps: int = 3
    residual_buffer_frames: int = 100
    stats_forgetting_time_s: float = 300.0
    footprint_update_period_frames: int = 400  # every footprint refreshed once per period
    nan_policy: str = "skip"  # skip frames with NaN (recorded), or "zero"
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

    def __post_init__(self) -> None:
        _int_at_least("n_trace_sweeps", self.n_trace_sweeps, 1)
        _int_at_least("residual_buffer_frames", self.residual_buffer_frames, 10)
        _positive("stats_forgetting_time_s", self.stats_forgetting_time_s)
        _int_at_least("footprint_update_period_frames", self.footprint_update_period_frames, 1)
        _check(
            "nan_policy", self.nan_policy, self.nan_policy in ("skip", "zero"), "'skip' or 'zero'"
        )
        _int_at_least("footprint_growth_px", self.footprint_growth_px, 0)
        _int_at_least("slow_ring_refresh_period_frames", self.slow_ring_refresh_period_frames, 1)
        _int_at_least("slow_ring_samples", self.slow_ring_samples, 1)
        _int_at_least("slow_ring_max_rows", self.slow_ring_max_rows, 1)
        _check(
            "slow_ring_prior_samples",
            self.slow_ring_prior_samples,
            self.slow_ring_prior_samples > 0,
            "> 0",
        )
        _int_at_least("slow_merge_checks_per_frame", self.slow_merge_checks_per_frame, 0)
        _positive("slow_remove_inactive_s", self.slow_remove_inactive_s)
        _int_at_least("slow_stats_stride_frames", self.slow_stats_stride_frames, 1)
        _int_at_least("slow_emit_period_frames", self.slow_emit_period_frames, 1)
        _int_at_least("slow_detect_period_frames", self.slow_detect_period_frames, 1)
        _int_at_least("slow_evaluations_per_step", self.slow_evaluations_per_step, 0)
        _int_at_least("slow_detect_stride_frames", self.slow_detect_stride_frames, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionParams:
    """Online search for new neurons in the residual."""

    enabled: bool = True
    min_corr: float = 0.8
    min_pnr: float = 8.0
    max_candidates_per_frame: int = 3
    confirm_events: int = 2  # a candidate must recur this many times before promotion
    max_neurons: int = 5000
    min_event_snr: float = 5.0  # transient z-score (N-frame mean / noise) of a counted event
    event_separation_s: float = 0.5  # two events closer than this count once
    min_space_corr: float = 0.6  # corr(footprint, mean active frame) of a candidate
    min_size_ratio: float = 0.2  # effective footprint area / disk of the neuron diameter ...
    max_size_ratio: float = 2.5  # ... must lie in [min_size_ratio, max_size_ratio]
    min_compactness: float = 0.7  # footprint energy within 0.75 diameter of its centroid
    duplicate_overlap: float = 0.5  # footprint cosine above which a candidate is a copy
    duplicate_corr: float = 0.5  # above half that cosine, a trace corr making it a copy
    max_decay_s: float = 2.0  # time constant of the decaying max of the PNR image
    pool_size: int = 32  # candidates followed at once while awaiting confirmation
    pool_expiry_s: float = 30.0  # a candidate not seen again for this long is forgotten
    merge_corr_threshold: float = 0.8  # touching neurons with trace corr above this merge

    def __post_init__(self) -> None:
        _fraction("min_corr", self.min_corr)
        _positive("min_pnr", self.min_pnr)
        _int_at_least("max_candidates_per_frame", self.max_candidates_per_frame, 1)
        _int_at_least("confirm_events", self.confirm_events, 1)
        _int_at_least("max_neurons", self.max_neurons, 1)
        _positive("min_event_snr", self.min_event_snr)
        _positive("event_separation_s", self.event_separation_s)
        _fraction("min_space_corr", self.min_space_corr, -1.0, 1.0)
        _positive("min_size_ratio", self.min_size_ratio)
        _check(
            "max_size_ratio",
            self.max_size_ratio,
            self.max_size_ratio > self.min_size_ratio,
            f"> min_size_ratio ({self.min_size_ratio})",
        )
        _fraction("min_compactness", self.min_compactness)
        _fraction("duplicate_overlap", self.duplicate_overlap)
        _fraction("duplicate_corr", self.duplicate_corr, -1.0, 1.0)
        _positive("max_decay_s", self.max_decay_s)
        _int_at_least("pool_size", self.pool_size, 1)
        _positive("pool_expiry_s", self.pool_expiry_s)
        _fraction("merge_corr_threshold", self.merge_corr_threshold)


@dataclass(frozen=True, slots=True, kw_only=True)
class MotionParams:
    """Optional rigid motion correction on the frame path."""

    enabled: bool = False
    max_shift_px: int = 10

    def __post_init__(self) -> None:
        _int_at_least("max_shift_px", self.max_shift_px, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineParams:
    """The streaming service: queues, publication rates, storage."""

    queue_frames: int = 256
    status_period_s: float = 1.0
    flush_period_s: float = 2.0
    image_rate_hz: float = 10.0
    max_frame_age_ms: float = 50.0  # older frames do not fire closed-loop triggers
    on_restart: str = "continue"  # "continue" | "reinitialise" | "stop"
    republish_period_s: float = 2.0  # footprints + summary images re-sent for late joiners
    checkpoint_period_s: float = 300.0  # model state saved for --resume (0: only at shutdown)
    rcvhwm_frames: int = 64  # frames buffered in the SUB socket before ZeroMQ drops
    max_model_errors: int = 20  # consecutive model exceptions before the engine stops
    queue_full: str = "drop"  # "drop" (live: drop and record) | "wait" (replay at max rate)

    def __post_init__(self) -> None:
        _int_at_least("queue_frames", self.queue_frames, 1)
        _positive("republish_period_s", self.republish_period_s)
        _check(
            "checkpoint_period_s", self.checkpoint_period_s, self.checkpoint_period_s >= 0, ">= 0"
        )
        _int_at_least("rcvhwm_frames", self.rcvhwm_frames, 1)
        _int_at_least("max_model_errors", self.max_model_errors, 1)
        _check(
            "queue_full", self.queue_full, self.queue_full in ("drop", "wait"), "'drop' or 'wait'"
        )
        _positive("status_period_s", self.status_period_s)
        _positive("flush_period_s", self.flush_period_s)
        _positive("image_rate_hz", self.image_rate_hz)
        _positive("max_frame_age_ms", self.max_frame_age_ms)
        _check(
            "on_restart",
            self.on_restart,
            self.on_restart in ("continue", "reinitialise", "stop"),
            "'continue', 'reinitialise' or 'stop'",
        )


_STAGES: dict[str, type] = {
    "data": DataParams,
    "init": InitParams,
    "background": BackgroundParams,
    "deconv": DeconvParams,
    "online": OnlineParams,
    "detection": DetectionParams,
    "motion": MotionParams,
    "engine": EngineParams,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CNMFEParams:
    """All parameters, one frozen object per stage.

    Examples
    --------
    >>> p = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 11}})
    >>> p.data.neuron_diameter_px
    11
    >>> CNMFEParams.from_dict({"data": {"diameter": 11}})
    Traceback (most recent call last):
    ...
    online_cnmfe.errors.ConfigError: unknown parameter 'data.diameter'; did you mean ...
    """

    data: DataParams = field(default_factory=DataParams)
    init: InitParams = field(default_factory=InitParams)
    background: BackgroundParams = field(default_factory=BackgroundParams)
    deconv: DeconvParams = field(default_factory=DeconvParams)
    online: OnlineParams = field(default_factory=OnlineParams)
    detection: DetectionParams = field(default_factory=DetectionParams)
    motion: MotionParams = field(default_factory=MotionParams)
    engine: EngineParams = field(default_factory=EngineParams)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-safe nested dict ``{stage: {key: value}}``."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _STAGES}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CNMFEParams:
        """Build from a nested dict; unknown stages or keys raise ConfigError with a suggestion."""
        if not isinstance(values, dict):
            raise ConfigError(
                f"parameters must be a mapping of stages, got {type(values).__name__}"
            )
        stages = {}
        for stage_name, stage_values in values.items():
            if stage_name not in _STAGES:
                raise ConfigError(_unknown("stage", stage_name, list(_STAGES)))
            if not isinstance(stage_values, dict):
                raise ConfigError(f"parameter stage '{stage_name}' must be a mapping")
            stage_cls = _STAGES[stage_name]
            valid = [f.name for f in dataclasses.fields(stage_cls)]
            for key in stage_values:
                if key not in valid:
                    raise ConfigError(
                        _unknown(
                            "parameter", f"{stage_name}.{key}", [f"{stage_name}.{v}" for v in valid]
                        )
                    )
            try:
                stages[stage_name] = stage_cls(**stage_values)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid parameter in stage '{stage_name}': {exc}") from exc
        return cls(**stages)

    def replace(self, **dotted: Any) -> CNMFEParams:
        """A copy with dotted ``stage.key`` values replaced."""
        values = self.to_dict()
        for key, value in dotted.items():
            stage, _, name = key.partition(".")
            if stage not in values or not name:
                raise ConfigError(_unknown("parameter", key, _all_keys()))
            values[stage][name] = value
        return CNMFEParams.from_dict(values)

    @classmethod
    def from_file(cls, path: str | Path) -> CNMFEParams:
        """Read a TOML (``.toml``) or JSON (``.json``) config file of ``[stage]`` tables."""
        return cls.from_dict(read_config_file(path))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if vv is not None}
                for k, v in self.to_dict().items()
            }
        )


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, c in _STAGES.items() for f in dataclasses.fields(c)]


def _unknown(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown {kind} '{name}'; {hint}valid: {', '.join(valid)}"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``--set stage.key=value`` strings; values are JSON if they parse, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(
                f"--set expects stage.key=value (e.g. data.frame_rate_hz=10), got {pair!r}"
            )
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML (or ``.json``) config file as a dict; ConfigError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML/JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table/object at top level")
    return values


# Tables a config file may hold besides the parameter stages (read by other parts).
OTHER_CONFIG_TABLES = ("triggers",)


def load_params(config: str | Path | None, overrides: list[str] | None = None) -> CNMFEParams:
    """Parameters from an optional config file plus ``--set stage.key=value`` overrides.

    The file may also hold the closed-loop ``[triggers]`` table; it is left to the trigger
    configuration and ignored here.
    """
    params = CNMFEParams()
    if config is not None:
        values = read_config_file(config)
        for table in OTHER_CONFIG_TABLES:
            values.pop(table, None)
        params = CNMFEParams.from_dict(values)
    values = parse_overrides(overrides or [])
    return params.replace(**values) if values else params
