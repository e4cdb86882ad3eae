"""Review mode over a real results file written by the store (online_cnmfe.results.writer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

pytest.importorskip("pytestqt")

from dashboard.model import DashboardModel, ModelConfig  # noqa: E402
from dashboard.review import ReviewSource  # noqa: E402
from dashboard.review_app import ReviewApp  # noqa: E402
from online_cnmfe.model.frame_result import FrameResult  # noqa: E402
from online_cnmfe.params import CNMFEParams  # noqa: E402
from online_cnmfe.results.writer import ResultsWriter  # noqa: E402

DIMS = (16, 32)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def results_file(tmp_path) -> Path:
    """60 frames; neuron 7 at (row 5, col 20) from frame 0, neuron 9 at (10, 3) born at 30."""
    path = tmp_path / "session.h5"
    A = np.zeros((DIMS[0] * DIMS[1], 2), np.float32)
    A[5 * DIMS[1] + 20, 0] = 1.0
    A[10 * DIMS[1] + 3, 1] = 1.0
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {"source": "test"}) as w:
        for f in range(60):
            ids = np.array([7] if f < 30 else [7, 9], np.int64)
            c = np.array([1.0 + f, 100.0 + f][: ids.size], np.float32)
            w.append_frame(
                FrameResult(frame_index=f, neuron_ids=ids, C=c, S=0 * c, C_raw=c),
                {
                    "frame_index": f,
                    "seq": f,
                    "daq_frame": None,
                    "t_acq_ms": 50.0 * f,
                    "latency_ms": 1.0,
                },
            )
            if f == 30:
                w.set_footprints(scipy.sparse.csc_array(A), np.array([7, 9]), 1)
        w.set_footprints(scipy.sparse.csc_array(A), np.array([7, 9]), 2)
    return path


def test_review_source_puts_the_model_at_a_frame(results_file):
    src = ReviewSource(results_file)
    assert src.n_frames == 60
    m = DashboardModel(ModelConfig(history_frames=60))
    src.show(m, 40, window_frames=20)
    assert m.footprints is not None and m.neuron_at(5.5, 20.5) == 7 and m.neuron_at(10.5, 3.5) == 9
    win = m.trace_window(10.0, [7, 9])
    assert win["ids"].tolist() == [7, 9]
    np.testing.assert_array_equal(win["C"][0], 1.0 + np.arange(21, 41))
    assert np.isnan(win["C"][1][:9]).all()  # neuron 9 did not exist before frame 30
    np.testing.assert_array_equal(win["C"][1][9:], 100.0 + np.arange(30, 41))
    assert m.births == {9: 30} and m.last_frame_index == 40
    den = m.layer_image("denoised").image
    assert den[5, 20] == pytest.approx(41.0) and den[10, 3] == pytest.approx(140.0)
    assert m.status["n_neurons"] == 2 and m.status["latency_ms_p50"] == pytest.approx(1.0)
    src.show(m, 10, window_frames=20)
    assert m.status["n_neurons"] == 1
    assert (
        m.trace_window(10.0, [9])["ids"].size == 0 or np.isnan(m.trace_window(10.0, [9])["C"]).all()
    )


def test_review_window_slider_moves_the_traces(results_file, qtbot):
    app = ReviewApp(results_file, window_s=2.0)
    qtbot.addWidget(app.window)
    assert app.frame == 59
    assert app.model.connection == "review" and app.window.banner.isHidden()
    app.model.select(7)
    app.show(20)
    x, y = app.window.traces.curves["C"][0].getData()
    assert x[-1] == 0.0 and y.size == 21  # 2 s at 20 Hz: frames 0..20
    assert "frame 20 (21/60)" in app.position.text()
    app.slider.setValue(59)
    x, y = app.window.traces.curves["C"][0].getData()
    assert y.size == 40  # frames 20..59
    assert app.window.status.text("frame") == "59"


def test_view_command_writes_a_screenshot(results_file, tmp_path):
    png = tmp_path / "review.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "online_cnmfe",
            "view",
            str(results_file),
            "--frame",
            "45",
            "--screenshot",
            str(png),
            "--quit-after",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 10_000


def test_view_command_reports_a_missing_file(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "online_cnmfe",
            "view",
            str(tmp_path / "nope.h5"),
            "--screenshot",
            str(tmp_path / "x.png"),
            "--quit-after",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.returncode == 2 and "error" in out.stderr and "Traceback" not in out.stderr


def test_review_shows_rules_and_triggers_fired_by_the_frame(results_file, qtbot):
    import json

    import h5py

    from online_cnmfe.results.triggers_table import (
        create_trigger_datasets,
        store_rule_log,
        store_triggers,
    )
    from online_cnmfe.triggers.records import TriggerRecord

    with h5py.File(results_file, "a") as f:
        g = create_trigger_datasets(f)
        store_rule_log(g, [(-1, "add", json.dumps({"name": "r1"})),
                           (-1, "add", json.dumps({"name": "quiet"}))])  # fmt: skip
        store_triggers(g, [
            TriggerRecord("r1", fr, fr, 50.0 * fr, 2.0, age, (7,), 0, 0, i + 1)
            for i, (fr, age) in enumerate([(10, 1.0), (20, 3.0), (50, float("nan"))])
        ])  # fmt: skip
    src = ReviewSource(results_file)
    m = DashboardModel(ModelConfig(history_frames=60))
    src.show(m, 25, window_frames=20)
    assert set(m.rules) == {"r1", "quiet"}
    r1 = m.rules["r1"]
    assert r1.count == 2 and r1.last_frame_index == 20 and m.rules["quiet"].count == 0
    assert r1.age_percentiles()[0] == pytest.approx(2.0)
    assert m.seconds_since(r1, 0.0) == pytest.approx(0.25)  # frame 25 vs 20 at 20 Hz
    src.show(m, 59, window_frames=20)
    assert m.rules["r1"].count == 3 and len(m.rules["r1"].ages_ms) == 2  # NaN age not counted
    assert m.n_malformed == 0


def test_play_advances_the_slider_and_stops_at_the_end(results_file, qtbot):
    app = ReviewApp(results_file, window_s=2.0)
    qtbot.addWidget(app.window)
    app.show(0)
    app.speed.setCurrentIndex(app.speed.findData(10))
    app.play.setChecked(True)
    qtbot.waitUntil(lambda: not app.play.isChecked(), timeout=15_000)
    assert app.frame == 59 and app.play.text() == "▶ Play"
