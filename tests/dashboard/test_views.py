"""The views draw what the model holds, where it belongs (pytest-qt, offscreen).

Orientation: images are row-major, so pixel (row, col) must be drawn at x = col, y = row with
row 0 at the top. A footprint at (row 5, col 20) in a 16 x 32 image (H != W, so a transposition
lands off the image) must give contour corners at rows 5..6 and cols 20..21, and the rendered
widget must be bright exactly there.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui  # noqa: E402

from acquisition.protocol import decode_message, encode_message  # noqa: E402
from dashboard.model import DashboardModel, ModelConfig  # noqa: E402
from dashboard.views.image import ImagePanel  # noqa: E402
from dashboard.views.window import DashboardWindow  # noqa: E402

DIMS = (16, 32)


def msg(topic, header, arrays=None):
    return decode_message(encode_message(topic, header, arrays or {}))


def footprint_model(value_at=(5, 20)) -> DashboardModel:
    m = DashboardModel(ModelConfig(), address="tcp://127.0.0.1:9")
    r, c = value_at
    m.handle(
        msg(
            "footprints",
            {"version": 1, "dims": list(DIMS), "n_neurons": 1},
            {
                "data": np.array([1.0], np.float32),
                "indices": np.array([r * DIMS[1] + c], np.int32),
                "indptr": np.array([0, 1], np.int32),
                "neuron_ids": np.array([42], np.int64),
                "centroids": np.array([[r, c]], np.float32),
            },
        ),
        now=0.0,
    )
    image = np.zeros(DIMS, np.float32)
    image[r, c] = 100.0
    image[0, 0] = 0.0
    m.handle(
        msg("image", {"frame_index": 0, "layer": "raw", "downsample": 1}, {"image": image}),
        now=0.0,
    )
    for f in range(3):
        m.handle(
            msg(
                "traces",
                {
                    "frame_index": f,
                    "seq": f,
                    "t_acq_ms": 50.0 * f,
                    "age_ms": 1.0,
                    "footprints_version": 1,
                },
                {
                    "neuron_ids": np.array([42]),
                    "C": np.array([1.0 + f], np.float32),
                    "S": np.array([0.5], np.float32),
                    "C_raw": np.array([1.0 + f], np.float32),
                },
            ),
            now=0.0,
        )
    return m


def widget_pixel(panel: ImagePanel, row: float, col: float) -> QtCore.QPoint:
    """Where image coordinate (row, col) lands in the panel's graphics view."""
    scene = panel.vb.mapViewToScene(QtCore.QPointF(col, row))
    return panel.glw.mapFromScene(scene)


@pytest.fixture
def panel(qtbot):
    p = ImagePanel()
    p.resize(640, 400)
    qtbot.addWidget(p)
    p.show()
    qtbot.waitExposed(p)
    return p


def test_contour_of_footprint_at_row5_col20_is_drawn_at_x20_y5(panel):
    m = footprint_model()
    panel.activity_box.setChecked(False)
    panel.refresh(m, m.take_dirty())
    x, y = panel.contours.getData()
    assert set(np.unique(x).tolist()) == {20.0, 21.0}  # x is the column
    assert set(np.unique(y).tolist()) == {5.0, 6.0}  # y is the row
    assert panel.vb.state["yInverted"]
    assert panel.labels.label_positions().tolist() == [[20.5, 5.5]]  # (x, y) of (row 5, col 20)


def test_rendered_image_is_bright_at_row5_col20_only(panel, qtbot):
    m = footprint_model()
    panel.activity_box.setChecked(False)
    panel.contours_box.setChecked(False)
    panel.ids_box.setChecked(False)
    panel.set_layer("raw")
    panel.refresh(m, m.take_dirty())
    assert panel.base.image[5, 20] == 100.0 and panel.base.image.shape == DIMS
    qtbot.wait(50)
    grab = panel.glw.grab().toImage()
    bright = QtGui.QColor(grab.pixel(widget_pixel(panel, 5.5, 20.5))).lightness()
    assert bright > 200
    for row, col in [(5.5, 10.5), (10.5, 20.5), (2.5, 5.5), (6.5, 20.5), (5.5, 21.5)]:
        dark = QtGui.QColor(grab.pixel(widget_pixel(panel, row, col))).lightness()
        assert dark < 60, (row, col, dark)
    # row 0 is at the top of the widget
    assert widget_pixel(panel, 0.5, 20.5).y() < widget_pixel(panel, 15.5, 20.5).y()


def test_activity_overlay_lights_the_neuron_pixels(panel):
    m = footprint_model()
    panel.set_layer("raw")
    panel.refresh(m, m.take_dirty())
    overlay = panel.overlay.image
    assert overlay.shape == DIMS
    assert overlay[5, 20] == pytest.approx(1.0)  # latest C is the running max
    assert overlay.sum() == pytest.approx(1.0)


def test_hover_text_and_click_select_the_neuron(panel, qtbot):
    m = footprint_model()
    panel.refresh(m, m.take_dirty())
    text = panel.describe(5.5, 20.5)
    assert "neuron 42" in text and "row    5 col   20" in text
    assert "neuron" not in panel.describe(20.5 % DIMS[0], 5.5)
    qtbot.wait(20)
    pos = widget_pixel(panel, 5.5, 20.5)
    with qtbot.waitSignal(panel.neuron_clicked, timeout=2000) as blocker:
        qtbot.mouseClick(panel.glw.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [42, False]


def test_window_draws_selected_traces_raster_status_and_triggers(qtbot):
    w = DashboardWindow()
    qtbot.addWidget(w)
    m = footprint_model()
    m.handle(
        msg(
            "status",
            {
                "frame_index": 2,
                "n_frames_processed": 3,
                "fps_in": 20.0,
                "fps_processed": 19.5,
                "queue_depth": 1,
                "latency_ms_p50": 1.5,
                "latency_ms_p99": 3.25,
                "n_neurons": 1,
                "n_dropped": 4,
                "n_rejected": 0,
                "n_malformed": 0,
                "phase": "running",
                "init_progress": 1.0,
                "store_ok": True,
                "store_error": None,
                "dims": list(DIMS),
                "triggers": {"n_rules": 2, "n_fired": 1, "n_send_dropped": 0},
            },
        ),
        now=0.0,
    )
    m.handle(
        msg(
            "trigger",
            {
                "rule": "cell42",
                "frame_index": 2,
                "t_acq_ms": 100.0,
                "value": 3.0,
                "age_ms": 1.75,
                "neuron_ids": [42],
            },
        ),
        now=0.0,
    )
    m.handle(msg("event", {"kind": "born", "frame_index": 2, "neuron_ids": [42],
                           "detail": "new cell"}), now=0.0)  # fmt: skip
    m.select(42)
    m.tick(0.5)
    w.refresh(m, m.take_dirty())
    assert w.events.count() == 1 and w.events.item(0).text().startswith("★ born #42 frame 2")
    x, y = w.traces.curves["C"][0].getData()
    np.testing.assert_allclose(x, [-0.1, -0.05, 0.0])
    np.testing.assert_allclose(y, np.array([1, 2, 3]) / 3)  # C / max(C_raw), first row offset 0
    assert w.traces.raster.image.shape == (1, 3)
    np.testing.assert_allclose(w.traces.raster.image[0], [1 / 3, 2 / 3, 1])
    assert w.status.text("frame") == "2"
    assert w.status.text("latency") == "1.50 ms / 3.25 ms"
    assert w.status.text("lost").startswith("4 / 0 / 0")
    assert w.closed_loop.table.item(0, 0).text() == "cell42"
    assert w.closed_loop.summary.text() == "engine: rules 2 · fired 1"
    assert w.closed_loop.table.item(0, 5).text().startswith("1.75")
    assert not w.banner.isHidden() and "4 frame(s) lost" in w.banner.text()  # 4 dropped: said


def test_banner_shows_when_engine_unreachable(qtbot):
    w = DashboardWindow()
    qtbot.addWidget(w)
    w.show()
    m = DashboardModel(ModelConfig(silence_timeout_s=1.0), address="tcp://127.0.0.1:9", now=0.0)
    m.tick(2.0)
    w.refresh(m, m.take_dirty())
    assert w.banner.isVisible()
    assert "not reachable at tcp://127.0.0.1:9" in w.banner.text()
    assert "unreachable" in w.status.state.text()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12")
def test_qt_binding_keeps_references_to_none(qapp):
    """PySide6 6.12.0 drops a reference to None on each void call on Python 3.11 (crash)."""
    from PySide6 import QtWidgets

    label = QtWidgets.QLabel("x")
    before = sys.getrefcount(None)
    for _ in range(500):
        label.setText("y")
    assert sys.getrefcount(None) - before > -100


def test_raster_row_under_the_mouse_and_click_select_that_neuron(qtbot):
    w = DashboardWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    m = DashboardModel()
    for f in range(40):
        m.handle(
            msg("traces", {"frame_index": f, "seq": f, "t_acq_ms": 50.0 * f, "age_ms": 1.0,
                           "footprints_version": 0},
                {"neuron_ids": np.array([7, 8, 9]), "C": np.array([1, 2, 3], np.float32),
                 "S": np.zeros(3, np.float32), "C_raw": np.ones(3, np.float32)}),
            now=0.0,
        )  # fmt: skip
    w.traces.sort_box.setCurrentIndex(w.traces.sort_box.findData("id"))
    w.refresh(m, m.take_dirty() | {"traces"})
    vb = w.traces.raster_plot.vb
    scene = vb.mapViewToScene(QtCore.QPointF(-0.5, 1.5))  # row 1 = the second id
    assert w.traces.raster_neuron_at(scene) == 8
    pos = w.traces.glw.mapFromScene(scene)
    with qtbot.waitSignal(w.traces.neuron_clicked, timeout=2000) as blocker:
        qtbot.mouseClick(w.traces.glw.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [8, False]
    assert m.selected == [8] and not m.auto_select


def test_banner_shows_the_engines_plausibility_warning_and_flagged_frames(qtbot):
    w = DashboardWindow()
    qtbot.addWidget(w)
    w.show()
    m = footprint_model()
    status = {
        "frame_index": 2, "n_frames_processed": 3, "fps_in": 20.0, "fps_processed": 20.0,
        "queue_depth": 0, "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "n_neurons": 1,
        "n_dropped": 0, "n_rejected": 0, "n_malformed": 0, "phase": "running",
        "init_progress": 1.0, "store_ok": True, "store_error": None, "dims": list(DIMS),
        "n_flagged": 3, "sanity_warning": "Result implausible: 90 % stripe-like components",
    }  # fmt: skip
    m.handle(msg("status", status), now=0.0)
    m.tick(0.5)
    w.refresh(m, m.take_dirty())
    assert w.banner.isVisible() and "90 % stripe-like" in w.banner.text()
    assert "3 flagged" in w.status.text("lost")
    m.handle(msg("status", {**status, "sanity_warning": None}), now=0.6)
    m.tick(0.7)
    w.refresh(m, m.take_dirty())
    assert w.banner.isHidden()


def test_every_closed_loop_rule_is_reachable_in_the_small_panel(qtbot):
    w = DashboardWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    m = DashboardModel(ModelConfig(), address="x")
    m.declare_rules([f"rule{i}" for i in range(8)])
    m.status = {"triggers": {"n_rules": 8, "n_fired": 0, "n_send_dropped": 0, "extra": "x" * 300}}
    w.bottom.setCurrentWidget(w.closed_loop)
    w.refresh(m, {"triggers", "status"})
    qtbot.wait(20)
    table = w.closed_loop.table
    assert table.rowCount() == 8
    visible = table.viewport().height() // table.rowHeight(0)
    assert visible >= 4  # four rules at least without scrolling (two before)
    assert visible >= 8 or table.verticalScrollBar().maximum() > 0  # the rest by scrolling
    assert w.closed_loop.summary.height() < 2 * w.closed_loop.fontMetrics().height() + 8


def test_status_values_use_readable_units_and_no_latency_before_running(qtbot):
    from dashboard.views.status import StatusPanel

    panel = StatusPanel()
    qtbot.addWidget(panel)
    m = DashboardModel(ModelConfig(), address="x")
    m.status = {"phase": "initialising", "latency_ms_p50": 0.0, "latency_ms_p99": 0.0,
                "n_frames_processed": 0, "n_dropped": 39300, "frame_index": 1234567}  # fmt: skip
    panel.refresh(m, {"status"})
    assert panel.text("latency") == "– / –"
    assert panel.text("frame") == "1.23M" and panel.text("lost").startswith("39300 / ")
    m.status.update(phase="running", n_frames_processed=10, latency_ms_p50=2.5,
                    latency_ms_p99=39300.0)  # fmt: skip
    m.last_age_ms = 125000.0
    panel.refresh(m, {"status"})
    assert panel.text("latency") == "2.50 ms / 39.3 s" and panel.text("age").startswith("2.1 min")
    panel.resize(500, 40)  # narrower than the chips: they are clipped, never stacked
    panel.show()
    qtbot.waitExposed(panel)
    for key, name in panel.names.items():
        value = panel.values[key]
        assert name.geometry().right() < value.geometry().left(), key
        assert name.width() >= name.sizeHint().width() - 1, key
