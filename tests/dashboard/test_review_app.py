"""The review window over a results file with drops, a skipped frame, a birth and a removal:
frame indices, events up to the frame shown, gaps, keys, go-to-neuron, curation, the neuron
table, layers, dF/F, scale bar, levels and the status bar."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from dashboard.review_app import ReviewApp  # noqa: E402
from online_cnmfe.results import curation  # noqa: E402
from tests.online_cnmfe.results.session_files import (  # noqa: E402
    BORN,
    DROP,
    F0_7,
    REMOVED,
    frame_index_of,
    write_session,
)

Key = QtCore.Qt.Key


@pytest.fixture
def app(tmp_path, qtbot):
    a = ReviewApp(write_session(tmp_path / "s.h5"), window_s=2.0)
    qtbot.addWidget(a.window)
    a.window.show()  # shortcuts reach an active window only
    a.window.activateWindow()
    qtbot.waitActive(a.window)
    yield a
    a.source.session.close()


def test_frame_is_a_frame_index_and_a_dropped_frame_shows_the_next(app):
    app.show_frame(25)
    assert app.frame == DROP[0] and "frame 25 (21/60)" in app.position.text()
    app.show_frame(22)  # dropped: the next frame kept
    assert app.frame == DROP[0] and app.window.status.text("frame") == "25"


def test_events_are_those_up_to_the_frame_shown_and_of_every_kind(app):
    app.show(BORN[1] - 1)
    kinds = [app.window.events.item(i).text() for i in range(app.window.events.count())]
    assert len(kinds) == 1 and kinds[0].startswith("⚠ drop") and "frame 20" in kinds[0]
    assert 9 not in app.model.births  # not born yet
    app.show(59)
    texts = [app.window.events.item(i).text() for i in range(app.window.events.count())]
    assert [t.split()[1] for t in texts] == ["removed", "reject", "born", "drop"]  # newest first
    assert app.model.births == {9: frame_index_of(BORN[1])}


def test_dropped_frames_are_a_gap_and_removed_neurons_stop(app):
    app.show(DROP[0] + 1)  # window of 2 s = 40 frames: covers the drop
    win = app.model.trace_window(2.0, [7])
    fi = app.model.traces.window(40, None)["frame_index"]
    gap = int(np.flatnonzero(fi == DROP[0])[0])
    assert fi[gap + 1] == DROP[1] + 1 and np.isnan(win["C"][0][gap - len(fi)])
    assert np.isfinite(win["C"][0][gap - len(fi) - 1]) and np.isfinite(win["C"][0][-1])
    app.show(REMOVED[1] + 3)
    assert 5 not in app.model.traces.current_ids.tolist()
    w5 = app.model.trace_window(2.0, [5])["C"][0]
    assert np.isnan(w5[-2:]).all() and np.isfinite(w5[-5])
    assert app.window.status.text("neurons") == "2"


def test_keys_move_in_time(app, qtbot):
    app.show(10)
    qtbot.keyClick(app.window, Key.Key_Right)
    assert app.frame == 11
    qtbot.keyClick(app.window, Key.Key_Left)
    qtbot.keyClick(app.window, Key.Key_Left)
    assert app.frame == 9
    qtbot.keyClick(app.window, Key.Key_Right, QtCore.Qt.KeyboardModifier.ShiftModifier)
    assert app.frame == 29  # one second at 20 Hz
    qtbot.keyClick(app.window, Key.Key_Home)
    assert app.frame == 0
    qtbot.keyClick(app.window, Key.Key_End)
    assert app.frame == 59
    qtbot.keyClick(app.window, Key.Key_PageUp)
    assert app.frame == 59 - 40


def test_go_to_neuron_selects_it_and_jumps_to_its_birth(app, qtbot):
    app.show(5)
    assert app.go_to_neuron(9)
    assert app.frame == BORN[1] and app.model.selected == [9]
    assert not app.go_to_neuron(123) and "no neuron #123" in app.message.text()
    app.goto.setText("#7")
    qtbot.keyClick(app.goto, Key.Key_Return)
    assert app.model.selected == [7]


def test_accept_reject_keys_write_the_file_and_colour_the_neuron(app, qtbot):
    app.go_to_neuron(9)
    qtbot.keyClick(app.window, Key.Key_R)
    path = app.source.path
    assert curation.read_curation(path) == {9: -1}
    assert app.window.image.rejected_contours.getData()[0].size > 0
    labels = {app.neurons.table.item(r, 0).text(): app.neurons.table.item(r, 1).text()
              for r in range(app.neurons.table.rowCount())}  # fmt: skip
    assert labels == {"7": "", "9": "rejected"}
    colours = dict(zip(app.window.image.labels._texts,
                       app.window.image.labels.label_colours(), strict=True))  # fmt: skip
    assert colours["9"] != colours["7"]
    qtbot.keyClick(app.window, Key.Key_U)
    assert curation.read_curation(path) == {}
    app.go_to_neuron(7)
    qtbot.mouseClick(app.buttons["accept"], QtCore.Qt.MouseButton.LeftButton)
    assert curation.read_curation(path) == {7: 1}
    app.model.clear_selection()
    qtbot.keyClick(app.window, Key.Key_R)  # nothing chosen by the user: nothing labelled
    assert curation.read_curation(path) == {7: 1} and "select a neuron" in app.message.text()


def test_neuron_table_sorts_numbers_and_n_walks_it(app, qtbot):
    table = app.neurons.table
    snr_col = 2
    table.sortItems(snr_col, QtCore.Qt.SortOrder.DescendingOrder)
    values = [float(table.item(r, snr_col).text()) for r in range(table.rowCount())]
    assert values == sorted(values, reverse=True)
    order = app.neurons.ordered_ids()
    app.model.clear_selection()
    qtbot.keyClick(app.window, Key.Key_N)
    assert app.model.selected == [order[0]]
    qtbot.keyClick(app.window, Key.Key_N)
    assert app.model.selected == [order[1]]
    app.neurons.table.cellClicked.emit(0, 0)
    assert app.model.selected == [order[0]]


def test_layers_are_those_of_the_file(app):
    box = app.window.image.layer_box
    assert [box.itemData(i) for i in range(box.count())] == [
        "auto", "denoised", "max_projection", "mean", "background",
    ]  # fmt: skip
    app.window.image.set_layer("max_projection")
    app.show(30)
    assert app.window.image.base.image[0, 0] == 9.0  # images/max of the file


def test_dff_units_and_y_scales(app):
    app.go_to_neuron(7)
    traces = app.window.traces
    traces.unit_box.setCurrentIndex(traces.unit_box.findData("dff"))
    app.show(59)
    ((_, text),) = traces.trace_plot.getAxis("left")._tickLevels[0]
    win = app.model.trace_window(2.0, [7])
    peak_dff = np.nanmax(np.abs(win["C_raw"][0])) / F0_7
    assert text.startswith("#7 (") and float(text[4:-1]) == pytest.approx(peak_dff, rel=1e-2)
    assert "dF/F" in traces.trace_plot.getAxis("left").labelText
    _, y = traces.curves["C"][0].getData()
    assert np.nanmax(y) <= 1.0 + 1e-6


def test_scale_bar_levels_and_status(app, qtbot):
    app.window.show()
    qtbot.waitExposed(app.window)
    panel = app.window.image
    panel.scale_bar.update()
    qtbot.wait(50)
    assert panel.scale_bar.text.endswith("µm") and panel.scale_bar.length_px > 0
    panel.levels_box.setChecked(True)
    app.show(30)
    assert panel.hist.isVisible()
    panel.hist.setLevels(1.0, 2.0)
    panel._on_user_levels()
    app.show(31)
    assert tuple(panel.base.levels) == (1.0, 2.0)
    panel.auto_levels.click()
    app.show(32)
    assert tuple(panel.base.levels) != (1.0, 2.0)
    status = app.window.status
    assert status.values["queue"].isHidden() and status.values["model"].isHidden()
    for key, name in status.names.items():
        value = status.values[key]
        if value.isVisible():
            assert name.geometry().right() < value.geometry().left(), key
    assert not math.isnan(float(status.text("frame")))


def test_go_to_neuron_pans_only_when_the_neuron_is_out_of_view(app, qtbot):
    vb = app.window.image.vb
    qtbot.waitExposed(app.window)
    app.show(59)
    full = vb.viewRect()
    app.go_to_neuron(7)  # in view: the view stays
    assert vb.viewRect() == full
    vb.setRange(QtCore.QRectF(0, 0, 4, 4), padding=0)  # zoomed on the top-left corner
    app.go_to_neuron(7)  # neuron 7 is at (5.5, 20.5): now centred
    centre = vb.viewRect().center()
    assert abs(centre.x() - 21.0) < 1.0 and abs(centre.y() - 6.0) < 1.0
