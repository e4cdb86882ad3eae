"""Cost of a checkpoint on the model thread: deep copy (before) vs the reused snapshot (now).

A 256 × 256 simulated session (300 neurons, truth initialisation, slow path on) runs a few
hundred frames; then each method copies the state on the model thread ``--repeats`` times at
the engine's cadence (frames, a copy, the copy written to HDF5 by another thread and dropped,
frames, …): thread CPU time, wall time and minor page faults (load-independent) per copy.
Last, frames are processed while another thread writes the checkpoint file, to see whether the
write (h5py releases the GIL during dataset I/O) slows the model thread: per-frame wall and
CPU time during the write vs without.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_checkpoint.py --size 256 --neurons 300
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_pipeline import nbytes, truth_init  # noqa: E402

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.engine.snapshot import Snapshotter  # noqa: E402
from online_cnmfe.model.online import OnlineCNMFE  # noqa: E402
from online_cnmfe.params import CNMFEParams  # noqa: E402
from online_cnmfe.results import state_file  # noqa: E402


def _stats(values) -> dict:
    v = np.asarray(values)
    return {"median": round(float(np.median(v)), 2), "max": round(float(v.max()), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--init-frames", type=int, default=500)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--frames-between", type=int, default=40)
    args = p.parse_args()
    n_total = args.init_frames + args.frames + 600
    sp = SimulationParams(
        height=args.size, width=args.size, n_frames=n_total, n_neurons=args.neurons,
        rise_time_s=0.0, late_fraction=0.1, late_after_frame=args.init_frames, seed=0,
        dtype="float32",
    )  # fmt: skip
    sim = MiniscopeSimulator(sp)
    params = CNMFEParams.from_dict(
        {"data": {"frame_rate_hz": sp.frame_rate_hz}, "init": {"init_frames": args.init_frames}}
    )
    init_frames = sim.frames(0, args.init_frames)
    init, _ = truth_init(sim, init_frames, params)
    model = OnlineCNMFE(params)
    model.initialize_from(init, init_frames)
    frames = sim.frames(args.init_frames, n_total)
    j = 0
    for _ in range(args.frames):
        model.process_frame(frames[j])
        j += 1
    out = {"size": args.size, "neurons": model.n_components,
           "state_mb": round(nbytes(model.state) / 2**20, 1)}  # fmt: skip
    results = {}
    snaps = Snapshotter()
    folder = Path(tempfile.mkdtemp())
    for name in ("deepcopy", "snapshot"):
        # The engine's cadence: frames, a copy, the copy saved by another thread, frames...
        cpu, wall, faults = [], [], []
        if name == "snapshot":
            snaps.prime(model.state)  # the store thread does this before the first checkpoint
        for _ in range(args.repeats):
            for _ in range(args.frames_between):
                model.process_frame(frames[j % len(frames)])
                j += 1
            f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            c0, w0 = time.thread_time(), time.perf_counter()
            state = copy.deepcopy(model.state) if name == "deepcopy" else snaps.take(model.state)
            cpu.append(1e3 * (time.thread_time() - c0))
            wall.append(1e3 * (time.perf_counter() - w0))
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0)
            saver = threading.Thread(
                target=state_file.save_model, args=(folder / "c.h5", model.params, state)
            )
            saver.start()
            saver.join()
            if name == "snapshot":
                snaps.release()
            del state
        results[name] = {
            "cpu_ms": _stats(cpu), "wall_ms": _stats(wall), "minor_page_faults": _stats(faults),
            "first_cpu_ms": round(cpu[0], 2),
        }  # fmt: skip
    out["copy"] = results
    # frames while the store thread writes the checkpoint file
    state = snaps.take(model.state)
    done = threading.Event()
    save_s = []

    def save() -> None:
        t0 = time.perf_counter()
        state_file.save_model(folder / "ckpt.h5", model.params, state)
        save_s.append(time.perf_counter() - t0)
        done.set()

    quiet, during, quiet_cpu, during_cpu = [], [], [], []
    for _ in range(60):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        model.process_frame(frames[j % len(frames)])
        quiet_cpu.append(1e3 * (time.thread_time() - c0))
        quiet.append(1e3 * (time.perf_counter() - t0))
        j += 1
    threading.Thread(target=save).start()
    while not done.is_set():
        t0 = time.perf_counter()
        c0 = time.thread_time()
        model.process_frame(frames[j % len(frames)])
        during_cpu.append(1e3 * (time.thread_time() - c0))
        during.append(1e3 * (time.perf_counter() - t0))
        j += 1
    snaps.release()
    out["save_s"] = round(save_s[0], 3)
    out["frame_ms_quiet"] = _stats(quiet)
    out["frame_ms_during_save"] = _stats(during) if during else None
    out["frame_cpu_ms_quiet"] = _stats(quiet_cpu)
    out["frame_cpu_ms_during_save"] = _stats(during_cpu) if during_cpu else None
    out["frames_during_save"] = len(during)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
