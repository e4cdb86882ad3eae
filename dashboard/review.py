"""Review a recorded session: a results file presented frame by frame to the dashboard model.

:class:`ReviewSource` opens the file with :class:`online_cnmfe.results.session.ResultsSession`
(small tables at once, traces by window) and, for a chosen trace column, puts the dashboard
model in the state the live view had then: the traces of the window before it (read from the
file; NaN before a neuron's birth, after its removal, at skipped frames, and one NaN column per
gap of dropped or refused frames so lines break there), the footprints of the neurons present
(through the same ``footprints`` message path as live), the events up to that frame (drops,
refused frames, births, merges, removals), the triggers fired by then, the summary images of the
file as layers, and a status built from the per-frame bookkeeping. The window with its slider
and curation controls is :class:`dashboard.review_app.ReviewApp`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path

import numpy as np

from acquisition.protocol import Message, decode_message
from dashboard.model import DashboardModel, LayerImage
from online_cnmfe.results.session import ResultsSession
from online_cnmfe.results.stream import encode_footprints

logger = logging.getLogger(__name__)

# results-file image -> dashboard layer
FILE_LAYERS = {
    "max": "max_projection",
    "corr_pnr": "corr_pnr",
    "mean": "mean",
    "corr": "corr",
    "pnr": "pnr",
    "background": "background",
}


def with_gaps(frame_index: np.ndarray, t_ms: np.ndarray, blocks: dict[str, np.ndarray]):
    """Insert one NaN column after every jump of the frame index (frames without a column).

    Returns
    -------
    frame_index, t_ms, blocks
        With the gap columns (frame index = previous + 1, time interpolated).

    Examples
    --------
    >>> fi, t, b = with_gaps(np.array([0, 1, 4]), np.array([0.0, 50.0, 200.0]),
    ...                      {"C": np.ones((1, 3), np.float32)})
    >>> fi.tolist(), t.tolist(), b["C"].tolist()
    ([0, 1, 2, 4], [0.0, 50.0, 100.0, 200.0], [[1.0, 1.0, nan, 1.0]])
    """
    jumps = np.flatnonzero(np.diff(frame_index) > 1) + 1
    if jumps.size == 0:
        return frame_index, t_ms, blocks
    gap_fi = frame_index[jumps - 1] + 1
    step = (t_ms[jumps] - t_ms[jumps - 1]) / (frame_index[jumps] - frame_index[jumps - 1])
    gap_t = t_ms[jumps - 1] + step
    out = {name: np.insert(b, jumps, np.nan, axis=1) for name, b in blocks.items()}
    return np.insert(frame_index, jumps, gap_fi), np.insert(t_ms, jumps, gap_t), out


class ReviewSource:
    """A results file presented frame by frame to a :class:`DashboardModel`.

    Parameters
    ----------
    path : str or Path
        A results file (docs/results-format.md).

    Raises
    ------
    StateFileError
        If the file is missing or not a results file.
    """

    def __init__(self, path: str | Path) -> None:
        from online_cnmfe.results.reader import read_trigger_log

        self.path = Path(path)
        self.session = s = ResultsSession(self.path)
        self.n_frames = s.n_frames
        self.frame_index = s.frame_index
        self.t_ms = s.t_ms
        self.frame_rate_hz = s.frame_rate_hz
        self.ids = s.trace_ids
        self.fp_birth = np.array([_birth_col(s, i) for i in s.neuron_ids.tolist()], np.int64)
        self.death = _death_columns(s)
        self._shown_alive: np.ndarray | None = None
        self._n_events = -1
        self.fired, self.rule_log = _triggers(read_trigger_log(self.path))
        lat = s.latency_ms[np.isfinite(s.latency_ms)]
        self.latency = np.percentile(lat, [50, 99]) if lat.size else (math.nan,) * 2

    def layers(self) -> list[str]:
        """Dashboard layers this file can show (``denoised`` needs footprints)."""
        out = [layer for name, layer in FILE_LAYERS.items() if self.session.image(name) is not None]
        return (["denoised"] if self.session.neuron_ids.size else []) + out

    def show(self, model: DashboardModel, t: int, window_frames: int) -> None:
        """Put ``model`` in the state of trace column ``t`` (0-based)."""
        s = self.session
        t = int(np.clip(t, 0, max(self.n_frames - 1, 0)))
        if not model.offline:
            model.offline = True
            model.session_id = self.path.name
            self._load_images(model)
        if self.n_frames == 0:
            return
        frame = int(self.frame_index[t])
        self._footprints_at(model, t)
        lo = max(0, t - window_frames + 1)
        present = (self._birth_cols() <= t) & (self.death > lo)
        ids = self.ids[present]
        blocks = s.traces(ids.tolist(), lo, t + 1)
        after = np.arange(lo, t + 1)[None, :] >= self.death[present][:, None]
        for b in blocks.values():
            b[after] = np.nan
        fi, tm, blocks = with_gaps(self.frame_index[lo : t + 1], self.t_ms[lo : t + 1], blocks)
        model.traces.load(fi, tm, ids, blocks["C"], blocks["S"], blocks["C_raw"])
        model.last_frame_index = frame
        model.last_t_acq_ms = float(self.t_ms[t])
        self._events_at(model, frame)
        model.status = self._status(t)
        self._triggers_at(model, frame)
        model.mark_dirty("traces", "image", "status", "footprints")

    def _birth_cols(self) -> np.ndarray:
        return self.session.birth_column

    def _load_images(self, model: DashboardModel) -> None:
        for name, layer in FILE_LAYERS.items():
            image = self.session.image(name)
            if image is not None:
                info = self.session.image_info(name) if name != "background" else {}
                n = int(info.get("n_frames", 0) or 0)
                note = "baseline b0" if name == "background" else (
                    f"{n} frames ({info.get('source', '')})" if n else "summary image"
                )  # fmt: skip
                model.images[layer] = LayerImage(-1, image, 1, note)

    def _footprints_at(self, model: DashboardModel, t: int) -> None:
        """Send the footprints of the neurons born by column ``t`` (when that set changed)."""
        s = self.session
        alive = self.fp_birth <= t
        if self._shown_alive is not None and np.array_equal(alive, self._shown_alive):
            return
        self._shown_alive = alive
        A = s.A[:, np.flatnonzero(alive)]
        frames = encode_footprints(A, s.neuron_ids[alive], int(alive.sum()), s.dims)
        model.handle(decode_message(frames), now=0.0)

    def _events_at(self, model: DashboardModel, frame: int) -> None:
        """Events up to ``frame`` (every kind) and the births they imply."""
        events = self.session.events_until(frame)
        if len(events) == self._n_events:
            return
        self._n_events = len(events)
        model.events = deque(
            (
                {"kind": e.kind, "frame_index": e.frame_index, "neuron_ids": list(e.neuron_ids),
                 "detail": e.detail}
                for e in events[-model.config.max_events :]
            ),
            maxlen=model.config.max_events,
        )  # fmt: skip
        model.births = {n: e.frame_index for e in events if e.kind == "born" for n in e.neuron_ids}
        model.mark_dirty("events")

    def _triggers_at(self, model: DashboardModel, frame: int) -> None:
        """Rules configured and triggers fired up to ``frame`` (from ``triggers/``)."""
        model.rules.clear()
        model.triggers.clear()
        model.declare_rules([name for f, name in self.rule_log if f <= frame])
        for header in self.fired:
            if header["frame_index"] > frame:
                break
            model.handle(Message("trigger", header), now=0.0)

    def _status(self, t: int) -> dict:
        s = self.session
        frame = int(self.frame_index[t])
        drops = s.dropped[s.dropped[:, 0] <= frame] if s.dropped.size else s.dropped
        n_dropped = (
            int(np.sum(np.minimum(drops[:, 1], frame) - drops[:, 0] + 1)) if drops.size else 0
        )
        return {
            "phase": "review",
            "frame_index": frame,
            "fps_in": self.frame_rate_hz,
            "fps_processed": math.nan,
            "latency_ms_p50": float(self.latency[0]),
            "latency_ms_p99": float(self.latency[1]),
            "queue_depth": math.nan,
            "n_dropped": n_dropped,
            "n_rejected": sum(1 for i, _ in s.rejected if i <= frame),
            "n_malformed": 0,
            "n_neurons": int(np.sum((self._birth_cols() <= t) & (self.death > t))),
        }


def _birth_col(s: ResultsSession, nid: int) -> int:
    i = np.flatnonzero(s.trace_ids == nid)
    return int(s.birth_column[i[0]]) if i.size else 0


def _death_columns(s: ResultsSession) -> np.ndarray:
    """First column at which each trace row's neuron is gone (n_frames while present).

    Neurons in the final footprints never die; others die at their last 'removed' or
    'merged' event (a merged neuron absent from the final footprints was absorbed)."""
    death = np.full(s.trace_ids.shape[0], s.n_frames, np.int64)
    final = set(s.neuron_ids.tolist())
    gone_at: dict[int, int] = {}
    for e in s.events:
        if e.kind in ("removed", "merged"):
            for nid in e.neuron_ids:
                if nid not in final:
                    gone_at[nid] = e.frame_index
    for k, nid in enumerate(s.trace_ids.tolist()):
        if nid in gone_at:
            death[k] = min(s.n_frames, s.column_of(gone_at[nid] + 1))
    return death


def _triggers(t) -> tuple[list[dict], list[tuple[int, str]]]:
    """Trigger firings (as ``trigger`` headers, by frame) and (frame, rule name) of every rule
    configured, from the results file's ``triggers/`` group; empty when there is none."""
    if t is None:
        return [], []
    fired = [
        {
            "rule": name,
            "frame_index": int(row["frame_index"]),
            "t_acq_ms": float(row["t_acq_ms"]),
            "value": float(row["value"]),
            "age_ms": float(row["age_ms"]),
            "neuron_ids": ids,
        }
        for name, row, ids in zip(t["rule"], t["fired"], t["neuron_ids"], strict=True)
    ]
    fired.sort(key=lambda h: h["frame_index"])
    rules = [(frame, str(rule.get("name", "?"))) for frame, _, rule in t["rule_log"]]
    return fired, rules
