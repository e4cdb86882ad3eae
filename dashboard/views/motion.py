"""Motion panel: the engine's per-frame shift (rows, columns) and the frames it flagged.

Shifts are the displacement of each frame's content relative to the motion template, in
pixels (``dashboard.motion_trace``); x is the frame index. Flagged frames (registration
failed: the frame did not update the model) are marked in red on the zero line.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

from dashboard.model import DashboardModel

ROW_COLOUR, COL_COLOUR, FLAG_COLOUR = (96, 200, 255), (255, 196, 61), (248, 81, 73)


class MotionPanel(QtWidgets.QWidget):
    """Shift trace of the session (a small view; the model's ``motion`` buffer)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QtWidgets.QLabel("No motion correction in this stream.")
        self.label.setStyleSheet("color:#8b949e;")
        self.plot = pg.PlotWidget()
        self.plot.setLabel("left", "shift (px)")
        self.plot.setLabel("bottom", "frame")
        self.plot.addLegend(offset=(5, 5))
        self.rows = self.plot.plot(pen=pg.mkPen(ROW_COLOUR, width=1), name="rows (dy)")
        self.cols = self.plot.plot(pen=pg.mkPen(COL_COLOUR, width=1), name="columns (dx)")
        self.flags = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(FLAG_COLOUR), pen=None)
        self.plot.addItem(self.flags)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.label)
        layout.addWidget(self.plot, 1)

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Redraw when traces arrived (each carries its frame's motion correction)."""
        if "traces" not in dirty:
            return
        trace = model.motion
        frame, shift, _, flagged = trace.ordered()
        self.rows.setData(frame, shift[:, 0])
        self.cols.setData(frame, shift[:, 1])
        self.flags.setData(frame[flagged], np.zeros(int(flagged.sum())))
        last = trace.last()
        if last is None:
            self.label.setText("No motion correction in this stream.")
            return
        f, (dy, dx), quality, _ = last
        q = "–" if not math.isfinite(quality) else f"{quality:.2f}"
        self.label.setText(
            f"frame {f}: shift dy {dy:+.2f}, dx {dx:+.2f} px, quality {q}; "
            f"{trace.n_flagged} frames flagged"
        )
