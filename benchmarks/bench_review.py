"""Review and export of a long session: time to open ``online-cnmfe view``, memory, export sizes.

Builds a synthetic results file with the real writer (the footprints are random blobs, the
traces random decays: what matters is the file's size and layout, not its science), by default
30 minutes at 20 Hz of 608 x 608 frames with 400 neurons (36,000 frames, 173 MB of traces), then
measures, each in a fresh subprocess (so the memory figure is that step's own):

- ``open``: the review window (``dashboard.review_app.ReviewApp``, offscreen Qt) from nothing to
  the first frame drawn, and one slider move; peak RSS;
- ``eager``: the old way in, ``read_results`` of the whole file, for comparison;
- ``finalise``: the quality metrics pass over every trace at the end of a session;
- the NWB and CSV exports' sizes against the results file.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_review.py            # 608², 30 min, 400 cells
    python benchmarks/bench_review.py --size 256 --minutes 5 --neurons 100 --keep /tmp/r.h5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_file(path: Path, size: int, minutes: float, neurons: int, rate: float) -> dict:
    from online_cnmfe.model.frame_result import FrameResult
    from online_cnmfe.params import CNMFEParams
    from online_cnmfe.results.writer import ResultsWriter

    rng = np.random.default_rng(0)
    dims, n_frames = (size, size), int(minutes * 60 * rate)
    rows, cols = np.mgrid[0:13, 0:13]
    blob = np.exp(-((rows - 6) ** 2 + (cols - 6) ** 2) / 8.0).astype(np.float32)
    data, indices, indptr = [], [], [0]
    for _ in range(neurons):
        r, c = rng.integers(0, size - 13, 2)
        pix = ((rows + r) * size + cols + c).ravel()
        keep = blob.ravel() > 0.05
        data.append(blob.ravel()[keep])
        indices.append(pix[keep])
        indptr.append(indptr[-1] + int(keep.sum()))
    A = scipy.sparse.csc_array(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)),
        shape=(size * size, neurons),
    )
    ids = np.arange(neurons, dtype=np.int64)
    c = np.zeros(neurons, np.float32)
    t0 = time.perf_counter()
    params = CNMFEParams().replace(**{"data.pixel_size_um": 1.0})
    with ResultsWriter(path, dims, params, rate, {"source": "bench_review"}) as w:
        w.set_footprints(A, ids, 1)
        w.set_background(np.full(dims, 1000.0, np.float32))
        img = rng.random(dims).astype(np.float32)
        w.set_images({"mean": img, "max": img, "corr": img, "pnr": img, "corr_pnr": img})
        for t in range(n_frames):
            c *= 0.9
            spikes = rng.random(neurons) < 0.01
            c[spikes] += 5.0
            s = spikes.astype(np.float32) * 5.0
            raw = c + rng.normal(0, 0.3, neurons).astype(np.float32)
            w.append_frame(
                FrameResult(t, ids, c.copy(), s, raw),
                {"frame_index": t, "seq": t, "daq_frame": None, "t_acq_ms": 1000.0 * t / rate,
                 "latency_ms": 2.0},
            )  # fmt: skip
        t_write = time.perf_counter() - t0
        t1 = time.perf_counter()
    t_close = time.perf_counter() - t1  # flush + finalise (quality metrics over every trace)
    return {"n_frames": n_frames, "write_s": t_write, "close_finalise_s": t_close,
            "file_mb": path.stat().st_size / 2**20}  # fmt: skip


def _child(step: str, path: str) -> None:
    """Run one step in this process and print its figures as JSON."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out: dict = {}
    if step == "open":
        from PySide6 import QtWidgets

        from dashboard.review_app import ReviewApp

        app = ReviewApp(path, window_s=30.0)
        app.window.show()
        QtWidgets.QApplication.processEvents()
        out["open_wall_s"] = time.perf_counter() - wall0
        out["open_cpu_s"] = time.process_time() - cpu0
        w1, c1 = time.perf_counter(), time.process_time()
        app.show(app.source.n_frames // 2)
        QtWidgets.QApplication.processEvents()
        out["move_wall_s"] = time.perf_counter() - w1
        out["move_cpu_s"] = time.process_time() - c1
    elif step == "baseline":
        from PySide6 import QtWidgets  # noqa: F401

        import dashboard.review_app  # noqa: F401
        from online_cnmfe.results.reader import read_results  # noqa: F401
    elif step == "eager":
        from online_cnmfe.results.reader import read_results

        read_results(path)
        out["read_wall_s"] = time.perf_counter() - wall0
        out["read_cpu_s"] = time.process_time() - cpu0
    out[f"{step}_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(step: str, path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, str(path)],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=608)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--neurons", type=int, default=400)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--keep", type=Path, help="write the results file here and keep it")
    p.add_argument("--no-csv", action="store_true", help="skip the CSV export (slow: text)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "long.h5"
        fig = make_file(path, args.size, args.minutes, args.neurons, args.rate)
        fig.update(run_child("open", path))
        fig.update(run_child("eager", path))
        fig.update(run_child("baseline", path))  # imports only: the floor of the RSS
        from online_cnmfe.results.export_csv import export_csv
        from online_cnmfe.results.export_nwb import export_nwb

        t0 = time.perf_counter()
        export_nwb(path, Path(tmp) / "s.nwb")
        fig["nwb_s"] = time.perf_counter() - t0
        fig["nwb_over_results"] = (Path(tmp) / "s.nwb").stat().st_size / path.stat().st_size
        if not args.no_csv:
            t0 = time.perf_counter()
            export_csv(path, Path(tmp) / "csv")
            fig["csv_s"] = time.perf_counter() - t0
            fig["csv_mb"] = sum(f.stat().st_size for f in (Path(tmp) / "csv").iterdir()) / 2**20
    fig.update(size=args.size, minutes=args.minutes, neurons=args.neurons, rate_hz=args.rate)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in fig.items()}))


if __name__ == "__main__":
    main()
