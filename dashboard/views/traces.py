"""Trace panel: selected neurons' C, C_raw and S scrolling over a window, plus a raster of
every neuron (sorted by position, activity or id) with markers on newly born neurons.

Time runs along x in seconds relative to the newest frame (the right edge is 0).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from dashboard.model import DashboardModel
from dashboard.views import NEW_COLOUR, selection_colour

MAX_WINDOW_S = 600  # longest trace window offered, in seconds
SORTS = (("position", "Sort: position"), ("activity", "Sort: activity"), ("id", "Sort: id"))


class TracePanel(QtWidgets.QWidget):
    """Selected traces (top) and the population raster (bottom).

    Emits ``neuron_clicked(id, add)`` when a raster row is clicked.
    """

    neuron_clicked = QtCore.Signal(object, bool)

    def __init__(self, window_s: float = 30.0, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self._model: DashboardModel | None = None
        self._raster_ids = np.zeros(0, np.int64)
        self._ticks: list | None = None
        self._raster_rows = -1
        self._f0_source = None  # ids -> background under each footprint (dF/F), review only
        self._build(window_s)

    def _build(self, window_s: float) -> None:
        bar = QtWidgets.QHBoxLayout()
        self.window_box = QtWidgets.QSpinBox()
        self.window_box.setRange(2, MAX_WINDOW_S)
        self.window_box.setValue(int(window_s))
        self.window_box.setSuffix(" s")
        self.window_box.setToolTip("Time window of the traces and the raster")
        self.sort_box = QtWidgets.QComboBox()
        for key, title in SORTS:
            self.sort_box.addItem(title, key)
        self.raw_box = QtWidgets.QCheckBox("Raw trace")
        self.raw_box.setChecked(True)
        self.unit_box = QtWidgets.QComboBox()
        self.unit_box.addItem("C (a.u.)", "C")
        self.unit_box.addItem("dF/F", "dff")
        self.unit_box.setToolTip(
            "trace units: the model's C, or dF/F = C / background under the footprint "
            "(CNMF-E's normalisation; needs the file's background, so review only)"
        )
        self.unit_box.model().item(1).setEnabled(False)
        self.shared_box = QtWidgets.QCheckBox("Shared scale")
        self.shared_box.setToolTip(
            "one y scale for every trace (amplitudes comparable); off: each trace fills its row"
        )
        for w in (self.window_box, self.sort_box, self.raw_box, self.unit_box, self.shared_box):
            sig = getattr(w, "valueChanged", None) or getattr(w, "currentIndexChanged", None)
            (sig or w.toggled).connect(self._options_changed)
        self.selection_label = QtWidgets.QLabel("")
        self.selection_label.setStyleSheet("color:#9aa4b2;")
        self.selection_label.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        bar.addWidget(QtWidgets.QLabel("Window"))
        bar.addWidget(self.window_box)
        bar.addWidget(self.sort_box)
        bar.addWidget(self.raw_box)
        bar.addWidget(self.unit_box)
        bar.addWidget(self.shared_box)
        self.hover = QtWidgets.QLabel("")
        self.hover.setStyleSheet("color:#c8d0dc; font-family:monospace;")
        bar.addWidget(self.hover)
        bar.addWidget(self.selection_label, 1)
        self.selection_label.setAlignment(
            QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
        )

        self.glw = pg.GraphicsLayoutWidget()
        self.trace_plot = self.glw.addPlot(row=0, col=0)
        self.trace_plot.setLabel("bottom", "time (s)")
        self.trace_plot.setMenuEnabled(False)
        self.trace_plot.setMouseEnabled(x=False, y=False)
        self.trace_plot.hideButtons()
        self.raster_plot = self.glw.addPlot(row=1, col=0)
        self.raster_plot.setLabel("bottom", "time (s)")
        self.raster_plot.setLabel("left", "neurons")
        self.raster_plot.setMenuEnabled(False)
        self.raster_plot.setMouseEnabled(x=False, y=False)
        self.raster_plot.hideButtons()
        self.raster_plot.invertY(True)
        self.raster_plot.getAxis("left").enableAutoSIPrefix(False)
        self.raster_plot.setYRange(0, 1, padding=0)
        self.trace_plot.getAxis("left").setTicks([[], []])
        self.trace_plot.setYRange(-0.2, 1.1, padding=0)
        self.raster_plot.setXLink(self.trace_plot)
        self.glw.ci.layout.setRowStretchFactor(0, 3)
        self.glw.ci.layout.setRowStretchFactor(1, 2)
        self.raster = pg.ImageItem()
        self.raster.setColorMap(pg.colormap.get("inferno"))
        self.raster_plot.addItem(self.raster)
        self.births = pg.ScatterPlotItem(
            symbol="t2", size=9, pen=pg.mkPen(None), brush=pg.mkBrush(NEW_COLOUR)
        )
        self.new_marks = pg.ScatterPlotItem(
            symbol="star", size=11, pen=pg.mkPen(None), brush=pg.mkBrush(NEW_COLOUR)
        )
        self.raster_plot.addItem(self.births)
        self.raster_plot.addItem(self.new_marks)
        self.curves: dict[str, list[pg.PlotCurveItem]] = {"C": [], "C_raw": [], "S": []}
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.glw, 1)
        self.raster_plot.scene().sigMouseClicked.connect(self._on_clicked)
        self.raster_plot.scene().sigMouseMoved.connect(self._on_moved)

    def _options_changed(self, *_: object) -> None:
        if self._model is not None:
            self._model.mark_dirty("traces")

    def set_dff_source(self, f0_of) -> None:
        """Offer dF/F: ``f0_of(ids)`` returns the background under each footprint (NaN
        unknown), e.g. ``ResultsSession.f0``."""
        self._f0_source = f0_of
        self.unit_box.model().item(1).setEnabled(f0_of is not None)

    @property
    def unit(self) -> str:
        """'C' or 'dff'."""
        return self.unit_box.currentData()

    @property
    def window_s(self) -> float:
        """Shown time window in seconds."""
        return float(self.window_box.value())

    @property
    def sort(self) -> str:
        """Raster row order: 'position', 'activity' or 'id'."""
        return self.sort_box.currentData()

    # ------------------------------------------------------------------ render
    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Redraw traces and raster when traces, footprints or the selection changed."""
        self._model = model
        if not dirty & {"traces", "selection", "footprints"}:
            return
        self._draw_selected(model)
        self._draw_raster(model)
        if self.trace_plot.viewRange()[0] != [-self.window_s, 0]:
            self.trace_plot.setXRange(-self.window_s, 0, padding=0)

    def _ensure_curves(self, n: int) -> None:
        while len(self.curves["C"]) < n:
            i = len(self.curves["C"])
            r, g, b = selection_colour(i)
            raw = pg.PlotCurveItem(pen=pg.mkPen((r, g, b, 90), width=1), connect="finite")
            c = pg.PlotCurveItem(pen=pg.mkPen((r, g, b), width=2), connect="finite")
            s = pg.PlotCurveItem(pen=pg.mkPen((r, g, b, 200), width=2), connect="pairs")
            for name, item in (("C_raw", raw), ("C", c), ("S", s)):
                self.trace_plot.addItem(item)
                self.curves[name].append(item)

    def _scaled_window(self, model: DashboardModel) -> tuple[dict, str]:
        """The selected traces in the chosen unit, with each row's scale (its window peak, or
        the peak over all rows with a shared scale)."""
        win = model.trace_window(self.window_s, model.selected)
        unit = "a.u."
        if self.unit == "dff" and self._f0_source is not None and win["ids"].size:
            f0 = np.asarray(self._f0_source(win["ids"].tolist()), np.float64)
            inv = np.where(np.isfinite(f0) & (f0 > 0), 1.0 / np.where(f0 > 0, f0, 1.0), np.nan)
            for name in ("C", "C_raw", "S"):
                win[name] = win[name] * inv[:, None].astype(np.float32)
            win["scale"] = win["scale"] * inv
            unit = "dF/F"
        scale = np.where(np.isfinite(win["scale"]) & (win["scale"] > 0), win["scale"], 1.0)
        if self.shared_box.isChecked() and scale.size:
            scale = np.full_like(scale, scale.max())
        win["scale"] = scale
        return win, unit

    def _draw_selected(self, model: DashboardModel) -> None:
        win, unit = self._scaled_window(model)
        ids, t = win["ids"], win["t_s"]
        self._ensure_curves(ids.size)
        ticks: list = []
        minor: list = []
        for i in range(len(self.curves["C"])):
            if i >= ids.size:
                for name in self.curves:
                    self.curves[name][i].setData([], [])
                continue
            offset = -1.25 * i  # first selected on top
            scale = win["scale"][i]
            c = win["C"][i] / scale + offset
            self.curves["C"][i].setData(t, c)
            if self.raw_box.isChecked():
                self.curves["C_raw"][i].setData(t, win["C_raw"][i] / scale + offset)
            else:
                self.curves["C_raw"][i].setData([], [])
            s = np.nan_to_num(win["S"][i], nan=0.0) / scale
            hit = np.nonzero(s > 0.02)[0]
            xs = np.repeat(t[hit], 2)
            ys = np.empty(2 * hit.size)
            ys[0::2], ys[1::2] = offset - 0.2, offset - 0.2 + 0.5 * np.minimum(s[hit], 1.0)
            self.curves["S"][i].setData(xs, ys, connect="pairs")
            # the row's id and its y scale: the row spans 0 (baseline) to this value
            ticks.append((offset + 0.4, f"#{ids[i]} ({_scale_text(scale)})"))
        if (ticks, minor, unit) != self._ticks:  # axis relayouts are not free
            self._ticks = (ticks, minor, unit)
            axis = self.trace_plot.getAxis("left")
            axis.setTicks([ticks, minor])
            axis.setLabel(f"neuron (row height in {unit})")
            self.trace_plot.setYRange(-1.25 * max(ids.size, 1) + 0.9, 1.1, padding=0)
        auto = " (most active)" if model.auto_select else ""
        self.selection_label.setText(
            f"selected{auto}: " + ", ".join(f"#{i}" for i in ids.tolist())
            if ids.size
            else "click a neuron to show its traces"
        )

    def _draw_raster(self, model: DashboardModel) -> None:
        r = model.raster(self.window_s, self.sort)
        img, t = r["image"], r["t_s"]
        self._raster_ids = r["ids"]
        n = img.shape[0]
        if n == 0 or t.size < 2:
            self.raster.clear()
            self.births.setData([], [])
            self.new_marks.setData([], [])
            return
        dt = (t[-1] - t[0]) / (t.size - 1) if t.size > 1 else 0.05
        self.raster.setImage(np.nan_to_num(img, nan=0.0), autoLevels=False, levels=(0.0, 1.0))
        self.raster.setRect(QtCore.QRectF(t[0] - dt / 2, 0, t[-1] - t[0] + dt, n))
        if n != self._raster_rows:
            self._raster_rows = n
            self.raster_plot.setYRange(0, n, padding=0)
        inside = np.isfinite(r["birth_t_s"])
        rows = np.arange(n) + 0.5
        self.births.setData(r["birth_t_s"][inside], rows[inside])
        new = r["new"]
        self.new_marks.setData(np.full(new.sum(), -0.02 * self.window_s), rows[new])

    def raster_neuron_at(self, scene_pos: QtCore.QPointF) -> int | None:
        """Neuron id of the raster row under a scene position, or None."""
        vb = self.raster_plot.vb
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        row = int(np.floor(vb.mapSceneToView(scene_pos).y()))
        return int(self._raster_ids[row]) if 0 <= row < self._raster_ids.size else None

    def _on_moved(self, scene_pos: QtCore.QPointF) -> None:
        nid = self.raster_neuron_at(scene_pos)
        self.hover.setText(f"raster: neuron #{nid} (click to select)" if nid is not None else "")

    def _on_clicked(self, event) -> None:
        nid = self.raster_neuron_at(event.scenePos())
        if self._model is not None and nid is not None:
            add = bool(event.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier)
            self.neuron_clicked.emit(nid, add)


def _scale_text(value: float) -> str:
    """A y-scale value without scientific notation: 1030, 86.2, 0.052.

    Examples
    --------
    >>> [_scale_text(v) for v in (1034.2, 86.24, 0.05213, 2.4e6)]
    ['1034', '86.2', '0.0521', '2.4e+06']
    """
    if 100 <= abs(value) < 1e5:
        return f"{value:.0f}"
    return f"{value:.3g}"
