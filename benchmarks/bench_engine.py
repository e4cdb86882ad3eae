"""End-to-end engine benchmark: frame-to-trace latency, throughput and a memory soak.

Each case runs three real processes on one host: ``online-cnmfe acquire simulate`` (the
publisher), ``online-cnmfe run`` (the engine) and this script as a results subscriber.

- latency: frames paced at ``--rate-hz``; for every ``traces`` message, latency = this
  process's ``time.monotonic_ns()`` at receipt − the publisher's ``t_send_ns`` carried in the
  header (same host, same clock): publication, transport, queueing, the model, the results
  publication and transport included. The engine's own model time (``process_ms``) is reported
  beside it.
- throughput: ``--rate max`` with the engine's ``queue_full=wait`` (lossless back-pressure):
  online frames per second measured at the subscriber.
- Each size is first initialised once (a short max-rate run whose shutdown checkpoint is kept);
  the measured runs start the engine with ``--resume`` from it, so they are all steady state.
- soak: ``--soak-frames`` at max rate; the engine's RSS (``/proc/PID/status`` VmRSS) sampled
  every few seconds after initialisation; flat memory = small slope.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_engine.py --sizes 256 608
    python benchmarks/bench_engine.py --soak-frames 54000 --sizes 256   # 30 min of 30 Hz data
"""

from __future__ import annotations

import argparse
import json
import os
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

NEURONS = {128: 80, 256: 300, 512: 400, 608: 500}
EXTRA_SETTINGS: list[str] = []  # --set values passed to every engine run


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_cnmfe", *args]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_case(size, n_frames, rate, init_frames, neurons, log: Path, tmp: Path, resume: bool):
    """Run publisher + engine once; return per-frame latencies, RSS samples, fps, last status.

    With ``resume`` the engine starts from the checkpoint a previous case left in ``tmp``
    (``--resume``), so every frame is processed online from the first one.
    """
    frames_ep, results_ep = f"ipc://{tmp}/frames", f"ipc://{tmp}/results"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    settings = [f"init.init_frames={init_frames}", "engine.checkpoint_period_s=0"]
    sndhwm = "256"
    if rate == "max":  # lossless and small buffers, so the last frames drain before eos
        settings += ["engine.queue_full=wait", "engine.queue_frames=32", "engine.rcvhwm_frames=16"]
        sndhwm = "16"
    cmd = _cli("run", "--frames", frames_ep, "--results", results_ep, "--out", str(tmp / "s.h5"))
    cmd += [a for s in settings for a in ("--set", s)]
    cmd += [a for s in EXTRA_SETTINGS for a in ("--set", s)]
    cmd += ["--resume"] if resume else ["--overwrite"]
    cmd += ["--idle-exit", "15"]  # a max-rate publisher's last frames and eos may be lost
    out = open(log, "a")  # noqa: SIM115
    engine = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100000)
    for topic in (b"ready", b"traces", b"eos", b"status"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(results_ep)
    lat, proc_ms, rss, t_first, t_last, status = [], [], [], None, None, {}
    acquire = None
    try:
        while True:  # readiness handshake
            if sub.poll(200) and decode_result(sub.recv_multipart()).topic == "ready":
                break
            if engine.poll() is not None:
                raise RuntimeError(f"engine exited early, see {log}")
        acquire = subprocess.Popen(
            _cli("acquire", "simulate", "--size", str(size), str(size), "--frames", str(n_frames),
                 "--neurons", str(neurons), "--endpoint", frames_ep, "--rate", rate,
                 "--fps", "30", "--wait-for-subscriber", "60", "--sndhwm", sndhwm, "--quiet"),
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
        next_rss = 0.0
        while True:
            if sub.poll(1000):
                msg = decode_result(sub.recv_multipart())
                now = time.monotonic_ns()
                if msg.topic == "traces":
                    lat.append((now - msg.header["t_send_ns"]) / 1e6)
                    proc_ms.append(msg.header.get("process_ms", -1.0))
                    t_first = t_first or time.monotonic()
                    t_last = time.monotonic()
                elif msg.topic == "status":
                    status = msg.header
                elif msg.topic == "eos":
                    break
            elif engine.poll() is not None:
                break
            if t_first is not None and time.monotonic() >= next_rss:
                rss.append((time.monotonic() - t_first, _rss_mb(engine.pid)))
                next_rss = time.monotonic() + 5.0
        engine.wait(timeout=120)
    finally:
        for p in (acquire, engine):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        sub.close(linger=0)
        ctx.term()
        out.close()
    n = len(lat)
    fps = n / (t_last - t_first) if n > 1 else float("nan")
    return np.array(lat), np.array(proc_ms), rss, fps, status


def _workdir(root: Path | None, size: int) -> Path:
    """Where a size's files live; with --workdir a primed checkpoint is reused across runs."""
    if root is None:
        return Path(tempfile.mkdtemp(prefix=f"bench-engine-{size}-"))
    path = root / str(size)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pct(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(float(np.percentile(x, 50)), 3),
        "p99": round(float(np.percentile(x, 99)), 3),
        "max": round(float(x.max()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 608])
    ap.add_argument("--frames", type=int, default=1500, help="frames per latency case")
    ap.add_argument("--rate-hz", type=float, default=30.0, help="pacing of the latency cases")
    ap.add_argument("--init-frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50, help="online frames left out of stats")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--soak-frames", type=int, default=0, help="frames of the soak (0: none)")
    ap.add_argument("--log", type=Path, default=Path("bench_engine.log"))
    ap.add_argument("--workdir", type=Path, help="keep files here; reuse a primed checkpoint")
    ap.add_argument("--no-latency", action="store_true", help="only the soak")
    ap.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="STAGE.KEY=VALUE",
        help="engine parameter for every run, e.g. detection.enabled=false",
    )  # fmt: skip
    args = ap.parse_args()
    EXTRA_SETTINGS.extend(args.settings)
    rows = []
    for size in [] if args.no_latency else args.sizes:
        neurons = NEURONS.get(size, 300)
        tmp = _workdir(args.workdir, size)
        t0 = time.monotonic()  # prime: initialise once, the shutdown checkpoint is reused
        if not (tmp / "s.state.h5").exists():
            run_case(
                size, args.init_frames + 60, "max", args.init_frames, neurons, args.log, tmp, False
            )
        prime_s = time.monotonic() - t0
        lat, proc, _, _, st = run_case(
            size, args.frames, f"{args.rate_hz:g}", args.init_frames, neurons, args.log, tmp, True
        )
        row = {
            "size": size,
            "neurons_simulated": neurons,
            "neurons_found": st.get("n_neurons"),
            "prime_s": round(prime_s, 1),
            "online_frames": int(lat.size),
            "dropped": st.get("n_dropped"),
            "latency_ms": _pct(lat[args.warmup :]),
            "model_ms": _pct(proc[args.warmup :][proc[args.warmup :] >= 0]),
            # everything but the model: transport both ways, queueing, publication
            "overhead_ms": _pct((lat - proc)[args.warmup :][proc[args.warmup :] >= 0]),
        }
        if not args.no_throughput:
            _, _, _, fps, _ = run_case(
                size, args.frames, "max", args.init_frames, neurons, args.log, tmp, True
            )
            row["throughput_fps"] = round(fps, 1)
        rows.append(row)
        print(
            f"{size}x{size} ({row['neurons_found']} neurons, {row['online_frames']} frames, "
            f"{row['dropped']} dropped): latency p50/p99/max "
            f"{row['latency_ms']['p50']}/{row['latency_ms']['p99']}/{row['latency_ms']['max']} "
            f"ms; model {row['model_ms']['p50']}/{row['model_ms']['p99']}/"
            f"{row['model_ms']['max']} ms; overhead {row['overhead_ms']['p50']}/"
            f"{row['overhead_ms']['p99']}/{row['overhead_ms']['max']} ms; "
            f"throughput {row.get('throughput_fps')} frames/s",
            flush=True,
        )
    soak = None
    if args.soak_frames:
        size = args.sizes[0]
        tmp = _workdir(args.workdir, size)
        neurons = NEURONS.get(size, 300)
        if not (tmp / "s.state.h5").exists():
            run_case(
                size, args.init_frames + 60, "max", args.init_frames, neurons, args.log, tmp, False
            )
        lat, proc, rss, fps, st = run_case(
            size, args.soak_frames, "max", args.init_frames, neurons, args.log, tmp, True
        )
        t = np.array([r[0] for r in rss])
        m = np.array([r[1] for r in rss])
        slope = float(np.polyfit(t, m, 1)[0] * 3600) if len(t) > 2 else float("nan")
        soak = {
            "size": size,
            "frames": int(lat.size),
            "seconds": round(float(t[-1]) if len(t) else 0.0, 1),
            "throughput_fps": round(fps, 1),
            "rss_mb_first": round(float(m[0]), 1) if len(m) else None,
            "rss_mb_last": round(float(m[-1]), 1) if len(m) else None,
            "rss_mb_max": round(float(m.max()), 1) if len(m) else None,
            "rss_slope_mb_per_hour": round(slope, 1),
            "model_ms": _pct(proc[proc >= 0]),
            "rss_series": [
                (round(float(a), 1), round(float(b), 1)) for a, b in rss[:: max(1, len(rss) // 12)]
            ],
        }
        print(
            f"soak {size}x{size}: {soak['frames']} frames in {soak['seconds']} s "
            f"({soak['throughput_fps']} frames/s); RSS {soak['rss_mb_first']} -> "
            f"{soak['rss_mb_last']} MB (max {soak['rss_mb_max']}, slope "
            f"{soak['rss_slope_mb_per_hour']} MB/h)",
            flush=True,
        )
    print(json.dumps({"bench": "engine", "settings": args.settings, "cases": rows, "soak": soak}))


if __name__ == "__main__":
    main()
