"""The subscriber side of the app over real sockets: traces all delivered, images conflated."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

pytest.importorskip("pytestqt")

from dashboard.app import ResultsSubscriber  # noqa: E402
from dashboard.model import DashboardModel  # noqa: E402
from online_cnmfe.results import stream as rs  # noqa: E402


class Recorder(DashboardModel):
    """A model that remembers what each drain fed it."""

    def __init__(self) -> None:
        super().__init__()
        self.fed: list = []

    def handle(self, message, now):
        self.fed.append(message)
        super().handle(message, now)


@pytest.fixture
def pub():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)


def drain_until(sub, model, done, timeout_s=10.0) -> list[list]:
    """Drain repeatedly (polling with a timeout) until ``done()``; messages fed per drain."""
    per_drain = []
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for messages"
        zmq.select([sub.data, sub.images], [], [], 0.2)
        model.fed = []
        sub.drain(model, time.monotonic())
        per_drain.append(model.fed)
    return per_drain


def test_traces_all_arrive_and_only_the_newest_image_per_layer_is_used(pub):
    sock, address = pub
    sub = ResultsSubscriber(address)
    model = Recorder()
    try:
        # slow joiner: repeat 'ready' until the subscription is through
        drain_until(sub, model, lambda: (sock.send_multipart(rs.encode_ready("s", 1)) or True)
                    and model.session_id == "s")  # fmt: skip
        meta = {"seq": 0, "t_acq_ms": 0.0, "t_send_ns": 0}
        for f in range(50):
            ids = np.array([1, 2])
            c = np.array([f, 2 * f], np.float32)
            sock.send_multipart(
                rs.encode_traces(
                    {**meta, "frame_index": f, "t_acq_ms": 50.0 * f}, ids, c, c, c, 0, 1.0
                )  # fmt: skip
            )
        for f in range(20):
            img = np.full((8, 8), f, np.float32)
            sock.send_multipart(rs.encode_image(f, "raw", img, 1))
        sock.send_multipart(rs.encode_image(20, "corr_pnr", np.ones((8, 8), np.float32), 1))
        drains = drain_until(
            sub, model,
            lambda: model.traces.n_frames == 50 and "corr_pnr" in model.images
            and model.images["raw"].frame_index == 19,
        )  # fmt: skip
    finally:
        sub.close()
    win = model.traces.window(100, [0, 1])
    assert win["frame_index"].tolist() == list(range(50))  # every frame's traces, in order
    np.testing.assert_array_equal(win["C"][1], 2 * np.arange(50))
    for fed in drains:
        layers = [m.header["layer"] for m in fed if m.topic == "image"]
        assert len(layers) == len(set(layers)), "more than one image of a layer in one drain"
    assert model.images["raw"].image[0, 0] == 19.0
    assert model.n_malformed == 0


def test_pause_freezes_the_views_but_not_the_model(pub, qtbot):
    from dashboard.app import DashboardApp

    sock, address = pub
    app = DashboardApp(address, max_fps=1e6)  # no refresh throttling: ticks are by hand
    qtbot.addWidget(app.window)
    app.timer.stop()  # ticks are driven by hand here
    try:

        def ready_seen():
            sock.send_multipart(rs.encode_ready("s", 1))
            zmq.select([app.subscriber.data], [], [], 0.2)
            app.tick()
            return app.model.session_id == "s"

        qtbot.waitUntil(ready_seen, timeout=10_000)
        meta = {"seq": 0, "t_send_ns": 0}

        def send_frames(frames):
            for f in frames:
                c = np.array([1.0 + f], np.float32)
                sock.send_multipart(
                    rs.encode_traces(
                        {**meta, "frame_index": f, "t_acq_ms": 50.0 * f},
                        np.array([5]),
                        c,
                        c,
                        c,
                        0,
                        1.0,
                    )  # fmt: skip
                )

        def ticked_until(n):
            def done():
                zmq.select([app.subscriber.data], [], [], 0.2)
                app.tick()
                return app.model.traces.n_frames == n

            return done

        send_frames(range(3))
        qtbot.waitUntil(ticked_until(3), timeout=10_000)
        x_before = app.window.traces.curves["C"][0].getData()[0].copy()
        assert x_before.size == 3
        app.window.status.pause.setChecked(True)
        send_frames(range(3, 6))
        qtbot.waitUntil(ticked_until(6), timeout=10_000)
        app.tick()
        assert app.window.traces.curves["C"][0].getData()[0].size == 3  # frozen
        assert "paused" in app.window.status.state.text()
        app.window.status.pause.setChecked(False)
        app.tick()
        assert app.window.traces.curves["C"][0].getData()[0].size == 6  # caught up
    finally:
        app.close()


def test_refreshes_are_throttled_to_max_fps(pub, qtbot, monkeypatch):
    from dashboard.app import DashboardApp

    _, address = pub
    app = DashboardApp(address, max_fps=10.0)
    qtbot.addWidget(app.window)
    app.timer.stop()
    clock = [100.0]
    monkeypatch.setattr("dashboard.app.time.monotonic", lambda: clock[0])
    try:
        refreshed = []
        monkeypatch.setattr(app.window, "refresh", lambda model, dirty: refreshed.append(dirty))
        for _ in range(10):  # 10 ticks 20 ms apart = 0.2 s: two refreshes at 10/s
            app.model.mark_dirty("traces")
            app.tick()
            clock[0] += 0.02
        assert len(refreshed) == 2 and all("traces" in d for d in refreshed)
        app.min_refresh_s = 1 / 30  # 30/s from 20 ms ticks: the schedule alternates 40/20 ms
        refreshed.clear()
        for _ in range(50):  # 1 s
            app.model.mark_dirty("traces")
            app.tick()
            clock[0] += 0.02
        assert 29 <= len(refreshed) <= 31
    finally:
        app.close()


def test_no_message_means_no_cpu_figure_at_exit(pub, qtbot, caplog):
    """Nothing arrived: the exit log says so instead of a CPU share over a zero interval."""
    import logging

    from dashboard.app import DashboardApp

    _, address = pub
    app = DashboardApp(address)
    qtbot.addWidget(app.window)
    stats = app.stats()
    assert np.isnan(stats["cpu_percent"])
    with caplog.at_level(logging.INFO, logger="dashboard.app"):
        app.close()
    assert "no message received" in caplog.text and "CPU" not in caplog.text
