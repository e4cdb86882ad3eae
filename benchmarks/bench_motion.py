"""Motion correction benchmark: shift accuracy, real-data consistency and per-frame cost.

Sections (all by default; pick with ``--only``):

- ``accuracy``: the project simulator (256², 2000 frames, smooth walk of std ~3 px
  (``motion_px`` 6) plus sudden jumps of 9-11 px every ~20 s); ``register_initial`` on the
  first 300 frames, then ``correct_frame`` frame by frame. Shift RMS error against the truth
  after removing the constant offset (the template sits at the median position of the
  initialisation frames, the truth's reference is the scene's), over the frames that were
  not flagged, and over the frames inside a jump; the same on the independent held-out
  generator's ``motion_3px`` regime (``benchmarks/heldout``; ``--no-heldout`` skips it).
- ``minian``: ../shared/data's minian CA1 fixture, raw and minian-corrected. minian's corrected
  frames are ``roll(raw, shifts[t])`` (checked: identical pixels), i.e. minian reports the
  correction it applied, the negative of the content displacement d that online-cnmfe reports;
  so d(corrected) − d(raw) should equal minian's shifts. Reports that RMS (after the constant
  offset), and the spread of d on each movie.
- ``pipeline``: F1 and median trace correlation of ``online-cnmfe process`` (a subprocess,
  default parameters but the ones named) on the project simulator's moving movie (walk of std
  ~3 px + 9-11 px jumps) and on its motion-free twin (same activity, background and noise),
  with motion correction on and off, scored by ``online_cnmfe.evaluation``; also the run's CPU
  time and the per-frame latency of the online frames (median / p99 / max, from
  ``frames/latency_ms``).
- ``cost``: CPU time (``time.process_time``) of ``correct_frame`` per frame at 256² and 608²,
  rigid and piecewise-rigid on the same frames back to back (alternating which goes first),
  on simulated moving frames after warm-up: median / p99 / max, max / median also over the
  frames without hypervisor steal (``/proc/stat``), the spikes' frame indices, and each
  stage's share.

Usage::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/bench_motion.py
    ... --only cost --frames 600
    ... --only accuracy --no-heldout
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.model import motion  # noqa: E402
from online_cnmfe.model._kernels import warp as kw  # noqa: E402
from online_cnmfe.model.motion import piecewise, register  # noqa: E402
from online_cnmfe.params import CNMFEParams  # noqa: E402

N_INIT = 300
DATA = ROOT.parent / "shared" / "data"


def _rms(e: np.ndarray) -> float:
    return float(np.sqrt((e**2).sum(1).mean())) if len(e) else float("nan")


def track(frames: np.ndarray, params: CNMFEParams):
    """Shifts (T, 2), qualities, flags of a movie: initialisation then frame by frame."""
    Y = np.array(frames[:N_INIT], np.float32)
    minit = motion.register_initial(Y, params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    est = [minit.shifts]
    quality = [minit.quality]
    flags = list(minit.flags)
    for y in frames[N_INIT:]:
        flags.append(motion.correct_frame(ms, np.ascontiguousarray(y, np.float32).ravel()) or "")
        est.append(ms.last[None, :2].copy())
        quality.append([ms.last[2]])
    return np.concatenate(est), np.concatenate(quality), np.array([bool(f) for f in flags]), minit


def report_accuracy(name: str, est, truth, flagged, jumping) -> None:
    ok = ~flagged
    err = est - truth
    err -= np.median(err[ok], axis=0)
    print(
        f"| {name} | {len(est)} | {truth.std(0).round(2).tolist()} / {np.abs(truth).max():.1f} | "
        f"{_rms(err[ok]):.3f} | {_rms(err[ok & jumping]):.3f} ({int((ok & jumping).sum())}) | "
        f"{np.abs(err[ok]).max():.2f} | {int(flagged.sum())} |"
    )


def accuracy(args) -> None:
    print("\n## Shift accuracy (px; RMS over unflagged frames after the constant offset)\n")
    print("| movie | frames | truth std / max | RMS | RMS in jumps (n) | max err | flagged |")
    print("|---|---|---|---|---|---|---|")
    p = SimulationParams(
        n_frames=args.frames, motion_px=6.0, jump_rate_hz=0.05, jump_px=(9.0, 11.0), seed=3,
        dtype="float32",
    )  # fmt: skip
    sim = MiniscopeSimulator(p)
    frames = sim.frames(0, args.frames)
    truth = sim.motion(0, args.frames).astype(np.float64)
    walk = MiniscopeSimulator(dataclasses.replace(p, jump_rate_hz=0.0))  # the same walk
    jumping = np.hypot(*(truth - walk.motion(0, args.frames)).T) > 1.0
    for mode in ("rigid", "piecewise"):
        params = CNMFEParams().replace(**{"motion.mode": mode})
        est, q, flagged, _ = track(frames, params)
        report_accuracy(f"simulator 256², {mode}", est, truth, flagged, jumping)
    if args.heldout:
        from benchmarks.heldout.generator import HeldoutMovie
        from benchmarks.heldout.regimes import regime_params

        hp = regime_params("motion_3px").replace(n_frames=args.frames)
        movie = HeldoutMovie(hp)
        frames = movie.frames(0, args.frames).astype(np.float32)
        truth = movie.motion.astype(np.float64)
        params = CNMFEParams().replace(
            **{"data.neuron_diameter_px": hp.diameter_px, "data.frame_rate_hz": hp.frame_rate_hz}
        )
        jumping = np.zeros(len(truth), bool)  # the OU walk and the jumps are not separable here
        jumping[np.hypot(*(truth - np.median(truth, axis=0)).T) > 6] = True
        est, q, flagged, _ = track(frames, params)
        report_accuracy("held-out motion_3px 256² (|m| > 6 px as 'jumps')", est, truth, flagged,
                        jumping)  # fmt: skip


def minian(args) -> None:
    import tifffile

    print("\n## minian CA1 fixture (480 x 752 x 100)\n")
    ref = np.load(DATA / "minian_ca1_fixture_ref_CSbf.npz")["shifts"].astype(np.float64)
    params = CNMFEParams().replace(**{"data.neuron_diameter_px": 13.0, "init.init_frames": 100})
    d = {}
    for name in ("preproc", "motioncorrected"):
        f = tifffile.imread(DATA / f"minian_ca1_fixture_{name}_100x480x752_u8.tif")
        t0 = time.process_time()
        minit = motion.register_initial(f.astype(np.float32), params)
        d[name] = minit.shifts.astype(np.float64)
        print(
            f"- {name}: d spread (std) {d[name].std(0).round(2).tolist()} px, max "
            f"{np.abs(d[name] - np.median(d[name], 0)).max():.2f}; median quality "
            f"{np.median(minit.quality):.2f}; init registration "
            f"{time.process_time() - t0:.1f} s CPU"
        )
    e = (d["motioncorrected"] - d["preproc"]) - ref
    e -= np.median(e, axis=0)
    rms, worst = _rms(e), np.abs(e).max()
    print(f"- d(corrected) − d(raw) vs minian's shifts: RMS {rms:.3f} px, max {worst:.2f}")


def _stage_times(ms, y) -> dict:
    """CPU of each stage of one correct_frame (same operations, timed separately)."""
    out = {}
    t = time.process_time()
    register.bandpass(ms, y)
    out["band-pass"] = time.process_time() - t
    t = time.process_time()
    register.measure(ms)
    out["correlate+peak"] = time.process_time() - t
    if ms.patches is not None:
        t = time.process_time()
        piecewise.measure_patches(ms)
        out["patches"] = time.process_time() - t
    t = time.process_time()
    H, W = ms.dims
    dy, dx = ms.scratch_rigid[0] * ms.ds, ms.scratch_rigid[1] * ms.ds
    if ms.patches is None:
        kw.warp_rigid(y, H, W, dy, dx, ms.registered, ms.valid)
    else:
        ps = ms.patches
        kw.warp_field(y, H, W, ps.row_i, ps.row_w, ps.col_i, ps.col_w, ps.field_y,
                               ps.field_x, ms.registered, ms.valid, ps.line_y,
                               ps.line_x)  # fmt: skip
    out["resample"] = time.process_time() - t
    t = time.process_time()
    register.update_template(ms)
    out["template"] = time.process_time() - t
    return out


def _steal_jiffies() -> int:
    """The machine's stolen CPU time so far (all CPUs, 1/100 s; /proc/stat), 0 if unknown.

    On a shared virtual machine the hypervisor may run another guest while this thread
    holds its vCPU; the kernel can charge that time to the thread, so a frame's CPU time
    jumps without any work of its own. Frames during which steal grew are reported apart.
    """
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return 0


def _cost_row(size: int, mode: str, times: np.ndarray, stolen: np.ndarray, shares: dict) -> str:
    med = np.median(times)
    clean = times[stolen == 0]
    spikes = np.flatnonzero(times > 3 * med)
    where = ", ".join(f"#{i} {times[i]:.0f} ms ({stolen[i]} jiffies)" for i in spikes[:4])
    return (
        f"| {size}² | {mode} | {med:.3f} | {np.percentile(times, 99):.3f} | {times.max():.3f} | "
        f"{times.max() / med:.1f} | {clean.max() / med:.1f} ({len(clean)}) | {where or '-'} | "
        + ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
        + " |"
    )


def cost(args) -> None:
    print("\n## Per-frame CPU of the motion stage (ms; time.process_time per frame)\n")
    print("Rigid and piecewise-rigid correct the same frame back to back (order alternating), so")
    print("both see the same load; 'no steal': max / median over the frames during which the")
    print("machine's steal time did not grow (their count); spikes: frames over 3x the median.\n")
    print("| frame | mode | median | p99 | max | max / median | no steal | spikes (frame, ms, "
          "steal) | stages (median ms) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    modes = ("rigid", "piecewise")
    for size, n_neurons in ((256, 120), (608, 500)):
        sim = MiniscopeSimulator(
            SimulationParams(height=size, width=size, n_frames=N_INIT + args.cost_frames,
                             n_neurons=n_neurons, motion_px=6.0, seed=5, dtype="float32")
        )  # fmt: skip
        frames = sim.frames(0, N_INIT + args.cost_frames)
        online = [np.ascontiguousarray(f.ravel()) for f in frames[N_INIT:]]
        states = {}
        for mode in modes:
            params = CNMFEParams().replace(**{"motion.mode": mode})
            minit = motion.register_initial(np.array(frames[:N_INIT]), params)
            states[mode] = motion.state_from_init(minit, (size, size), params)
            for y in online[:20]:  # warm-up (compiled kernels loaded, caches filled)
                motion.correct_frame(states[mode], y)
        times = {m: [] for m in modes}
        stolen = {m: [] for m in modes}
        for i, y in enumerate(online):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                s = _steal_jiffies()
                t = time.process_time()
                motion.correct_frame(states[mode], y)
                times[mode].append(1e3 * (time.process_time() - t))
                stolen[mode].append(_steal_jiffies() - s)
        for mode in modes:
            stages = [_stage_times(states[mode], y) for y in online[:100]]
            shares = {k: 1e3 * np.median([s[k] for s in stages]) for k in stages[0]}
            print(_cost_row(size, mode, np.array(times[mode]), np.array(stolen[mode]), shares))
        ratio = np.median(times["piecewise"]) / np.median(times["rigid"])
        print(f"| {size}² | piecewise / rigid | {ratio:.2f} | | | | | | |")


def _process(movie: Path, out: Path, overrides: list[str]) -> dict:
    import resource
    import subprocess

    from online_cnmfe.evaluation.metrics import evaluate_files
    from online_cnmfe.results.reader import read_results

    cmd = [sys.executable, "-m", "online_cnmfe", "process", str(movie), "--out", str(out),
           "--quiet", "--overwrite"]  # fmt: skip
    for o in overrides:
        cmd += ["--set", o]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = evaluate_files(out, movie)
    res = read_results(out)
    lat = res.frames["latency_ms"][N_INIT:]
    lat = lat[np.isfinite(lat)]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "f1": m["f1"], "recall": m["recall"], "precision": m["precision"],
        "corr": m["trace_corr_median"], "n": m.get("n_found", len(res.neuron_ids)),
        "cpu_s": cpu, "lat": (np.median(lat), np.percentile(lat, 99), lat.max()),
        "flagged": len(res.flagged),
    }  # fmt: skip


def pipeline(args) -> None:
    import tempfile

    from acquisition.simulator import write_simulation

    print("\n## Accuracy of the whole pipeline, moving movie vs its motion-free twin\n")
    print("| movie | motion correction | F1 (recall / precision) | trace corr median | "
          "flagged | CPU s | per frame median / p99 / max ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    base = SimulationParams(
        n_frames=args.frames, jump_px=(9.0, 11.0), seed=3, late_fraction=0.0, dtype="uint16"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        movies = {
            "moving (walk std ~3 px + jumps)": dataclasses.replace(
                base, motion_px=6.0, jump_rate_hz=0.05
            ),
            "motion-free twin": base,
        }
        for label, p in movies.items():
            path = tmp / "movie.h5"
            write_simulation(path, MiniscopeSimulator(p), progress=False)
            for on in (True, False):
                r = _process(path, tmp / "r.h5", [f"motion.enabled={str(on).lower()}"])
                med, p99, mx = r["lat"]
                print(
                    f"| {label} | {'on' if on else 'off'} | {r['f1']:.3f} ({r['recall']:.3f} / "
                    f"{r['precision']:.3f}) | {r['corr']:.3f} | {r['flagged']} | "
                    f"{r['cpu_s']:.0f} | {med:.2f} / {p99:.2f} / {mx:.2f} |"
                )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=("accuracy", "minian", "cost", "pipeline"), action="append")
    ap.add_argument("--frames", type=int, default=2000, help="frames of the accuracy movies")
    ap.add_argument("--cost-frames", type=int, default=600, help="online frames timed per case")
    ap.add_argument(
        "--no-heldout", dest="heldout", action="store_false",
        help="skip the held-out generator's motion_3px regime in the accuracy section",
    )  # fmt: skip
    args = ap.parse_args()
    sections = args.only or ["accuracy", "minian", "cost", "pipeline"]
    if "accuracy" in sections:
        accuracy(args)
    if "minian" in sections:
        minian(args)
    if "cost" in sections:
        cost(args)
    if "pipeline" in sections:
        pipeline(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
