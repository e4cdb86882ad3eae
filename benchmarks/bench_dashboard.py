"""Dashboard display rate, and proof that a slow or frozen dashboard never slows the publisher.

A synthetic engine (tests/dashboard/fake_engine.py: every results topic, real protocol
messages) publishes at ``--fps`` with ``--neurons`` neurons on a ``--size`` image (all six
image layers at 10 Hz). Three phases, each ``--seconds`` long, measure the publisher's
``send_multipart`` time per frame:

1. no subscriber;
2. the dashboard (``online-cnmfe dashboard``, offscreen, a separate process) subscribed: its
   display updates/s, paints/s and refresh time are read from its log;
3. the same dashboard frozen with SIGSTOP (a GUI that hangs): the PUB socket drops for it.

Usage: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_dashboard.py --seconds 10``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dashboard.fake_engine import SyntheticSession  # noqa: E402


def publish_phase(sock, session, seconds, fps, frame0, t0_ns) -> tuple[np.ndarray, int]:
    """Publish for ``seconds``; return per-frame send times (ms) and the next frame index."""
    from online_cnmfe.results import stream as rs

    send_ms = []
    start = time.monotonic()
    frame, last_status, last_img, last_fp = frame0, -1.0, -1.0, -1.0
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        msgs = []
        if now - last_status >= 1.0:
            msgs += [rs.encode_ready(session.session_id, os.getpid()), session.status(frame, fps)]
            last_status = now
        if now - last_fp >= 2.0:
            msgs.append(session.footprints_message(frame))
            last_fp = now
        msgs += session.step(frame, fps, t0_ns)
        if now - last_img >= 0.1:
            msgs += session.images(frame)
            last_img = now
        t = time.perf_counter()
        for m in msgs:
            sock.send_multipart(m, copy=False)
        send_ms.append(1000 * (time.perf_counter() - t))
        frame += 1
        delay = start + (frame - frame0) / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return np.asarray(send_ms), frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256))
    args = ap.parse_args()

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 2000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    address = f"tcp://127.0.0.1:{port}"
    session = SyntheticSession(
        dims=tuple(args.size), n_neurons=args.neurons, n_born=10, born_every=150, seed=0
    )
    t0 = time.monotonic_ns()
    rows = {}
    send, frame = publish_phase(sock, session, args.seconds, args.fps, 0, t0)
    rows["no subscriber"] = send

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    dash = subprocess.Popen(
        [sys.executable, "-m", "online_cnmfe", "dashboard", "--results", address,
         "--quit-after", str(3 * args.seconds + 30)],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(dash.stderr), daemon=True)
    reader.start()
    time.sleep(3.0)  # Qt start-up
    send, frame = publish_phase(sock, session, args.seconds, args.fps, frame, t0)
    rows["dashboard live"] = send
    dash.send_signal(signal.SIGTERM)  # logs its display figures
    dash.wait(timeout=60)
    reader.join(timeout=5)
    text = "".join(log)
    m = re.search(r"display: ([\d.]+) updates/s, ([\d.]+) paints/s, refresh p50 ([\d.]+) ms "
                  r"p99 ([\d.]+) ms, CPU ([\d.]+) %", text)  # fmt: skip
    keys = ("updates_per_s", "paints_per_s", "refresh_p50_ms", "refresh_p99_ms", "cpu_percent")
    display = dict(zip(keys, map(float, m.groups()), strict=True)) if m else {}

    frozen = subprocess.Popen(
        [sys.executable, "-m", "online_cnmfe", "dashboard", "--results", address,
         "--quit-after", str(args.seconds + 60)],
        cwd=REPO, env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(3.0)
    frozen.send_signal(signal.SIGSTOP)
    send, frame = publish_phase(sock, session, args.seconds, args.fps, frame, t0)
    rows["dashboard frozen (SIGSTOP)"] = send
    frozen.send_signal(signal.SIGCONT)
    frozen.kill()
    frozen.wait()
    sock.close(linger=0)

    print(f"publisher: {args.size[0]}x{args.size[1]}, {args.neurons} neurons, {args.fps:g} Hz, "
          f"6 image layers at 10 Hz; {args.seconds:g} s per phase")  # fmt: skip
    print(f"{'phase':30s} {'frames':>7s} {'send p50 ms':>12s} {'p99':>8s} {'max':>8s}")
    out = {"display": display, "publisher": {}}
    for name, ms in rows.items():
        p50, p99 = np.percentile(ms, [50, 99])
        print(f"{name:30s} {ms.size:7d} {p50:12.3f} {p99:8.3f} {ms.max():8.3f}")
        out["publisher"][name] = {"p50": p50, "p99": p99, "max": float(ms.max()), "n": ms.size}
    print("dashboard display (live phase):", display or "not found in its log")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
