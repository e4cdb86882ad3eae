"""Plain records of the dashboard model: its settings, banner, footprint set, rule stats."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from dashboard.contours import DEFAULT_THRESHOLD, Contours

__all__ = ["DISPLAY_MAX_SIDE", "Banner", "FootprintSet", "ModelConfig", "RuleStats"]

DISPLAY_MAX_SIDE = 320  # the activity glow is computed at most this many pixels a side


def display_downsample(dims: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> int:
    """Block size that brings the longer side of ``dims`` to at most ``max_side`` pixels."""
    return max(1, -(-max(dims) // max_side))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """Display-side settings of the dashboard model.

    Attributes
    ----------
    history_frames : int
        Frames of traces kept per neuron (the longest trace window that can be shown).
    silence_timeout_s : float
        No message at all for this long: the engine is reported unreachable.
    stall_timeout_s : float
        Engine running but no ``traces`` for this long: the stream is reported stalled.
    max_events : int
        Events (born, merged, ...) and triggers kept for the logs.
    new_marker_s : float
        A neuron born less than this long ago (acquisition time) is marked as new.
    contour_threshold : float
        Contour level as a fraction of each footprint's maximum.
    max_selected : int
        At most this many neurons are selected (their traces drawn) at once.
    behind_alarm_s : float
        The engine's results lag the stream by more than this (``status.behind_s``): a red
        banner says how far behind it is.
    """

    history_frames: int = 3600
    silence_timeout_s: float = 3.0
    stall_timeout_s: float = 3.0
    max_events: int = 200
    new_marker_s: float = 30.0
    contour_threshold: float = DEFAULT_THRESHOLD
    max_selected: int = 8
    behind_alarm_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("silence_timeout_s", "stall_timeout_s", "new_marker_s", "behind_alarm_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range; allowed: > 0")
        for name, low in (("history_frames", 2), ("max_events", 1), ("max_selected", 1)):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= low):
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: an integer >= {low}")
        if not 0 < self.contour_threshold <= 1:
            raise ValueError(f"contour_threshold={self.contour_threshold!r}; allowed: (0, 1]")


@dataclass(frozen=True, slots=True)
class Banner:
    """A message across the window: ``severity`` is 'error', 'warning' or 'info'."""

    text: str
    severity: str


@dataclass(slots=True)
class FootprintSet:
    """The current footprints and what the views derive from them."""

    version: int
    dims: tuple[int, int]
    ids: np.ndarray  # (K,) int64
    centroids: np.ndarray  # (K, 2) float32, (row, col)
    A: scipy.sparse.csr_array  # (n_pixels, K)
    A_norm: scipy.sparse.csr_array  # (n_display_pixels, K): columns scaled to max 1, block-mean
    contours: Contours
    owner: np.ndarray  # (H, W) int32 column index or -1


@dataclass(slots=True)
class RuleStats:
    """What one closed-loop rule has done so far."""

    rule: str
    count: int = 0
    last_frame_index: int = -1
    last_value: float = float("nan")
    last_age_ms: float = float("nan")
    last_received_s: float = float("nan")
    last_t_acq_ms: float = float("nan")
    last_neuron_ids: tuple[int, ...] = ()
    ages_ms: deque = field(default_factory=lambda: deque(maxlen=1000))

    def age_percentiles(self) -> tuple[float, float]:
        """Trigger latency (frame age at firing) p50 and p99 in ms; NaN when empty."""
        if not self.ages_ms:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.asarray(self.ages_ms), [50, 99])
        return float(p50), float(p99)
