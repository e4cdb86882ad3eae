"""Time the ground-truth simulator: construction, frame generation, and writing to HDF5.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_simulator.py [--size 256 256]
       [--frames 2000] [--neurons 300] [--neuropil 100] [--motion 0] [--vessels 0]
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from acquisition.simulator import MiniscopeSimulator, SimulationParams, write_simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", nargs=2, type=int, default=(256, 256))
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--neuropil", type=int, default=100)
    ap.add_argument("--motion", type=float, default=0.0)
    ap.add_argument("--vessels", type=int, default=0)
    ap.add_argument("--dtype", default="uint16")
    args = ap.parse_args()
    params = SimulationParams(
        height=args.size[0],
        width=args.size[1],
        n_frames=args.frames,
        n_neurons=args.neurons,
        n_neuropil=args.neuropil,
        motion_px=args.motion,
        n_vessels=args.vessels,
        dtype=args.dtype,
    )
    t0 = time.perf_counter()
    sim = MiniscopeSimulator(params)
    t_init = time.perf_counter() - t0

    t0 = time.perf_counter()
    for start in range(0, args.frames, 64):
        sim.frames(start, min(args.frames, start + 64))
    t_generate = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fresh = MiniscopeSimulator(params)
        out = write_simulation(Path(tmp) / "sim.h5", fresh, progress=False)
        t_total = time.perf_counter() - t0
        size_mb = os.path.getsize(out["path"]) / 1e6

    # one frame at a time, as a live simulated miniscope asks for them
    live = MiniscopeSimulator(params)
    n_live = min(200, args.frames)
    t0 = time.perf_counter()
    for t in range(n_live):
        live.frames(t, t + 1)
    t_live = (time.perf_counter() - t0) / n_live

    rows = [
        ("construct (scene + PNR calibration)", t_init, "s"),
        ("generate all frames (64-frame chunks)", t_generate, "s"),
        ("construct + generate + write HDF5", t_total, "s"),
        ("one frame at a time (live), per frame", t_live * 1e3, "ms"),
        ("HDF5 file size", size_mb, "MB"),
    ]
    print(
        f"simulator {args.size[0]}x{args.size[1]} x {args.frames} frames, {args.neurons} neurons, "
        f"{args.neuropil} neuropil, motion {args.motion}, vessels {args.vessels}"
    )
    for name, value, unit in rows:
        print(f"  {name:<42} {value:9.2f} {unit}")
    print(
        json.dumps(
            {
                "size": list(args.size),
                "frames": args.frames,
                "neurons": args.neurons,
                "neuropil": args.neuropil,
                "motion_px": args.motion,
                "vessels": args.vessels,
                "construct_s": round(t_init, 3),
                "generate_s": round(t_generate, 3),
                "generate_and_write_s": round(t_total, 3),
                "live_ms_per_frame": round(t_live * 1e3, 3),
                "file_mb": round(size_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
