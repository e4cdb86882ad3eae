"""Helpers for the engine tests: real subprocesses, real sockets, polls with timeouts.

- :func:`start_engine` runs ``online-cnmfe run`` in a subprocess on ipc:// endpoints in tmp_path;
- :class:`ResultsClient` subscribes to its results stream and records every message;
- :class:`TestPublisher` is a frame publisher in the test process (an XPUB, so the test knows
  when the engine has subscribed) able to send valid, malformed and wrong-shape messages;
- :func:`start_acquire` runs the real ``online-cnmfe acquire simulate`` publisher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import zmq

from acquisition.protocol import (
    EosMessage,
    FrameMessage,
    StartMessage,
    encode_eos,
    encode_frame,
    encode_start,
)
from online_cnmfe.results.stream import decode_result

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 64)
# Small, fast settings: 60 init frames; detection off keeps the tests about the engine.
ENGINE_SETTINGS = (
    "init.init_frames=60",
    "detection.enabled=false",
    "engine.status_period_s=0.2",
    "engine.flush_period_s=0.2",
    "engine.republish_period_s=0.5",
)


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")


def endpoints(tmp_path: Path) -> tuple[str, str]:
    return f"ipc://{tmp_path}/frames", f"ipc://{tmp_path}/results"


def start_engine(tmp_path: Path, *extra: str, settings=ENGINE_SETTINGS, out="session.h5"):
    frames, results = endpoints(tmp_path)
    cmd = [sys.executable, "-m", "online_cnmfe", "run", "--frames", frames, "--results", results]
    if out is not None:
        cmd += ["--out", str(tmp_path / out)]
    for s in settings:
        cmd += ["--set", s]
    cmd += list(extra)
    log = open(tmp_path / "engine.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env())


def start_acquire(tmp_path: Path, n_frames: int | None, rate: str = "max", seed: int = 0):
    frames, _ = endpoints(tmp_path)
    cmd = [
        sys.executable, "-m", "online_cnmfe", "acquire", "simulate", "--size", *map(str, SIZE),
        "--neurons", "8", "--seed", str(seed), "--endpoint", frames, "--rate", rate, "--quiet",
    ]  # fmt: skip
    if rate != "max":  # a max-rate replay waits for the engine as long as it takes
        cmd += ["--wait-for-subscriber", "20"]
    if n_frames is not None:
        cmd += ["--frames", str(n_frames)]
    log = open(tmp_path / f"acquire-{seed}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env())


def stop(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def engine_log(tmp_path: Path) -> str:
    path = tmp_path / "engine.log"
    return path.read_text(errors="replace") if path.exists() else ""


class ResultsClient:
    """Subscribe to everything the engine publishes and keep it, by topic."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages = defaultdict(list)
        self.order: list[tuple[str, int | None]] = []  # (topic, frame_index) as received
        self.t_recv_ns: list[int] = []

    def poll(self, timeout_s: float) -> int:
        """Receive what arrives within ``timeout_s``; returns the number of messages."""
        n, deadline = 0, time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000) + 1):
                return n
            msg = decode_result(self.sock.recv_multipart())
            if msg.topic == "traces":
                self.t_recv_ns.append(time.monotonic_ns())
            self.messages[msg.topic].append(msg)
            self.order.append((msg.topic, msg.header.get("frame_index")))
            n += 1

    def wait_for(self, predicate, timeout_s: float, what: str, proc=None):
        """Receive until ``predicate(self)`` is true; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            if proc is not None and proc.poll() is not None and not self.poll(0.2):
                if predicate(self):
                    break
                raise AssertionError(f"engine exited ({proc.returncode}) before {what}")
            self.poll(0.1)
        return self

    def last_status(self) -> dict:
        return self.messages["status"][-1].header if self.messages["status"] else {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def running_after(n: int):
    """Predicate: the engine reported at least ``n`` processed frames."""
    return lambda c: c.last_status().get("n_frames_processed", 0) >= n


class TestPublisher:
    """A frame publisher in the test process (XPUB: it sees the engine's subscription)."""

    __test__ = False

    def __init__(self, endpoint: str, seed: int = 0) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.bind(endpoint)
        self.session_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.size = SIZE
        self.movie = self.make_movie(seed)

    @staticmethod
    def make_movie(seed: int, n: int = 400, size=SIZE) -> np.ndarray:
        from acquisition.simulator import MiniscopeSimulator, SimulationParams

        params = SimulationParams(height=size[0], width=size[1], n_frames=n, n_neurons=8, seed=seed)
        return MiniscopeSimulator(params).frames(0, n)

    def new_session(self, size=SIZE, seed: int = 1) -> None:
        """Act as a restarted publisher: new session id, seq from 0, maybe another size."""
        self.session_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.size = tuple(size)
        self.movie = self.make_movie(seed, size=size)

    def wait_for_subscriber(self, timeout_s: float = 30.0) -> None:
        if not self.sock.poll(int(timeout_s * 1000)):
            raise AssertionError("the engine never subscribed to the frame stream")
        while self.sock.poll(200):  # it subscribes to 3 topics
            self.sock.recv()

    def send_start(self, frame_rate_hz: float = 20.0) -> None:
        start = StartMessage(
            self.session_id, "synthetic", frame_rate_hz, self.size, "uint16", "test", None, {}
        )
        self.sock.send_multipart(encode_start(start))

    def send_frame(self, index: int, pixels: np.ndarray | None = None) -> None:
        pixels = self.movie[index % len(self.movie)] if pixels is None else pixels
        msg = FrameMessage(
            seq=self.seq, frame_index=index, daq_frame=None, t_acq_ms=50.0 * index,
            t_send_ns=time.monotonic_ns(), session_id=self.session_id, source="synthetic",
            pixels=pixels,
        )  # fmt: skip
        self.seq += 1
        self.sock.send_multipart(encode_frame(msg))

    def send_raw(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def send_eos(self) -> None:
        self.sock.send_multipart(encode_eos(EosMessage(self.session_id, self.seq, "complete")))

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()
