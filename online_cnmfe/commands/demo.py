"""``online-cnmfe demo``: the whole pipeline on a built-in simulated miniscope (``make demo``).

Three processes, as during an experiment: a simulated live miniscope publisher
(``online-cnmfe acquire simulate``), the engine (``online-cnmfe run``) and, when a display
exists, the dashboard (``online-cnmfe dashboard``). This process subscribes to the results
stream like any client, waits for the end of the stream, then scores the results file against
the simulator's ground truth (``online_cnmfe.evaluation``) and prints a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from online_cnmfe.errors import OnlineCNMFEError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on a simulated miniscope and score it",
        description=(
            "Start a simulated live miniscope publisher, the engine and (when a display exists) "
            "the dashboard; process the simulated movie; write OUTDIR/session.h5; print the "
            "neurons found, their accuracy against the simulator's ground truth and the "
            "per-frame latency."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
        help="frame size in pixels (608 608 is a full Miniscope V4 frame)",
    )  # fmt: skip
    p.add_argument("--duration", type=float, default=120.0, help="seconds of movie at --fps")
    p.add_argument("--fps", type=float, default=20.0, help="frame rate of the simulated movie")
    p.add_argument("--neurons", type=int, default=120, help="in-focus neurons in the simulation")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (same seed, same movie)")
    p.add_argument("--init-frames", type=int, default=300, help="frames used to initialise")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="stream at the movie's frame rate (default: as fast as the engine goes)",
    )
    p.add_argument("--headless", action="store_true", help="never open the dashboard")
    p.add_argument(
        "--outdir", type=Path, default=Path("demo-output"), help="where session.h5 and logs go"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_cnmfe", *args]


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError

    h, w = args.size
    n_frames = int(round(args.duration * args.fps))
    if n_frames <= args.init_frames:
        raise ConfigError(
            f"--duration {args.duration} s at {args.fps} Hz is {n_frames} frames, not more than "
            f"--init-frames {args.init_frames}; make it longer"
        )
    args.outdir.mkdir(parents=True, exist_ok=True)
    out = args.outdir / "session.h5"
    sock_dir = Path(tempfile.mkdtemp(prefix="online-cnmfe-demo-"))
    frames_ep, results_ep = f"ipc://{sock_dir}/frames", f"ipc://{sock_dir}/results"
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    settings = [f"data.frame_rate_hz={args.fps}", f"init.init_frames={args.init_frames}"]
    sndhwm = "256"
    if not args.realtime:
        # Lossless max-rate replay: the engine waits instead of dropping, and the buffers
        # between the processes stay small so the publisher's last frames and its end-of-
        # stream message drain within its linger time.
        settings += ["engine.queue_full=wait", "engine.queue_frames=32", "engine.rcvhwm_frames=16"]
        sndhwm = "16"
    engine_cmd = _cli("run", "--frames", frames_ep, "--results", results_ep, "--out", str(out))
    engine_cmd += ["--overwrite", "--idle-exit", "30"] + [a for s in settings for a in ("--set", s)]
    procs: dict[str, subprocess.Popen] = {}
    log = open(args.outdir / "demo.log", "w")  # noqa: SIM115 - closed in the finally below
    t0 = time.monotonic()
    try:
        procs["engine"] = subprocess.Popen(engine_cmd, env=env, stdout=log, stderr=log)
        client = _Client(results_ep)
        client.wait_ready(procs["engine"])
        if not args.headless and _has_display() and _dashboard_available():
            procs["dashboard"] = subprocess.Popen(
                _cli("dashboard", "--results", results_ep), env=env, stdout=log, stderr=log
            )
        acquire_cmd = _cli(
            "acquire", "simulate", "--size", str(h), str(w), "--frames", str(n_frames),
            "--neurons", str(args.neurons), "--seed", str(args.seed), "--fps", str(args.fps),
            "--endpoint", frames_ep, "--rate", "real" if args.realtime else "max",
            "--wait-for-subscriber", "60", "--sndhwm", sndhwm, "--quiet",
        )  # fmt: skip
        procs["acquire"] = subprocess.Popen(acquire_cmd, env=env, stdout=log, stderr=log)
        client.follow(
            procs["engine"],
            procs["acquire"],
            n_frames,
            args.init_frames,
            not args.quiet and sys.stderr.isatty(),
        )
        code = procs["engine"].wait(timeout=60)
        if code != 0:
            raise OnlineCNMFEError(f"the engine exited with {code}; see {args.outdir}/demo.log")
    finally:
        for name in ("acquire", "dashboard", "engine"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
    elapsed = time.monotonic() - t0
    sys.stdout.write(_summary(args, out, n_frames, client, elapsed) + "\n")
    return 0


def _dashboard_available() -> bool:
    return importlib.util.find_spec("online_cnmfe.commands.dashboard") is not None


class _Client:
    """The demo's own results subscriber: readiness, progress, latencies."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for topic in (b"ready", b"status", b"traces", b"eos"):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)
        self.age_ms: list[float] = []  # frames sent after the engine started running
        self.first_traces_ns: int | None = None
        self.process_ms: list[float] = []
        self.status: dict = {}
        self.t_first = self.t_last = None

    def _recv(self, timeout_ms: int):
        from online_cnmfe.results.stream import decode_result

        if not self.sock.poll(timeout_ms):
            return None
        msg = decode_result(self.sock.recv_multipart())
        if msg.topic == "traces":
            now = time.monotonic_ns()
            if self.first_traces_ns is None:
                self.first_traces_ns = now
            if msg.header["t_send_ns"] >= self.first_traces_ns:  # not the init backlog
                self.age_ms.append((now - msg.header["t_send_ns"]) / 1e6)
            self.process_ms.append(msg.header.get("process_ms", -1.0))
            self.t_first = self.t_first or time.monotonic()
            self.t_last = time.monotonic()
        elif msg.topic == "status":
            self.status = msg.header
        return msg

    def wait_ready(self, engine: subprocess.Popen, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self._recv(200)
            if msg is not None and msg.topic == "ready":
                return
            if engine.poll() is not None:
                raise OnlineCNMFEError(f"the engine exited with {engine.returncode} at start-up")
        raise OnlineCNMFEError("the engine did not answer within 2 minutes")

    def follow(self, engine, acquire, n_frames: int, init_frames: int, progress: bool) -> None:
        from tqdm import tqdm

        bar = tqdm(total=n_frames, unit="frame", disable=not progress, file=sys.stderr)
        last_traces = time.monotonic()
        try:
            while True:
                msg = self._recv(500)
                if msg is not None and msg.topic == "status":
                    h = msg.header
                    bar.set_description(h["phase"])
                    n_init = int(round(h["init_progress"] * init_frames))
                    bar.n = n_init + (h["n_frames_processed"] if h["phase"] != "waiting" else 0)
                    bar.refresh()
                if msg is not None and msg.topic == "eos":
                    return
                if msg is None and engine.poll() is not None:
                    return
                if msg is not None and msg.topic == "traces":
                    last_traces = time.monotonic()
                idle = time.monotonic() - last_traces
                if acquire.poll() is not None and idle > 20 and engine.poll() is None:
                    logger.warning("no frames for %.0f s after the publisher ended; stopping", idle)
                    engine.send_signal(signal.SIGINT)  # its end-of-stream message was lost
        finally:
            bar.close()
            self.sock.close(linger=0)
            self.ctx.term()


def _summary(args, out: Path, n_frames: int, client: _Client, elapsed: float) -> str:
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams
    from online_cnmfe.evaluation.files import format_report, read_result
    from online_cnmfe.evaluation.metrics import evaluate, truth_from_simulator
    from online_cnmfe.results.reader import read_results

    res = read_results(out)
    sim_params = SimulationParams(
        height=args.size[0], width=args.size[1], n_frames=n_frames, frame_rate_hz=args.fps,
        n_neurons=args.neurons, seed=args.seed,
    )  # fmt: skip
    truth = truth_from_simulator(MiniscopeSimulator(sim_params), n_frames)
    metrics = evaluate(read_result(out), truth)
    proc = np.array([p for p in client.process_ms if p >= 0])
    age = np.array(client.age_ms)
    online = max(len(client.process_ms), 1)
    rate = online / max((client.t_last or 0) - (client.t_first or 0), 1e-9)
    lines = [
        "",
        f"online-cnmfe demo: {n_frames} frames of {args.size[0]}x{args.size[1]} "
        f"({args.duration:g} s at {args.fps:g} Hz, {args.neurons} simulated neurons) "
        f"in {elapsed:.0f} s",
        f"  results: {out} ({res.n_frames} frames stored, {len(res.dropped)} dropped ranges, "
        f"{len(res.rejected)} rejected)",
        f"  neurons found: {len(res.neuron_ids)} (simulated: {args.neurons})",
    ]
    if proc.size:
        lines.append(
            f"  per-frame processing: median {np.median(proc):.2f} ms, p99 "
            f"{np.percentile(proc, 99):.2f} ms, max {proc.max():.2f} ms "
            f"({online} online frames, {rate:.0f} frames/s)"
        )
    if args.realtime and age.size:
        lines.append(
            f"  frame-to-trace latency (send -> traces received, frames sent once running): "
            f"median {np.median(age):.2f} ms, p99 {np.percentile(age, 99):.2f} ms"
        )
    lines += ["", "accuracy against the simulator's ground truth:", format_report(metrics)]
    return "\n".join(lines)
