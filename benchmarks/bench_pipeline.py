"""Online model benchmark: per-frame latency, throughput, memory and accuracy.

Scenarios (``--scenario``):

- ``sim``: the project simulator (default 256×256 × 3000 frames, 300 neurons, some born late),
  a truth-derived InitResult on the first ``--init-frames`` (neurons born later are left for
  the slow path to find), then the online model frame by frame. Reports per-frame median /
  p99 / max over the online part, per-stage medians, total wall time, peak RSS, and accuracy
  from the evaluator (results written with the real ResultsWriter).
- ``v4``: 608×608 uint8 frames (full Miniscope V4) with ~500 neurons: frames/s of the online
  model (frames cycled from a simulated block; accuracy not scored).
- ``minian``: the real 480×752 minian CA1 movie in ../shared/data, initialised from minian's
  own footprints and traces: throughput and agreement of our traces with minian's.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pipeline.py --scenario sim
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pipeline.py --scenario v4
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pipeline.py --scenario minian
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquisition.simulator import MiniscopeSimulator  # noqa: E402
from acquisition.simulator_params import SimulationParams  # noqa: E402
from online_cnmfe.model._kernels import ring as kring  # noqa: E402
from online_cnmfe.model.frame_result import FrameResult  # noqa: E402
from online_cnmfe.model.init_result import InitResult  # noqa: E402
from online_cnmfe.model.online import OnlineCNMFE  # noqa: E402
from online_cnmfe.model.traces import grid_shape  # noqa: E402
from online_cnmfe.params import CNMFEParams, parse_overrides  # noqa: E402


def fit_ring(X: np.ndarray, offsets: np.ndarray, ssub: int, ridge: float) -> np.ndarray:
    """Ridge ring weights from background fluctuations X (T, H, W), in chunks of grid pixels."""
    T, H, W = X.shape
    hb, wb = grid_shape((H, W), ssub)
    Xd = np.zeros((T, hb, wb), np.float32)
    for t in range(T):
        kring.downsample_mean(np.ascontiguousarray(X[t], np.float32), ssub, Xd[t])
    n_bg, R = hb * wb, len(offsets)
    Wout = np.zeros((n_bg, R), np.float32)
    step = 2048
    for start in range(0, n_bg, step):
        n = min(step, n_bg - start)
        XXt = np.zeros((n, R, R), np.float32)
        Xx = np.zeros((n, R), np.float32)
        kring.ring_gram_accumulate_range(Xd, offsets, XXt, Xx, 0.0, 1.0 / T, start)
        kring.ring_solve(XXt, Xx, ridge, Wout, start, start + n)
    return Wout


def truth_init(sim, frames: np.ndarray, params: CNMFEParams) -> tuple[InitResult, np.ndarray]:
    """InitResult from the simulator's truth over ``frames`` (neurons born before the end)."""
    n_init, H, W = frames.shape
    truth = sim.truth
    born = np.flatnonzero(truth.birth_frame < n_init)
    A = scipy.sparse.csc_array(truth.A[:, born], dtype=np.float32)
    C = sim.calcium(0, n_init)[born]
    S = sim.spikes(0, n_init)[born]
    Y = frames.reshape(n_init, -1).astype(np.float32)
    X = Y - (A @ C).T
    b0 = X.mean(axis=0)
    X -= b0
    ssub = params.background.downsample
    radius = int(
        round(params.background.ring_radius_factor * params.data.neuron_diameter_px / ssub)
    )
    offsets = kring.ring_offsets(radius)
    Wring = fit_ring(X.reshape(n_init, H, W), offsets, ssub, params.background.ridge)
    norms = np.sqrt(np.asarray(A.multiply(A).sum(axis=0))).ravel()
    g = np.asarray(truth.g, np.float32)[born, :1]
    K = len(born)
    init = InitResult(
        dims=(H, W), A=A, C=C, S=S, C_raw=C.copy(), b0=b0.astype(np.float32), W=Wring,
        ring_offsets=offsets, background_downsample=ssub, g=g,
        trace_noise=(sim.params.noise_sigma / np.maximum(norms, 1e-6)).astype(np.float32),
        pixel_noise=np.full(H * W, sim.params.noise_sigma, np.float32),
        corr_image=np.zeros((H, W), np.float32), pnr_image=np.zeros((H, W), np.float32),
    )  # fmt: skip
    assert init.n_components == K
    return init, born


def sim_source(sim, first: int, stop: int, chunk: int = 64):
    """``source(j)``: the simulator's frame ``first + j`` (< ``stop``), rendered ``chunk``
    frames at a time (a movie of the online frames would not fit in memory at 608²)."""
    cache = {"start": -1, "frames": None}

    def source(j: int) -> np.ndarray:
        t = first + j
        if not cache["start"] <= t < cache["start"] + chunk:
            cache["start"], cache["frames"] = t, sim.frames(t, min(t + chunk, stop))
        return cache["frames"][t - cache["start"]]

    return source


def nbytes(obj, seen=None) -> int:
    """Bytes held in arrays by a (nested) dataclass / dict / list / sparse matrix."""
    import dataclasses

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if scipy.sparse.issparse(obj):
        return sum(getattr(obj, n).nbytes for n in ("data", "indices", "indptr") if hasattr(obj, n))
    if dataclasses.is_dataclass(obj):
        return sum(nbytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v, seen) for v in obj)
    return 0


def _summary(times: np.ndarray) -> dict:
    cpu = getattr(run_online, "cpu", None)
    extra = {}
    if cpu is not None and len(cpu) == len(times):
        # CPU time of the model thread: robust to preemption on a shared machine
        proc = run_online.process_cpu
        extra = {
            "cpu_median_ms": float(np.median(cpu)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)),
            "cpu_max_ms": float(cpu.max()),
            # all threads (with --slow-path-thread the slow path's CPU is not the model thread's)
            "process_cpu_mean_ms": float(proc.mean()),
        }
    return {
        **extra,
        "median_ms": float(np.median(times)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": float(times.max()),
        "mean_ms": float(times.mean()),
        "max_over_median": float(times.max() / np.median(times)),
        "frames_per_s": float(1e3 / times.mean()),
    }


# (enabled, executor): set by --slow-path-thread (run_online hands the model the executor)
SLOW_PATH_THREAD: list = [False, None]


def run_online(model, frame_source, n_frames: int, writer=None, first_index: int = 0):
    times = np.zeros(n_frames)
    stages: dict[str, list[float]] = {}
    cpu = np.zeros(n_frames)
    proc = np.zeros(n_frames)
    worst: dict = {}
    if SLOW_PATH_THREAD[0]:
        model.run_slow_path_on(SLOW_PATH_THREAD[1])
    for j in range(n_frames):
        frame = frame_source(j)
        c0, p0 = time.thread_time(), time.process_time()
        r = model.process_frame(frame)
        cpu[j] = 1e3 * (time.thread_time() - c0)
        proc[j] = 1e3 * (time.process_time() - p0)
        times[j] = r.timings_ms["total"]
        if times[j] >= times[: j + 1].max():
            worst = {k: round(v, 3) for k, v in r.timings_ms.items()}
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)
        if writer is not None:
            writer.append_frame(r, {"frame_index": first_index + j, "latency_ms": times[j]})
            if r.footprints_version != getattr(run_online, "_v", -1):
                run_online._v = r.footprints_version
                writer.set_footprints(model.footprints, model.neuron_ids, r.footprints_version)
    model.settle_slow_path()
    run_online.worst = worst
    run_online.cpu = cpu
    run_online.process_cpu = proc
    return times, {k: float(np.median(v)) for k, v in stages.items()}


def scenario_sim(args) -> dict:
    from online_cnmfe.evaluation.files import read_result
    from online_cnmfe.evaluation.metrics import evaluate
    from online_cnmfe.results.writer import ResultsWriter

    sp = SimulationParams(
        height=args.size, width=args.size, n_frames=args.frames, n_neurons=args.neurons,
        rise_time_s=0.0, late_fraction=args.late_fraction, late_after_frame=args.init_frames,
        seed=args.seed, dtype="float32",
    )  # fmt: skip
    sim = MiniscopeSimulator(sp)
    params = CNMFEParams.from_dict(
        {
            "data": {"frame_rate_hz": sp.frame_rate_hz},
            "init": {"init_frames": args.init_frames},
            "detection": {"enabled": not args.no_slow_path},
        }
    )
    if args.overrides:
        params = params.replace(**parse_overrides(args.overrides))
    t_wall = time.perf_counter()
    init_frames = sim.frames(0, args.init_frames)
    t0 = time.perf_counter()
    init, born = truth_init(sim, init_frames, params)
    t_init = time.perf_counter() - t0
    model = OnlineCNMFE(params)
    t0 = time.perf_counter()
    model.initialize_from(init, init_frames)
    t_build = time.perf_counter() - t0
    n_online = args.frames - args.init_frames
    source = sim_source(sim, args.init_frames, args.frames)
    out = Path(tempfile.mkdtemp()) / "bench_result.h5"
    with ResultsWriter(out, (args.size, args.size), params, sp.frame_rate_hz, {}) as w:
        ids = model.neuron_ids.copy()
        for j in range(args.init_frames):
            w.append_frame(
                FrameResult(j, ids, init.C[:, j], init.S[:, j], init.C_raw[:, j]),
                {"frame_index": j},
            )
        t0 = time.perf_counter()
        times, stages = run_online(model, source, n_online, w, args.init_frames)
        t_online = time.perf_counter() - t0
        w.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        w.set_background(model.b0)
    wall = time.perf_counter() - t_wall
    truth = {
        "A": sim.truth.A, "dims": sim.truth.dims, "C": sim.calcium(0, args.frames),
        "pnr": sim.truth.pnr, "birth_frame": sim.truth.birth_frame,
    }  # fmt: skip
    est = read_result(out)
    metrics = evaluate(est, truth)
    from online_cnmfe.evaluation.metrics import match_footprints

    in_memory = match_footprints(model.footprints, sim.truth.A, sim.truth.dims)
    in_file = match_footprints(est["A"], sim.truth.A, sim.truth.dims)
    return {
        "scenario": "sim",
        "size": args.size, "frames": args.frames, "neurons": args.neurons,
        "late_born": int(args.neurons - len(born)), "init_neurons": int(len(born)),
        "final_neurons": model.n_components, "slow_path": model._slow is not None,
        **_summary(times), "stages_median_ms": stages, "worst_frame_ms": run_online.worst,
        "truth_init_s": t_init, "model_build_s": t_build, "online_s": t_online, "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_state_mb": nbytes(model.state) / 2**20,
        "slow_state_mb": nbytes(model.state.slow) / 2**20,
        "matched_in_memory": len(in_memory.true_index), "matched_in_file": len(in_file.true_index),
        "f1": metrics["f1"], "recall": metrics["recall"], "precision": metrics["precision"],
        "trace_corr_median": metrics["trace_corr_median"],
        "trace_corr_median_high_pnr": metrics["trace_corr_median_high_pnr"],
        "late": metrics["late"],
    }  # fmt: skip


def scenario_v4(args) -> dict:
    size, n_block = 608, 200
    sp = SimulationParams(
        height=size, width=size, n_frames=n_block, n_neurons=args.neurons, rise_time_s=0.0,
        baseline=100.0, noise_sigma=3.0, seed=args.seed, dtype="float32",
    )  # fmt: skip
    sim = MiniscopeSimulator(sp)
    movie = np.clip(np.rint(sim.frames(0, n_block)), 0, 255).astype(np.uint8)
    params = CNMFEParams.from_dict(
        {"init": {"init_frames": 100}, "detection": {"enabled": not args.no_slow_path}}
    )
    init, _ = truth_init(sim, movie[:100].astype(np.float32), params)
    model = OnlineCNMFE(params)
    model.initialize_from(init, movie[:100])
    times, stages = run_online(model, lambda j: movie[100 + j % 100], args.v4_frames)
    return {
        "scenario": "v4", "size": size, "dtype": "uint8", "neurons": model.n_components,
        "slow_path": model._slow is not None,
        **_summary(times), "stages_median_ms": stages,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def scenario_minian(args) -> dict:
    import tifffile

    data = ROOT.parent / "shared" / "data"
    movie = tifffile.imread(data / "minian_ca1_fixture_preproc_100x480x752_u8.tif")
    A = scipy.sparse.load_npz(data / "minian_ca1_fixture_ref_A_sparse.npz").tocsc()
    ref = np.load(data / "minian_ca1_fixture_ref_CSbf.npz")
    T, H, W = movie.shape
    C = np.asarray(ref["C"], np.float32)
    g = np.asarray(ref["g"], np.float32).reshape(len(C), -1)[:, :1]
    n_init = 20
    params = CNMFEParams.from_dict(
        {"data": {"frame_rate_hz": 10.0, "neuron_diameter_px": 13.0},
         "init": {"init_frames": n_init}, "detection": {"enabled": not args.no_slow_path}}
    )  # fmt: skip
    Y = movie[:n_init].reshape(n_init, -1).astype(np.float32)
    b0 = (Y - (A @ C[:, :n_init]).T).mean(axis=0)
    hb, wb = grid_shape((H, W), 2)
    offsets = kring.ring_offsets(9)
    init = InitResult(
        dims=(H, W), A=scipy.sparse.csc_array(A, dtype=np.float32), C=C[:, :n_init],
        S=np.zeros_like(C[:, :n_init]), C_raw=C[:, :n_init].copy(), b0=b0.astype(np.float32),
        W=np.zeros((hb * wb, len(offsets)), np.float32), ring_offsets=offsets,
        background_downsample=2, g=g, trace_noise=np.full(len(C), 0.5, np.float32),
        pixel_noise=np.ones(H * W, np.float32), corr_image=np.zeros((H, W), np.float32),
        pnr_image=np.zeros((H, W), np.float32),
    )  # fmt: skip
    model = OnlineCNMFE(params)
    model.initialize_from(init, movie[:n_init])
    reps = args.minian_repeats
    n = (T - n_init) * reps

    def source(j):
        return movie[n_init + j % (T - n_init)]

    times = np.zeros(n)
    first_pass = np.full((len(C), T - n_init), np.nan)
    for j in range(n):
        r = model.process_frame(source(j))
        times[j] = r.timings_ms["total"]
        if j < T - n_init:
            keep = r.neuron_ids < len(C)  # minian's units keep ids 0..K-1 until merged/removed
            first_pass[r.neuron_ids[keep], j] = r.C_raw[keep]
    corr = [
        np.corrcoef(first_pass[k], C[k, n_init:])[0, 1]
        for k in range(len(C))
        if np.isfinite(first_pass[k]).all() and first_pass[k].std() > 0
    ]
    return {
        "scenario": "minian", "dims": [H, W], "neurons": len(C), **_summary(times),
        "trace_corr_vs_minian_median": float(np.nanmedian(corr)),
        "units_compared": len(corr), "final_neurons": model.n_components,
        "slow_path": model._slow is not None,
    }  # fmt: skip


def scenario_demix(args) -> dict:
    """Exact (I − UWD)-demixing (the model) vs CaImAn's plug-in background, same data and init.

    Plug-in (CaImAn demix1p): b = b0 + UWD(y − A c_prev − b0), then NNLS of y − b ≈ A c on AᵀA
    (same warm start and sweeps). Both track b0 with the same forgetting.
    """
    from online_cnmfe.model._kernels import demix as kd
    from online_cnmfe.model.traces import gram_from_dense

    sp = SimulationParams(
        height=args.size, width=args.size, n_frames=args.frames, n_neurons=args.neurons,
        rise_time_s=0.0, seed=args.seed, dtype="float32",
    )  # fmt: skip
    sim = MiniscopeSimulator(sp)
    params = CNMFEParams.from_dict(
        {"init": {"init_frames": args.init_frames}, "detection": {"enabled": False}}
    )
    frames0 = sim.frames(0, args.init_frames)
    init, born = truth_init(sim, frames0, params)
    model = OnlineCNMFE(params)
    model.initialize_from(init, frames0)
    st, ops = model.state, model._ops
    A = model.footprints
    AtA = (A.T @ A).toarray().astype(np.float32)
    ip, ix, qd, diag, order = gram_from_dense(AtA)
    b0 = st.b0.copy()
    c = st.c.copy()
    n_bg = st.W.shape[0]
    sc = [np.zeros_like(ops.scratch_xd), np.zeros(n_bg, np.float32)]
    yt = np.zeros(st.n_pixels, np.float32)
    zs = np.zeros(n_bg, np.float32)
    n_on = args.frames - args.init_frames
    exact, plugin = np.zeros((len(born), n_on)), np.zeros((len(born), n_on))
    for j in range(n_on):
        y = np.ascontiguousarray(sim.frames(args.init_frames + j, args.init_frames + j + 1)[0])
        y = y.reshape(-1)
        exact[:, j] = model.process_frame(y.reshape(st.dims)).C_raw
        Ac = (A @ c).astype(np.float32)
        kd.background_subtract(
            y, b0 + Ac, ops.Wt, ops.ring_flat, ops.ring_pad, *st.dims, st.ssub, *sc, yt, zs
        )
        rhs = (A.T @ (yt + Ac)).astype(np.float32)  # Aᵀ(y − b) with b from c_prev
        kd.nnls_cd(ip, ix, qd, diag, rhs, order, params.online.n_trace_sweeps, c)
        plugin[:, j] = c
        b0 += ops.alpha_b0 * (y - (A @ c) - b0)
    truth = sim.calcium(args.init_frames, args.frames)[born]
    pnr = np.asarray(sim.truth.pnr)[born]
    out = {"scenario": "demix", "frames": n_on, "neurons": len(born)}
    for name, tr in (("exact", exact), ("plugin", plugin)):
        corr = np.array([np.corrcoef(tr[k], truth[k])[0, 1] for k in range(len(born))])
        err = np.abs(tr - truth).mean(axis=1) / np.maximum(truth.mean(axis=1), 1e-6)
        out[f"{name}_corr_median"] = float(np.nanmedian(corr))
        out[f"{name}_corr_median_pnr5"] = float(np.nanmedian(corr[pnr >= 5]))
        out[f"{name}_corr_p10"] = float(np.nanpercentile(corr, 10))
        out[f"{name}_rel_abs_err_median"] = float(np.nanmedian(err))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=("sim", "v4", "minian", "demix"), default="sim")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--init-frames", type=int, default=500)
    p.add_argument("--late-fraction", type=float, default=0.1)
    p.add_argument("--v4-frames", type=int, default=2000)
    p.add_argument("--minian-repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-slow-path", action="store_true", help="critical path only")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="parameter override, e.g. online.footprint_update_period_frames=100000",
    )
    p.add_argument(
        "--slow-path-thread",
        action="store_true",
        help="run the slow path's steps on their own thread (as `run` does; same results)",
    )
    args = p.parse_args()
    if args.slow_path_thread:
        from concurrent.futures import ThreadPoolExecutor

        SLOW_PATH_THREAD[:] = [True, ThreadPoolExecutor(max_workers=1)]
    if args.scenario == "v4" and args.neurons == 300:
        args.neurons = 500
    scenarios = {
        "sim": scenario_sim, "v4": scenario_v4, "minian": scenario_minian, "demix": scenario_demix
    }  # fmt: skip
    res = scenarios[args.scenario](args)
    for k, v in res.items():
        if not isinstance(v, dict):
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
        else:
            print(f"{k:>28}: {json.dumps(v, default=float)}")
    print(json.dumps(res, default=float))


if __name__ == "__main__":
    main()
