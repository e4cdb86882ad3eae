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
