"""Evaluation state of one trigger rule and the three conditions (model thread only).

Each condition is ``(runtime, frame) -> (value, neuron ids) | None`` on the rule's gathered
signal ``runtime.x`` (one entry per selected neuron), updating the arming state in place with a
few vectorised numpy operations (see :mod:`online_cnmfe.triggers.rules` for the semantics).
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.triggers._kernels import threshold_crossings
from online_cnmfe.triggers.rules import Rule
from online_cnmfe.triggers.zscore import RunningZScore

__all__ = ["CONDITIONS", "RuleRuntime"]

_NEVER = np.iinfo(np.int64).min // 4


class RuleRuntime:
    """Evaluation state of one rule (model thread only, except ``enabled``/``reset``)."""

    __slots__ = (
        "rule", "enabled", "reset", "bound_to", "bound_region", "is_region", "is_rise", "ids",
        "idx", "active", "warned", "cross", "threshold32", "release32",
        "x", "armed", "armed_any", "last_active", "weights", "zs", "region_ids",
        "last_fire_frame", "last_fire_ms", "n_fired", "n_refractory", "n_stale",
    )  # fmt: skip

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.enabled = rule.enabled
        self.reset = False
        self.bound_to = -1  # id-vector version the columns refer to
        self.bound_region = -1  # centroid version the region selection refers to
        self.is_region = rule.region is not None
        self.is_rise = rule.signal == "rise"
        self.threshold32 = np.float32(rule.threshold)  # traces are float32: compare in float32
        self.release32 = np.float32(rule.release_level)
        self.ids = np.zeros(0, np.int64)
        self.idx = np.zeros(0, np.intp)
        self.active = False
        self.warned = False
        self.region_ids: np.ndarray | None = None  # region rules: ids inside the region
        self.last_fire_frame: int | None = None
        self.last_fire_ms: float | None = None
        self.n_fired = self.n_refractory = self.n_stale = 0
        self._alloc(np.zeros(0, np.int64), None)

    def _alloc(self, ids: np.ndarray, zs_params: tuple[float, int] | None) -> None:
        n = len(ids)
        self.ids = ids
        self.x = np.zeros(n, dtype=np.float32)
        self.armed = np.zeros(n, dtype=bool)
        self.cross = np.zeros(n, dtype=bool)
        self.armed_any = False
        self.last_active = np.full(n, _NEVER, dtype=np.int64)
        w = self.rule.weights
        self.weights = np.asarray(w if w is not None else np.ones(n), dtype=np.float32)
        self.zs = RunningZScore(n, *zs_params) if zs_params else None

    def reselect(self, ids: np.ndarray, zs_params: tuple[float, int] | None) -> None:
        """Select neurons ``ids``, keeping the state of those already selected."""
        if np.array_equal(ids, self.ids) and (self.zs is not None) == (zs_params is not None):
            return
        old = (self.ids, self.armed, self.last_active, self.zs)
        self._alloc(ids, zs_params)
        common, take, put = np.intersect1d(old[0], ids, return_indices=True)
        if len(common):
            self.armed[put] = old[1][take]
            self.last_active[put] = old[2][take]
            if self.zs is not None and old[3] is not None:
                self.zs.carry_from(old[3], take, put)

    def clear_condition(self) -> None:
        self.armed[:] = False
        self.armed_any = False
        self.last_active[:] = _NEVER
        self.last_fire_frame = self.last_fire_ms = None


# ---- conditions: (runtime, frame) -> (value, neuron ids) when the rule fires, else None ----
def _threshold(rt: RuleRuntime, frame: int) -> tuple[float, np.ndarray] | None:
    if not threshold_crossings(rt.x, rt.armed, rt.threshold32, rt.release32, rt.cross):
        return None
    return float(rt.x[rt.cross].max()), rt.ids[rt.cross]


def _k_of_n(rt: RuleRuntime, frame: int) -> tuple[float, np.ndarray] | None:
    rule = rt.rule
    np.copyto(rt.last_active, frame, where=rt.x >= rt.threshold32)
    recent = (frame - rt.last_active) < rule.window_frames
    count = int(np.count_nonzero(recent))
    if count < rule.k:
        rt.armed_any = True
        return None
    if not rt.armed_any:
        return None
    rt.armed_any = False
    return float(count), rt.ids[recent]


def _ensemble(rt: RuleRuntime, frame: int) -> tuple[float, np.ndarray] | None:
    rule = rt.rule
    value = float(np.dot(rt.weights, rt.x))
    if value < rule.release_level:
        rt.armed_any = True
    if value < rule.threshold or not rt.armed_any:
        return None
    rt.armed_any = False
    return value, rt.ids


CONDITIONS = {"threshold": _threshold, "k_of_n": _k_of_n, "ensemble": _ensemble}
