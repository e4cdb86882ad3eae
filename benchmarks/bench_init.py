"""Benchmark of the CNMF-E initialisation (``online_cnmfe.model.initialization.fit.fit_initial``).

Simulated movies (the project simulator, strong background with out-of-focus neuropil): wall
time of ``fit_initial`` after a warm-up (numba compiled), scored against the truth with
``online_cnmfe.evaluation.evaluate`` (F1, recall, precision, median trace correlation; overall and
on neurons with PNR >= 5). Real movies in ../shared/data: neuron counts, a PNG of the contours
over the corr x PNR image (bench-output/), and agreement with minian's 208 units on the minian
fixture (footprint IoU matching, correlation of the matched traces with minian's C); for the
other real movies a mosaic of each component's event-triggered image (``*_events.png``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_init.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.evaluation.metrics import evaluate, match_footprints  # noqa: E402
from online_cnmfe.model.initialization.fit import fit_initial  # noqa: E402
from online_cnmfe.params import CNMFEParams  # noqa: E402

DATA = REPO.parent / "shared" / "data"
REAL = {
    # file: (neuron diameter px, frame rate Hz)
    "minian_ca1_fixture_preproc_100x480x752_u8.tif": (13.0, 10.0),
    "inscopix_movie_part2_63x123x108_f32.tif": (13.0, 10.0),
    "ideas_nwb_onephotonseries_200x35x29_u16.tif": (9.0, 5.56),
}


def warm_up() -> None:
    sim = MiniscopeSimulator(
        SimulationParams(height=48, width=48, n_frames=60, n_neurons=4, n_neuropil=2, seed=99)
    )
    fit_initial(sim.frames(0, 60), CNMFEParams().replace(**{"init.init_frames": 60}))


def _stage_clock(t0: float, c0: float, stages: list):
    """A ``fit_initial`` progress callback that records (stage, wall s, CPU s) at each start."""

    def on_stage(stage: str, fraction: float) -> None:
        stages.append((stage, time.perf_counter() - t0, time.process_time() - c0))

    return on_stage


def stage_times(stages: list) -> list[tuple[str, float, float]]:
    """(stage name without its neuron count, wall s, CPU s) of each stage from the clock."""
    out = []
    for (name, w0, c0), (_, w1, c1) in zip(stages, stages[1:]):
        out.append((name.split(" (")[0], round(w1 - w0, 2), round(c1 - c0, 2)))
    return out


def bench_sim(size: int, n_neurons: int, n_frames: int, seed: int, overrides=None) -> dict:
    sim = MiniscopeSimulator(
        SimulationParams(height=size, width=size, n_frames=n_frames, n_neurons=n_neurons, seed=seed)
    )
    frames = sim.frames(0, n_frames)
    params = CNMFEParams().replace(**{"init.init_frames": n_frames, **(overrides or {})})
    stages: list = []
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_initial(frames, params, progress=_stage_clock(t0, c0, stages))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    truth = {
        "A": sim.truth.A,
        "C": sim.calcium(0, n_frames),
        "dims": sim.truth.dims,
        "pnr": sim.truth.pnr,
        "birth_frame": sim.truth.birth_frame,
    }
    est = {"A": res.A.copy(), "C": res.C, "dims": res.dims, "frame_index": np.arange(n_frames)}
    m = evaluate(est, truth)
    est["C"] = res.C_raw
    m_raw = evaluate(est, truth)
    return {
        "movie": f"sim {size}x{size}x{n_frames}, {n_neurons} neurons",
        "time_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        "n_found": res.n_components,
        "f1": m["f1"],
        "recall": m["recall"],
        "precision": m["precision"],
        "trace_corr": m["trace_corr_median"],
        "trace_corr_raw": m_raw["trace_corr_median"],
        "hi": {k: m[k] for k in m if "high_pnr" in k},
        "stages": stage_times(stages),
    }


def contour_png(res, path: Path) -> None:
    import cv2

    img = res.corr_image * res.pnr_image
    img = np.clip(img / max(np.percentile(img, 99.5), 1e-6), 0, 1)
    scale = max(1, 800 // max(res.dims))
    big = cv2.resize(
        (255 * img).astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST
    )
    big = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    A = res.A.tocsc()
    for k in range(res.n_components):
        a = np.zeros(res.dims[0] * res.dims[1], np.float32)
        sl = slice(A.indptr[k], A.indptr[k + 1])
        a[A.indices[sl]] = A.data[sl]
        mask = (a.reshape(res.dims) >= 0.3 * a.max()).astype(np.uint8)
        mask = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(big, cs, -1, (0, 0, 255), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), big)


def event_tiles_png(frames, res, path: Path, half: int = 12) -> None:
    """One tile per component: its event-triggered image (mean of the frames where its trace
    is > 3 robust sigma minus the median frame) around its peak, with the 0.3-max contour."""
    import cv2

    from online_cnmfe.model.initialization.acceptance import robust_zscore

    Y = np.asarray(frames, np.float32)
    T, H, W = Y.shape
    Yp = np.pad(Y - np.median(Y, axis=0), ((0, 0), (half, half), (half, half)))
    z = robust_zscore(res.C_raw)
    A = res.A.toarray()
    tiles = []
    for k in range(res.n_components):
        act = z[k] > 3
        if not act.any():
            act[np.argmax(z[k])] = True
        a = A[:, k].reshape(H, W)
        r, c = np.unravel_index(np.argmax(a), (H, W))
        tile = Yp[act].mean(axis=0)[r : r + 2 * half + 1, c : c + 2 * half + 1]
        tile = (tile - tile.min()) / max(float(np.ptp(tile)), 1e-9)
        t8 = cv2.resize((255 * tile).astype(np.uint8), None, fx=4, fy=4, interpolation=0)
        t8 = cv2.cvtColor(t8, cv2.COLOR_GRAY2BGR)
        ap = np.pad(a, half)[r : r + 2 * half + 1, c : c + 2 * half + 1]
        mask = cv2.resize((ap >= 0.3 * a.max()).astype(np.uint8), None, fx=4, fy=4, interpolation=0)
        cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(t8, cs, -1, (0, 0, 255), 1)
        cv2.putText(t8, str(k), (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
        tiles.append(t8)
    if not tiles:
        return
    cols = min(12, len(tiles))
    rows = -(-len(tiles) // cols)
    tiles += [np.zeros_like(tiles[0])] * (rows * cols - len(tiles))
    mosaic = np.vstack([np.hstack(tiles[i * cols : (i + 1) * cols]) for i in range(rows)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mosaic)


def bench_real(name: str, out_dir: Path) -> dict:
    import tifffile

    diameter, fps = REAL[name]
    frames = tifffile.imread(DATA / name)
    params = CNMFEParams().replace(
        **{
            "init.init_frames": int(frames.shape[0]),
            "data.neuron_diameter_px": diameter,
            "data.frame_rate_hz": fps,
        }
    )
    t0 = time.perf_counter()
    res = fit_initial(frames, params)
    elapsed = time.perf_counter() - t0
    png = out_dir / f"init_{Path(name).stem}.png"
    contour_png(res, png)
    row = {
        "movie": name,
        "shape": list(frames.shape),
        "time_s": round(elapsed, 2),
        "n_found": res.n_components,
        "png": str(png.relative_to(REPO)),
    }
    if name.startswith("minian"):
        ref = scipy.sparse.load_npz(DATA / "minian_ca1_fixture_ref_A_sparse.npz").tocsc()
        m = match_footprints(res.A.copy(), ref, res.dims)
        row["minian_units"] = int(ref.shape[1])
        row["minian_matched"] = len(m.true_index)
        row["minian_iou_median"] = float(np.median(m.iou)) if len(m.iou) else None
        C_ref = np.load(DATA / "minian_ca1_fixture_ref_CSbf.npz")["C"]
        cc = [np.corrcoef(res.C[e], C_ref[t])[0, 1] for e, t in zip(m.est_index, m.true_index)]
        row["minian_trace_corr_median"] = float(np.nanmedian(cc)) if cc else None
    else:
        tiles = out_dir / f"init_{Path(name).stem}_events.png"
        event_tiles_png(frames, res, tiles)
        row["events_png"] = str(tiles.relative_to(REPO))
    return row


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sims", default="256:300,256:120,128:80", help="size:neurons,... ('' for none)"
    )
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-real", action="store_true", help="skip the real recordings")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter override for the simulated movies, e.g. init.seed_downsample=2",
    )
    ap.add_argument("--stages", action="store_true", help="print each stage's wall / CPU time")
    ap.add_argument("--out", default=str(REPO / "bench-output"))
    args = ap.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"# bench_init  commit {commit}  nproc {os.cpu_count()}  {platform.processor()}  "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    warm_up()
    print(f"# warm-up (numba compile or cache load) {time.perf_counter() - t0:.1f} s")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    sims, reals = [], []
    for spec in filter(None, args.sims.split(",")):
        size, k = (int(v) for v in spec.split(":"))
        r = bench_sim(size, k, args.frames, args.seed, overrides)
        sims.append(r)
        hi = r["hi"]
        print(
            f"{r['movie']:<38} {r['time_s']:6.1f} s (cpu {r['cpu_s']:5.1f} s)  "
            f"found {r['n_found']:4d}  "
            f"F1 {r['f1']:.3f} (R {r['recall']:.3f} P {r['precision']:.3f})  "
            f"corr {r['trace_corr']:.3f} (raw {r['trace_corr_raw']:.3f})  | PNR>=5: "
            f"F1 {_f(hi.get('f1_high_pnr'))} R {_f(hi.get('recall_high_pnr'))} "
            f"P {_f(hi.get('precision_high_pnr'))} "
            f"corr {_f(hi.get('trace_corr_median_high_pnr'))}",
            flush=True,
        )
        if args.stages:
            print(
                "  stages (wall / CPU s): " + ", ".join(f"{n} {w} / {c}" for n, w, c in r["stages"])
            )
    if not args.no_real and DATA.is_dir():
        for name in REAL:
            if not (DATA / name).exists():
                continue
            r = bench_real(name, Path(args.out))
            reals.append(r)
            extra = ""
            if "minian_matched" in r:
                extra = (
                    f"  minian {r['minian_matched']}/{r['minian_units']} matched "
                    f"(IoU median {_f(r['minian_iou_median'], 2)}, trace corr median "
                    f"{_f(r['minian_trace_corr_median'], 2)})"
                )
            print(f"{name:<48} {r['time_s']:7.1f} s  found {r['n_found']:4d}{extra}", flush=True)
    print(json.dumps({"bench": "init", "commit": commit, "sims": sims, "real": reals}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
