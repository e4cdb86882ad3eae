"""The dashboard's state, fed by decoded results-stream messages; no Qt, no sockets.

:class:`DashboardModel` turns the engine's results stream (docs/protocol.md: ``ready``,
``status``, ``traces``, ``footprints``, ``event``, ``image``, ``trigger``, ``eos``) into what the
views draw: a ring buffer of every neuron's traces, the current footprints with their contours
and pixel ownership, the latest image of each layer, the engine status, recent events and
trigger statistics, and a connection state derived from the time since the last message
(``connecting`` / ``live`` / ``waiting`` / ``stalled`` / ``unreachable`` / ``stopped``).

Every handler validates the fields it uses; a message that does not fit is counted in
``n_malformed`` and skipped, never fatal. Views ask :meth:`DashboardModel.take_dirty` which
parts changed since their last refresh. Time (``now``) is always passed in, in seconds of a
monotonic clock, so tests drive it explicitly.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np
import scipy.sparse

from dashboard.alarms import lag_or_loss, n_lost
from dashboard.contours import contours_and_owner
from dashboard.motion_trace import MotionTrace, parse_motion
from dashboard.queries import LAYERS, LayerImage, ModelQueries
from dashboard.records import (
    DISPLAY_MAX_SIDE,
    Banner,
    FootprintSet,
    ModelConfig,
    RuleStats,
    display_downsample,
)
from dashboard.ringbuffer import TraceBuffer

logger = logging.getLogger(__name__)

__all__ = [
    "LAYERS",
    "Banner",
    "DashboardModel",
    "FootprintSet",
    "LayerImage",
    "ModelConfig",
    "RuleStats",
]

DIRTY_PARTS = ("image", "footprints", "traces", "status", "events", "triggers", "selection")


def _int(h: dict, key: str) -> int:
    v = h[key]
    if type(v) is not int:
        raise TypeError(f"field {key!r} is {v!r}; expected an integer")
    return v


def _num(h: dict, key: str) -> float:
    v = h[key]
    if type(v) not in (int, float):
        raise TypeError(f"field {key!r} is {v!r}; expected a number")
    return float(v)


def _opt_num(h: dict, key: str) -> float:
    """A number that may be null (NaN on the sender side) or absent: NaN then."""
    return math.nan if h.get(key) is None else _num(h, key)


def _block_mean_operator(dims: tuple[int, int], max_side: int) -> scipy.sparse.csr_array:
    """Sparse (n_display_pixels, n_pixels) block-mean of row-major images (ceil blocks)."""
    d = display_downsample(dims, max_side)
    h, w = dims
    hd, wd = -(-h // d), -(-w // d)
    pix = np.arange(h * w)
    target = (pix // w // d) * wd + (pix % w) // d
    counts = np.bincount(target, minlength=hd * wd).astype(np.float32)
    return scipy.sparse.csr_array(
        (1.0 / counts[target], (target, pix)), shape=(hd * wd, h * w), dtype=np.float32
    )


def _dims(h: dict, key: str = "dims") -> tuple[int, int]:
    v = h[key]
    if not (isinstance(v, list) and len(v) == 2 and all(type(x) is int and x > 0 for x in v)):
        raise TypeError(f"field {key!r} is {v!r}; expected [H, W]")
    return (v[0], v[1])


class DashboardModel(ModelQueries):
    """State of the live view; feed it with :meth:`handle`, age it with :meth:`tick`.

    Parameters
    ----------
    config : ModelConfig, optional
    address : str
        Where the results stream comes from (shown in banners).
    now : float
        Monotonic time (s) at creation; the unreachable timer starts here.
    """

    def __init__(self, config: ModelConfig | None = None, address: str = "", now: float = 0.0):
        self.config = config or ModelConfig()
        self.address = address
        self.traces = TraceBuffer(self.config.history_frames)
        self.motion = MotionTrace(self.config.history_frames)
        self.n_malformed = 0
        self.n_messages = 0
        self.n_restarts = 0
        self.display_fps = float("nan")  # set by the app
        self._started_s = now
        self._dirty: set[str] = set(DIRTY_PARTS)
        self.connection = "connecting"
        self.selected: list[int] = []
        self.auto_select = True
        self.session_id: str | None = None
        self.engine_pid: int | None = None
        self.offline = False  # reviewing a results file: no connection to watch
        self.declared_rules: list[str] = []  # rules listed before they fire (kept on restart)
        self.labels: dict[int, int] = {}  # curation (review): +1 accepted, -1 rejected
        self.pixel_size_um: float | None = None  # from the engine's ready (scale bar)
        self._reset_session()
        self.last_message_s: float | None = None

    # ------------------------------------------------------------------ session
    def _reset_session(self) -> None:
        self.traces.clear()
        self.motion.clear()
        self.footprints: FootprintSet | None = None
        self.images: dict[str, LayerImage] = {}
        self._local_max: LayerImage | None = None
        self.status: dict[str, Any] = {}
        self.events: deque = deque(maxlen=self.config.max_events)
        self.triggers: deque = deque(maxlen=self.config.max_events)
        self.rules: dict[str, RuleStats] = {n: RuleStats(n) for n in self.declared_rules}
        self.births: dict[int, int] = {}  # neuron id -> birth frame index
        self.eos: dict[str, Any] | None = None
        self.last_traces_s: float | None = None
        self.last_frame_index: int | None = None
        self.last_t_acq_ms: float | None = None
        self.last_age_ms = math.nan  # frame age when the engine published its traces
        self.last_process_ms = math.nan  # the model's time on that frame
        self.last_recv_age_ms = math.nan  # frame age when it reached the dashboard
        self._seen_first_traces = False
        self._fp_rows_key: tuple | None = None
        self._fp_rows = np.zeros(0, np.int64)
        self.selected = [i for i in self.selected] if not self.auto_select else []
        self._dirty.update(DIRTY_PARTS)

    def _restart(self, why: str) -> None:
        logger.info("results stream restarted (%s); clearing the display", why)
        self.n_restarts += 1
        self._reset_session()
        self.events.append({"kind": "restart", "frame_index": -1, "neuron_ids": [], "detail": why})

    # ------------------------------------------------------------------ input
    def handle(self, message: Any, now: float) -> None:
        """Apply one decoded message (``topic``, ``header``, ``arrays``) at time ``now``.

        Unknown topics are ignored; a message whose fields do not fit is counted in
        ``n_malformed`` and skipped.
        """
        self.n_messages += 1
        self.last_message_s = now
        handler = getattr(self, f"_on_{message.topic}", None)
        if handler is None:
            return
        try:
            handler(message.header, message.arrays, now)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self.note_malformed(f"{message.topic}: {exc}")

    def note_malformed(self, reason: str) -> None:
        """Count a message that could not be used (undecodable or with bad fields)."""
        self.n_malformed += 1
        self._dirty.add("status")
        logger.debug("skipped a malformed results message: %s", reason)

    def _on_ready(self, h: dict, arrays: dict, now: float) -> None:
        session, pid = h.get("session_id"), h.get("engine_pid")
        new_session = None not in (self.session_id, session) and session != self.session_id
        new_engine = self.engine_pid is not None and pid != self.engine_pid
        if new_session or new_engine:
            why = f"session {self.session_id!r} -> {session!r}" if new_session else "engine"
            self._restart(f"{why}, engine pid {self.engine_pid} -> {pid}")
        self.session_id = session if session is not None else self.session_id
        self.engine_pid = pid
        pixel = h.get("pixel_size_um")
        if type(pixel) in (int, float) and pixel > 0 and pixel != self.pixel_size_um:
            self.pixel_size_um = float(pixel)
            self._dirty.add("image")
        if self.eos is not None:
            self.eos = None
            self._dirty.add("status")

    def _on_status(self, h: dict, arrays: dict, now: float) -> None:
        self.status = dict(h)
        self.status["_received_s"] = now
        if h.get("phase") != "stopped":
            self.eos = None
        self._dirty.add("status")

    def _on_eos(self, h: dict, arrays: dict, now: float) -> None:
        self.eos = dict(h)
        self.status["phase"] = "stopped"
        self._dirty.add("status")

    def _on_traces(self, h: dict, arrays: dict, now: float) -> None:
        frame_index, t_ms = _int(h, "frame_index"), _num(h, "t_acq_ms")
        ids = arrays["neuron_ids"]
        C, S = arrays["C"], arrays["S"]
        C_raw = arrays.get("C_raw", C)
        k = ids.shape[0]
        if ids.ndim != 1 or any(a.shape != (k,) for a in (C, S, C_raw)):
            raise ValueError(f"trace arrays have shapes {ids.shape}, {C.shape}, {S.shape}")
        if self.last_frame_index is not None and frame_index < self.last_frame_index:
            self._restart(f"frame index went back from {self.last_frame_index} to {frame_index}")
        last = self.last_frame_index
        if last is not None and frame_index > last + 1 and self.last_t_acq_ms is not None:
            # frames lost or rejected upstream: one empty column so the lines break there
            empty = np.zeros(0, np.float32)
            t_gap = self.last_t_acq_ms + (t_ms - self.last_t_acq_ms) / (frame_index - last)
            self.traces.append(last + 1, t_gap, np.zeros(0, np.int64), empty, empty, empty)
        motion = parse_motion(h)
        n_before = self.traces.n_rows
        self.traces.append(frame_index, t_ms, ids, C, S, C_raw)
        if motion is not None:
            self.motion.append(frame_index, motion[0], motion[1], h.get("flag") is not None)
        if self.traces.n_rows > n_before and self._seen_first_traces:
            for nid in self.traces.row_ids[n_before:].tolist():
                self.births.setdefault(nid, frame_index)
            self._dirty.add("events")
        if not self._seen_first_traces:
            logger.info("first traces of the session: %d neurons at frame %d", k, frame_index)
        self._seen_first_traces = True
        self.last_frame_index, self.last_t_acq_ms = frame_index, t_ms
        self.last_age_ms = _opt_num(h, "age_ms")
        process_ms = _opt_num(h, "process_ms")  # -1 when the engine did not time it
        self.last_process_ms = process_ms if process_ms >= 0 else math.nan
        t_send_ns = h.get("t_send_ns")
        # frame age when it reached this dashboard (sender and dashboard share the host clock)
        age = now * 1000.0 - t_send_ns / 1e6 if type(t_send_ns) is int and t_send_ns > 0 else -1
        self.last_recv_age_ms = age if age >= 0 else math.nan
        self.last_traces_s = now
        self._dirty.update(("traces", "image"))
        if self.auto_select:
            self.pick_most_active()

    def _on_footprints(self, h: dict, arrays: dict, now: float) -> None:
        dims, version = _dims(h), _int(h, "version")
        data, indices, indptr = arrays["data"], arrays["indices"], arrays["indptr"]
        ids = np.asarray(arrays["neuron_ids"], dtype=np.int64)
        n_pixels, k = dims[0] * dims[1], ids.shape[0]
        if indptr.shape != (k + 1,):
            raise ValueError(f"indptr has shape {indptr.shape}; {k} neurons need ({k + 1},)")
        fp = self.footprints
        if (
            fp is not None
            and fp.version == version
            and fp.dims == dims
            and np.array_equal(fp.ids, ids)
            and fp.A.nnz == data.shape[0]
        ):
            return  # the periodic re-send for late joiners: nothing changed
        thr = self.config.contour_threshold
        contours, owner = contours_and_owner(data, indices, indptr, dims, thr)
        A = scipy.sparse.csc_array(
            (np.asarray(data, np.float32), np.asarray(indices), np.asarray(indptr)),
            shape=(n_pixels, k),
        )
        col_max = A.max(axis=0).toarray().ravel() if k else np.zeros(0, np.float32)
        scale = np.where(col_max > 0, 1.0 / np.where(col_max > 0, col_max, 1), 0.0)
        A_norm = scipy.sparse.csr_array(A @ scipy.sparse.diags_array(scale.astype(np.float32)))
        A_norm = scipy.sparse.csr_array(_block_mean_operator(dims, DISPLAY_MAX_SIDE) @ A_norm)
        if "centroids" in arrays and arrays["centroids"].shape == (k, 2):
            centroids = np.asarray(arrays["centroids"], dtype=np.float32)
        else:
            centroids = self._centroids(A, dims)
        self.footprints = FootprintSet(
            version, dims, ids, centroids, scipy.sparse.csr_array(A), A_norm, contours, owner
        )
        self._dirty.update(("footprints", "image", "traces"))

    @staticmethod
    def _centroids(A: scipy.sparse.csc_array, dims: tuple[int, int]) -> np.ndarray:
        pix = np.arange(dims[0] * dims[1])
        weight = np.asarray(A.sum(axis=0)).ravel()
        weight[weight == 0] = 1
        rows = (A.T @ (pix // dims[1]).astype(np.float64)) / weight
        cols = (A.T @ (pix % dims[1]).astype(np.float64)) / weight
        return np.stack([rows, cols], axis=1).astype(np.float32)

    def _on_image(self, h: dict, arrays: dict, now: float) -> None:
        layer, image = h["layer"], arrays["image"]
        if layer not in LAYERS:
            raise ValueError(f"unknown image layer {layer!r}; expected one of {LAYERS}")
        if image.ndim != 2:
            raise ValueError(f"image has shape {image.shape}; expected (h, w)")
        down = int(h.get("downsample", 1) or 1)
        img = LayerImage(_int(h, "frame_index"), np.asarray(image, dtype=np.float32), down)
        self.images[layer] = img
        if layer == "raw" and "max_projection" not in self.images:
            prev = self._local_max
            if prev is None or prev.image.shape != image.shape:
                self._local_max = LayerImage(img.frame_index, img.image.copy(), down)
            else:
                np.maximum(prev.image, img.image, out=prev.image)
                prev.frame_index = img.frame_index
        self._dirty.add("image")

    def _on_event(self, h: dict, arrays: dict, now: float) -> None:
        kind, frame_index = str(h["kind"]), _int(h, "frame_index")
        ids = [int(i) for i in h.get("neuron_ids") or []]
        self.events.append(
            {"kind": kind, "frame_index": frame_index, "neuron_ids": ids, "detail": h.get("detail")}
        )
        if kind == "born":
            for nid in ids:
                self.births[nid] = frame_index
        self._dirty.add("events")

    def _on_trigger(self, h: dict, arrays: dict, now: float) -> None:
        rule = str(h["rule"])
        stats = self.rules.setdefault(rule, RuleStats(rule))
        stats.count += 1
        stats.last_frame_index = _int(h, "frame_index")
        stats.last_value = _opt_num(h, "value")
        stats.last_age_ms = _opt_num(h, "age_ms")
        stats.last_received_s = now
        stats.last_t_acq_ms = _opt_num(h, "t_acq_ms")
        stats.last_neuron_ids = tuple(int(i) for i in h.get("neuron_ids") or [])
        if math.isfinite(stats.last_age_ms):
            stats.ages_ms.append(stats.last_age_ms)
        self.triggers.append(dict(h))
        self._dirty.add("triggers")

    def declare_rules(self, names: list[str]) -> None:
        """List rules that have not fired yet (from a rules file or a results file)."""
        for name in names:
            if str(name) not in self.declared_rules:
                self.declared_rules.append(str(name))
            self.rules.setdefault(str(name), RuleStats(str(name)))
        self._dirty.add("triggers")

    def seconds_since(self, stats: RuleStats, now: float) -> float:
        """Acquisition time from the rule's last firing to the newest frame (wall-clock time
        since it was received when no frame time is known); NaN if it never fired."""
        if stats.count == 0:
            return math.nan
        if self.last_t_acq_ms is not None and math.isfinite(stats.last_t_acq_ms):
            return max(0.0, (self.last_t_acq_ms - stats.last_t_acq_ms) / 1000.0)
        return now - stats.last_received_s

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> str:
        """Update and return the connection state from the time since the last messages."""
        cfg, state = self.config, "live"
        phase = self.status.get("phase")
        if self.offline:
            state = "review"
        elif self.last_message_s is None:
            silent = now - self._started_s
            state = "unreachable" if silent > cfg.silence_timeout_s else "connecting"
        elif now - self.last_message_s > cfg.silence_timeout_s:
            state = "stopped" if self.eos is not None else "unreachable"
        elif self.eos is not None:
            state = "stopped"
        elif phase is None:  # messages but no status yet: live once traces flow
            state = "live" if self.last_traces_s is not None else "connecting"
        elif phase == "waiting" and not self._init_progress():
            state = "waiting"
        elif phase in ("waiting", "initialising"):
            state = "initialising"
        elif phase == "running":
            last = self.last_traces_s if self.last_traces_s is not None else self._phase_since(now)
            state = "stalled" if now - last > cfg.stall_timeout_s else "live"
        self._now = now
        if state != self.connection:
            self.connection = state
            self._dirty.add("status")
        return state

    def _init_progress(self) -> float:
        value = self.status.get("init_progress")
        return float(value) if type(value) in (int, float) and value > 0 else 0.0

    def _phase_since(self, now: float) -> float:
        return self.status.get("_received_s", now)

    @property
    def banner(self) -> Banner | None:
        """The message to show across the window, or None when all is well."""
        now = getattr(self, "_now", self._started_s)
        state, st = self.connection, self.status
        if state == "unreachable":
            if self.last_message_s is None:
                return Banner(
                    f"Engine not reachable at {self.address}: nothing received for "
                    f"{now - self._started_s:.0f} s. Is `online-cnmfe run` started?",
                    "error",
                )
            return Banner(
                f"Engine not responding: no message for {now - self.last_message_s:.0f} s "
                f"(last frame {self.last_frame_index}). Waiting for it to come back…",
                "error",
            )
        if state == "stalled":
            since = now - (self.last_traces_s or now)
            return Banner(
                f"Stream stalled: no new frame for {since:.0f} s (engine alive, queue depth "
                f"{st.get('queue_depth', '?')}). Check the acquisition.",
                "error",
            )
        if state == "stopped":
            eos = self.eos or {}
            summary = eos.get("summary")
            lost = n_lost(eos) or n_lost(st)
            return Banner(
                f"Engine stopped ({eos.get('reason', 'eos')}): {summary}."
                if isinstance(summary, str) and summary
                else f"Engine stopped ({eos.get('reason', 'eos')}) after "
                f"{eos.get('n_frames_processed', self.last_frame_index)} frames.",
                "error" if lost else "warning",
            )
        alarm = lag_or_loss(st, self.config.behind_alarm_s)
        if alarm is not None and state != "initialising":
            return alarm
        if st.get("store_ok") is False:
            return Banner(f"Results file not written: {st.get('store_error')}", "warning")
        if state == "waiting":
            return Banner("Engine up, waiting for frames from the acquisition…", "info")
        if state == "initialising":
            if st.get("phase") == "waiting":
                return Banner(
                    f"Initialising: collecting the first frames ({100 * self._init_progress():.0f} "
                    "%); the summary images fill in meanwhile",
                    "info",
                )
            text = "Initialising: fitting the initial model on the first frames…"
            stage, done = st.get("init_stage"), st.get("init_fit_progress")
            if isinstance(stage, str) and type(done) in (int, float):
                text = f"Initialising: fitting the initial model: {stage}, {100 * done:.0f} % done…"
            if alarm is not None:  # expected while fitting, but say it: the frames wait
                return Banner(f"{text} {alarm.text}", "error")
            return Banner(text, "info")
        if state == "connecting":
            return Banner(f"Connecting to {self.address}…", "info")
        return None

    def take_dirty(self) -> set[str]:
        """Parts changed since the last call (and clear them)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def mark_dirty(self, *parts: str) -> None:
        """Ask for a redraw of ``parts`` (e.g. after a view option changed)."""
        self._dirty.update(parts)

    # ------------------------------------------------------------------ selection
    def select(self, neuron_id: int | None, add: bool = False) -> None:
        """Select a neuron (replacing the selection unless ``add``); None clears it."""
        self.auto_select = False
        if neuron_id is None:
            self.selected = []
        elif add:
            if neuron_id in self.selected:
                self.selected.remove(neuron_id)
            else:
                self.selected = (self.selected + [int(neuron_id)])[-self.config.max_selected :]
        else:
            self.selected = [int(neuron_id)]
        self._dirty.update(("selection", "traces", "footprints"))

    def clear_selection(self) -> None:
        """Go back to showing the most active neurons (re-picked every 100 frames)."""
        self.auto_select = True
        self.selected = []
        self.pick_most_active(force=True)
        self._dirty.update(("selection", "traces", "footprints"))

    def pick_most_active(self, n: int = 4, force: bool = False) -> None:
        """Select the ``n`` neurons whose C varied most over the last 100 frames (while in
        auto-selection this runs every 100 frames, or at once with ``force``)."""
        tb = self.traces
        if not force and tb.n_frames % 100 != 1 and self.selected:
            return
        ids = tb.current_ids
        if ids.size == 0:
            return
        rows = tb.rows_for(ids)
        act = np.nan_to_num(tb.window(100, rows, fields=("C",))["C"], nan=0.0).std(axis=1)
        best = ids[np.argsort(-act, kind="stable")[:n]]
        if best.tolist() != self.selected:
            self.selected = best.tolist()
            self._dirty.update(("selection", "footprints"))
