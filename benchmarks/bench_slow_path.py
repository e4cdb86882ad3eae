"""Per-frame cost of the slow path (observe_frame + slow_step) at a given size.

A synthetic model (Gaussian footprints on a grid, AR(1) traces, residual = noise with rare
unmodelled transients) drives the slow path the way the online model does; updates are
applied to the driver's footprint view between frames (not timed: that is the model's part).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_slow_path.py --size 256 --neurons 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels.ring import ring_offsets
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.slow_path import schedule as slow_path
from online_cnmfe.params import CNMFEParams


def _footprints(rng, H, W, K, d):
    sigma = d / 4
    rows, cols = np.mgrid[0:H, 0:W]
    cols_list = []
    for _ in range(K):
        r, c = rng.uniform(d, [H - d, W - d])
        r0, r1 = int(max(r - 2 * d, 0)), int(min(r + 2 * d, H))
        c0, c1 = int(max(c - 2 * d, 0)), int(min(c + 2 * d, W))
        img = np.zeros((H, W), np.float32)
        img[r0:r1, c0:c1] = np.exp(
            -((rows[r0:r1, c0:c1] - r) ** 2 + (cols[r0:r1, c0:c1] - c) ** 2) / (2 * sigma**2)
        )
        img[img < 0.05] = 0
        cols_list.append(img.ravel() / np.linalg.norm(img))
    return scipy.sparse.csc_array(np.stack(cols_list, axis=1).astype(np.float32))


def run(size: int, K: int, n_frames: int, seed: int, params: CNMFEParams, hidden: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    H = W = size
    d = params.data.neuron_diameter_px
    ssub = params.background.downsample
    A = _footprints(rng, H, W, K, d)
    Ah = _footprints(rng, H, W, hidden, d) if hidden else None
    Sh = (rng.random((hidden, n_frames)) < 0.05) * rng.uniform(20, 30, (hidden, n_frames))
    Ch = np.zeros_like(Sh)
    for i in range(1, n_frames):
        Ch[:, i] = 0.9 * Ch[:, i - 1] + Sh[:, i]
    T0 = 200
    g = 0.9
    S = (rng.random((K, T0 + n_frames)) < 0.02) * rng.uniform(2, 6, (K, T0 + n_frames))
    C = np.zeros_like(S, dtype=np.float32)
    for t in range(S.shape[1]):
        C[:, t] = (g * C[:, t - 1] if t else 0) + S[:, t]
    off = ring_offsets(int(round(params.background.ring_radius_factor * d / ssub)))
    hb, wb = -(-H // ssub), -(-W // ssub)
    b0 = np.full(H * W, 20.0, np.float32)
    frames = ((A @ C[:, :T0]).T + b0 + rng.standard_normal((T0, H * W))).astype(np.float32)
    init = InitResult(
        dims=(H, W), A=A, C=C[:, :T0], S=S[:, :T0].astype(np.float32), C_raw=C[:, :T0],
        b0=b0, W=np.zeros((hb * wb, len(off)), np.float32), ring_offsets=off,
        background_downsample=ssub, g=np.full((K, 1), g, np.float32),
        trace_noise=np.full(K, 1.0, np.float32), pixel_noise=np.ones(H * W, np.float32),
        corr_image=np.zeros((H, W), np.float32), pnr_image=np.zeros((H, W), np.float32),
    )  # fmt: skip
    t_init = time.perf_counter()
    slow = slow_path.init_slow_path(init, frames.reshape(T0, H, W), params)
    t_init = time.perf_counter() - t_init
    L = params.online.residual_buffer_frames
    residual = rng.standard_normal((L, H * W)).astype(np.float32)
    residual_frame = np.arange(T0 - L, T0, dtype=np.int64)
    c_buffer = C[:, T0 - L : T0].copy()
    Wring = init.W.copy()
    gk = np.full((K, 1), g, np.float32)
    times, cpu, stats = [], [], {"births": 0, "merges": 0, "removals": 0, "updates": 0}
    stage = {k: 0.0 for k in ("observe", "ring", "footprints", "merge", "detect", "finish")}
    work_max: dict[str, int] = {}
    for i in range(n_frames):
        t = T0 + i
        slot = t % L
        c = C[:, t] if C.shape[0] == A.shape[1] else np.abs(rng.standard_normal(A.shape[1]))
        r = rng.standard_normal(H * W).astype(np.float32)
        if hidden:  # neurons the model lacks: they stay in the residual (detection load)
            r += (Ah @ Ch[:, i]).astype(np.float32)
        y = (A @ c + b0 + r).astype(np.float32)
        residual[slot] = r
        residual_frame[slot] = t
        c_buffer[:, slot] = c
        view = slow_path.SlowPathInputs(
            t=t, A=A, W=Wring, b0=b0, g=gk, residual=residual, residual_frame=residual_frame,
            c_buffer=c_buffer,
        )  # fmt: skip
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        slow_path.observe_frame(slow, t, y, c.astype(np.float32), r, params)
        t_obs = time.perf_counter()
        upd = slow_path.slow_step(slow, view, params)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - cpu0)
        stage["observe"] += 1e3 * (t_obs - t0) / n_frames
        for k in ("ring", "footprints", "merge", "detect", "finish"):
            stage[k] += getattr(slow.work, "ms_" + k) / n_frames
        stats["candidates"] = stats.get("candidates", 0) + slow.work.candidates
        for key in ("hals", "ring_pixels", "candidates", "merge_checks"):
            work_max[key] = max(work_max.get(key, 0), getattr(slow.work, key))
        if upd is not None:
            stats["updates"] += 1
            if upd.w_stop > upd.w_start:
                Wring[upd.w_start : upd.w_stop] = upd.w_rows
            if upd.changes_footprints:
                keep = upd.survivors(A.shape[1])
                A = upd.apply_footprints(A)
                n_new = upd.new_footprints.shape[1]
                stats["births"] += n_new
                stats["merges"] += upd.merged_kept.size
                stats["removals"] += upd.removed.size
                if keep.size != C.shape[0] or n_new:
                    C = np.concatenate([C[keep], np.abs(rng.standard_normal((n_new, C.shape[1])))])
                    c_buffer = np.concatenate([c_buffer[keep], np.zeros((n_new, L), np.float32)])
                    gk = np.full((A.shape[1], 1), g, np.float32)
    ms = 1e3 * np.asarray(times)
    cpu_ms = 1e3 * np.asarray(cpu)
    return {
        "cpu_mean_ms": round(float(cpu_ms.mean()), 3),
        "cpu_median_ms": round(float(np.median(cpu_ms)), 3),
        "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 3),
        "cpu_max_ms": round(float(cpu_ms.max()), 3),
        "size": size, "neurons": K, "frames": n_frames, "init_s": round(t_init, 2),
        "mean_ms": round(float(ms.mean()), 3), "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
        "work_max": work_max, "stage_mean_ms": {k: round(v, 3) for k, v in stage.items()},
        **stats,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=0, help="unmodelled neurons in the residual")
    ap.add_argument("--set", nargs="*", default=[], help="stage.key=value overrides")
    args = ap.parse_args()
    dotted = {}
    for kv in args.set:
        k, v = kv.split("=")
        dotted[k] = json.loads(v)
    params = CNMFEParams().replace(**dotted) if dotted else CNMFEParams()
    run(64, 20, 50, args.seed, params, 2)  # numba warm-up (compiles cached kernels)
    res = run(args.size, args.neurons, args.frames, args.seed, params, args.hidden)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    res.update(commit=commit, nproc=os.cpu_count(), overrides=dotted)
    print(f"{'size':>6} {'K':>5} {'mean':>8} {'median':>8} {'p99':>8} {'max':>8}  (ms/frame)")
    print(
        f"{res['size']:>6} {res['neurons']:>5} {res['mean_ms']:>8.3f} {res['median_ms']:>8.3f} "
        f"{res['p99_ms']:>8.3f} {res['max_ms']:>8.3f}"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
