"""The dashboard as a real subprocess against a real publisher over tcp://127.0.0.1.

Started before the publisher it shows the unreachable banner, then data; when the publisher
goes away and a new session starts on the same address it shows the banner again, then the
new session's data. On SIGTERM it writes its screenshot, which must not be blank.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from tests.dashboard import fake_engine

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)  # generous: a cold numba cache compiles every kernel first


def free_port() -> int:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.LINGER, 0)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    s.close(linger=0)
    return port


class Lines:
    """The subprocess's stderr, line by line, awaited with a timeout."""

    def __init__(self, stream) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.q.put(line)

    def drain(self) -> None:
        """Move the lines read so far into ``seen``."""
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(
            f"{text!r} not logged in {timeout} s; log so far:\n" + "".join(self.seen)
        )


def start_publisher(address: str, seed: int, seconds: float, stop=None) -> threading.Thread:
    t = threading.Thread(
        target=fake_engine.publish,
        kwargs={
            "stop": stop,
            "address": address,
            "seconds": seconds,
            "seed": seed,
            "eos": False,
            "dims": (96, 128),
            "n_neurons": 15,
        },
        daemon=True,
    )
    t.start()
    return t


def png_is_not_blank(path: Path) -> tuple[bool, int]:
    from PySide6 import QtGui

    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not a readable PNG"
    step = 7
    colours = {
        img.pixel(x, y) for x in range(0, img.width(), step) for y in range(0, img.height(), step)
    }
    return len(colours) > 50, len(colours)


def test_dashboard_survives_publisher_start_stop_and_restart(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    png = tmp_path / "dashboard.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "online_cnmfe",
            "dashboard",
            "--results",
            address,
            "--stall-s",
            "1.5",
            "--screenshot",
            str(png),
            "--quit-after",
            "100",
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    stop = threading.Event()
    try:
        log = Lines(proc.stderr)
        log.wait_for("dashboard subscribed")
        log.wait_for("connection: unreachable")  # started before any publisher
        first = start_publisher(address, seed=1, seconds=4.0)
        log.wait_for("connection: live")
        first.join(timeout=30)
        log.wait_for("connection: unreachable")  # the publisher went away
        second = start_publisher(address, seed=2, seconds=60.0, stop=stop)
        log.wait_for("results stream restarted")  # a new session clears the display
        log.wait_for("connection: live")
        time.sleep(1.5)  # let a few frames and images arrive for the screenshot
        proc.send_signal(signal.SIGTERM)
        log.wait_for("screenshot written")
        log.wait_for("display:")
        assert proc.wait(timeout=30) == 0
        assert second.is_alive()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ok, n_colours = png_is_not_blank(png)
    assert ok, f"screenshot {png} looks blank ({n_colours} colours)"


@pytest.mark.slow
def test_dashboard_on_the_real_engine(tmp_path):
    """acquire simulate → online-cnmfe run → dashboard, three real processes; the dashboard is
    started first, and the engine is restarted under it."""
    ports = [free_port(), free_port()]
    frames_ep, results_ep = (f"tcp://127.0.0.1:{p}" for p in ports)
    env = dict(
        os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1"
    )
    png = tmp_path / "real.png"
    cli = [sys.executable, "-m", "online_cnmfe"]
    procs = {}
    engine_args = ("run", "--frames", frames_ep, "--results", results_ep, "--set",
                   "init.init_frames=100")  # fmt: skip

    def start(name, *args):
        procs[name] = subprocess.Popen(
            [*cli, *args],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        logs[name] = Lines(procs[name].stderr)
        return logs[name]

    logs: dict[str, Lines] = {}
    try:
        dash = start(
            "dashboard",
            "dashboard",
            "--results",
            results_ep,
            "--stall-s",
            "20",
            "--screenshot",
            str(png),
            "--quit-after",
            "600",
        )
        dash.wait_for("dashboard subscribed")
        engine = start("engine", *engine_args)
        dash.wait_for("connection: waiting", timeout=60)  # the engine is up, no frames yet
        start(
            "acquire",
            "acquire",
            "simulate",
            "--size",
            "96",
            "96",
            "--neurons",
            "15",
            "--frames",
            "2400",
            "--endpoint",
            frames_ep,
            "--fps",
            "20",
            "--quiet",
        )
        engine.wait_for("running with", timeout=400)  # first engine may compile numba kernels
        line = dash.wait_for("first traces of the session", timeout=120)
        assert int(line.split(": ")[-1].split()[0]) > 0  # some neurons
        # restart the engine under the running dashboard
        procs["engine"].send_signal(signal.SIGTERM)
        assert procs["engine"].wait(timeout=60) == 0
        dash.wait_for("connection: stopped")  # the engine said eos
        engine = start("engine", *engine_args)
        dash.wait_for("results stream restarted", timeout=60)  # new engine pid
        engine.wait_for("running with", timeout=300)
        dash.wait_for("first traces of the session", timeout=120)
        procs["dashboard"].send_signal(signal.SIGTERM)
        dash.wait_for("screenshot written")
        assert procs["dashboard"].wait(timeout=30) == 0
        summary = dash.wait_for("display:")
        assert "(0 malformed" in summary, "".join(dash.seen)
    except AssertionError as exc:  # say where each process was
        for lines in logs.values():
            lines.drain()
        seen = "\n".join(f"--- {n}:\n" + "".join(lines.seen[-40:]) for n, lines in logs.items())
        raise AssertionError(f"{exc}\n{seen}") from None
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    ok, n_colours = png_is_not_blank(png)
    assert ok, f"screenshot {png} looks blank ({n_colours} colours)"
