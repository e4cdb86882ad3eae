"""The review window: the dashboard over a results file, with a time slider, keyboard navigation,
"go to neuron", the neuron table (quality metrics, sortable) and curation (accept / reject).

Keys: ←/→ one frame, Shift+←/→ one second, PgUp/PgDn one trace window, Home/End the first /
last frame, Space play / pause, Ctrl+G (or G) go to a neuron, A accept, R reject, U unlabel the
selected neurons, N / P the next / previous neuron of the table. Labels are written at once into
the file's ``curation/`` group (``online_cnmfe.results.curation``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from dashboard.model import DashboardModel, ModelConfig
from dashboard.review import ReviewSource
from dashboard.views import apply_dark_theme
from dashboard.views.neurons import NeuronTable
from dashboard.views.traces import MAX_WINDOW_S
from dashboard.views.window import DashboardWindow
from online_cnmfe.errors import OnlineCNMFEError

logger = logging.getLogger(__name__)

KEYS_HELP = (
    "←/→ frame · Shift+←/→ 1 s · PgUp/PgDn window · Home/End · Space play · "
    "G go to neuron · A accept · R reject · U unlabel · N/P next/previous neuron"
)


class ReviewApp:
    """The dashboard window over a results file (see the module docstring)."""

    def __init__(self, path: str | Path, window_s: float = 30.0, config=None) -> None:
        self.qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        apply_dark_theme(self.qapp)
        self.source = ReviewSource(path)
        s = self.source.session
        longest = int(MAX_WINDOW_S * self.source.frame_rate_hz) + 1  # the window spin box's max
        cfg = config or ModelConfig(history_frames=max(2, min(2 * self.source.n_frames, longest)))
        self.model = DashboardModel(cfg, address=str(path))
        self.model.labels = dict(s.labels)
        self.window = DashboardWindow(title=f"online-cnmfe review — {path}", window_s=window_s)
        self.window.image.limit_layers(self.source.layers())
        self.window.image.set_scale(s.params.get("data", {}).get("pixel_size_um"))
        self.window.traces.set_dff_source(s.f0)
        self.neurons = NeuronTable()
        births = {
            int(i): b for i in s.neuron_ids.tolist() if (b := s.birth_frame_index(i)) is not None
        }
        self.neurons.set_rows(s.neuron_ids, s.quality, s.labels, births)
        self.neurons.neuron_clicked.connect(self._on_table_clicked)
        self.window.bottom.insertTab(0, self.neurons, "Neurons")
        self.window.bottom.setCurrentIndex(0)
        self._build_controls()
        self._build_shortcuts()
        self.window.status.pause.hide()  # nothing streams in: the slider is the control
        self.play_timer = QtCore.QTimer()
        self.play_timer.timeout.connect(self._step)
        self.window.traces.window_box.valueChanged.connect(lambda *_: self.show(self.frame))
        self.show(self.source.n_frames - 1)

    # ---- controls ------------------------------------------------------------------------
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
        for w in (self.play, self.speed):
            row.addWidget(w)
        row.addWidget(self.slider, 1)
        row.addWidget(self.position)
        curation = QtWidgets.QHBoxLayout()
        self.goto = QtWidgets.QLineEdit()
        self.goto.setPlaceholderText("go to neuron #")
        self.goto.setFixedWidth(130)
        self.goto.returnPressed.connect(self._on_goto)
        curation.addWidget(self.goto)
        self.buttons = {}
        for key, text, tip in (
            ("accept", "✓ Accept (A)", "label the selected neurons accepted"),
            (
                "reject",
                "✕ Reject (R)",
                "label the selected neurons rejected: exports leave them out",
            ),
            ("clear", "Unlabel (U)", "remove the label of the selected neurons"),
            ("next", "Next (N)", "select the next neuron of the table"),
        ):
            b = QtWidgets.QPushButton(text)
            b.setToolTip(tip)
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)  # keys stay with the window
            b.clicked.connect(lambda _=False, k=key: self._on_button(k))
            curation.addWidget(b)
            self.buttons[key] = b
        self.message = QtWidgets.QLabel(KEYS_HELP)
        self.message.setStyleSheet("color:#8b949e;")
        self.message.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        curation.addWidget(self.message, 1)
        self.window.controls.addLayout(row)
        self.window.controls.addLayout(curation)

    def _build_shortcuts(self) -> None:
        rate = self.source.frame_rate_hz
        keys = {
            "Right": lambda: self.step_frames(1),
            "Left": lambda: self.step_frames(-1),
            "Shift+Right": lambda: self.step_frames(max(1, round(rate))),
            "Shift+Left": lambda: self.step_frames(-max(1, round(rate))),
            "PgDown": lambda: self.step_frames(self._window_frames()),
            "PgUp": lambda: self.step_frames(-self._window_frames()),
            "Home": lambda: self.show(0),
            "End": lambda: self.show(self.source.n_frames - 1),
            "Space": lambda: self.play.toggle(),
            "Ctrl+G": self._focus_goto,
            "G": self._focus_goto,
            "A": lambda: self.label_selected("accept"),
            "R": lambda: self.label_selected("reject"),
            "U": lambda: self.label_selected("clear"),
            "N": lambda: self.next_neuron(1),
            "P": lambda: self.next_neuron(-1),
        }
        self.shortcuts = []
        for key, action in keys.items():
            sc = QtGui.QShortcut(QtGui.QKeySequence(key), self.window)
            sc.setContext(QtCore.Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(action)
            self.shortcuts.append(sc)

    # ---- time ----------------------------------------------------------------------------
    @property
    def frame(self) -> int:
        """Trace column shown (0-based)."""
        return self.slider.value()

    def _window_frames(self) -> int:
        return max(2, int(round(self.window.traces.window_s * self.source.frame_rate_hz)))

    def step_frames(self, n: int) -> None:
        """Move the slider by ``n`` columns."""
        self.show(int(np.clip(self.frame + n, 0, max(self.source.n_frames - 1, 0))))

    def show_frame(self, frame_index: int) -> None:
        """Show the frame with this index (the next one kept when it was dropped)."""
        self.show(self.source.session.column_of(int(frame_index)))

    def show(self, t: int) -> None:
        """Show trace column ``t`` of the file."""
        if self.slider.value() != t:
            self.slider.setValue(t)  # re-enters through valueChanged
            return
        self.source.show(self.model, t, self._window_frames())
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

    # ---- neurons -------------------------------------------------------------------------
    def _focus_goto(self) -> None:
        self.goto.setFocus()
        self.goto.selectAll()

    def _on_goto(self) -> None:
        text = self.goto.text().strip().lstrip("#")
        try:
            self.go_to_neuron(int(text))
        except ValueError:
            self.say(f"'{text}' is not a neuron id")
        self.window.setFocus()

    def go_to_neuron(self, neuron_id: int) -> bool:
        """Select a neuron, centre the image on it, and jump to its birth if it is not born
        yet at the frame shown. False (and a message) when the file has no such neuron."""
        s = self.source.session
        if neuron_id not in set(s.trace_ids.tolist()):
            self.say(f"no neuron #{neuron_id} in this file (ids {s.trace_ids.min(initial=0)}–"
                     f"{s.trace_ids.max(initial=0)})")  # fmt: skip
            return False
        birth = s.birth_frame_index(neuron_id)
        if birth is not None and birth > int(self.source.frame_index[self.frame]):
            self.show_frame(birth)
        self.model.select(neuron_id)
        self.neurons.select_id(neuron_id)
        if neuron_id in set(s.neuron_ids.tolist()):
            self.window.image.centre_on(neuron_id, self.model)
        else:
            self.say(f"neuron #{neuron_id} was removed or merged: traces only, no footprint")
        self.window.refresh(self.model, self.model.take_dirty())
        return True

    def next_neuron(self, direction: int) -> None:
        """Select the next (+1) or previous (-1) neuron in the table's order."""
        order = self.neurons.ordered_ids()
        if not order:
            return
        chosen = self.model.selected and not self.model.auto_select
        current = self.model.selected[-1] if chosen else None
        i = order.index(current) + direction if current in order else (0 if direction > 0 else -1)
        self.go_to_neuron(order[i % len(order)])

    def _on_table_clicked(self, neuron_id: int, add: bool) -> None:
        self.model.select(neuron_id, add=add)
        self.window.image.centre_on(neuron_id, self.model)
        self.window.refresh(self.model, self.model.take_dirty())

    def _on_button(self, key: str) -> None:
        if key == "next":
            self.next_neuron(1)
        else:
            self.label_selected(key)

    def label_selected(self, action: str) -> None:
        """Accept, reject or unlabel ('clear') the selected neurons, in the file at once."""
        ids = list(self.model.selected)
        if not ids or self.model.auto_select:
            self.say("select a neuron first (click it, or N for the next one)")
            return
        try:
            labels = self.source.session.set_labels(**{action: ids})
        except (OnlineCNMFEError, ValueError) as exc:
            self.say(f"not saved: {exc}")
            return
        self.model.labels = dict(labels)
        for nid in ids:
            self.neurons.set_label(nid, labels.get(nid, 0))
        done = {"accept": "accepted", "reject": "rejected", "clear": "unlabelled"}[action]
        self.say(f"{', '.join(f'#{i}' for i in ids)} {done} (saved in {self.source.path.name})")
        self.model.mark_dirty("footprints")
        self.window.refresh(self.model, self.model.take_dirty())

    def say(self, text: str) -> None:
        """Show a one-line message under the slider."""
        self.message.setText(text)
        logger.info("%s", text)

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
        self.source.session.close()
        return 0
