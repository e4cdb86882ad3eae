"""Per-frame latency of the online model with the slow path: where each frame's CPU time goes.

Runs the ``sim`` scenario of ``bench_pipeline.py`` (256² × 3000 frames, 300 neurons, 30 born
late, truth init on 500 frames) and records, per online frame, the model thread's CPU time
(``time.thread_time``) of the whole ``process_frame``, of ``observe_frame``, of ``slow_step``
and of ``apply_update`` (with the kind of update: replaced columns, W rows, births, merges,
removals), plus the slow path's work counts. Prints the distribution of each, the worst frames
with their breakdown, and the accuracy; ends with a JSON line.

``--root DIR`` runs another checkout of the project (e.g. ``git archive COMMIT | tar -x -C
DIR``) with this script, for a before/after comparison in one machine state.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_latency.py [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--worst", type=int, default=8, help="worst frames to list")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = p.parse_args()
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root / "benchmarks"))
    sys.path.insert(0, str(root))
    import bench_pipeline as bp

    from online_cnmfe.model import updates as model_updates
    from online_cnmfe.model.slow_path import schedule as slow_path

    applied: dict[int, dict] = {}
    observe: list[float] = []
    step: list[float] = []
    work: list[dict] = []
    apply0, observe0, step0 = (
        model_updates.apply_update, slow_path.observe_frame, slow_path.slow_step
    )  # fmt: skip

    def apply_update(model, u, prepared=None):
        c0 = time.thread_time()
        events = apply0(model, u, prepared)
        applied[int(u.frame_index)] = dict(
            ms=1e3 * (time.thread_time() - c0), replaced=int(u.replaced.size),
            w_rows=int(u.w_stop - u.w_start), births=int(u.new_footprints.shape[1]),
            merges=int(u.merged_kept.size), removed=int(u.removed.size),
        )  # fmt: skip
        return events

    def observe_frame(*a, **k):
        c0 = time.thread_time()
        observe0(*a, **k)
        observe.append(1e3 * (time.thread_time() - c0))

    def slow_step(slow, view, params, budget=None):
        c0 = time.thread_time()
        out = step0(slow, view, params, budget)
        step.append(1e3 * (time.thread_time() - c0))
        w = slow.work
        work.append(dict(t=int(view.t), hals=w.hals, ring=w.ring_pixels, cand=w.candidates,
                         merge_checks=w.merge_checks, births=w.births))  # fmt: skip
        return out

    model_updates.apply_update = apply_update
    slow_path.observe_frame, slow_path.slow_step = observe_frame, slow_step
    ns = argparse.Namespace(
        scenario="sim", size=args.size, frames=args.frames, neurons=args.neurons,
        init_frames=500, late_fraction=0.1, seed=0, no_slow_path=False,
        overrides=args.overrides,
    )  # fmt: skip
    res = bp.scenario_sim(ns)
    cpu = np.asarray(bp.run_online.cpu)
    n = len(cpu)
    obs, stp, wk = np.asarray(observe[-n:]), np.asarray(step[-n:]), work[-n:]
    t0 = wk[0]["t"]
    app = np.array([applied.get(t0 + j, {"ms": 0.0})["ms"] for j in range(n)])
    crit = cpu - obs - stp - app

    def dist(x):
        return dict(median=float(np.median(x)), p99=float(np.percentile(x, 99)),
                    max=float(x.max()), mean=float(x.mean()))  # fmt: skip

    applies = np.array([a["ms"] for a in applied.values()] or [0.0])
    out = dict(
        root=str(root), frames=n, frame_cpu=dist(cpu), critical_cpu=dist(crit),
        observe_cpu=dist(obs), step_cpu=dist(stp), apply_cpu_per_update=dist(applies),
        n_updates=len(applied), wall=dict(median=res["median_ms"], p99=res["p99_ms"],
                                          max=res["max_ms"], mean=res["mean_ms"]),
        f1=res["f1"], recall=res["recall"], precision=res["precision"],
        trace_corr_median=res["trace_corr_median"], late=res["late"],
        final_neurons=res["final_neurons"],
        evaluations=int(sum(w["cand"] for w in wk)), births=int(sum(w["births"] for w in wk)),
        merges=int(sum(a["merges"] for a in applied.values())),
    )  # fmt: skip
    print(f"{'CPU ms per frame':<26}{'median':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for key in ("frame_cpu", "critical_cpu", "observe_cpu", "step_cpu", "apply_cpu_per_update"):
        d = out[key]
        print(f"{key:<26}{d['median']:8.2f}{d['p99']:8.2f}{d['max']:8.2f}{d['mean']:8.2f}")
    w = out["wall"]
    print(
        f"{'wall (timings total)':<26}"
        + "".join(f"{w[k]:8.2f}" for k in ("median", "p99", "max", "mean"))
    )
    print("worst frames (CPU ms): total / critical / observe / step / apply, step work, update")
    for j in np.argsort(-cpu)[: args.worst]:
        print(f"  t={t0 + j}: {cpu[j]:.2f} / {crit[j]:.2f} / {obs[j]:.2f} / {stp[j]:.2f} / "
              f"{app[j]:.2f}  {wk[j]}  {applied.get(t0 + j)}")  # fmt: skip
    print(
        f"F1 {out['f1']:.3f} (R {out['recall']:.3f} / P {out['precision']:.3f}), "
        f"late-born {out['late']['n_matched']}/{out['late']['n_true']}, "
        f"trace corr {out['trace_corr_median']:.3f}, {out['final_neurons']} neurons, "
        f"{out['evaluations']} evaluations, {out['births']} births, {out['merges']} merges"
    )
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
