"""Status widgets: the banner across the window and the status bar of engine figures."""

from __future__ import annotations

import math

from PySide6 import QtCore, QtWidgets

from dashboard.model import DashboardModel
from dashboard.views import SEVERITY_STYLE

# (key, label, tooltip); the most important first: a narrow window clips the last ones.
CHIPS = (
    ("frame", "Frame", "index of the newest frame processed"),
    ("fps", "Acq / proc", "frames per second arriving at the engine / processed by it"),
    ("latency", "Latency", "per-frame processing latency, p50 / p99 over the recent past"),
    ("model", "Model", "the model's time on the newest frame"),
    (
        "age",
        "Age",
        "age of the newest frame when the engine published its traces / when they reached "
        "this dashboard (same-host clock)",
    ),
    (
        "queue",
        "Queue",
        "frames waiting for the model (memory and disk spool) / how far behind "
        "the stream the results are",
    ),
    ("neurons", "Neurons", "neurons in the model now"),
    (
        "lost",
        "Lost",
        "frames dropped / rejected / malformed at the engine (+ bad messages here); flagged: "
        "frames kept but not used to update the model (corrupt)",
    ),
    ("display", "Display", "display updates per second of this window"),
    ("session", "Session", "session id of the stream"),
)
STATE_COLOURS = {
    "live": "#3fb950",
    "waiting": "#d29922",
    "initialising": "#58a6ff",
    "review": "#8b949e",
    "connecting": "#8b949e",
    "stalled": "#f85149",
    "unreachable": "#f85149",
    "stopped": "#d29922",
}


def _fmt(value, spec: str = ".1f", unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:{spec}}{unit}"


def fmt_duration_ms(value) -> str:
    """A duration given in ms, in the unit that keeps it short: 0.85 ms, 12.3 ms, 410 ms,
    2.5 s, 4.2 min, 1.5 h ('–' when unknown). Never scientific notation.

    Examples
    --------
    >>> [fmt_duration_ms(x) for x in (0.849, 12.34, 409.7, 2500.0, 252000.0, 5.4e6, None)]
    ['0.85 ms', '12.3 ms', '410 ms', '2.5 s', '4.2 min', '1.5 h', '–']
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    v = float(value)
    if abs(v) < 10:
        return f"{v:.2f} ms"
    if abs(v) < 100:
        return f"{v:.1f} ms"
    if abs(v) < 1000:
        return f"{v:.0f} ms"
    if abs(v) < 60_000:
        return f"{v / 1000:.1f} s"
    if abs(v) < 3_600_000:
        return f"{v / 60_000:.1f} min"
    return f"{v / 3_600_000:.1f} h"


def fmt_count(value) -> str:
    """An integer count, with k / M beyond 6 digits so it stays narrow ('–' unknown).

    Examples
    --------
    >>> [fmt_count(x) for x in (7, 39300, 1234567, None)]
    ['7', '39300', '1.23M', '–']
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    v = int(value)
    return f"{v / 1e6:.3g}M" if abs(v) >= 1_000_000 else str(v)


class Banner(QtWidgets.QLabel):
    """A coloured full-width message, hidden when the model has nothing to say."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setContentsMargins(8, 6, 8, 6)
        self.hide()

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Show the model's banner (text and severity), else the engine's plausibility
        warning (status ``sanity_warning``), or hide."""
        banner = model.banner
        if banner is not None:
            text, severity = banner.text, banner.severity
        elif model.status.get("sanity_warning"):
            text, severity = f"⚠ {model.status['sanity_warning']}", "warning"
        else:
            self.hide()
            return
        self.setText(text)
        self.setStyleSheet(SEVERITY_STYLE[severity] + "font-size:15px; font-weight:600;")
        self.show()


class StatusPanel(QtWidgets.QWidget):
    """One line of labelled figures plus the phase and initialisation progress."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        self.pause = QtWidgets.QPushButton("Pause display")
        self.pause.setCheckable(True)
        self.pause.setToolTip(
            "freeze the display to look at it; data keep arriving and are shown when resumed"
        )
        self.pause.toggled.connect(
            lambda on: self.pause.setText("Resume display" if on else "Pause display")
        )
        layout.addWidget(self.pause)
        self.state = QtWidgets.QLabel("●  connecting")
        layout.addWidget(self.state)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setFixedWidth(160)
        self.progress.setFormat("initialising %p%")
        self.progress.hide()
        layout.addWidget(self.progress)
        # The chips live in a frameless scroll area: a narrow window clips the last ones
        # instead of squeezing them on top of each other.
        chips = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(chips)
        row.setContentsMargins(0, 0, 0, 0)
        self.chips_area = QtWidgets.QScrollArea()
        self.chips_area.setWidget(chips)
        self.chips_area.setWidgetResizable(True)
        self.chips_area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        for bar in ("setHorizontalScrollBarPolicy", "setVerticalScrollBarPolicy"):
            getattr(self.chips_area, bar)(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.chips_area.setFixedHeight(chips.sizeHint().height() + self.fontMetrics().height())
        layout.addWidget(self.chips_area, 1)
        self.names: dict[str, QtWidgets.QLabel] = {}
        self.values: dict[str, QtWidgets.QLabel] = {}
        for key, title, tip in CHIPS:
            name = QtWidgets.QLabel(title)
            name.setStyleSheet("color:#8b949e;")
            name.setToolTip(tip)
            value = QtWidgets.QLabel("–")
            value.setStyleSheet("font-weight:600; font-family:monospace;")
            value.setToolTip(tip)
            for label in (name, value):  # never squeezed: a narrow window clips the last chips
                label.setSizePolicy(
                    QtWidgets.QSizePolicy.Policy.Fixed, QtWidgets.QSizePolicy.Policy.Preferred
                )
                label.setMinimumWidth(label.fontMetrics().horizontalAdvance(label.text()) + 2)
            row.addSpacing(10)
            row.addWidget(name)
            row.addWidget(value)
            self.names[key] = name
            self.values[key] = value
        row.addStretch(1)
        # never force the window wider than the screen: clip the last chips instead
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Fixed)

    def text(self, key: str) -> str:
        """The shown value of one chip (for tests and logs)."""
        return self.values[key].text()

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Update every figure from the latest status and the model's own counters."""
        st, state = model.status, model.connection
        phase = st.get("phase")
        colour = STATE_COLOURS.get(state, "#8b949e")
        paused = "paused · " if self.pause.isChecked() else ""
        engine = f" · {phase}" if phase and phase != state else ""
        self.state.setText(f"<span style='color:{colour}'>●</span> {paused}{state}{engine}")
        init = st.get("init_progress")
        fit = st.get("init_fit_progress")  # the fit itself, once the frames are buffered
        if phase == "initialising" and isinstance(fit, int | float) and st.get("init_stage"):
            init = fit
        if phase in ("waiting", "initialising") and isinstance(init, int | float) and init > 0:
            self.progress.setValue(int(round(100 * init)))
            self.progress.show()
        else:
            self.progress.hide()
        frame = (
            model.last_frame_index if model.last_frame_index is not None else st.get("frame_index")
        )
        v = self.values
        v["frame"].setText(fmt_count(frame))
        v["fps"].setText(f"{_fmt(st.get('fps_in'))} / {_fmt(st.get('fps_processed'))} Hz")
        timed = phase in ("running", "stopped", "review") and st.get("n_frames_processed") != 0
        p50, p99 = (st.get(k) if timed else None for k in ("latency_ms_p50", "latency_ms_p99"))
        v["latency"].setText(f"{fmt_duration_ms(p50)} / {fmt_duration_ms(p99)}")
        v["model"].setText(fmt_duration_ms(model.last_process_ms))
        v["age"].setText(
            f"{fmt_duration_ms(model.last_age_ms)} / {fmt_duration_ms(model.last_recv_age_ms)}"
        )
        behind = st.get("behind_s")
        v["queue"].setText(
            fmt_count(st.get("queue_depth"))
            + (f" · {fmt_duration_ms(1e3 * behind)} behind" if behind else "")
        )
        lost = (st.get("n_dropped"), st.get("n_rejected"), st.get("n_malformed"))
        here = f" +{model.n_malformed} bad here" if model.n_malformed else ""
        left = st.get("n_unprocessed")
        here += f" · {left} unprocessed" if isinstance(left, int) and left > 0 else ""
        errors = st.get("n_model_errors")
        errors = f" · {errors} model errors" if isinstance(errors, int) and errors > 0 else ""
        flagged = st.get("n_flagged")
        errors += f" · {flagged} flagged" if isinstance(flagged, int) and flagged > 0 else ""
        v["lost"].setText(" / ".join(fmt_count(x) for x in lost) + here + errors)
        n = st.get("n_neurons")
        if model.footprints is not None:
            n = int(model.footprints.ids.size)
        v["neurons"].setText(_fmt(n, "d"))
        v["display"].setText(_fmt(model.display_fps, ".0f", " Hz"))
        v["session"].setText(str(model.session_id or "–")[:16])
        offline = model.offline  # review: nothing streams, so no live-only figures
        for key in ("model", "age", "queue", "display"):
            self.names[key].setVisible(not offline)
            v[key].setVisible(not offline)
        for label in v.values():
            label.setMinimumWidth(label.fontMetrics().horizontalAdvance(label.text()) + 2)
