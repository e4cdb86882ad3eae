"""Lossless live streaming: the disk spool while the model initialises and catches up.

Three cases (issue 15's targets):

- ``live``: an engine started first, then a ``--size``² uint16 movie streamed at ``--fps``
  for ``--seconds`` with ``online-cnmfe acquire replay --rate real`` (paced, like a camera:
  nothing waits for the engine). Reports the frames stored/lost, how long the initialisation
  took, how far behind the engine fell (status ``behind_s``, frames on disk), when it had
  caught up relative to the end of the stream, and the engine's CPU time (``wait4``).
- ``replay``: the same at ``--speed`` times real time (``--rate`` = speed × fps).
- ``overhead``: the receive thread's cost of queueing one frame, in process: ``put_frame``
  into memory vs into the disk spool (and the model thread's ``get`` back from disk), per frame.

The movie is simulated once (``online-cnmfe``'s simulator, ``--neurons`` cells) and cached as
``.npy`` under ``--cache``; replay reads it memory-mapped.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_spool.py live --size 608 --seconds 60 --fps 30
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_spool.py replay --size 256 --seconds 100 \\
        --fps 20 --speed 10
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_spool.py overhead --size 608 --frames 1000 \\
        --fps 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from online_cnmfe.results.stream import decode_result  # noqa: E402


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_cnmfe", *args]


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def movie_file(cache: Path, size: int, n: int, fps: float, neurons: int) -> Path:
    """A cached simulated movie (uint16, .npy)."""
    from acquisition.simulator import MiniscopeSimulator, SimulationParams

    path = cache / f"movie_{size}_{n}_{neurons}.npy"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    sim = MiniscopeSimulator(
        SimulationParams(height=size, width=size, n_frames=n, n_neurons=neurons,
                         frame_rate_hz=fps, seed=0)
    )  # fmt: skip
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.uint16, (n, size, size))
    for lo in range(0, n, 100):
        out[lo : lo + 100] = sim.frames(lo, min(n, lo + 100))
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)
    return path


def stream_case(movie: Path, fps: float, rate: str, tmp: Path, settings: list[str]) -> dict:
    """Engine first, then the paced replay; follow the status until the engine exits."""
    frames_ep, results_ep = f"ipc://{tmp}/frames", f"ipc://{tmp}/results"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp / "log.txt", "a")  # noqa: SIM115
    cmd = _cli("run", "--frames", frames_ep, "--results", results_ep, "--out",
               str(tmp / "session.h5"), "--overwrite")  # fmt: skip
    for s in ["engine.status_period_s=0.5", *settings]:
        cmd += ["--set", s]
    t0 = time.monotonic()
    engine = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100000)
    for topic in (b"ready", b"status", b"eos", b"traces"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(results_ep)
    while not (sub.poll(200) and decode_result(sub.recv_multipart()).topic == "ready"):
        if engine.poll() is not None:
            raise RuntimeError(f"the engine exited early; see {tmp / 'log.txt'}")
    rusage: dict = {}
    waiter = threading.Thread(target=lambda: rusage.update(r=os.wait4(engine.pid, 0)))
    waiter.start()
    acquire = subprocess.Popen(
        _cli("acquire", "replay", str(movie), "--endpoint", frames_ep, "--rate", rate, "--fps",
             str(fps), "--quiet"),
        env=env, stdout=log, stderr=log,
    )  # fmt: skip
    t_start = time.monotonic()
    statuses, process_ms, eos, t_end = [], [], None, None
    while waiter.is_alive() or sub.poll(0):
        if sub.poll(200):
            msg = decode_result(sub.recv_multipart())
            now = time.monotonic() - t_start
            if msg.topic == "status":
                statuses.append((now, dict(msg.header, _cpu_s=_cpu_s(engine.pid))))
            elif msg.topic == "traces":
                process_ms.append(msg.header.get("process_ms", np.nan))
            elif msg.topic == "eos":
                eos = msg.header
        if t_end is None and acquire.poll() is not None:
            t_end = time.monotonic() - t_start
    waiter.join()
    acquire.wait()
    sub.close()
    ctx.term()
    _, status_code, ru = rusage["r"]
    return dict(
        statuses=statuses, eos=eos, t_end=t_end, wall_s=time.monotonic() - t0,
        exit=os.waitstatus_to_exitcode(status_code), cpu_s=ru.ru_utime + ru.ru_stime,
        process_ms=np.asarray(process_ms, float), acquire_exit=acquire.returncode,
    )  # fmt: skip


def report(case: dict, n_frames: int, tmp: Path) -> dict:
    from online_cnmfe.results.reader import read_results

    res = read_results(tmp / "session.h5")
    st = case["statuses"]
    init_start = next((t for t, h in st if h["phase"] == "initialising"), None)
    init_end = next((t for t, h in st if h["phase"] == "running"), None)
    received = max((h.get("n_frames_received", 0) for _, h in st), default=0)
    caught = next(
        (t for t, h in st if h["phase"] in ("running", "stopped") and h["queue_depth"] == 0
         and h.get("n_frames_received", 0) >= received and t >= (case["t_end"] or 0)),
        None,
    )  # fmt: skip
    pm = case["process_ms"]
    cpu = {t: h["_cpu_s"] for t, h in st}
    return {
        "engine_cpu_s_at_init_start": None if init_start is None else round(cpu[init_start], 1),
        "engine_cpu_s_at_init_done": None if init_end is None else round(cpu[init_end], 1),
        "engine_cpu_s_at_caught_up": None if caught is None else round(cpu[caught], 1),
        "frames_sent": n_frames,
        "frames_stored": res.n_frames,
        "lost_rows": [(int(r["first"]), int(r["last"]), r["kind"].decode()) for r in res.lost],
        "n_dropped": int(res.attrs.get("n_frames_dropped", -1)),
        "engine_exit": case["exit"],
        "acquire_exit": case["acquire_exit"],
        "stream_end_s": round(case["t_end"] or -1, 1),
        "init_buffered_at_s": None if init_start is None else round(init_start, 1),
        "init_done_at_s": None if init_end is None else round(init_end, 1),
        "caught_up_at_s": None if caught is None else round(caught, 1),
        "caught_up_after_end_s": None if caught is None else round(caught - case["t_end"], 1),
        "max_behind_s": round(max((h.get("behind_s", 0) for _, h in st), default=0), 1),
        "max_spooled": max((h.get("n_spooled", 0) for _, h in st), default=0),
        "max_spool_mb": max((h.get("spool_mb", 0) for _, h in st), default=0),
        "engine_cpu_s": round(case["cpu_s"], 1),
        "engine_wall_s": round(case["wall_s"], 1),
        "online_ms_p50": round(float(np.nanmedian(pm)), 2) if pm.size else None,
        "online_fps_cpu_bound": round(1000 / float(np.nanmedian(pm)), 1) if pm.size else None,
        "eos_summary": (case["eos"] or {}).get("summary"),
        "spool_left": (tmp / "session.spool").exists(),
    }


def overhead(size: int, n: int, rate_hz: float) -> dict:
    """Receive-thread cost per frame, frames arriving at ``rate_hz``: ``put_frame`` into memory
    vs into the disk spool (handed to its writer thread); then the writer's sustained rate
    (a burst of ``n`` frames) and the model thread's ``get`` back from disk."""
    from acquisition.protocol import FrameMessage
    from online_cnmfe.engine.frame_queue import FrameQueue, QueuedFrame
    from online_cnmfe.engine.spool import DiskSpool

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4000, (size, size), dtype=np.uint16) for _ in range(16)]
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, memory in (("memory", n + 1), ("spool", 1)):
            spool = DiskSpool(Path(d) / name, reserve_bytes=0)
            q = FrameQueue(memory, "spool", spool)
            wall, cpu = np.zeros(n), np.zeros(n)
            due = time.perf_counter()
            for i in range(n):
                due += 1.0 / rate_hz
                time.sleep(max(0.0, due - time.perf_counter()))
                msg = FrameMessage(i, i, None, 0.0, 0, "s", "synthetic", pool[i % 16])
                t, c = time.perf_counter(), time.thread_time()
                assert q.put_frame(QueuedFrame(msg, 0))
                wall[i], cpu[i] = time.perf_counter() - t, time.thread_time() - c
            assert spool.wait_written(60)
            t, c = time.perf_counter(), time.thread_time()
            while q.get(0) is not None:
                pass
            get_wall, get_cpu = (time.perf_counter() - t) / n, (time.thread_time() - c) / n
            out[name] = {
                "put_ms_mean": round(1000 * wall.mean(), 4),
                "put_ms_p99": round(1000 * float(np.percentile(wall, 99)), 4),
                "put_cpu_ms_mean": round(1000 * cpu.mean(), 4),
                "get_ms_mean": round(1000 * get_wall, 4),
                "get_cpu_ms_mean": round(1000 * get_cpu, 4),
            }
            if name == "spool":  # the writer thread's sustained rate on a burst
                t = time.perf_counter()
                for i in range(n):
                    spool.submit(pool[i % 16])
                assert spool.wait_written(120)
                out[name]["writer_frames_per_s"] = round(n / (time.perf_counter() - t), 1)
            spool.close()
    out["frame_mb"] = round(size * size * 2 / 2**20, 3)
    out["rate_hz"] = rate_hz
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("live", "replay", "overhead"))
    parser.add_argument("--size", type=int, default=608)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--speed", type=float, default=10.0, help="replay: times real time")
    parser.add_argument("--neurons", type=int, default=300)
    parser.add_argument("--frames", type=int, default=1000, help="overhead: frames queued")
    parser.add_argument("--set", dest="settings", action="append", default=[])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ocnmfe-bench")
    args = parser.parse_args()
    if args.case == "overhead":
        result = overhead(args.size, args.frames, args.fps)
        print(json.dumps({"case": "overhead", "size": args.size, **result}))
        return
    n = int(round(args.seconds * args.fps))
    movie = movie_file(args.cache, args.size, n, args.fps, args.neurons)
    rate = "real" if args.case == "live" else str(args.speed * args.fps)
    with tempfile.TemporaryDirectory(dir=args.cache) as d:
        case = stream_case(movie, args.fps, rate, Path(d), args.settings)
        result = report(case, n, Path(d))
    print(json.dumps({"case": args.case, "size": args.size, "fps": args.fps, "rate": rate,
                      "settings": args.settings, **result}))  # fmt: skip


if __name__ == "__main__":
    main()
