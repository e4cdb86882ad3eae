"""The engine's model runner: the initialisation's progress as the status reports it."""

from __future__ import annotations

import numpy as np
import pytest

from online_cnmfe.engine import model_runner
from online_cnmfe.engine.model_runner import ModelRunner
from online_cnmfe.params import CNMFEParams

pytestmark = pytest.mark.timeout(60)


class _Model:
    def __init__(self, params):
        self.neuron_ids = np.zeros(0, np.int64)
        self.seen = None

    def initialize_from(self, init, movie):
        self.seen = movie.shape


def _runner(n_frames=20):
    params = CNMFEParams().replace(**{"init.init_frames": n_frames})
    runner = ModelRunner(params, _Model)
    for t in range(n_frames):
        runner.buffer(np.full((8, 8), t, np.float32), {"frame_index": t})
    return runner


def test_fit_stages_reach_the_status_while_initialising(monkeypatch):
    runner = _runner()
    assert runner.phase == "waiting"
    assert runner.init_progress == 1.0 and runner.init_fit_progress == 0.0
    assert runner.init_stage is None
    seen = []

    def fake_fit(movie, params, progress=None):
        for stage, fraction in [("seeding", 0.1), ("background 1 (5 neurons)", 0.4)]:
            progress(stage, fraction)
            seen.append((runner.phase, runner.init_stage, runner.init_fit_progress))
        progress("done", 1.0)
        return object()

    monkeypatch.setattr(model_runner, "fit_initial", fake_fit)
    runner.start_init()
    runner.wait_init(30)
    assert runner.init_error is None
    assert seen == [
        ("initialising", "seeding", 0.1),
        ("initialising", "background 1 (5 neurons)", 0.4),
    ]
    # fit done, the online model being built: still initialising, the fit complete
    assert runner.phase == "initialising" and runner.init_fit_progress == 1.0
    assert runner.init_stage == "starting the online model"
    assert runner.finish_init() and runner.phase == "running"
    assert runner.init_stage is None and runner.init_fit_progress == 1.0


def test_real_fit_reports_increasing_progress():
    """The real fit on a tiny movie: stages named, fractions increasing to 1."""
    from tests.online_cnmfe.init_fixture import DIAMETER, tiny_movie

    frames, _, _ = tiny_movie(T=100, pnr=(10, 15))
    params = CNMFEParams().replace(**{"init.init_frames": 100, "data.neuron_diameter_px": DIAMETER})
    runner = ModelRunner(params, _Model)
    for t, f in enumerate(frames):
        runner.buffer(f, {"frame_index": t})
    stages = []
    original = runner._on_fit_progress

    def spy(stage, fraction):
        original(stage, fraction)
        stages.append((runner.init_stage, runner.init_fit_progress))

    runner._on_fit_progress = spy
    runner.start_init()
    runner.wait_init(50)
    assert runner.init_error is None and runner.finish_init()
    names = [s for s, _ in stages]
    fractions = [f for _, f in stages]
    assert names[0] == "preprocessing" and "seeding" in names
    assert any(n.startswith("background 1") for n in names)
    assert names[-2:] == ["done", "starting the online model"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert 0 < fractions[names.index("seeding")] < 0.5


class _Publisher:
    """The engine's footprint publication decisions on a stub (no sockets)."""

    def __init__(self, period_s: float):
        from types import SimpleNamespace

        from online_cnmfe.params import EngineParams

        self.ep = EngineParams(footprints_period_s=period_s)
        self._fp_ids, self._fp_sent_s, self._fp_version = None, -float("inf"), None
        self.sent = []
        model = SimpleNamespace(footprints_version=7)
        self.runner = SimpleNamespace(phase="running", model=model)

    def _send_footprints(self):
        self.sent.append(self.runner.model.footprints_version)
        self._fp_version = self.runner.model.footprints_version


def _publisher(period_s):
    from online_cnmfe.engine.publish import PublishingMixin

    cls = type("P", (_Publisher,), {
        "_footprints_due": PublishingMixin._footprints_due,
        "_flush_footprints": PublishingMixin._flush_footprints,
    })  # fmt: skip
    return cls(period_s)


def test_footprint_refreshes_are_rate_limited_but_new_neurons_go_out_at_once():
    import time
    from types import SimpleNamespace

    p = _publisher(0.5)
    res = SimpleNamespace(neuron_ids=np.array([1, 2, 3]))
    assert p._footprints_due(res)  # nothing sent yet
    p._fp_ids, p._fp_sent_s = res.neuron_ids.copy(), time.monotonic()
    assert not p._footprints_due(res)  # a shape refresh right after: held back
    assert p._footprints_due(SimpleNamespace(neuron_ids=np.array([1, 2, 4])))  # merge/birth
    assert p._footprints_due(SimpleNamespace(neuron_ids=np.array([1, 2, 3, 9])))  # a birth
    assert p._footprints_due(SimpleNamespace(neuron_ids=np.array([1, 2])))  # a removal
    p._fp_sent_s = time.monotonic() - 0.6
    assert p._footprints_due(res)  # the period passed
    every = _publisher(0.0)
    every._fp_ids, every._fp_sent_s = res.neuron_ids.copy(), time.monotonic()
    assert every._footprints_due(res)  # 0: every change, as before


def test_held_back_footprints_are_flushed():
    p = _publisher(0.5)
    p._fp_version = 6  # the model is at 7: one version held back
    p._flush_footprints()
    assert p.sent == [7]
    p._flush_footprints()  # nothing pending: nothing sent
    assert p.sent == [7]
    p.runner.phase = "initialising"
    p.runner.model.footprints_version = 8
    p._flush_footprints()  # no running model: nothing to send
    assert p.sent == [7]
