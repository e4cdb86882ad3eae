"""The dashboard window: banner, image panel, traces and raster, closed loop, events, motion,
status."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from dashboard.model import DashboardModel
from dashboard.views.closed_loop import ClosedLoopPanel, EventLog
from dashboard.views.image import ImagePanel
from dashboard.views.motion import MotionPanel
from dashboard.views.status import Banner, StatusPanel
from dashboard.views.traces import TracePanel


class DashboardWindow(QtWidgets.QMainWindow):
    """Composes the views; ``refresh(model, dirty)`` forwards to each one.

    Clicking a neuron (image or raster) selects it; Ctrl+click adds it to the selection;
    clicking outside every neuron goes back to showing the most active ones.
    """

    def __init__(self, title: str = "online-cnmfe", window_s: float = 30.0) -> None:
        super().__init__()
        self.setWindowTitle(title)
        self._model: DashboardModel | None = None
        self.banner = Banner()
        self.image = ImagePanel()
        self.traces = TracePanel(window_s=window_s)
        self.closed_loop = ClosedLoopPanel()
        self.events = EventLog()
        self.status = StatusPanel()
        self.motion = MotionPanel()
        self.bottom = QtWidgets.QTabWidget()
        self.bottom.addTab(self.closed_loop, "Closed loop")
        self.bottom.addTab(self.events, "Events")
        self.bottom.addTab(self.motion, "Motion")
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.traces)
        right.addWidget(self.bottom)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        main.addWidget(self.image)
        main.addWidget(right)
        main.setStretchFactor(0, 5)
        main.setStretchFactor(1, 6)
        self.controls = QtWidgets.QVBoxLayout()  # review mode adds its time slider here
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.banner)
        layout.addWidget(main, 1)
        layout.addLayout(self.controls)
        layout.addWidget(self.status)
        self.setCentralWidget(central)
        self.image.neuron_clicked.connect(self._on_neuron_clicked)
        self.traces.neuron_clicked.connect(self._on_neuron_clicked)
        self.status.pause.toggled.connect(self._on_pause)
        self.resize(1500, 880)
        right.setSizes([640, 190])  # the bottom tabs show 5-6 rules or neurons
        main.setSizes([680, 820])

    def _on_pause(self, paused: bool) -> None:
        if self._model is not None:
            self._model.mark_dirty("status")

    def _on_neuron_clicked(self, neuron_id, add: bool) -> None:
        model = self._model
        if model is None:
            return
        if neuron_id is None and not add:
            model.clear_selection()
        elif neuron_id is not None:
            model.select(neuron_id, add=add)

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Redraw the views whose data changed."""
        self._model = model
        if not dirty:
            return
        self.banner.refresh(model, dirty)
        self.image.refresh(model, dirty)
        self.traces.refresh(model, dirty)
        self.closed_loop.refresh(model, dirty)
        self.events.refresh(model, dirty)
        self.motion.refresh(model, dirty)
        if dirty & {"status", "traces", "footprints"}:
            self.status.refresh(model, dirty)
