"""Engine frame rate and memory under a subscription flood and a rule bomb, vs undisturbed.

Three real processes per case: ``online-cnmfe acquire simulate`` at max rate (lossless,
``engine.queue_full=wait``, so the frame rate is the engine's), ``online-cnmfe run`` with a
trigger config (control socket on, its token file in the work folder) and this script, which
counts ``traces`` messages and samples the engine's RSS. Once the engine runs, an attack
starts in a thread of this script and lasts the whole measured window:

- ``none``: nothing (the reference);
- ``flood``: results-socket subscriptions, 300,000 distinct ones and 4,000 of 10 kB (40 MB),
  repeated;
- ``bomb``: 150 rules of 100,000 neuron ids each sent to the control socket WITH the token
  (the worst case: an authorised but broken client), then small valid rules as fast as the
  socket answers.

Reported per case: online frames/s (traces received / time; wall clock, so it moves with the
machine's load), the engine's CPU time per frame (all its threads; robust to load), engine RSS
at the start of the window and its maximum, and what reached the results file and the log.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_flood.py --size 128 --frames 4000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from online_cnmfe.results.stream import decode_result  # noqa: E402
from online_cnmfe.triggers.client import TriggerControl  # noqa: E402

TRIGGERS = """
[triggers]
endpoint = "ipc://{d}/trig"
control_endpoint = "ipc://{d}/ctl"
control_token_file = "{d}/token"

[[triggers.rules]]
name = "any"
region = {{ shape = "rectangle", rows = [0, 1000], cols = [0, 1000] }}
signal = "zscore"
condition = "threshold"
threshold = 4.0
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_cnmfe", *args]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _flood(endpoint: str, stop: threading.Event) -> None:
    ctx = zmq.Context()
    while not stop.is_set():
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        for i in range(300_000):
            sock.setsockopt(zmq.SUBSCRIBE, b"topic-%08d" % i)
        for i in range(4000):
            sock.setsockopt(zmq.SUBSCRIBE, b"x%05d" % i + b"y" * 10_000)
        sock.close()
    ctx.term()


def _bomb(endpoint: str, token_file: Path, stop: threading.Event, out: dict) -> None:
    refused = accepted = timeouts = 0
    i = 0
    while not stop.is_set():
        with TriggerControl(endpoint, timeout_s=0.2, token_file=token_file) as ctl:
            neurons = list(range(100_000)) if i < 150 else [i % 5000]
            rule = {"name": f"bomb{i}", "neurons": neurons, "signal": "spike",
                    "condition": "threshold", "threshold": 1.0}  # fmt: skip
            try:
                ctl.add(rule)
                accepted += 1
            except TimeoutError:
                timeouts += 1  # an oversized request: the engine drops the connection
            except Exception:  # noqa: BLE001 - every refusal counts
                refused += 1
        i += 1
    out.update(accepted=accepted, refused=refused, timeouts=timeouts)


def run_case(attack: str, args, work: Path) -> dict:
    d = work / attack
    d.mkdir()
    (d / "triggers.toml").write_text(TRIGGERS.format(d=d))
    frames_ep, results_ep = f"ipc://{d}/frames", f"ipc://{d}/results"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    settings = [f"init.init_frames={args.init_frames}", "engine.queue_full=wait",
                "engine.queue_frames=32", "engine.rcvhwm_frames=16"]  # fmt: skip
    cmd = _cli("run", "--frames", frames_ep, "--results", results_ep, "--out", str(d / "s.h5"),
               "--triggers", str(d / "triggers.toml"), "--idle-exit", "15")  # fmt: skip
    cmd += [a for s in settings for a in ("--set", s)]
    log = open(d / "log.txt", "w")  # noqa: SIM115
    engine = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    for topic in (b"ready", b"traces", b"eos"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(results_ep)
    stop, bomb_out = threading.Event(), {}
    attacker = None
    acquire = None
    n, t_first, t_last, rss, next_rss, cpu, cpu_n = 0, None, None, [], 0.0, [], 0
    try:
        while not (sub.poll(200) and decode_result(sub.recv_multipart()).topic == "ready"):
            if engine.poll() is not None:
                raise RuntimeError(f"engine exited early, see {d / 'log.txt'}")
        acquire = subprocess.Popen(
            _cli("acquire", "simulate", "--size", str(args.size), str(args.size), "--frames",
                 str(args.frames), "--neurons", str(args.neurons), "--endpoint", frames_ep,
                 "--rate", "max", "--wait-for-subscriber", "60", "--sndhwm", "16", "--quiet"),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        while True:
            if sub.poll(1000):
                msg = decode_result(sub.recv_multipart())
                if msg.topic == "eos":
                    break
                if msg.topic != "traces" or msg.header["frame_index"] < args.init_frames + 100:
                    continue
                if t_first is None:  # running: start the attack and the window
                    t_first = time.monotonic()
                    rss.append(_rss_mb(engine.pid))
                    cpu.append(_cpu_s(engine.pid))
                    if attack == "flood":
                        attacker = threading.Thread(target=_flood, args=(results_ep, stop))
                    elif attack == "bomb":
                        attacker = threading.Thread(
                            target=_bomb, args=(f"ipc://{d}/ctl", d / "token", stop, bomb_out)
                        )
                    if attacker is not None:
                        attacker.start()
                n += 1
                t_last = time.monotonic()
                if t_last >= next_rss:
                    rss.append(_rss_mb(engine.pid))
                    cpu[1:] = [_cpu_s(engine.pid)]
                    cpu_n = n
                    next_rss = t_last + 0.5
            elif engine.poll() is not None:
                break
    finally:
        stop.set()
        if attacker is not None:
            attacker.join(timeout=120)
        for p in (acquire, engine):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        sub.close()
        ctx.term()
        log.close()
    rules = None
    if (d / "s.h5").exists():
        from online_cnmfe.results.reader import read_trigger_log

        trig = read_trigger_log(d / "s.h5") or {}
        rules = len(trig.get("rule_log", ()))
    return {
        "attack": attack, "frames_per_s": round(n / (t_last - t_first), 1),
        "engine_cpu_ms_per_frame": round(1e3 * (cpu[-1] - cpu[0]) / max(cpu_n, 1), 3),
        "rss_mb_start": round(rss[0], 1), "rss_mb_max": round(max(rss), 1),
        "rss_mb_last": round(rss[-1], 1),
        "frames_measured": n, "rule_log_entries": rules, **bomb_out,
        "results_file_mb": round((d / "s.h5").stat().st_size / 2**20, 2),
        "log_kb": round((d / "log.txt").stat().st_size / 1024, 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--neurons", type=int, default=60)
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--init-frames", type=int, default=200)
    p.add_argument("--attacks", nargs="+", default=["none", "flood", "bomb"])
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the cases")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    out = []
    for r in range(args.repeats):
        for attack in args.attacks:
            (work / str(r)).mkdir(exist_ok=True)
            out.append({"repeat": r, **run_case(attack, args, work / str(r))})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
