"""``TriggerEngine``: evaluates every rule on each frame's traces and runs the actions.

Called on the engine's model thread with each frame's traces (``on_frame(result, meta)``) from
``process_frame``'s ``on_traces`` hook: as soon as the traces are final, before the model's
slow path runs and before the engine publishes or stores anything. Per frame and rule the
work is one numba kernel call or a few vectorised comparisons on the rule's neurons gathered into
preallocated buffers: O(neurons in the rule); only an ``array_equal`` check of the id vector
depends on the total number of neurons. Rules are rebound to columns only when the id vector
changes, and region rules re-resolved only when new centroids are applied (at once for a new
neuron, else at most every ``centroid_refresh_frames``).

Only values final at the frame are used (``FrameResult`` holds no revisable values), and the
z-score normalises each sample by statistics of the previous frames only.

Frame age: ``age_ms = (monotonic_ns() - meta["t_recv_ns"]) / 1e6`` at firing, i.e. since the
frame arrived at the engine. A frame older than ``max_frame_age_ms`` does not fire (the rule's
arming still follows the signal); such suppressions are counted and logged (rate-limited).

Thread safety: rules are held in an immutable tuple swapped under a lock by the control thread
(:meth:`add_rule`, :meth:`remove_rule`, :meth:`set_enabled`); all evaluation state is touched only
by the thread calling :meth:`on_frame`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from online_cnmfe.errors import ConfigError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.triggers._kernels import warm_up as warm_kernels
from online_cnmfe.triggers.actions import ActionDispatcher
from online_cnmfe.triggers.binding import NeuronIdIndex, bind_rule, region_members
from online_cnmfe.triggers.config import TriggerConfig
from online_cnmfe.triggers.limits import MAX_RULES, MAX_TOTAL_NEURONS
from online_cnmfe.triggers.records import TriggerRecord
from online_cnmfe.triggers.rules import Rule, rule_to_dict
from online_cnmfe.triggers.runtime import CONDITIONS, RuleRuntime

__all__ = ["TriggerEngine"]

logger = logging.getLogger(__name__)

_LOG_PERIOD_S = 5.0
KEEP_DRAINED = 10_000  # drained firings kept in TriggerEngine.fired


class TriggerEngine:
    """Evaluate closed-loop rules on each frame and run their actions.

    Parameters
    ----------
    rules : iterable of Rule
    max_frame_age_ms : float
        Frames older than this (since arrival at the engine) do not fire
        (``EngineParams.max_frame_age_ms``).
    frame_rate_hz : float
        Converts ``zscore_window_s`` into frames.
    zscore_window_s : float
    zscore_warmup_frames : int
    dispatcher : ActionDispatcher, optional
        Socket/serial/callback actions; default: callbacks only.
    centroid_source : callable, optional
        ``() -> (neuron_ids (K,), centroids (K, 2))``, called after the frame's actions when the
        neurons or footprints changed and a region rule exists (at most every
        ``centroid_refresh_frames``). Alternatively push centroids with :meth:`update_centroids`.
    centroid_refresh_frames : int

    Examples
    --------
    >>> from online_cnmfe.triggers.rules import parse_rule
    >>> rule = parse_rule({"name": "n3", "neurons": [3], "signal": "spike",
    ...                    "condition": "threshold", "threshold": 1.0})
    >>> eng = TriggerEngine([rule])
    >>> ids = np.array([3, 5])
    >>> def frame(t, s3):
    ...     s = np.array([s3, 0.0], np.float32)
    ...     return FrameResult(t, ids, s, s, s)
    >>> [len(eng.on_frame(frame(t, v), {})) for t, v in enumerate([0, 2, 2, 0, 3])]
    [0, 1, 0, 0, 1]
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        max_frame_age_ms: float = 50.0,
        frame_rate_hz: float = 20.0,
        zscore_window_s: float = 30.0,
        zscore_warmup_frames: int = 20,
        dispatcher: ActionDispatcher | None = None,
        centroid_source: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
        centroid_refresh_frames: int = 20,
    ) -> None:
        if not max_frame_age_ms > 0:
            raise ValueError(f"max_frame_age_ms={max_frame_age_ms!r}; expected > 0")
        if not frame_rate_hz > 0 or not zscore_window_s > 0:
            raise ValueError("frame_rate_hz and zscore_window_s must be > 0")
        self.max_frame_age_ms = float(max_frame_age_ms)
        warm_kernels()  # not on the first frames a rule watches
        alpha = min(1.0, 1.0 / (zscore_window_s * frame_rate_hz))
        self._zs_params = (alpha, int(zscore_warmup_frames))
        self.dispatcher = dispatcher or ActionDispatcher()
        self.centroid_source = centroid_source
        self.centroid_refresh_frames = int(centroid_refresh_frames)
        self._lock = threading.Lock()
        self._rules: tuple[RuleRuntime, ...] = ()
        self._last_frame = -1
        self.rule_log: list[tuple[int, str, str]] = []  # (frame_index, command, rule JSON)
        self._n_log_drained = 0
        for rule in rules:
            self.add_rule(rule, _command="config")
        # id vector of the last frame and its lookup tables
        self._index = NeuronIdIndex()
        self._region_version = 0  # bumped when new centroids are applied to region rules
        self._footprints_version = -1
        self._centroids: tuple[np.ndarray, np.ndarray] | None = None
        self._pending: tuple[np.ndarray, np.ndarray] | None = None  # centroids not applied yet
        self._pending_new = False  # they include a neuron the applied ones lack
        self._region_frame = -(10**9)  # frame at which centroids were last applied
        self._pulled_frame = -(10**9)  # frame at which centroid_source was last called
        # outputs and counters
        # firings of the session; once drained (drain_new), only the last KEEP_DRAINED are kept
        self.fired: list[TriggerRecord] = []
        self.n_fired = 0
        # called with every firing (all rules), e.g. to copy it onto the results stream
        self.fire_listeners: list[Callable[[TriggerRecord], Any]] = []
        self._n_drained = 0
        self.n_frames = 0
        self.n_skipped_frames = 0
        self.n_suppressed_stale = 0
        self.n_errors = 0
        self._last_stale_log = -math.inf

    # ---- construction from config -------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: TriggerConfig,
        *,
        max_frame_age_ms: float,
        frame_rate_hz: float,
        context: Any = None,
        **kwargs: Any,
    ) -> TriggerEngine:
        """Build the engine with its trigger socket (bound now) and serial output (if any)."""
        from online_cnmfe.triggers.actions import SerialOutput, TriggerPublisher

        publisher = TriggerPublisher(
            config.endpoint, config.socket_type, config.send_hwm, context=context
        )
        serial = None
        if config.serial_port is not None:
            serial = SerialOutput(
                config.serial_port, config.serial_baudrate, config.serial_reconnect_s
            )
            serial.open()  # a missing device is logged and retried, not fatal
        return cls(
            config.rules,
            max_frame_age_ms=max_frame_age_ms,
            frame_rate_hz=frame_rate_hz,
            zscore_window_s=config.zscore_window_s,
            zscore_warmup_frames=config.zscore_warmup_frames,
            dispatcher=ActionDispatcher(publisher, serial),
            **kwargs,
        )

    def close(self) -> None:
        """Close the trigger socket and the serial device."""
        self.dispatcher.close()

    # ---- rule management (any thread) ---------------------------------------------------
    def add_rule(self, rule: Rule, *, _command: str = "add") -> None:
        """Add a rule; ConfigError if its name is taken or it needs an unconfigured action."""
        if not isinstance(rule, Rule):
            raise TypeError(f"expected a Rule, got {type(rule).__name__}")
        if "serial" in rule.actions and self.dispatcher.serial is None:
            raise ConfigError(
                f"rule {rule.name!r} has the 'serial' action but no serial port is configured"
            )
        with self._lock:
            if any(rt.rule.name == rule.name for rt in self._rules):
                raise ConfigError(f"a rule named {rule.name!r} already exists; remove it first")
            if len(self._rules) >= MAX_RULES:
                raise ConfigError(
                    f"there are already {MAX_RULES} rules, the most an engine runs; remove one "
                    "first"
                )
            listed = sum(len(rt.rule.neurons or ()) for rt in self._rules)
            n_new = len(rule.neurons or ())
            if listed + n_new > MAX_TOTAL_NEURONS:
                raise ConfigError(
                    f"rule {rule.name!r} lists {n_new} neuron ids; with the "
                    f"{listed} of the other rules that exceeds {MAX_TOTAL_NEURONS} in all"
                )
            self._rules = (*self._rules, RuleRuntime(rule))
            self._log(_command, rule_to_dict(rule))

    def remove_rule(self, name: str) -> None:
        """Remove a rule by name; ConfigError if there is none."""
        with self._lock:
            kept = tuple(rt for rt in self._rules if rt.rule.name != name)
            if len(kept) == len(self._rules):
                raise ConfigError(f"no rule named {name!r}; rules: {self.rule_names()}")
            self._rules = kept
            self._log("remove", {"name": name})

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a rule; enabling clears its arming and refractory state."""
        for rt in self._rules:
            if rt.rule.name == name:
                if enabled and not rt.enabled:
                    rt.reset = True
                rt.enabled = bool(enabled)
                with self._lock:
                    self._log("enable" if enabled else "disable", {"name": name})
                return
        raise ConfigError(f"no rule named {name!r}; rules: {self.rule_names()}")

    def _log(self, command: str, detail: dict[str, Any]) -> None:
        self.rule_log.append((self._last_frame, command, json.dumps(detail, sort_keys=True)))

    def rule_names(self) -> list[str]:
        return [rt.rule.name for rt in self._rules]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(rt.rule for rt in self._rules)

    def list_rules(self) -> list[dict[str, Any]]:
        """Each rule as a dict plus its run-time state (JSON-safe)."""
        out = []
        for rt in self._rules:
            d = rule_to_dict(rt.rule)
            d["enabled"] = rt.enabled
            d["state"] = {
                "active": rt.active,
                "bound_neurons": [int(i) for i in rt.ids] if rt.active else [],
                "n_fired": rt.n_fired,
                "n_suppressed_refractory": rt.n_refractory,
                "n_suppressed_stale": rt.n_stale,
            }
            out.append(d)
        return out

    # ---- footprints ---------------------------------------------------------------------
    def update_centroids(self, neuron_ids: np.ndarray, centroids: np.ndarray) -> None:
        """Give the (row, col) centroid of each neuron (call whenever the footprints change).

        Region rules are re-resolved at the start of the next frame when the centroids include
        a neuron not seen before, else at most every ``centroid_refresh_frames`` frames (a
        footprint refresh moves centroids by a fraction of a pixel; re-resolving every frame
        would cost O(rules x neurons) per frame).
        """
        ids = np.asarray(neuron_ids, dtype=np.int64).ravel()
        cents = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
        if len(ids) != len(cents):
            raise ValueError(f"{len(ids)} neuron ids but {len(cents)} centroids")
        known = self._centroids[0] if self._centroids is not None else np.zeros(0, np.int64)
        self._pending_new = self._pending_new or bool(np.setdiff1d(ids, known).size)
        self._pending = (ids.copy(), cents.copy())

    def _apply_centroids(self, frame: int) -> None:
        if self._pending is None:
            return
        if self._pending_new or frame - self._region_frame >= self.centroid_refresh_frames:
            self._centroids, self._pending, self._pending_new = self._pending, None, False
            self._region_version += 1
            self._region_frame = frame

    # ---- per frame (model thread) -------------------------------------------------------
    def __call__(self, result: FrameResult, meta: dict[str, Any]) -> list[TriggerRecord]:
        return self.on_frame(result, meta)

    def on_frame(self, result: FrameResult, meta: dict[str, Any]) -> list[TriggerRecord]:
        """Evaluate all rules on one frame, run the actions of those that fire.

        Parameters
        ----------
        result : FrameResult
        meta : dict
            ``frame_index``, ``seq``, ``t_acq_ms``, ``t_recv_ns`` (engine monotonic ns at
            arrival; without it the age is unknown and never suppresses). Missing keys are allowed.

        Returns
        -------
        list of TriggerRecord
            The firings of this frame (also appended to :attr:`fired`).

        Notes
        -----
        Never raises: an unexpected error (a bug, a failing listener) is logged, counted in
        ``stats()["n_errors"]`` and the frame yields no further triggers, so the engine's
        model thread keeps running.
        """
        try:
            return self._on_frame(result, meta)
        except Exception:  # the engine must never crash on a trigger problem; counted below
            self.n_errors += 1
            if self.n_errors <= 3 or self.n_errors % 1000 == 0:
                logger.exception("trigger evaluation failed on frame %s (%d errors so far)",
                                 getattr(result, "frame_index", "?"), self.n_errors)  # fmt: skip
            return []

    def _on_frame(self, result: FrameResult, meta: dict[str, Any]) -> list[TriggerRecord]:
        rules = self._rules
        self.n_frames += 1
        if result.skipped:
            self.n_skipped_frames += 1
            return []
        # the stream's frame index (the model counts only the frames it saw: after drops,
        # its count lags, and firings would not line up with the stored frames and times)
        frame = self._last_frame = int(meta.get("frame_index", result.frame_index))
        ids_changed = self._index.update(result.neuron_ids)
        if not rules:
            return []
        self._apply_centroids(frame)
        t_acq = float(meta.get("t_acq_ms", math.nan))
        vectors = {"spike": result.S, "calcium": result.C, "raw": result.C_raw}
        hits: list[tuple[RuleRuntime, float, np.ndarray]] = []
        for rt in rules:
            if rt.bound_to != self._index.version or (
                rt.is_region and rt.bound_region != self._region_version
            ):
                self._bind(rt)
            if not rt.active:
                continue
            rule = rt.rule
            vec = vectors.get(rule.signal, result.C_raw)
            if rt.zs is not None:  # gathers and standardises in one kernel call
                rt.zs.update_from(vec, rt.idx, rt.x, rt.is_rise)
            elif vec.dtype == np.float32:
                np.take(vec, rt.idx, out=rt.x)
            else:  # off-contract dtype: still correct, one small temporary
                rt.x[:] = vec[rt.idx]
            if not rt.enabled:
                continue
            if rt.reset:
                rt.clear_condition()
                rt.reset = False
            hit = CONDITIONS[rule.condition](rt, frame)
            if hit is not None and not self._refractory(rt, frame, t_acq):
                hits.append((rt, *hit))
        records = self._fire(hits, result, meta, t_acq) if hits else []
        self._after_frame(rules, result, frame, ids_changed)
        return records

    def _fire(self, hits, result, meta, t_acq) -> list[TriggerRecord]:
        now = time.monotonic_ns()
        frame = self._last_frame
        t_recv = meta.get("t_recv_ns")
        age_ms = (now - t_recv) / 1e6 if t_recv is not None else math.nan
        if age_ms > self.max_frame_age_ms:
            self._stale(hits, frame, age_ms)
            return []
        records = []
        seq = meta.get("seq")
        seq = -1 if seq is None else int(seq)
        for rt, value, neurons in hits:
            rt.n_fired += 1
            rt.last_fire_frame, rt.last_fire_ms = frame, t_acq
            rec = TriggerRecord(
                rule=rt.rule.name,
                frame_index=frame,
                seq=seq,
                t_acq_ms=t_acq,
                value=float(value),
                age_ms=age_ms,
                neuron_ids=tuple(neurons.tolist()),  # Python ints; 20x faster than int(i)
                t_recv_ns=int(t_recv) if t_recv is not None else -1,
                t_fire_ns=now,
                count=self.n_fired + 1,
            )
            self.n_fired += 1
            self.fired.append(rec)
            records.append(rec)
            self.dispatcher.dispatch(rt.rule, rec)
        for listener in self.fire_listeners:
            for rec in records:
                try:
                    listener(rec)
                except Exception:  # e.g. the results stream; counted, never fatal
                    self.n_errors += 1
                    if self.n_errors <= 3:
                        logger.exception("trigger listener %r failed", listener)
        return records

    def _stale(self, hits, frame_index: int, age_ms: float) -> None:
        for rt, _, _ in hits:
            rt.n_stale += 1
        self.n_suppressed_stale += len(hits)
        now = time.monotonic()
        if now - self._last_stale_log >= _LOG_PERIOD_S:
            self._last_stale_log = now
            logger.warning(
                "frame %d is %.1f ms old (budget %.1f ms): %d trigger(s) not fired "
                "(%d suppressed so far); the engine is falling behind",
                frame_index, age_ms, self.max_frame_age_ms, len(hits), self.n_suppressed_stale,
            )  # fmt: skip

    @staticmethod
    def _refractory(rt: RuleRuntime, frame: int, t_acq: float) -> bool:
        rule = rt.rule
        blocked = (
            rule.refractory_frames > 0
            and rt.last_fire_frame is not None
            and frame - rt.last_fire_frame <= rule.refractory_frames
        ) or (
            rule.refractory_ms > 0
            and rt.last_fire_ms is not None
            and t_acq - rt.last_fire_ms < rule.refractory_ms
        )
        if blocked:
            rt.n_refractory += 1
        return blocked

    # ---- binding rules to columns -------------------------------------------------------
    def _bind(self, rt: RuleRuntime) -> None:
        zs = self._zs_params if rt.rule.signal in ("zscore", "rise") else None
        if rt.is_region and rt.bound_region != self._region_version:
            rt.region_ids = region_members(rt.rule, self._centroids)
            rt.bound_region = self._region_version
        bind_rule(rt, self._index, zs)

    def _after_frame(self, rules, result: FrameResult, frame: int, ids_changed: bool) -> None:
        """Slow bookkeeping after the actions: refresh centroids for region rules."""
        changed = ids_changed or result.footprints_version != self._footprints_version
        self._footprints_version = result.footprints_version
        if self.centroid_source is None or not any(rt.rule.region for rt in rules):
            return
        due = frame - self._pulled_frame >= self.centroid_refresh_frames
        if (changed and due) or ids_changed or self._centroids is None:
            self._pulled_frame = frame
            self.update_centroids(*self.centroid_source())  # applied on the next frame

    # ---- outputs ------------------------------------------------------------------------
    def drain_new(self) -> list[TriggerRecord]:
        """Firings since the previous call (for incremental storage)."""
        new = self.fired[self._n_drained :]
        self._n_drained += len(new)
        excess = self._n_drained - KEEP_DRAINED
        if excess > 0:  # memory stays flat over hours; appends by the model thread are kept
            del self.fired[:excess]
            self._n_drained -= excess
        return new

    def drain_new_rule_log(self) -> list[tuple[int, str, str]]:
        """Rule changes since the previous call (for incremental storage)."""
        with self._lock:
            new = self.rule_log[self._n_log_drained :]
            self._n_log_drained += len(new)
        return new

    def stats(self) -> dict[str, Any]:
        """Counters for the status stream and the results file."""
        return {
            "n_rules": len(self._rules),
            "n_fired": self.n_fired,
            "n_frames": self.n_frames,
            "n_skipped_frames": self.n_skipped_frames,
            "n_suppressed_stale": self.n_suppressed_stale,
            "n_errors": self.n_errors,
            "n_suppressed_refractory": sum(rt.n_refractory for rt in self._rules),
            **self.dispatcher.stats(),
        }
