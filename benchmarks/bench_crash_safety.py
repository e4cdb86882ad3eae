"""Crash safety of the results file: SIGKILL at random instants of a session and of its close.

Each trial runs a real writer process (``tests/online_cnmfe/results/killable_writer.py``:
``--neurons`` neurons, ``--frames`` frames, a third of the neurons removed half-way so the
close realigns rows) and SIGKILLs it at a uniformly random instant, either after its first
flush (during the session) or after it announced ``close()`` (within 1.1 × the measured close
duration). The file is then read with ``read_results`` and every trace value is compared with
the one written. Reported: trials, unreadable or wrong files (target 0 of 50), the close's
duration and the file size.

Usage::

    python benchmarks/bench_crash_safety.py --trials 50 --frames 20000 --neurons 300
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.online_cnmfe.results.test_finalise import (  # noqa: E402
    _close_duration,
    check_session_file,
    kill_once,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = random.randrange(2**32) if args.seed is None else args.seed
    rng = random.Random(seed)
    writer_args = ["--frames", str(args.frames), "--neurons", str(args.neurons)]
    folder = Path(tempfile.mkdtemp(prefix="crash_safety_"))
    close_s = _close_duration(folder, writer_args)
    size_mb = (folder / "timing.h5").stat().st_size / 2**20
    failures, phases = [], {"session": 0, "close": 0}
    t0 = time.monotonic()
    for i in range(args.trials):
        phase = "session" if i % 2 == 0 else "close"
        delay = rng.uniform(0, 2.0) if phase == "session" else rng.uniform(0, 1.1 * close_s)
        path = folder / f"trial{i}.h5"
        flushed, last = kill_once(path, writer_args, phase, delay)
        phases[phase] += 1
        try:
            check_session_file(path, flushed, args.frames)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            failures.append({"trial": i, "phase": phase, "delay_s": delay, "error": str(exc)[:300]})
        for leftover in folder.glob(f"trial{i}.h5*"):
            leftover.unlink()
    print(
        json.dumps(
            {
                "trials": args.trials, "by_phase": phases, "unreadable_or_wrong": len(failures),
                "failures": failures, "close_s": round(close_s, 3), "file_mb": round(size_mb, 1),
                "frames": args.frames, "neurons": args.neurons, "seed": seed,
                "wall_s": round(time.monotonic() - t0, 1),
            },
            indent=1,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
