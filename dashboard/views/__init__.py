"""Thin pyqtgraph widgets that only render the :class:`dashboard.model.DashboardModel`.

Every view has ``refresh(model, dirty)``: it reads the model and redraws the parts named in
``dirty`` (see ``dashboard.model.DIRTY_PARTS``); it never holds data of its own beyond what is
drawn. Images are row-major: pixel (row, col) is drawn at x = col, y = row with row 0 at the
top (``imageAxisOrder='row-major'`` and an inverted y axis).
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="#101216")

# Colours of selected neurons (traces and contours), distinguishable on a dark background.
SELECTION_COLOURS = (
    (255, 196, 61),
    (96, 200, 255),
    (255, 110, 170),
    (140, 235, 110),
    (200, 150, 255),
    (255, 140, 70),
    (70, 230, 210),
    (240, 240, 240),
)
CONTOUR_COLOUR = (120, 200, 255, 150)
NEW_COLOUR = (255, 230, 0)
SEVERITY_STYLE = {
    "error": "background:#b3261e; color:white;",
    "warning": "background:#c77c02; color:white;",
    "info": "background:#1f4e8c; color:white;",
}


def selection_colour(i: int) -> tuple[int, int, int]:
    """Colour of the i-th selected neuron."""
    return SELECTION_COLOURS[i % len(SELECTION_COLOURS)]


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style with a dark palette that matches the plots."""
    app.setStyle("Fusion")
    p = QtGui.QPalette()
    base, text = QtGui.QColor("#1b1e24"), QtGui.QColor("#e6e6e6")
    roles = QtGui.QPalette.ColorRole
    p.setColor(roles.Window, QtGui.QColor("#16181d"))
    p.setColor(roles.WindowText, text)
    p.setColor(roles.Base, base)
    p.setColor(roles.AlternateBase, QtGui.QColor("#22262e"))
    p.setColor(roles.Text, text)
    p.setColor(roles.Button, QtGui.QColor("#262a33"))
    p.setColor(roles.ButtonText, text)
    p.setColor(roles.Highlight, QtGui.QColor("#3d6fb6"))
    p.setColor(roles.HighlightedText, QtGui.QColor("white"))
    p.setColor(roles.ToolTipBase, base)
    p.setColor(roles.ToolTipText, text)
    p.setColor(roles.PlaceholderText, QtGui.QColor("#8b949e"))  # readable hints in empty fields
    app.setPalette(p)
