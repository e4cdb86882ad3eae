"""Which stage ate the time of the slow frames of a ``bench_e2e.py`` run.

Reads the run's ``frames-*.json`` (``--dump-frames``: each frame's engine arrival and the
subscriber's receipt of its traces) and the engine's ``spans-*.json`` (``--stage-trace``) from
the case's work directory and prints: per stage and thread, the calls' wall and CPU time;
how much longer the arrival→traces window of frames that overlapped the store thread's or the
slow path's work was; and, for each frame at or above the p99, every span longer than
``--min-ms`` around it (start relative to the frame's arrival; ``recv`` = publisher send →
engine receive).

Usage::

    python benchmarks/e2e_stages.py /tmp/run/608 [--min-ms 2] [--warmup 60]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def _load(d: Path) -> tuple[list, list]:
    frames = max(d.glob("frames-*.json"), key=lambda p: p.stat().st_mtime)
    spans = max(d.glob("spans-*.json"), key=lambda p: p.stat().st_size)  # the engine's
    return json.loads(frames.read_text())["traces"], json.loads(spans.read_text())


def stage_table(spans: list) -> list[str]:
    by = defaultdict(list)
    for label, thread, t0, t1, cpu, _, _ in spans:
        by[(label, thread)].append(((t1 - t0) / 1e6, cpu / 1e6))
    out = ["stage / thread: calls, wall p50 / p99 / max, CPU p50 / max (ms)"]
    for (label, thread), v in sorted(by.items(), key=lambda kv: -max(w for w, _ in kv[1])):
        w, c = np.array(v).T
        out.append(
            f"  {label:18s} {thread[:14]:14s} {len(v):6d}  {np.median(w):7.2f} "
            f"{np.percentile(w, 99):7.2f} {w.max():7.2f}   {np.median(c):6.2f} {c.max():7.2f}"
        )
    return out


def overlaps(spans: list, warmup_frame: int) -> list[str]:
    """Frame start → traces sent, for frames whose window overlapped other threads' work."""
    start = {s[5]: s[2] for s in spans if s[0] == "_process" and s[5] >= warmup_frame}
    sent = {s[5]: s[3] for s in spans if s[0] == "_send_traces"}
    others = {
        "store": [s for s in spans if s[0] == "store_apply"
                  and s[6] not in ("prime_snapshot", "checkpoint")],
        "slow path": [s for s in spans if s[0] == "slow_job"],
    }  # fmt: skip
    out = []
    for name, work in others.items():
        hit, miss = [], []
        for f, a in start.items():
            b = sent.get(f)
            if b is None:
                continue
            ov = sum(max(0, min(b, s[3]) - max(a, s[2])) for s in work) / 1e6
            (hit if ov > 1.0 else miss).append((b - a) / 1e6)
        if hit:
            out.append(
                f"frame start → traces sent: {len(hit)} frames overlapping the {name} (> 1 ms) "
                f"{np.mean(hit):.2f} ms mean vs {np.mean(miss):.2f} ms for the other {len(miss)}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="the case's directory (e.g. WORKDIR/608)")
    ap.add_argument("--min-ms", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=60, help="first frames left out (as the bench)")
    args = ap.parse_args()
    traces, spans = _load(args.workdir)
    traces = traces[args.warmup :]
    lat = np.array([(r - a) / 1e6 for _, a, r in traces])
    p99 = np.percentile(lat, 99)
    print(f"arrival → traces: {lat.size} frames, p50 {np.median(lat):.2f} / p99 {p99:.2f} / "
          f"max {lat.max():.2f} ms")  # fmt: skip
    print("\n".join(stage_table(spans) + overlaps(spans, traces[0][0] if traces else 0)))
    ordered = sorted(spans, key=lambda s: s[2])
    for f, a, r in (t for t, x in zip(traces, lat) if x >= p99):
        print(f"\nframe {f}: {(r - a) / 1e6:.1f} ms arrival → traces")
        for label, thread, t0, t1, cpu, frame, detail in ordered:
            if t1 < a - 60e6 or t0 > r or label == "queue_get":
                continue
            if (t1 - t0) / 1e6 >= args.min_ms or label.startswith("gc2"):
                at, dur = (t0 - a) / 1e6, (t1 - t0) / 1e6
                print(f"   {label:18s} {thread[:14]:14s} f{frame:<6} {at:+8.2f} "
                      f"dur {dur:7.2f} cpu {cpu / 1e6:6.2f} {detail or ''}")  # fmt: skip


if __name__ == "__main__":
    main()
