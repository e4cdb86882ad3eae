"""Closed-loop trigger benchmark: evaluation cost, frame-to-trigger latency, detection accuracy.

Modes (``--modes``, default all four):

- ``eval``: ``TriggerEngine.on_frame`` alone on synthetic 300-neuron frames with a typical rule set
  (a single-neuron threshold, a 300-neuron z-score region rule that fires on most frames, a
  50-neuron k-of-n, a 20-neuron ensemble): per-frame cost p50/p99/max in µs.
- ``pipeline``: everything but the model, across processes. This script publishes 256×256
  uint16 frames. A child process runs the engine's structure: a receive thread, a queue, and a
  model thread that makes a synthetic 300-neuron FrameResult, evaluates the rules and sends on
  the trigger PUB socket. Latency = this process's ``monotonic_ns`` at trigger receipt − the
  child's ``t_recv_ns`` at frame arrival (same host, same clock).
- ``engine``: the real thing. ``online-cnmfe acquire simulate`` (256×256, 300 neurons) →
  ``online-cnmfe run`` with a ``[triggers]`` config → this script on the trigger socket. Same
  latency definition, while detection and footprint updates run in the model. Frames are paced
  (``--rate-hz``) so the latency is not queueing.
- ``accuracy``: the model as a library on a simulated movie. There is one region rule per true
  neuron (a circle of radius diameter/2 around its true centre), for each candidate signal.
  Hit rate = fraction of true spikes with PNR >= 5 (spike amplitude / pixel noise) that get a
  trigger within ``--tol-frames`` frames. A false alarm is a trigger with no true spike of that
  neuron within the ``--tol-frames`` frames before it.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_triggers.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_triggers.py --modes engine
    ... --realtime   # engine-side processes under SCHED_FIFO (chrt -f 10), as a rig would run

The machine is shared: tail latencies mostly measure CPU contention. The load average is printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from acquisition.protocol import FrameMessage, decode_frame, encode_frame  # noqa: E402
from online_cnmfe.model.frame_result import FrameResult  # noqa: E402
from online_cnmfe.triggers import TriggerEngine, parse_rule  # noqa: E402
from online_cnmfe.triggers.client import TriggerListener  # noqa: E402

K = 300
EVERY_FRAME = {  # 300 neurons, z-scored raw crossing 0: some neuron crosses on most frames
    "name": "all_zscore", "signal": "zscore", "condition": "threshold",
    "threshold": 0.0, "release": 0.0,
}  # fmt: skip


def typical_rules(region_all: dict) -> list[dict]:
    return [
        {**EVERY_FRAME, "region": region_all},
        {"name": "one", "neurons": [7], "signal": "spike", "condition": "threshold",
         "threshold": 0.5, "refractory_frames": 5},
        {"name": "k50", "neurons": list(range(50)), "signal": "spike", "condition": "k_of_n",
         "threshold": 0.5, "k": 5, "window_frames": 3},
        {"name": "ens20", "neurons": list(range(100, 120)), "signal": "calcium",
         "condition": "ensemble", "threshold": 30.0, "release": 20.0},
    ]  # fmt: skip


def pct(x) -> dict:
    x = np.asarray(x, float)
    if not len(x):
        return {"n": 0}
    return {
        "n": int(len(x)),
        "p50": float(np.percentile(x, 50)),
        "p99": float(np.percentile(x, 99)),
        "max": float(x.max()),
    }


class SyntheticTraces:
    """Random 300-neuron frames: noisy raw traces with sparse spikes (cheap per frame)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.noise = rng.normal(0, 1, (4096, K)).astype(np.float32)
        self.spikes = ((rng.random((4096, K)) < 0.02) * 3.0).astype(np.float32)
        self.ids = np.arange(K, dtype=np.int64)

    def frame(self, t: int) -> FrameResult:
        i = t % 4096
        s = self.spikes[i]
        return FrameResult(t, self.ids, s * 2 + 1, s, s * 2 + self.noise[i])


def centroids_grid(h: int, w: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(K)))
    r, c = np.divmod(np.arange(K), side)
    return np.stack([(r + 0.5) * h / side, (c + 0.5) * w / side], 1)


# ---- eval -------------------------------------------------------------------------------------
def bench_eval(n_frames: int) -> dict:
    region = {"shape": "rectangle", "rows": [0, 256], "cols": [0, 256]}
    eng = TriggerEngine([parse_rule(r) for r in typical_rules(region)], max_frame_age_ms=1e9)
    eng.update_centroids(np.arange(K), centroids_grid(256, 256))
    gen = SyntheticTraces()
    frames = [gen.frame(t) for t in range(n_frames)]
    for f in frames[:200]:  # warm-up (z-score statistics, bindings)
        eng.on_frame(f, {})
    cost = np.empty(n_frames - 200)
    for i, f in enumerate(frames[200:]):
        t0 = time.perf_counter_ns()
        eng.on_frame(f, {"t_recv_ns": t0})
        cost[i] = (time.perf_counter_ns() - t0) / 1e3
    n_fired = len(eng.fired)
    return {"cost_us": pct(cost), "fired_per_frame": n_fired / n_frames}


# ---- pipeline (no model) ----------------------------------------------------------------------
def _mini_engine(frames_ep: str, trig_ep: str, ready, stop, realtime: bool) -> None:
    """Receive thread → queue → model thread (synthetic traces → rules → trigger PUB)."""
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    ctx = zmq.Context()
    q: queue.Queue = queue.Queue(maxsize=256)

    def receive() -> None:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.connect(frames_ep)
        while not stop.is_set():
            if sub.poll(100):
                parts = sub.recv_multipart(copy=False)
                q.put((decode_frame(parts), time.monotonic_ns()))
        sub.close()

    region = {"shape": "rectangle", "rows": [0, 256], "cols": [0, 256]}
    cfg = {"endpoint": trig_ep, "control_endpoint": "", "rules": typical_rules(region)}
    from online_cnmfe.triggers import parse_trigger_config

    eng = TriggerEngine.from_config(
        parse_trigger_config(cfg), max_frame_age_ms=1e9, frame_rate_hz=50, context=ctx
    )
    eng.update_centroids(np.arange(K), centroids_grid(256, 256))
    gen = SyntheticTraces()
    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    ready.set()
    while not stop.is_set():
        try:
            msg, t_recv = q.get(timeout=0.1)
        except queue.Empty:
            continue
        meta = {"frame_index": msg.frame_index, "seq": msg.seq, "t_acq_ms": msg.t_acq_ms,
                "t_recv_ns": t_recv}  # fmt: skip
        eng.on_frame(gen.frame(msg.frame_index), meta)
    receiver.join(2)
    eng.close()
    ctx.destroy(linger=0)


def bench_pipeline(n_frames: int, rate_hz: float, realtime: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-trig-"))
    frames_ep, trig_ep = f"ipc://{tmp}/frames", f"ipc://{tmp}/trig"
    mpc = mp.get_context("spawn")
    ready, stop = mpc.Event(), mpc.Event()
    child = mpc.Process(target=_mini_engine, args=(frames_ep, trig_ep, ready, stop, realtime))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(frames_ep)
    child.start()
    ready.wait(30)
    listener = TriggerListener(trig_ep, context=ctx)
    time.sleep(1.0)  # both subscriptions propagate
    pixels = np.random.default_rng(0).integers(0, 4000, (256, 256), dtype=np.uint16)
    lat, age, period = [], [], 1.0 / rate_hz
    t_next = time.monotonic()
    for t in range(n_frames):
        msg = FrameMessage(t, t, None, t * 1000 * period, time.monotonic_ns(), "bench",
                           "synthetic", pixels)  # fmt: skip
        pub.send_multipart(encode_frame(msg), copy=False)
        t_next += period
        while (left := t_next - time.monotonic()) > 0:
            trig = listener.receive(timeout_s=left)
            if trig is not None:
                lat.append((listener.last_recv_ns - trig.t_recv_ns) / 1e6)
                age.append(trig.age_ms)
    while (trig := listener.receive(timeout_s=0.5)) is not None:
        lat.append((listener.last_recv_ns - trig.t_recv_ns) / 1e6)
        age.append(trig.age_ms)
    stop.set()
    child.join(10)
    listener.close()
    pub.close()
    ctx.term()
    return {"latency_ms": pct(lat), "age_at_firing_ms": pct(age), "n_frames": n_frames}


# ---- engine (real model) ----------------------------------------------------------------------
ENGINE_TOML = """
[data]
frame_rate_hz = {rate}

[init]
init_frames = {init}

[engine]
max_frame_age_ms = 50.0
checkpoint_period_s = 0

[triggers]
endpoint = "{trig}"
control_endpoint = ""

[[triggers.rules]]
name = "all_zscore"
region = {{ shape = "rectangle", rows = [0, {size}], cols = [0, {size}] }}
signal = "zscore"
condition = "threshold"
threshold = 0.0
release = 0.0

[[triggers.rules]]
name = "zscore4"
region = {{ shape = "rectangle", rows = [0, {size}], cols = [0, {size}] }}
signal = "zscore"
condition = "threshold"
threshold = 4.0
release = 1.0
"""


def bench_engine(
    n_frames: int, rate_hz: float, size: int, neurons: int, init: int, realtime: bool
) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-trig-engine-"))
    frames_ep, results_ep, trig_ep = (f"ipc://{tmp}/{n}" for n in ("frames", "results", "trig"))
    cfg = tmp / "engine.toml"
    cfg.write_text(ENGINE_TOML.format(rate=rate_hz, init=init, trig=trig_ep, size=size))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp / "log.txt", "a")  # noqa: SIM115
    cli = [sys.executable, "-m", "online_cnmfe"]
    rt = ["chrt", "-f", "10"] if realtime else []
    engine = subprocess.Popen(
        [*rt, *cli, "run", "--frames", frames_ep, "--results", results_ep, "--out",
         str(tmp / "s.h5"), "--config", str(cfg)], env=env, stdout=log, stderr=log,
    )  # fmt: skip
    ctx = zmq.Context()
    status_sub = ctx.socket(zmq.SUB)
    status_sub.setsockopt(zmq.LINGER, 0)
    status_sub.setsockopt(zmq.SUBSCRIBE, b"status")
    status_sub.connect(results_ep)
    listener = TriggerListener(trig_ep, context=ctx)
    time.sleep(2.0)
    acquire = subprocess.Popen(
        [*cli, "acquire", "simulate", "--size", str(size), str(size), "--neurons", str(neurons),
         "--frames", str(n_frames + init), "--rate", str(rate_hz), "--endpoint", frames_ep,
         "--wait-for-subscriber", "60", "--quiet"], env=env, stdout=log, stderr=log,
    )  # fmt: skip
    lat, age, status = [], [], {}
    while engine.poll() is None:
        trig = listener.receive(timeout_s=0.2)
        if trig is not None:
            lat.append((listener.last_recv_ns - trig.t_recv_ns) / 1e6)
            age.append(trig.age_ms)
        while status_sub.poll(0):
            from online_cnmfe.results.stream import decode_result

            status = decode_result(status_sub.recv_multipart()).header
    acquire.wait(30)
    listener.close()
    status_sub.close()
    ctx.term()
    return {
        "latency_ms": pct(lat),
        "age_at_firing_ms": pct(age),
        "engine_exit": engine.returncode,
        "frames_processed": status.get("n_frames_processed"),
        "engine_latency_ms_p99": status.get("latency_ms_p99"),
        "n_neurons": status.get("n_neurons"),
        "triggers": status.get("triggers"),
        "log": str(tmp / "log.txt"),
    }


# ---- accuracy ---------------------------------------------------------------------------------
def bench_accuracy(size: int, neurons: int, n_frames: int, init: int, tol: int, seed: int):
    from acquisition.simulator import MiniscopeSimulator, SimulationParams
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.params import CNMFEParams
    from online_cnmfe.results import stream as rs

    sp = SimulationParams(height=size, width=size, n_frames=n_frames, n_neurons=neurons, seed=seed)
    sim = MiniscopeSimulator(sp)
    frames = sim.frames(0, n_frames)
    spikes = sim.spikes(0, n_frames) / sp.noise_sigma  # spike PNR
    truth = sim.truth
    params = CNMFEParams.from_dict({"init": {"init_frames": init}})
    model = OnlineCNMFE(params)
    model.initialize(frames[:init])
    signals = {"zscore4": ("zscore", 4.0, 1.0), "rise4": ("rise", 4.0, 1.0),
               "rise5": ("rise", 5.0, 1.0), "spike": ("spike", 1e-3, None)}  # fmt: skip
    rules = []
    for k in range(neurons):
        centre = [float(v) for v in truth.centres[k]]
        region = {"shape": "circle", "center": centre, "radius": sp.neuron_diameter_px / 2}
        for name, (sig, thr, rel) in signals.items():
            r = {"name": f"{name}_{k}", "region": region, "signal": sig,
                 "condition": "threshold", "threshold": thr}  # fmt: skip
            if rel is not None:
                r["release"] = rel
            rules.append(parse_rule(r))

    def source():
        return model.neuron_ids, rs.centroids(model.footprints, model.dims)

    eng = TriggerEngine(rules, max_frame_age_ms=1e9, frame_rate_hz=sp.frame_rate_hz,
                        centroid_source=source)  # fmt: skip
    eng.update_centroids(*source())
    total_ms, slow_ms, eval_us = [], [], []
    for t in range(init, n_frames):
        result = model.process_frame(frames[t])
        t0 = time.perf_counter_ns()
        eng.on_frame(result, {"frame_index": t})
        eval_us.append((time.perf_counter_ns() - t0) / 1e3)
        tm = result.timings_ms
        total_ms.append(tm.get("total", np.nan))
        slow_ms.append(sum(tm.get(k, 0.0) for k in ("slow_wait", "apply_update", "slow_submit")))
    out = {}
    minutes = (n_frames - init) / sp.frame_rate_hz / 60
    state = {r["name"]: r["state"] for r in eng.list_rules()}
    found = [k for k in range(neurons) if state[f"zscore4_{k}"]["active"]]
    for name in signals:
        hits = n_big = false = n_trig = hits_found = n_found = 0
        for k in range(neurons):
            fired = np.array([r.frame_index for r in eng.fired if r.rule == f"{name}_{k}"], int)
            s = spikes[k]
            big = [t for t in np.nonzero(s >= 5)[0] if t >= init + 20]
            n_big += len(big)
            hit = sum(bool(np.any((fired >= t) & (fired <= t + tol))) for t in big)
            hits += hit
            if k in found:
                hits_found, n_found = hits_found + hit, n_found + len(big)
            any_spike = np.nonzero(s > 0)[0]
            for f in fired:
                n_trig += 1
                false += not np.any((any_spike <= f) & (any_spike >= f - tol))
        out[name] = {
            "hit_rate_pnr5": hits / max(n_big, 1), "n_spikes_pnr5": n_big, "n_triggers": n_trig,
            "false_alarms": false, "false_per_neuron_min": false / neurons / minutes,
            "hit_rate_pnr5_found": hits_found / max(n_found, 1),
        }  # fmt: skip
    out["n_true_neurons_found"] = len(found)
    out["n_model_neurons"] = int(len(model.neuron_ids))
    # the model runs its slow path inside process_frame, i.e. before the rules see the traces
    out["model_total_ms"], out["model_slow_path_ms"] = pct(total_ms), pct(slow_ms)
    out["model_before_slow_path_ms"] = pct(np.subtract(total_ms, slow_ms))
    out["rules_eval_us"] = pct(eval_us)
    out["n_rules"] = len(rules)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["eval", "pipeline", "engine", "accuracy"])
    p.add_argument("--frames", type=int, default=10000, help="frames (latency modes)")
    p.add_argument("--rate-hz", type=float, default=30.0, help="frame rate (latency modes)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--init-frames", type=int, default=300)
    p.add_argument("--acc-size", type=int, default=128, help="accuracy movie size")
    p.add_argument("--acc-neurons", type=int, default=40)
    p.add_argument("--acc-frames", type=int, default=2000)
    p.add_argument("--tol-frames", type=int, default=2)
    p.add_argument("--realtime", action="store_true", help="engine side under SCHED_FIFO")
    args = p.parse_args()
    results: dict = {"loadavg_before": os.getloadavg(), "realtime": args.realtime}
    if args.realtime:  # this process is the trigger client (and runs the eval mode)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    if "eval" in args.modes:
        results["eval"] = bench_eval(args.frames)
        c, fpf = results["eval"]["cost_us"], results["eval"]["fired_per_frame"]
        print(f"eval  (4 rules, {K} neurons): p50 {c['p50']:.1f} µs  p99 {c['p99']:.1f} µs  "
              f"max {c['max']:.1f} µs  fired/frame {fpf:.2f}")  # fmt: skip
    if "pipeline" in args.modes:
        results["pipeline"] = r = bench_pipeline(args.frames, args.rate_hz, args.realtime)
        lat = r["latency_ms"]
        print(f"pipeline (no model) arrival→client: n {lat['n']}  p50 {lat['p50']:.3f}  "
              f"p99 {lat['p99']:.3f}  max {lat['max']:.3f} ms")  # fmt: skip
    if "engine" in args.modes:
        results["engine"] = r = bench_engine(
            args.frames, args.rate_hz, args.size, args.neurons, args.init_frames, args.realtime
        )
        lat = r["latency_ms"]
        print(f"engine arrival→client: {json.dumps(lat)}  frames {r['frames_processed']}  "
              f"neurons {r['n_neurons']}  exit {r['engine_exit']}")  # fmt: skip
    if "accuracy" in args.modes:
        results["accuracy"] = r = bench_accuracy(
            args.acc_size, args.acc_neurons, args.acc_frames, args.init_frames,
            args.tol_frames, seed=1,
        )  # fmt: skip
        for name, v in r.items():
            print(f"accuracy {name}: {v}")
    results["loadavg_after"] = os.getloadavg()
    print(f"load average before {results['loadavg_before']} after {results['loadavg_after']}")
    print(json.dumps({"bench": "triggers", **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
