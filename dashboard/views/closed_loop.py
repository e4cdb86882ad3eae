"""Closed-loop panel (one row per trigger rule) and the log of model events."""

from __future__ import annotations

import math
import time

from PySide6 import QtCore, QtWidgets

from dashboard.model import DashboardModel

COLUMNS = ("Rule", "Fired", "Last frame", "Ago", "Value", "Latency last / p50 / p99", "Neurons")
EVENT_ICONS = {
    "born": "★",
    "merged": "⇄",
    "removed": "✕",
    "restart": "↻",
    "drop": "⚠",
    "reject": "⚠",
    "store_error": "⚠",
}


def _ms(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.2f}"


class ClosedLoopPanel(QtWidgets.QWidget):
    """Trigger rules with their counts, last firing and frame-to-trigger latency."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        # compact rows and a scroll bar: every rule is reachable in the small bottom panel
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 4)
        self.table.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.table.setSizeAdjustPolicy(QtWidgets.QAbstractScrollArea.SizeAdjustPolicy.AdjustIgnored)
        self.empty = QtWidgets.QLabel("No closed-loop trigger has fired yet.")
        self.empty.setStyleSheet("color:#8b949e;")
        self.summary = QtWidgets.QLabel("")
        self.summary.setStyleSheet("color:#8b949e;")
        self.summary.setWordWrap(False)  # one line: the table below keeps the room
        self.summary.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.empty)
        top.addWidget(self.summary, 1)
        layout.addLayout(top)
        layout.addWidget(self.table)

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Rewrite the table (triggers changed, or once a second to age the 'Ago' column)."""
        if not dirty & {"triggers", "status"}:
            return
        rules = sorted(model.rules.values(), key=lambda r: r.rule)
        self.empty.setVisible(not any(r.count for r in rules))
        counters = model.status.get("triggers")
        if isinstance(counters, dict):  # the engine's trigger counters, when it sends them
            shown = [
                f"{k.removeprefix('n_').replace('_', ' ')} {v}"
                for k, v in counters.items()
                if v not in (None, 0, "")
            ]
            self.summary.setText("engine: " + " · ".join(shown))
            self.summary.setToolTip(self.summary.text())
        self.table.setRowCount(len(rules))
        now = time.monotonic()
        for i, r in enumerate(rules):
            p50, p99 = r.age_percentiles()
            ago = model.seconds_since(r, now)
            cells = (
                r.rule,
                str(r.count),
                str(r.last_frame_index) if r.count else "–",
                "–" if not math.isfinite(ago) else f"{ago:.1f} s",
                "–" if not math.isfinite(r.last_value) else f"{r.last_value:.3g}",
                f"{_ms(r.last_age_ms)} / {_ms(p50)} / {_ms(p99)} ms",
                ", ".join(f"#{n}" for n in r.last_neuron_ids),
            )
            for j, text in enumerate(cells):
                item = self.table.item(i, j)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.table.setItem(i, j, item)
                item.setText(text)
        self.table.resizeColumnsToContents()


class EventLog(QtWidgets.QListWidget):
    """Most recent model events first (born, merged, removed, restart, drop, ...)."""

    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Rewrite the list when events arrived."""
        if "events" not in dirty:
            return
        self.clear()
        for ev in reversed(model.events):
            icon = EVENT_ICONS.get(ev["kind"], "•")
            ids = ", ".join(f"#{i}" for i in ev["neuron_ids"])
            detail = f" — {ev['detail']}" if ev.get("detail") else ""
            frame = f"frame {ev['frame_index']}" if ev["frame_index"] >= 0 else ""
            self.addItem(f"{icon} {ev['kind']} {ids} {frame}{detail}")
