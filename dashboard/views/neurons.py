"""The neuron table of the review window: quality metrics and curation labels, sortable.

Rows come from a results file's ``quality`` table (``online_cnmfe.results.quality``) and its
curation labels; clicking a row emits ``neuron_clicked(id, add)``. Numbers sort as numbers (a
custom item compares the values, not the text).
"""

from __future__ import annotations

import math

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

COLUMNS = (
    ("neuron_id", "Id", "stable neuron id"),
    ("label", "Label", "curation: accepted / rejected (A / R keys), blank when unlabelled"),
    ("snr", "SNR", "std(C) / std(C_raw - C): signal over demixing noise"),
    ("pnr", "PNR", "max(C) / std(C_raw - C)"),
    ("spatial_corr", "Spatial r", "correlation of the footprint with the corr x PNR image"),
    ("size_px", "Size px", "pixels above 25 % of the footprint's maximum"),
    ("peak_dff", "Peak dF/F", "largest C / background under the footprint"),
    ("event_rate_hz", "Events/s", "onsets of deconvolved activity per second"),
    ("birth", "Born (frame)", "frame index at which the neuron appeared"),
)
LABEL_TEXT = {1: "accepted", -1: "rejected", 0: ""}
LABEL_COLOURS = {1: QtGui.QColor(80, 200, 120), -1: QtGui.QColor(240, 90, 90)}


class _NumberItem(QtWidgets.QTableWidgetItem):
    """A cell that sorts by its numeric value (NaN last)."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.value = value if math.isfinite(value) else math.inf
        self.setTextAlignment(
            QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
        )

    def __lt__(self, other: QtWidgets.QTableWidgetItem) -> bool:
        if isinstance(other, _NumberItem):
            return self.value < other.value
        return super().__lt__(other)


def _text(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if key in ("neuron_id", "size_px", "birth"):
        return str(int(value))
    return f"{value:.3g}"


class NeuronTable(QtWidgets.QWidget):
    """Sortable table of neurons; emits ``neuron_clicked(id, add)`` on a click."""

    neuron_clicked = QtCore.Signal(object, bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title, _ in COLUMNS])
        for j, (_, _, tip) in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(j).setToolTip(tip)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 4)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, QtCore.Qt.SortOrder.AscendingOrder)
        self.table.cellClicked.connect(self._on_clicked)
        self.note = QtWidgets.QLabel("")
        self.note.setStyleSheet("color:#8b949e;")
        self.note.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        self._ids: list[int] = []

    def set_rows(
        self,
        ids: np.ndarray,
        quality: np.ndarray | None,
        labels: dict[int, int],
        births: dict[int, int],
    ) -> None:
        """Fill the table: one row per id (metrics from ``quality`` when it has the id)."""
        sorting = self.table.isSortingEnabled()
        self.table.setSortingEnabled(False)  # filling a sorted table reorders rows under us
        pos = {} if quality is None else {int(i): k for k, i in enumerate(quality["neuron_id"])}
        self.table.setRowCount(len(ids))
        self._ids = [int(i) for i in ids]
        for r, nid in enumerate(self._ids):
            k = pos.get(nid)
            for j, (key, _, _) in enumerate(COLUMNS):
                if key == "label":
                    label = labels.get(nid, 0)
                    item = QtWidgets.QTableWidgetItem(LABEL_TEXT[label])
                    if label in LABEL_COLOURS:
                        item.setForeground(LABEL_COLOURS[label])
                else:
                    if key == "neuron_id":
                        value = float(nid)
                    elif key == "birth":
                        value = float(births.get(nid, math.nan))
                    else:
                        value = math.nan if k is None else float(quality[key][k])
                    item = _NumberItem(value, _text(key, value))
                item.setData(QtCore.Qt.ItemDataRole.UserRole, nid)
                self.table.setItem(r, j, item)
        self.table.setSortingEnabled(sorting)
        self.table.resizeColumnsToContents()
        self.note.setVisible(quality is None)
        self.note.setText(
            "No quality metrics in this file: run `online-cnmfe curate FILE --metrics`."
            if quality is None
            else ""
        )

    def set_label(self, neuron_id: int, label: int) -> None:
        """Update one neuron's label cell."""
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 1)
            if item is not None and item.data(QtCore.Qt.ItemDataRole.UserRole) == neuron_id:
                item.setText(LABEL_TEXT[label])
                item.setForeground(LABEL_COLOURS.get(label, self.palette().text().color()))

    def ordered_ids(self) -> list[int]:
        """Ids in the table's current (sorted) order."""
        out = []
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None:
                out.append(int(item.data(QtCore.Qt.ItemDataRole.UserRole)))
        return out

    def select_id(self, neuron_id: int) -> None:
        """Highlight (and scroll to) the row of ``neuron_id``."""
        for r, nid in enumerate(self.ordered_ids()):
            if nid == neuron_id:
                self.table.selectRow(r)
                self.table.scrollToItem(self.table.item(r, 0))
                return

    def _on_clicked(self, row: int, _col: int) -> None:
        item = self.table.item(row, 0)
        if item is None:
            return
        add = bool(
            QtWidgets.QApplication.keyboardModifiers() & QtCore.Qt.KeyboardModifier.ControlModifier
        )
        self.neuron_clicked.emit(int(item.data(QtCore.Qt.ItemDataRole.UserRole)), add)
