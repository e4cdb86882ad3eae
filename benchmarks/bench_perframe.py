"""Per-frame CPU of the model thread, by stage (issues 12 and 17).

The project simulator, a truth-derived initialisation (as ``bench_pipeline.py --scenario
sim``), the slow path on its own thread (as ``run`` does); every stage of
``OnlineCNMFE.process_frame`` is timed in **thread CPU** (the model's own stage clock is
switched to ``time.thread_time`` for the run), so a shared machine's preemption does not
count. The motion stage is split into its sub-steps the same way. Reports median / p99 / max
per stage, the 1-minute load average before and after, and (``--save``) the frames'
``FrameResult`` arrays for a bit-identity check between two trees (``--compare``).

Usage::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/bench_perframe.py \
        --size 256 --neurons 300 --frames 1500
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/bench_perframe.py \
        --size 608 --neurons 500 --frames 400 --init-frames 100
    .venv/bin/python benchmarks/bench_perframe.py --compare a.npz b.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import sim_source, truth_init  # noqa: E402

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.model import online as online_mod  # noqa: E402
from online_cnmfe.model.motion import register as reg_mod  # noqa: E402
from online_cnmfe.model.online import OnlineCNMFE  # noqa: E402
from online_cnmfe.params import CNMFEParams, parse_overrides  # noqa: E402

MOTION_STEPS = ("bandpass", "measure", "update_template")
_sub: dict[str, float] = {}


def _timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.thread_time()
        out = fn(*a, **k)
        _sub[name] = _sub.get(name, 0.0) + 1e3 * (time.thread_time() - t0)
        return out

    return wrapper


def _instrument(kernels: bool) -> None:
    """Stage clock → thread CPU; motion sub-steps timed (module globals, looked up per call);
    with ``kernels``, every kernel the frame path calls too (~1 µs of overhead per call)."""
    online_mod.time = types.SimpleNamespace(perf_counter=time.thread_time)
    for name in MOTION_STEPS:
        setattr(reg_mod, name, _timed(name, getattr(reg_mod, name)))
    if not kernels:
        return
    import importlib

    import scipy.fft

    for mod_name in ("demix", "residual", "registration", "warp", "oasis_online", "frame_check",
                     "preprocess"):  # fmt: skip
        mod = importlib.import_module(f"online_cnmfe.model._kernels.{mod_name}")
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "py_func") and not name.startswith("_"):
                setattr(mod, name, _timed(f"k.{mod_name}.{name}", fn))
    reg_mod.scipy = types.SimpleNamespace(
        fft=types.SimpleNamespace(
            rfft2=_timed("k.fft.rfft2", scipy.fft.rfft2),
            irfft2=_timed("k.fft.irfft2", scipy.fft.irfft2),
        )
    )


def _movie(args):
    sp = SimulationParams(
        height=args.size, width=args.size, n_frames=args.frames, n_neurons=args.neurons,
        rise_time_s=0.0, late_fraction=args.late_fraction, late_after_frame=args.init_frames,
        seed=args.seed, dtype="float32",
    )  # fmt: skip
    return sp, MiniscopeSimulator(sp)


def run(args) -> dict:
    sp, sim = _movie(args)
    params = CNMFEParams.from_dict(
        {"data": {"frame_rate_hz": sp.frame_rate_hz}, "init": {"init_frames": args.init_frames}}
    )
    if args.overrides:
        params = params.replace(**parse_overrides(args.overrides))
    init_frames = sim.frames(0, args.init_frames)
    init, _ = truth_init(sim, init_frames, params)
    model = OnlineCNMFE(params)
    model.initialize_from(init, init_frames)
    executor = ThreadPoolExecutor(1, thread_name_prefix="slow-path")
    model.run_slow_path_on(executor)
    n = args.frames - args.init_frames
    source = sim_source(sim, args.init_frames, args.frames)
    _instrument(args.kernels)
    stages: dict[str, list[float]] = {}
    cpu = np.zeros(n)
    saved = {"C": [], "S": [], "C_raw": [], "ids": [], "shift": [], "flag": []}
    load0 = os.getloadavg()[0]
    t_wall = time.perf_counter()
    for j in range(n):
        frame = source(j)
        _sub.clear()
        c0 = time.thread_time()
        r = model.process_frame(frame)
        cpu[j] = 1e3 * (time.thread_time() - c0)
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)
        for k in MOTION_STEPS:
            stages.setdefault("motion." + k, []).append(_sub.get(k, 0.0))
        for k, v in _sub.items():
            if k.startswith("k."):
                stages.setdefault(k, [0.0] * j).append(v)
        for v in stages.values():
            if len(v) == j:
                v.append(0.0)
        if args.save:
            saved["C"].append(r.C)
            saved["S"].append(r.S)
            saved["C_raw"].append(r.C_raw)
            saved["ids"].append(r.neuron_ids)
            saved["shift"].append(r.motion_shift_px or (np.nan, np.nan))
            saved["flag"].append(r.flag or "")
    model.settle_slow_path()
    wall = time.perf_counter() - t_wall
    executor.shutdown()
    if args.save:
        _save(args.save, saved, model)

    def summary(x):
        x = np.asarray(x)
        return {"median": float(np.median(x)), "p99": float(np.percentile(x, 99)),
                "max": float(x.max()), "mean": float(x.mean())}  # fmt: skip

    ratio = float(cpu.max() / np.median(cpu))
    return {
        "size": args.size, "neurons": args.neurons, "frames_online": n,
        "components_final": model.n_components, "motion_on": model.state.motion is not None,
        "load_before": load0, "load_after": os.getloadavg()[0], "wall_s": wall,
        "model_thread_cpu_ms": {**summary(cpu), "max_over_median": ratio},
        "stages_cpu_ms": {k: summary(v) for k, v in stages.items()},
        "worst_frames": [
            {"frame": int(j), "cpu_ms": float(cpu[j]),
             **{k: round(float(v[j]), 3) for k, v in stages.items() if v[j] >= 0.05}}
            for j in np.argsort(cpu)[::-1][:6]
        ],
    }  # fmt: skip


def _save(path, saved, model) -> None:
    K = max(len(x) for x in saved["ids"])

    def pad(rows, fill, dtype):
        out = np.full((len(rows), K), fill, dtype)
        for i, x in enumerate(rows):
            out[i, : len(x)] = x
        return out

    np.savez(
        path, C=pad(saved["C"], np.nan, np.float32), S=pad(saved["S"], np.nan, np.float32),
        C_raw=pad(saved["C_raw"], np.nan, np.float32), ids=pad(saved["ids"], -1, np.int64),
        shift=np.asarray(saved["shift"], np.float64), flag=np.asarray(saved["flag"]),
        b0=model.state.b0, A=model.footprints.toarray(),
    )  # fmt: skip


def compare(a: str, b: str) -> dict:
    """Per array: identical (bit for bit, NaN = NaN) or the largest difference."""
    x, y = np.load(a), np.load(b)
    out = {}
    for k in x.files:
        u, v = x[k], y[k]
        if u.shape != v.shape:
            out[k] = f"shape {u.shape} vs {v.shape}"
        elif u.dtype.kind in "fc":
            same = np.array_equal(u, v, equal_nan=True)
            out[k] = "identical" if same else f"max |diff| {np.nanmax(np.abs(u - v)):.3g}"
        else:
            out[k] = "identical" if np.array_equal(u, v) else "differ"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--init-frames", type=int, default=300)
    ap.add_argument("--late-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    ap.add_argument("--kernels", action="store_true", help="time every kernel call too")
    ap.add_argument("--save", help="write the FrameResults' arrays to this .npz")
    ap.add_argument("--json", help="write the report here too")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    report = compare(*args.compare) if args.compare else run(args)
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
