"""Review a recorded session: the dashboard window over a results file, with a time slider.

:class:`ReviewSource` reads the file once (``online_cnmfe.results.reader.read_results``) and, for a
chosen frame, puts the dashboard model in the state the live view had then: the traces of the
preceding window (neurons absent before their birth frame), the final footprints (sent
through the same ``footprints`` message path as live), the births, and a status built from
the per-frame bookkeeping. The denoised image A·C at that frame is computed by the model.
:class:`ReviewApp` adds the slider, a play button and the speed to the window.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtWidgets

from acquisition.protocol import Message, decode_message
from dashboard.model import DashboardModel, ModelConfig
from dashboard.views import apply_dark_theme
from dashboard.views.traces import MAX_WINDOW_S
from dashboard.views.window import DashboardWindow
from online_cnmfe.results.stream import encode_event, encode_footprints

logger = logging.getLogger(__name__)


class ReviewSource:
    """A results file presented frame by frame to a :class:`DashboardModel`.

    Parameters
    ----------
    path : str or Path
        A results file (docs/results-format.md).

    Raises
    ------
    StateFileError
        If the file is missing or not a results file (from ``read_results``).
    """

    def __init__(self, path: str | Path) -> None:
        from online_cnmfe.results.reader import read_results

        self.path = Path(path)
        self.results = r = read_results(self.path)
        self.n_frames = r.n_frames
        self.frame_index = r.frames["frame_index"]
        t = r.frames["t_acq_ms"].astype(np.float64)
        rate = float(r.attrs.get("frame_rate_hz") or 20.0)
        if not np.all(np.isfinite(t)):
            t = np.where(np.isfinite(t), t, np.arange(t.size) * 1000.0 / rate)
        self.t_ms = t
        self.frame_rate_hz = rate
        self.ids = np.asarray(r.trace_neuron_ids, np.int64)
        birth_of = dict(zip(r.neuron_ids.tolist(), r.birth_frame.tolist(), strict=True))
        self.birth = np.array([birth_of.get(i, 0) for i in self.ids.tolist()], np.int64)
        self.fp_birth = np.asarray(r.birth_frame, np.int64)
        self._shown_alive: np.ndarray | None = None
        self.fired, self.rule_log = _read_triggers(self.path)
        latency = r.frames["latency_ms"]
        latency = latency[np.isfinite(latency)]
        self.latency = np.percentile(latency, [50, 99]) if latency.size else (math.nan,) * 2

    def show(self, model: DashboardModel, t: int, window_frames: int) -> None:
        """Put ``model`` in the state of frame ``t`` (0-based row of the file)."""
        r = self.results
        t = int(np.clip(t, 0, max(self.n_frames - 1, 0)))
        session_start = not model.offline
        if session_start:
            model.offline = True
            model.session_id = self.path.name
        if self.n_frames == 0:
            return
        self._footprints_at(model, int(self.frame_index[t]))
        lo = max(0, t - window_frames + 1)
        fi = self.frame_index[lo : t + 1]
        alive = self.birth[:, None] <= fi[None, :]

        def block(a: np.ndarray) -> np.ndarray:
            return np.where(alive, a[:, lo : t + 1], np.nan).astype(np.float32)

        model.traces.load(
            fi, self.t_ms[lo : t + 1], self.ids, block(r.C_all), block(r.S_all), block(r.C_raw_all)
        )
        model.last_frame_index = int(fi[-1])
        model.last_t_acq_ms = float(self.t_ms[t])
        if session_start:
            self._births(model)
        model.status = self._status(t)
        self._triggers_at(model, int(self.frame_index[t]))
        model.mark_dirty("traces", "image", "status", "footprints")

    def _footprints_at(self, model: DashboardModel, frame: int) -> None:
        """Send the footprints of the neurons born by ``frame`` (when that set changed)."""
        r = self.results
        alive = self.fp_birth <= frame
        if self._shown_alive is not None and np.array_equal(alive, self._shown_alive):
            return
        self._shown_alive = alive
        A = r.A[:, np.flatnonzero(alive)]
        frames = encode_footprints(A, r.neuron_ids[alive], int(alive.sum()), r.dims)
        model.handle(decode_message(frames), now=0.0)

    def _triggers_at(self, model: DashboardModel, frame: int) -> None:
        """Rules configured and triggers fired up to ``frame`` (from ``triggers/``)."""
        model.rules.clear()
        model.triggers.clear()
        model.declare_rules([name for f, name in self.rule_log if f <= frame])
        for header in self.fired:
            if header["frame_index"] > frame:
                break
            model.handle(Message("trigger", header), now=0.0)

    def _births(self, model: DashboardModel) -> None:
        for nid, b in zip(self.ids.tolist(), self.birth.tolist(), strict=True):
            if b > 0:
                model.births[nid] = b
                model.handle(decode_message(encode_event("born", b, [nid], "")), now=0.0)

    def _status(self, t: int) -> dict:
        r = self.results
        n_dropped = int(np.sum(r.dropped[:, 1] - r.dropped[:, 0] + 1)) if r.dropped.size else 0
        return {
            "phase": "review",
            "frame_index": int(self.frame_index[t]),
            "fps_in": self.frame_rate_hz,
            "fps_processed": math.nan,
            "latency_ms_p50": float(self.latency[0]),
            "latency_ms_p99": float(self.latency[1]),
            "queue_depth": math.nan,
            "n_dropped": n_dropped,
            "n_rejected": len(r.rejected),
            "n_malformed": 0,
            "n_neurons": int(np.sum(self.birth <= self.frame_index[t])),
        }


def _read_triggers(path: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """Trigger firings (as ``trigger`` headers, by frame) and (frame, rule name) of every rule
    configured, from the results file's ``triggers/`` group; empty when there is none."""
    from online_cnmfe.results.reader import read_trigger_log

    t = read_trigger_log(path)
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


class ReviewApp:
    """The dashboard window over a results file, with a time slider and a play button."""

    def __init__(self, path: str | Path, window_s: float = 30.0, config=None) -> None:
        self.qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        apply_dark_theme(self.qapp)
        self.source = ReviewSource(path)
        longest = int(MAX_WINDOW_S * self.source.frame_rate_hz) + 1  # the window spin box's max
        cfg = config or ModelConfig(history_frames=max(2, min(self.source.n_frames, longest)))
        self.model = DashboardModel(cfg, address=str(path))
        self.window = DashboardWindow(title=f"online-cnmfe review — {path}", window_s=window_s)
        self._build_controls()
        self.window.status.pause.hide()  # nothing streams in: the slider is the control
        self.play_timer = QtCore.QTimer()
        self.play_timer.timeout.connect(self._step)
        self.window.traces.window_box.valueChanged.connect(lambda *_: self.show(self.frame))
        self.show(self.source.n_frames - 1)

    def _build_controls(self) -> None:
        row = QtWidgets.QHBoxLayout()
        self.play = QtWidgets.QPushButton("▶ Play")
        self.play.setCheckable(True)
        self.play.toggled.connect(self._toggle_play)
        self.speed = QtWidgets.QComboBox()
        for s in (0.5, 1, 2, 5, 10):
            self.speed.addItem(f"{s:g}×", s)
        self.speed.setCurrentIndex(1)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, max(self.source.n_frames - 1, 0))
        self.slider.valueChanged.connect(self.show)
        self.position = QtWidgets.QLabel("")
        self.position.setStyleSheet("font-family:monospace;")
        row.addWidget(self.play)
        row.addWidget(self.speed)
        row.addWidget(self.slider, 1)
        row.addWidget(self.position)
        self.window.controls.addLayout(row)

    @property
    def frame(self) -> int:
        """Row of the file shown."""
        return self.slider.value()

    def show(self, t: int) -> None:
        """Show frame row ``t`` of the file."""
        if self.slider.value() != t:
            self.slider.setValue(t)  # re-enters through valueChanged
            return
        window = max(2, int(round(self.window.traces.window_s * self.source.frame_rate_hz)))
        self.source.show(self.model, t, window)
        if self.model.auto_select:
            self.model.pick_most_active(force=True)
        self.model.tick(0.0)
        if self.source.n_frames:
            secs = (self.source.t_ms[t] - self.source.t_ms[0]) / 1000.0
            self.position.setText(
                f"frame {self.source.frame_index[t]} ({t + 1}/{self.source.n_frames}) · "
                f"{int(secs // 60):02d}:{secs % 60:05.2f}"
            )
        self.window.refresh(self.model, self.model.take_dirty())

    def _toggle_play(self, on: bool) -> None:
        self.play.setText("⏸ Pause" if on else "▶ Play")
        if on:
            if self.frame >= self.source.n_frames - 1:
                self.slider.setValue(0)
            self.play_timer.start(40)
        else:
            self.play_timer.stop()

    def _step(self) -> None:
        step = max(1, round(self.speed.currentData() * self.source.frame_rate_hz * 0.04))
        t = self.frame + step
        if t >= self.source.n_frames:
            self.play.setChecked(False)
            t = self.source.n_frames - 1
        self.slider.setValue(t)

    def run(self, screenshot: str | Path | None = None, quit_after_s: float | None = None) -> int:
        """Show the window until closed (or ``quit_after_s``; screenshot just before)."""
        self.window.show()

        def finish() -> None:
            if screenshot is not None:
                path = Path(screenshot)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.window.grab().save(str(path))
                logger.info("screenshot written to %s", path)
            self.qapp.quit()

        if quit_after_s is not None:
            QtCore.QTimer.singleShot(int(quit_after_s * 1000), finish)
        self.qapp.exec()
        return 0
