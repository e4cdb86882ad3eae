"""The dashboard's motion trace: fed by the traces messages, drawn by the motion panel."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.protocol import decode_message
from dashboard.model import DashboardModel, ModelConfig
from dashboard.motion_trace import MotionTrace
from online_cnmfe.results import stream as rs


def _traces(frame: int, shift=None, quality=None, flag=None):
    meta = {"frame_index": frame, "seq": frame, "t_acq_ms": 50.0 * frame, "t_send_ns": 1}
    ids = np.array([1], np.int64)
    c = np.ones(1, np.float32)
    frames = rs.encode_traces(meta, ids, c, c, c, 0, 1.0, flag=flag, motion_shift_px=shift,
                              motion_quality=quality)  # fmt: skip
    return decode_message([bytes(f) for f in frames])


def test_the_model_keeps_shift_quality_and_flags():
    m = DashboardModel(ModelConfig(history_frames=4))
    m.handle(_traces(0), now=0.0)  # motion correction off: nothing stored
    assert m.motion.n == 0
    for f in range(1, 7):
        flag = "motion: shift 23.1 px > max 20" if f == 3 else None
        m.handle(_traces(f, (0.5 * f, -f), 0.8, flag), now=0.1 * f)
    frame, shift, quality, flagged = m.motion.ordered()
    np.testing.assert_array_equal(frame, [3, 4, 5, 6])  # the last 4 (ring buffer)
    np.testing.assert_allclose(shift[:, 1], [-3, -4, -5, -6])
    assert flagged.tolist() == [True, False, False, False] and m.motion.n_flagged == 1
    assert m.motion.last()[0] == 6
    bad = _traces(7)
    bad.header["motion_shift_px"] = "up"
    m.handle(bad, now=1.0)
    assert m.n_malformed == 1 and m.motion.last()[0] == 6


def test_ring_buffer_clear():
    t = MotionTrace(3)
    t.append(1, (1.0, 2.0), 0.5, True)
    t.clear()
    assert t.n == 0 and t.last() is None and t.n_flagged == 0


def test_the_motion_panel_draws_the_shifts(qtbot):
    pytest.importorskip("pytestqt")
    from dashboard.views.motion import MotionPanel

    m = DashboardModel(ModelConfig())
    panel = MotionPanel()
    qtbot.addWidget(panel)
    panel.refresh(m, {"traces"})
    assert "No motion" in panel.label.text()
    for f in range(5):
        m.handle(_traces(f, (f, -2.0 * f), 0.9, "motion: x" if f == 2 else None), now=f)
    panel.refresh(m, {"traces"})
    x, y = panel.rows.getData()
    np.testing.assert_array_equal(x, np.arange(5))
    np.testing.assert_allclose(panel.cols.getData()[1], -2.0 * np.arange(5))
    assert len(panel.flags.data) == 1
    assert (
        "dy +4.00, dx -8.00 px" in panel.label.text() and "1 frames flagged" in panel.label.text()
    )
