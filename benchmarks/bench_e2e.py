"""End-to-end latency on the real pipeline: frame arrival → traces published and → trigger received.

Four real processes on one host: ``online-cnmfe acquire simulate`` (frames paced at
``--rate-hz``), ``online-cnmfe run`` with a ``[triggers]`` config (two region rules over the
whole field: one fires on most frames, one on strong z-scores), and this script holding a
results subscriber and a trigger listener.

Latencies (one host, one ``CLOCK_MONOTONIC``):

- ``arrival→traces``: this script's ``monotonic_ns`` when the ``traces`` message is received
  minus the engine's ``t_recv_ns`` of the frame (in the header) — queueing, the model's
  critical path, the traces encoding and the results transport;
- ``arrival→trigger``: receipt on the trigger socket minus the firing's ``t_recv_ns``;
- ``send→traces``: from the publisher's ``t_send_ns`` (adds the frame transport).

Cases: each size × detection on/off × ``--loads`` (background processes spinning on the CPU).
Every case starts the engine with ``--resume`` from a checkpoint primed once per size (the
first ``--init-frames`` + 60 frames of the movie), restored before each case so every case
starts from the same state, and replays the frames that follow the primed ones: all measured
frames are online and every case sees the same model on the same frames. CPU time of the
engine process (``/proc/PID/stat``) is reported beside wall-clock figures. The machine is
shared: quote ratios measured in one run.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_e2e.py --sizes 256 608 --loads 0 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from online_cnmfe.results.stream import decode_result  # noqa: E402
from online_cnmfe.triggers.client import TriggerListener  # noqa: E402

NEURONS = {128: 80, 256: 300, 512: 400, 608: 500}
CONFIG = """
[data]
frame_rate_hz = {rate}

[init]
init_frames = {init}

[detection]
enabled = {detection}

[engine]
checkpoint_period_s = {checkpoint}
max_frame_age_ms = 1000.0

[triggers]
endpoint = "{trig}"
control_endpoint = ""

[[triggers.rules]]
name = "any_activity"
region = {{ shape = "rectangle", rows = [0, {size}], cols = [0, {size}] }}
signal = "zscore"
condition = "threshold"
threshold = 0.0
release = 0.0

[[triggers.rules]]
name = "strong_activity"
region = {{ shape = "rectangle", rows = [0, {size}], cols = [0, {size}] }}
signal = "zscore"
condition = "threshold"
threshold = 4.0
release = 1.0
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_cnmfe", *args]


def _pct(x) -> dict:
    x = np.asarray(x, float)
    if x.size == 0:
        return {"n": 0}
    return {
        "n": int(x.size),
        "p50": round(float(np.median(x)), 2),
        "p99": round(float(np.percentile(x, 99)), 2),
        "max": round(float(x.max()), 2),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _thread_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of a process, by thread id."""
    out = {}
    tck = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            continue
    return out


def _thread_names(py_spy: str | None, pid: int) -> dict[int, str]:
    """Python thread names by native thread id (``py-spy dump``), else the OS ``comm``."""
    names = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
    if py_spy:
        dump = subprocess.run([py_spy, "dump", "-p", str(pid)], capture_output=True, text=True)
        for line in dump.stdout.splitlines():
            if line.startswith("Thread ") and '"' in line:
                tid = line.split()[1]
                if tid.isdigit():
                    names[int(tid)] = line.split('"')[1]
    return names


class CpuSampler:
    """The engine's CPU per thread, sampled about once a second while frames flow.

    The steady-state figure is the CPU between the first sample after ``warmup`` traces
    messages and the last one before the engine starts stopping (no new traces, or one of its
    threads gone), divided by the traces received in between: it leaves out the start and the
    shutdown (final checkpoint, file close).
    """

    def __init__(self, pid: int, py_spy: str | None, warmup: int) -> None:
        self.pid, self.py_spy, self.warmup = pid, py_spy, warmup
        self.first: tuple | None = None  # (n_traces, {tid: cpu s})
        self.last: tuple | None = None
        self.names: dict[int, str] = {}
        self._next = 0.0

    def maybe_sample(self, n_traces: int) -> None:
        now = time.monotonic()
        if now < self._next or n_traces < self.warmup:
            return
        if self.last is not None and n_traces == self.last[0]:
            return  # no frame since: the engine may be stopping (its threads gone)
        self._next = now + 1.0
        sample = (n_traces, _thread_cpu(self.pid))
        if self.first is None:
            self.first = sample
        elif not set(self.last[1]) <= set(sample[1]):
            self._next = float("inf")  # a thread ended: the engine is stopping; window closed
            return
        if not set(sample[1]) <= set(self.names):  # a new thread (the slow path's starts late)
            self.names.update(_thread_names(self.py_spy, self.pid))
        self.last = sample

    def per_frame_ms(self) -> tuple[float, dict[str, float]]:
        """(total, by thread name) CPU ms per frame (threads of one name summed; ZeroMQ's I/O
        threads together; a thread born after the first sample counted from zero)."""
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return float("nan"), {}
        n = self.last[0] - self.first[0]
        before, after = self.first[1], self.last[1]
        out: dict[str, float] = {}
        for tid, cpu in after.items():
            name = self.names.get(tid, f"tid{tid}")
            name = "ZMQbg" if name.startswith("ZMQbg") else name
            out[name] = out.get(name, 0.0) + 1e3 * (cpu - before.get(tid, 0.0)) / n
        total = round(sum(out.values()), 2)
        return total, {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _primed_frames(args) -> int:
    """Frames the priming run processes (the initialisation and 60 online frames)."""
    return args.init_frames + 60


# The files of a resumable session (`online-cnmfe run --out s.h5`): kept aside after priming.
SESSION_FILES = ("s.h5", "s.state.h5", "s.ids.json")


def _keep_primed(tmp: Path) -> None:
    (tmp / "primed").mkdir(exist_ok=True)
    for name in SESSION_FILES:
        if (tmp / name).exists():
            shutil.copy2(tmp / name, tmp / "primed" / name)


def _restore_primed(tmp: Path) -> None:
    """The session as primed: a case must not resume from the previous case's end (runs
    drift: more components, a longer results file, a model past the movie's end)."""
    for name in SESSION_FILES:
        (tmp / name).unlink(missing_ok=True)
        if (tmp / "primed" / name).exists():
            shutil.copy2(tmp / "primed" / name, tmp / name)


def _movie(args, size: int, tmp: Path) -> Path:
    """The simulated movie ``acquire simulate`` would stream (same parameters and seed),
    rendered once into ``tmp`` as ``.npy`` (memory-mapped by ``acquire replay``)."""
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    n = _primed_frames(args) + args.frames
    path = tmp / f"movie-{size}-{n}-{args.rate_hz:g}hz.npy"
    if path.exists():
        return path
    params = SimulationParams(
        height=size, width=size, n_frames=n, frame_rate_hz=args.rate_hz,
        n_neurons=NEURONS.get(size, 300), seed=0, dtype="uint16",
    )  # fmt: skip
    sim = MiniscopeSimulator(params)
    part = path.with_suffix(".part.npy")
    movie = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint16, shape=(n, size, size))
    for t in range(0, n, 32):
        movie[t : t + 32] = sim.frames(t, min(t + 32, n))
    movie.flush()
    del movie
    part.rename(path)
    return path


def _spinners(n: int) -> list[subprocess.Popen]:
    code = "import time\nwhile True:\n    sum(range(10000))\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def _stop(procs) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        if p is not None:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def run_case(args, size: int, detection: bool, n_frames: int, rate: str, tmp: Path, resume: bool):
    """One run of publisher + engine; returns the measured latencies and counters."""
    if resume:
        _restore_primed(tmp)
    eps = {n: f"ipc://{tmp}/{n}" for n in ("frames", "results", "trig")}
    cfg = tmp / f"engine-{detection}.toml"
    cfg.write_text(
        CONFIG.format(
            rate=args.rate_hz, init=args.init_frames, trig=eps["trig"], size=size,
            checkpoint=args.checkpoint_period_s,
            detection=str(detection).lower(),
        )
    )  # fmt: skip
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp / "log.txt", "a")  # noqa: SIM115
    cmd = _cli("run", "--frames", eps["frames"], "--results", eps["results"], "--out",
               str(tmp / "s.h5"), "--config", str(cfg), "--idle-exit", "15")  # fmt: skip
    cmd += ["--resume"] if resume else ["--overwrite"]
    for override in args.set:  # e.g. engine.gil_switch_interval_ms=5 (an A/B in one tree)
        cmd += ["--set", override]
    if rate == "max":
        cmd += ["--set", "engine.queue_full=wait"]
    engine_env = dict(env)
    if args.stage_trace:  # diagnostic spans of the engine's stages (its sitecustomize)
        trace = REPO / "benchmarks" / "stage_trace"
        engine_env.update(PYTHONPATH=f"{trace}:{REPO}", STAGE_TRACE_DIR=str(tmp))
    engine = subprocess.Popen(cmd, env=engine_env, stdout=log, stderr=log)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100000)
    for topic in (b"ready", b"traces", b"eos", b"status"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(eps["results"])
    listener = TriggerListener(eps["trig"], context=ctx)
    arrival_traces, send_traces, arrival_trigger, status = [], [], [], {}
    per_frame, per_trigger = [], []  # (frame_index, engine arrival ns, receipt ns)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(listener.socket, zmq.POLLIN)
    acquire, cpu0, t0 = None, float("nan"), time.monotonic()
    sampler, spy = None, None
    try:
        while True:  # readiness handshake
            if sub.poll(200) and decode_result(sub.recv_multipart()).topic == "ready":
                break
            if engine.poll() is not None:
                raise RuntimeError(f"the engine exited early; see {tmp / 'log.txt'}")
        cpu0, t0 = _cpu_s(engine.pid), time.monotonic()
        sampler = CpuSampler(engine.pid, args.py_spy, args.warmup)
        if args.py_spy and args.profile_s:  # sampled without pausing the engine
            profile = tmp / f"profile-{os.getpid()}-{int(time.time())}.txt"
            spy = subprocess.Popen(
                [args.py_spy, "record", "--threads", "--nonblocking", "-r", "100",
                 "-d", str(args.profile_s), "-f", "raw", "-o", str(profile), "-p",
                 str(engine.pid)], stdout=log, stderr=log,
            )  # fmt: skip
        if args.source == "replay":  # frames rendered beforehand: sent like a camera's
            start = _primed_frames(args) if resume else 0  # the frames after the primed ones
            source = ["replay", str(_movie(args, size, tmp)), "--start", str(start),
                      "--stop", str(start + n_frames)]  # fmt: skip
        else:  # rendered live, in blocks of 32 frames, by the publishing process
            source = ["simulate", "--size", str(size), str(size), "--frames", str(n_frames),
                      "--neurons", str(NEURONS.get(size, 300))]  # fmt: skip
        acquire = subprocess.Popen(
            _cli("acquire", *source, "--endpoint", eps["frames"], "--rate", rate,
                 "--fps", f"{args.rate_hz:g}", "--wait-for-subscriber", "60", "--quiet"),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        while True:
            busy = False
            while sub.poll(0):
                busy = True
                msg = decode_result(sub.recv_multipart())
                now = time.monotonic_ns()
                if msg.topic == "traces":
                    if msg.header.get("t_recv_ns", -1) > 0:
                        arrival_traces.append((now - msg.header["t_recv_ns"]) / 1e6)
                        per_frame.append((msg.header["frame_index"], msg.header["t_recv_ns"], now))
                    send_traces.append((now - msg.header["t_send_ns"]) / 1e6)
                elif msg.topic == "status":
                    status = msg.header
                elif msg.topic == "eos":
                    raise StopIteration
            trig = listener.receive(timeout_s=0.0)
            while trig is not None:
                busy = True
                arrival_trigger.append((listener.last_recv_ns - trig.t_recv_ns) / 1e6)
                per_trigger.append((trig.frame_index, trig.t_recv_ns, listener.last_recv_ns))
                trig = listener.receive(timeout_s=0.0)
            if engine.poll() is not None:
                break
            sampler.maybe_sample(len(send_traces))
            if not busy:
                poller.poll(50)  # wakes at once when either socket has a message
    except StopIteration:
        pass
    finally:
        cpu1, t1 = _cpu_s(engine.pid), time.monotonic()
        _stop([acquire, engine])
        if spy is not None:
            spy.wait()
        listener.close()
        sub.close(linger=0)
        ctx.term()
        log.close()
    w = args.warmup
    if args.dump_frames:
        dump = tmp / f"frames-{os.getpid()}-{int(time.time())}.json"
        dump.write_text(json.dumps({"traces": per_frame, "triggers": per_trigger}))
    steady, by_thread = sampler.per_frame_ms() if sampler else (float("nan"), {})
    return {
        "arrival_to_traces_ms": _pct(arrival_traces[w:]),
        "arrival_to_trigger_ms": _pct(arrival_trigger[w:]),
        "send_to_traces_ms": _pct(send_traces[w:]),
        "frames": len(send_traces),
        "engine_cpu_s_per_frame_ms": round(1e3 * (cpu1 - cpu0) / max(len(send_traces), 1), 2),
        "engine_cpu_steady_ms_per_frame": steady,
        "engine_thread_cpu_ms_per_frame": by_thread,
        "wall_s": round(t1 - t0, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "n_neurons": status.get("n_neurons"),
        "dropped": status.get("n_dropped"),
        "throughput_fps": round(len(send_traces) / max(t1 - t0, 1e-9), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 608])
    ap.add_argument("--frames", type=int, default=1800, help="online frames per case")
    ap.add_argument("--rate-hz", type=float, default=30.0)
    ap.add_argument("--init-frames", type=int, default=300)
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 2], help="CPU spinners per case")
    ap.add_argument("--detection", choices=("on", "off", "both"), default="both")
    ap.add_argument("--warmup", type=int, default=60, help="online frames left out of stats")
    ap.add_argument("--throughput", action="store_true", help="also a --rate max run per size")
    ap.add_argument("--no-paced", action="store_true", help="with --throughput: only that run")
    ap.add_argument("--py-spy", help="py-spy executable: thread names in the per-thread CPU")
    ap.add_argument(
        "--profile-s",
        type=int,
        default=0,
        help="with --py-spy: also record a raw profile of the engine for this long",
    )
    ap.add_argument(
        "--checkpoint-period-s",
        type=float,
        default=0.0,
        help="engine.checkpoint_period_s of the runs (default 0: only at shutdown)",
    )
    ap.add_argument(
        "--dump-frames", action="store_true",
        help="write each frame's arrival and receipt times (traces, triggers) to the workdir",
    )  # fmt: skip
    ap.add_argument(
        "--stage-trace",
        action="store_true",
        help="record the engine's stages per frame (benchmarks/stage_trace) into the workdir; "
        "with --dump-frames, `benchmarks/e2e_stages.py DIR` says which stage ate the time of "
        "the slow frames",
    )
    ap.add_argument(
        "--source",
        choices=("replay", "simulate"),
        default="replay",
        help="replay: the simulated movie rendered beforehand, published like a camera's frames "
        "(default); simulate: rendered live by the publisher in blocks of 32 frames, which "
        "at 608² stalls the stream ~0.25 s every 32 frames and then sends the block at once",
    )
    ap.add_argument("--workdir", type=Path, help="keep files here (a primed checkpoint is reused)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="K=V",
        help="a parameter of the engine's runs (repeatable), e.g. engine.gil_switch_interval_ms=5",
    )  # fmt: skip
    args = ap.parse_args()
    detections = {"on": [True], "off": [False], "both": [True, False]}[args.detection]
    cases = []
    for size in args.sizes:
        tmp = args.workdir / str(size) if args.workdir else Path(tempfile.mkdtemp())
        tmp.mkdir(parents=True, exist_ok=True)
        if not (tmp / "primed" / "s.state.h5").exists():  # prime once: initialise, keep it
            run_case(args, size, True, _primed_frames(args), "max", tmp, resume=False)
            _keep_primed(tmp)
        for load in [] if args.no_paced else args.loads:
            for detection in detections:
                spin = _spinners(load)
                try:
                    row = run_case(args, size, detection, args.frames, f"{args.rate_hz:g}", tmp,
                                   resume=True)  # fmt: skip
                finally:
                    _stop(spin)
                row.update(size=size, detection=detection, load=load)
                cases.append(row)
                print(
                    f"{size}² detection {'on ' if detection else 'off'} load {load}: "
                    f"arrival→traces {row['arrival_to_traces_ms']}, arrival→trigger "
                    f"{row['arrival_to_trigger_ms']}, engine CPU {row['engine_cpu_s_per_frame_ms']}"
                    f" ms/frame (steady {row['engine_cpu_steady_ms_per_frame']}), {row['frames']} "
                    f"frames, {row['dropped']} dropped, load "
                    f"{row['load_avg_1min']}; by thread {row['engine_thread_cpu_ms_per_frame']}",
                    flush=True,
                )
        if args.throughput:
            row = run_case(args, size, True, args.frames, "max", tmp, resume=True)
            print(
                f"{size}² throughput (detection on, --rate max): {row['throughput_fps']} fps, "
                f"engine CPU {row['engine_cpu_steady_ms_per_frame']} ms/frame (steady), load "
                f"{row['load_avg_1min']}; by thread {row['engine_thread_cpu_ms_per_frame']}",
                flush=True,
            )
            cases.append(dict(row, size=size, detection=True, load=0, rate="max"))
    print(json.dumps({"bench": "e2e", "load_avg": os.getloadavg(), "cases": cases}))


if __name__ == "__main__":
    main()
