"""`online-cnmfe batch` on a local Dask cluster: speed-up from 1 to N workers, CPU, memory.

Simulates ``--sessions`` recordings (``--size`` × ``--frames``, ``--neurons`` neurons, HDF5,
kept in ``--data-dir`` for reruns), runs ``online-cnmfe process`` on the first one (reference
results, and its peak RSS / CPU as one session alone), then ``online-cnmfe batch`` over all
of them once per ``--workers`` value, each into a fresh output folder. Reports per run the
wall time, the CPU time of every process involved (client, scheduler, workers: ``RUSAGE_
CHILDREN`` of the batch command), the per-session figures from ``summary.csv`` (thread CPU,
worker peak RSS), the machine's load average sampled during the run, the speed-up
(wall of 1 worker / wall of N), and whether each run's results equal ``process``'s bit for
bit. The machine is shared: compare the runs of one invocation, read the load column.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch.py \\
        --sessions 8 --size 256 --frames 3000 --workers 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquisition.simulator import MiniscopeSimulator, SimulationParams  # noqa: E402
from acquisition.simulator_io import write_simulation  # noqa: E402

COMPARED = ("traces/C", "traces/S", "traces/C_raw", "footprints/data", "footprints/indices",
            "background/b0", "frames/t_acq_ms")  # fmt: skip


def simulate(data_dir: Path, n: int, size: int, frames: int, neurons: int) -> list[Path]:
    paths = []
    for seed in range(n):
        path = data_dir / f"session{seed:02d}_{size}x{frames}.h5"
        if not path.exists():
            params = SimulationParams(
                height=size, width=size, n_frames=frames, n_neurons=neurons, seed=100 + seed
            )
            write_simulation(path, MiniscopeSimulator(params), progress=False)
        paths.append(path)
    return paths


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while a run goes on."""

    def __init__(self, period_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.period_s, self.samples, self.stop = period_s, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period_s):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"load_min": min(s), "load_median": float(np.median(s)), "load_max": max(s)}


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time, CPU (user+sys) and peak RSS of it and everything it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = LoadSampler()
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t0
    sampler.stop.set()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), **sampler.summary(),
            "max_child_rss_mib": round(after.ru_maxrss / 1024, 0)}  # fmt: skip


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}


def same_results(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return all(np.array_equal(fa[k][()], fb[k][()]) for k in COMPARED)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--neurons", type=int, default=120)
    ap.add_argument("--init-frames", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_batch")
    args = ap.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    movies = simulate(args.data_dir, args.sessions, args.size, args.frames, args.neurons)
    report = {"simulate_s": round(time.perf_counter() - t0, 1), "nproc": os.cpu_count(),
              "input_mib_per_session": round(movies[0].stat().st_size / 2**20, 1)}  # fmt: skip
    cli = [sys.executable, "-m", "online_cnmfe", "--log-level", "WARNING"]
    common = ["--init-frames", str(args.init_frames)]
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        tmp = Path(tmp)
        ref = tmp / "process.h5"
        report["process_one_session"] = timed(
            [*cli, "process", str(movies[0]), "--out", str(ref), "--quiet", *common]
        )
        report["output_mib_per_session"] = round(ref.stat().st_size / 2**20, 2)
        runs = {}
        for i, n in enumerate(args.workers):  # repeat values to interleave runs: 1 2 2 1
            out = tmp / f"out{i}_w{n}"
            batch = [*cli, "batch", *map(str, movies), "--out-dir", str(out), "--workers", str(n)]
            run = timed([*batch, "--dashboard-address", "127.0.0.1:0", "--quiet", *common])
            with (out / "summary.csv").open() as fh:
                rows = list(csv.DictReader(fh))
            run["statuses"] = sorted({r["status"] for r in rows})
            run["session_cpu_s_median"] = float(np.median([float(r["cpu_s"]) for r in rows]))
            run["session_wall_s_median"] = float(np.median([float(r["wall_s"]) for r in rows]))
            run["worker_peak_rss_mib_max"] = max(float(r["peak_rss_mib"]) for r in rows)
            run["identical_to_process"] = same_results(out / (movies[0].stem + ".h5"), ref)
            runs.setdefault(n, []).append(run)
            print(json.dumps({"workers": n, **run}), flush=True)
        report["runs"] = runs
        walls = {n: float(np.median([r["wall_s"] for r in rs])) for n, rs in runs.items()}
        base = walls[args.workers[0]]
        report["speedup_vs_first"] = {n: round(base / w, 2) for n, w in walls.items()}  # medians
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
