"""Benchmark of the preprocessing stage (issue 13): cost, corrupt-frame flags, accuracy on
movies with real-recording nuisance, and the real recordings in ../shared/data.

Scenarios (``--scenario``, default all):

- ``cost``: CPU time (``time.thread_time``) of ``preprocess_frame`` per frame at 256x256 and
  608x608 (V4-like frames: line noise, lens margin), with and without column offsets, after
  a warm-up; median / p99 over ``--cost-frames`` frames.
- ``flags``: corrupt-frame detection. Simulated movies with ``corrupt_fraction`` (missing
  lines, noise bands, flashes; truth from the simulator): recall and false flags; clean
  movies of several kinds (plain, V4 nuisance without corruption, 3 px motion, bursty
  activity, dense small neurons) and the real recordings: false flags. The stage runs as in
  the model (``preprocess_movie`` on the first ``--init-frames``, ``preprocess_frame`` after).
- ``accuracy``: twin movies from one seed, clean and with V4-like line noise (per-row offsets
  2x the pixel noise, new every frame, plus rolling row bands), a lens margin, 1 % corrupt
  frames and bleaching; the full model (``fit_initial`` + online) with and without
  preprocessing; F1 / trace correlation against the truth (``evaluation.evaluate``) and
  components whose centroid lies outside the lens.
- ``real``: the initialisation on each real recording with and without preprocessing:
  components, field of view, flagged frames, the sanity report.
- ``diameter``: the optional diameter estimate on simulated movies of known diameter
  (8, 13, 20 px) and on the real recordings.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_preprocess.py --scenario cost
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.model.preprocessing import preprocess_frame, preprocess_movie  # noqa: E402
from online_cnmfe.params import CNMFEParams  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
V4 = dict(line_noise_sigma=20.0, row_band_amplitude=10.0, lens_radius_fraction=0.95)


def _params(**kw) -> CNMFEParams:
    return CNMFEParams().replace(**kw) if kw else CNMFEParams()


# ---- cost --------------------------------------------------------------------------------
def scenario_cost(args) -> dict:
    out = {}
    for size in (256, 608):
        sim = MiniscopeSimulator(
            SimulationParams(height=size, width=size, n_frames=400, n_neurons=size // 2, **V4)
        )
        frames = sim.frames(0, 400).astype(np.float32)
        params = _params(**{"init.init_frames": 200})
        for cols in (False, True):
            p = params.replace(**{"preprocess.remove_column_offsets": cols})
            pre = preprocess_movie(frames[:200].copy(), p)
            buf = np.zeros(size * size, np.float32)
            cpu = np.zeros(args.cost_frames)
            for j in range(args.cost_frames + 50):
                np.copyto(buf, frames[200 + j % 200].ravel())
                c0 = time.thread_time()
                preprocess_frame(pre, buf, p.preprocess)
                if j >= 50:  # warm-up
                    cpu[j - 50] = 1e3 * (time.thread_time() - c0)
            key = f"{size}x{size}" + ("+columns" if cols else "")
            out[key] = {
                "cpu_median_ms": round(float(np.median(cpu)), 3),
                "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3),
                "cpu_mean_ms": round(float(cpu.mean()), 3),
            }
            print(key, out[key], flush=True)
    return out


# ---- flags ---------------------------------------------------------------------------------
def run_stage(frames: np.ndarray, params: CNMFEParams, n_init: int) -> np.ndarray:
    """Flags of every frame: the initialisation batch, then frame by frame."""
    Y = np.ascontiguousarray(frames[:n_init], np.float32).copy()
    pre = preprocess_movie(Y, params)
    flags = list(pre.init.flagged)
    buf = np.zeros(frames.shape[1] * frames.shape[2], np.float32)
    for t in range(n_init, frames.shape[0]):
        np.copyto(buf, frames[t].ravel(), casting="unsafe")
        flags.append(preprocess_frame(pre, buf, params.preprocess) is not None)
    return np.asarray(flags, bool)


def _sim_kinds(n: int, size: int) -> dict[str, SimulationParams]:
    base = dict(height=size, width=size, n_frames=n, n_neurons=size // 2)
    return {
        "plain": SimulationParams(**base, seed=11),
        "v4_nuisance": SimulationParams(**base, seed=12, bleach_time_s=300.0, **V4),
        "motion_3px": SimulationParams(**base, seed=13, motion_px=3.0),
        "bursty": SimulationParams(**base, seed=14, bursty=True, firing_rate_hz=1.0),
        "dense_small": SimulationParams(
            **{**base, "n_neurons": size}, seed=15, neuron_diameter_px=8.0, pnr_range=(5, 30)
        ),
    }


def _real_movies() -> dict[str, tuple[np.ndarray, float]]:
    import tifffile

    from acquisition.sources import open_source

    out = {}
    for name, rate in (
        ("minian_ca1_fixture_preproc_100x480x752_u8.tif", 10.0),
        ("minian_ca1_fixture_motioncorrected_100x480x752_u8.tif", 10.0),
        ("inscopix_movie_part2_63x123x108_f32.tif", 10.0),
        ("ideas_nwb_onephotonseries_200x35x29_u16.tif", 5.56),
    ):
        if (DATA / name).exists():
            out[name] = (tifffile.imread(DATA / name), rate)
    avi = DATA / "miniscope_wireless_corrupted_60x200x200.avi"
    if avi.exists():
        src = open_source(str(avi))
        out[avi.name] = (np.stack([f.pixels for f in src.frames(0, 60)]), 20.0)
    return out


def scenario_flags(args) -> dict:
    out: dict = {"corrupt_sims": [], "clean": {}, "real": {}}
    n = args.frames
    for seed in (21, 22, 23):
        p = SimulationParams(
            height=256, width=256, n_frames=n, n_neurons=120, seed=seed, corrupt_fraction=0.05,
            bleach_time_s=600.0, **V4,
        )  # fmt: skip
        sim = MiniscopeSimulator(p)
        truth = sim.corrupt_frames(0, n) > 0
        flags = run_stage(sim.frames(0, n), _params(), args.init_frames)
        row = _score(flags, truth)
        out["corrupt_sims"].append({"seed": seed, **row})
        print("corrupt sim", seed, row, flush=True)
    for name, p in _sim_kinds(n, 256).items():
        flags = run_stage(MiniscopeSimulator(p).frames(0, n), _params(), args.init_frames)
        out["clean"][name] = {"frames": n, "false_flags": int(flags.sum())}
        print("clean", name, out["clean"][name], flush=True)
    for name, (movie, rate) in _real_movies().items():
        T = movie.shape[0]
        params = _params(**{"data.frame_rate_hz": rate, "init.init_frames": max(20, T // 2)})
        flags = run_stage(movie, params, max(20, T // 2))
        out["real"][name] = {"frames": T, "flagged": np.flatnonzero(flags).tolist()}
        print("real", name, out["real"][name], flush=True)
    return out


def _score(flags: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flags & truth).sum())
    return {
        "frames": int(truth.size),
        "corrupt": int(truth.sum()),
        "recall": round(tp / max(int(truth.sum()), 1), 4),
        "false_flags": int((flags & ~truth).sum()),
        "false_flag_rate": round(float((flags & ~truth).sum()) / max(int((~truth).sum()), 1), 5),
    }


# ---- accuracy ------------------------------------------------------------------------------
def run_model(frames: np.ndarray, params: CNMFEParams, n_init: int, out_path: Path):
    """fit_initial + the online model over ``frames``, results written like ``process``."""
    from online_cnmfe.model.frame_result import FrameResult
    from online_cnmfe.model.initialization.fit import fit_initial
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results.writer import ResultsWriter

    c0 = time.process_time()
    init_frames = frames[:n_init].astype(np.float32)
    init = fit_initial(init_frames, params)
    model = OnlineCNMFE(params)
    model.initialize_from(init, init_frames)
    t_init = time.process_time() - c0
    with ResultsWriter(out_path, model.dims, params, params.data.frame_rate_hz, {}) as w:
        ids = model.neuron_ids[: init.n_components]
        for j in range(n_init):
            r = FrameResult(frame_index=j, neuron_ids=ids, C=init.C[:, j], S=init.S[:, j],
                            C_raw=init.C_raw[:, j])  # fmt: skip
            w.append_frame(r, {"frame_index": j})
        version = -1
        for j in range(n_init, frames.shape[0]):
            r = model.process_frame(frames[j])
            w.append_frame(r, {"frame_index": j})
            if r.footprints_version != version:
                version = r.footprints_version
                w.set_footprints(model.footprints, model.neuron_ids, version)
        w.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
    return model, t_init, time.process_time() - c0


def scenario_accuracy(args) -> dict:
    from online_cnmfe.evaluation.files import read_result
    from online_cnmfe.evaluation.metrics import evaluate, truth_from_simulator
    from online_cnmfe.model.preprocessing.sanity import footprint_shapes  # noqa: F401

    n, size = args.frames, args.size
    base = dict(height=size, width=size, n_frames=n, n_neurons=args.neurons, seed=args.seed)
    nuisance = dict(corrupt_fraction=0.01, bleach_time_s=600.0, **V4)
    runs = {
        "clean": (SimulationParams(**base), {}),
        "v4": (SimulationParams(**base, **nuisance), {}),
        "v4_no_preprocessing": (
            SimulationParams(**base, **nuisance),
            {"preprocess.enabled": False},
        ),
    }
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_pre_"))
    for name, (sp, over) in runs.items():
        if args.only and name not in args.only:
            continue
        sim = MiniscopeSimulator(sp)
        frames = sim.frames(0, n)
        params = _params(**{"init.init_frames": args.init_frames, **over})
        model, t_init, t_all = run_model(frames, params, args.init_frames, tmp / f"{name}.h5")
        est = read_result(tmp / f"{name}.h5")
        m = evaluate(est, truth_from_simulator(sim, n))
        row = {k: m[k] for k in ("n_true", "n_found", "recall", "precision", "f1",
                                  "trace_corr_median")}  # fmt: skip
        row["outside_lens"] = _outside(model, sim)
        row["flagged"] = int(model.state.n_flagged)
        row["sanity"] = getattr(model.sanity, "message", None)
        row["cpu_init_s"], row["cpu_total_s"] = round(t_init, 1), round(t_all, 1)
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def _outside(model, sim) -> int | None:
    fov = sim.truth.fov_mask
    if fov is None:
        return None
    A = model.footprints.tocsc()
    H, W = model.dims
    count = 0
    for k in range(A.shape[1]):
        idx = A.indices[A.indptr[k] : A.indptr[k + 1]]
        a = A.data[A.indptr[k] : A.indptr[k + 1]]
        if a.sum() <= 0:
            continue
        r, c = np.divmod(idx, W)
        rc, cc = int(round((r * a).sum() / a.sum())), int(round((c * a).sum() / a.sum()))
        count += not fov[min(rc, H - 1), min(cc, W - 1)]
    return count


# ---- real ----------------------------------------------------------------------------------
def scenario_real(args) -> dict:
    from online_cnmfe.model.initialization.fit import fit_initial
    from online_cnmfe.model.preprocessing.sanity import check_components

    out = {}
    for name, (movie, rate) in _real_movies().items():
        if name.startswith("minian_ca1_fixture_motion"):
            continue
        T = movie.shape[0]
        d = 9.0 if "nwb" in name else 13.0
        for on in (True, False):
            over = {"data.frame_rate_hz": rate, "init.init_frames": T}
            over.update({"data.neuron_diameter_px": d, "preprocess.enabled": on})
            params = _params(**over)
            c0 = time.process_time()
            init = fit_initial(movie, params)
            pre = init.preprocess
            fov = pre.fov if pre is not None and pre.fov_found else None
            rep = check_components(init.A, init.dims, d, params.preprocess, fov, init.C_raw,
                                   init.trace_noise)  # fmt: skip
            row = {
                "components": init.n_components,
                "fov_fraction": None if fov is None else round(float(fov.mean()), 3),
                "flagged": None if pre is None else int(pre.init.flagged.sum()),
                "coverage": round(rep.coverage, 3),
                "silent": round(rep.silent_fraction, 3),
                "stripes": round(rep.elongated_fraction, 3),
                "warning": rep.message,
                "cpu_s": round(time.process_time() - c0, 1),
            }
            out[f"{name} preprocess={on}"] = row
            print(name, on, json.dumps(row), flush=True)
    return out


# ---- diameter -------------------------------------------------------------------------------
def scenario_diameter(args) -> dict:
    from online_cnmfe.model.preprocessing.diameter import estimate_diameter

    out = {}
    for d in (8.0, 13.0, 20.0):
        sp = SimulationParams(height=256, width=256, n_frames=300, seed=2,
                              n_neurons=int(100 * 169 / d**2), neuron_diameter_px=d)  # fmt: skip
        est = estimate_diameter(MiniscopeSimulator(sp).frames(0, 300), 20.0)
        out[f"sim d={d:g}"] = round(est, 1)
        print("sim", d, out[f"sim d={d:g}"], flush=True)
    for name, (movie, rate) in _real_movies().items():
        out[name] = round(estimate_diameter(movie, rate), 1)
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=("cost", "flags", "accuracy", "real", "diameter",
                                           "all"), default="all")  # fmt: skip
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--init-frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--neurons", type=int, default=120)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--cost-frames", type=int, default=2000)
    ap.add_argument("--only", nargs="*", help="accuracy: run only these variants")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    scenarios = {"cost": scenario_cost, "flags": scenario_flags, "accuracy": scenario_accuracy,
                 "real": scenario_real, "diameter": scenario_diameter}  # fmt: skip
    names = list(scenarios) if args.scenario == "all" else [args.scenario]
    results = {name: scenarios[name](args) for name in names}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
