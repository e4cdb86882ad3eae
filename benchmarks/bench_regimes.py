"""Held-out regime bench: online vs batch accuracy and cost on movies from an independent
generator (benchmarks/heldout), one movie per regime.

For each regime: generate the movie (cached under --cache, keyed by its parameters), run

- ONLINE: ``python -m online_cnmfe process MOVIE --set <regime's user overrides>`` with the
  default initialisation (``init.init_frames``) and everything after it online;
- BATCH: the same command with ``--init-frames T-1`` (the initial batch fit on every frame but
  the last: ``process`` needs at least one online frame). Its memory grows with the frames
  (~32 bytes per pixel-frame measured at 256² x 2000: 4.2 GB), so the fit is capped at
  ``--batch-max-gb`` (default 8 GB): then the batch fit uses the first N frames, the rest
  runs online, and the report says so (``batch_init_frames``);

then score both with ``online_cnmfe.evaluation`` (footprints matched as the evaluator does;
the online run is also scored on the online frames only), and report per regime: F1,
recall, precision, recall per PNR bin (< 5, 5-10, >= 10), median trace correlation, the
number of components, late-born recall and detection delay, the online-minus-batch F1 gap,
per-frame time (the results file's ``frames/latency_ms`` over the online frames) and the
wall/CPU time and peak RSS of each run. Prints a markdown table; ``--json OUT`` writes every
number.

Examples::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_regimes.py --quick            # smoke, ~10 min
    PYTHONPATH=. .venv/bin/python benchmarks/bench_regimes.py --json bench.json  # all but heavy
    PYTHONPATH=. .venv/bin/python benchmarks/bench_regimes.py --regimes baseline,low_pnr \\
        --set detection.false_seeds_per_fov=10                      # try a parameter change
    PYTHONPATH=. .venv/bin/python benchmarks/bench_regimes.py --regimes long_20min --skip-batch

Child runs get ``OPENBLAS_NUM_THREADS=1`` unless it is set. Timings are only meaningful with
``--jobs 1`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.heldout.generator import GENERATOR_VERSION, write_movie  # noqa: E402
from benchmarks.heldout.regimes import (  # noqa: E402
    REGIMES,
    default_selection,
    regime_params,
    user_overrides,
)
from online_cnmfe.evaluation import match_footprints, read_result, read_truth  # noqa: E402
from online_cnmfe.evaluation.metrics import EvaluationParams, evaluate  # noqa: E402

logger = logging.getLogger("bench_regimes")

BYTES_PER_PIXEL_FRAME = 32.0  # peak RSS of the batch fit, measured at 256² x 2000 frames
DEFAULT_INIT_FRAMES = 300  # init.init_frames of the code under test (read from it when we can)


# ---- movies --------------------------------------------------------------------------------
def movie_path(cache: Path, name: str, quick: bool) -> tuple[Path, object]:
    params = regime_params(name, quick=quick)
    key = hashlib.sha1(f"{GENERATOR_VERSION}:{params.to_json()}".encode()).hexdigest()[:10]
    return cache / f"{name}{'-quick' if quick else ''}-{key}.h5", params


def ensure_movie(path: Path, params) -> float:
    """Generate the movie unless cached; returns the generation time (0 when cached)."""
    if path.exists():
        logger.info("movie %s (cached)", path.name)
        return 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "generating %s (%dx%d x %d frames)", path.name, params.height, params.width, params.n_frames
    )
    return write_movie(path, params)["seconds"]


# ---- runs ----------------------------------------------------------------------------------
def run_process(repo: Path, movie: Path, out: Path, sets: list[str], init_frames, log_path):
    """Run ``online_cnmfe process`` in a child; wall time, CPU time and peak RSS of the child."""
    cmd = [
        sys.executable,
        "-m",
        "online_cnmfe",
        "process",
        str(movie),
        "--out",
        str(out),
        "--quiet",
    ]
    for s in sets:
        cmd += ["--set", s]
    if init_frames is not None:
        cmd += ["--init-frames", str(init_frames)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    text = Path(log_path).read_text(errors="replace")
    init = re.search(r"initialised (\d+) neurons on (\d+) frames in ([\d.]+) s", text)
    info = {
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "init_neurons": int(init.group(1)) if init else None,
        "init_frames": int(init.group(2)) if init else init_frames,
        "init_s": float(init.group(3)) if init else None,
        "log": str(log_path),
    }
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-8:])
        logger.error("run failed (exit %d), log %s:\n%s", proc.returncode, log_path, tail)
    return info


def frame_times(result: Path) -> dict:
    """Per-frame processing time over the online frames (NaN latencies are the init frames)."""
    with h5py.File(result, "r") as f:
        lat = f["frames/latency_ms"][()] if "frames/latency_ms" in f else np.zeros(0)
    lat = lat[np.isfinite(lat)]
    if not len(lat):
        return {"n": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": int(len(lat)),
        "median_ms": round(float(np.median(lat)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "max_ms": round(float(lat.max()), 3),
    }


# ---- scoring -------------------------------------------------------------------------------
def score(result: Path, truth: dict, rate_hz: float, online_from: int | None) -> dict:
    est = read_result(result)
    m = evaluate(est, truth)
    out = {
        k: m[k]
        for k in (
            "n_true",
            "n_found",
            "n_matched",
            "recall",
            "precision",
            "f1",
            "trace_corr_median",
            "recall_high_pnr",
            "precision_high_pnr",
            "f1_high_pnr",
        )
    }
    out["recall_by_pnr"] = {b["label"]: b["recall"] for b in m["pnr_bins"]}
    out["n_true_by_pnr"] = {b["label"]: b["n_true"] for b in m["pnr_bins"]}
    out["late"] = _late(est, truth, m, rate_hz)
    if online_from is not None and online_from < truth["C"].shape[1]:
        m_on = evaluate(est, truth, EvaluationParams(frames=(online_from, truth["C"].shape[1])))
        out["trace_corr_median_online_frames"] = m_on["trace_corr_median"]
    return out


def _late(est, truth, metrics, rate_hz) -> dict | None:
    """Late-born recall, and detection delay (result birth frame - true birth) in seconds."""
    if metrics["late"] is None:
        return None
    late = dict(metrics["late"])
    late.pop("detection_delay_frames_median", None)
    match = match_footprints(est["A"], truth["A"], truth["dims"])
    birth_true = truth["birth_frame"][match.true_index]
    is_late = birth_true > 0
    delays = np.zeros(0)
    if est.get("birth_frame") is not None and is_late.any():
        b_est = est["birth_frame"][match.est_index[is_late]]
        delays = (b_est - birth_true[is_late]) / rate_hz
    late["delay_s_median"] = round(float(np.median(delays)), 2) if len(delays) else None
    late["delay_s_p90"] = round(float(np.percentile(delays, 90)), 2) if len(delays) else None
    late["n_found_before_birth"] = int((delays < 0).sum())
    return late


# ---- one regime ----------------------------------------------------------------------------
def bench_regime(name: str, args) -> dict:
    movie, params = movie_path(args.cache, name, args.quick)
    gen_s = ensure_movie(movie, params)
    run_dir = args.cache / "runs" / movie.stem
    run_dir.mkdir(parents=True, exist_ok=True)
    sets = user_overrides(name, quick=args.quick) + list(args.set)
    T = params.n_frames
    truth = read_truth(movie)
    row = {
        "regime": name,
        "description": REGIMES[name].description,
        "movie": str(movie),
        "generate_s": round(gen_s, 1),
        "size": [params.height, params.width],
        "n_frames": T,
        "frame_rate_hz": params.frame_rate_hz,
        "n_neurons": params.n_neurons,
        "n_late": int((truth["birth_frame"] > 0).sum()),
        "overrides": sets,
    }
    runs = {"online": None}
    if not args.skip_batch:
        cap = int(args.batch_max_gb * 1e9 / (BYTES_PER_PIXEL_FRAME * params.height * params.width))
        runs["batch"] = min(T - 1, cap)
    for kind, init_frames in runs.items():
        out = run_dir / f"{kind}.h5"
        info_path = run_dir / f"{kind}.json"
        if args.reuse and out.exists() and info_path.exists():
            info = json.loads(info_path.read_text())
            if info.get("overrides") != sets:
                info = None
        else:
            info = None
        if info is None:
            logger.info("%s: %s run (init frames %s)", name, kind, init_frames or "default")
            info = run_process(args.repo, movie, out, sets, init_frames, run_dir / f"{kind}.log")
            info["overrides"] = sets
            info_path.write_text(json.dumps(info, indent=1))
        if info["returncode"] != 0:
            row[kind] = {"run": info, "error": f"exit {info['returncode']}, see {info['log']}"}
            continue
        n_init = info["init_frames"] or DEFAULT_INIT_FRAMES
        entry = {"run": info, "frame_time": frame_times(out)}
        entry.update(score(out, truth, params.frame_rate_hz, n_init if kind == "online" else None))
        entry["batch_on_all_frames"] = kind == "batch" and n_init >= T - 1
        row[kind] = entry
        logger.info(
            "%s %s: F1 %.3f (recall %.3f, precision %.3f), %d found, corr %.3f, wall %.0f s",
            name,
            kind,
            entry["f1"] or 0,
            entry["recall"] or 0,
            entry["precision"] or 0,
            entry["n_found"],
            entry["trace_corr_median"] or 0,
            info["wall_s"],
        )
    on, ba = row.get("online"), row.get("batch")
    if on and ba and "f1" in on and "f1" in ba:
        row["f1_gap_online_minus_batch"] = round(on["f1"] - ba["f1"], 4)
    return row


# ---- report --------------------------------------------------------------------------------
def _f(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def _cost(entry: dict) -> str:
    run = entry.get("run") or {}
    return f"{_f(run.get('wall_s'), 0)} ({_f(run.get('cpu_s'), 0)})" if run else "–"


def markdown(rows: list[dict]) -> str:
    head = (
        "| regime | online F1 (R / P) | batch F1 (R / P) | gap | online recall PNR <5 / 5–10 / ≥10 "
        "| corr on / batch | found / true | late recall, delay med / p90 s "
        "| per-frame ms med / p99 / max | wall (CPU) s on / batch |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        on, ba = r.get("online") or {}, r.get("batch") or {}

        def fr(e):
            if "f1" not in e:
                return "error" if e else "–"
            return f"{_f(e['f1'])} ({_f(e['recall'])} / {_f(e['precision'])})"

        bins = on.get("recall_by_pnr", {})
        late = on.get("late")
        late_s = (
            f"{_f(late['recall'])}, {_f(late['delay_s_median'], 1)} / {_f(late['delay_s_p90'], 1)}"
            if late
            else "–"
        )
        ft = on.get("frame_time", {})
        batch_note = "" if not ba or ba.get("batch_on_all_frames", True) else "*"
        lines.append(
            f"| {r['regime']} | {fr(on)} | {fr(ba)}{batch_note} | "
            f"{_f(r.get('f1_gap_online_minus_batch'))} | "
            + " / ".join(_f(bins.get(k)) for k in ("<5", "5-10", ">=10"))
            + f" | {_f(on.get('trace_corr_median_online_frames'))} / "
            f"{_f(ba.get('trace_corr_median'))} | {on.get('n_found', '–')} / {r['n_neurons']} | "
            f"{late_s} | {_f(ft.get('median_ms'), 1)} / {_f(ft.get('p99_ms'), 1)} / "
            f"{_f(ft.get('max_ms'), 0)} | {_cost(on)} / {_cost(ba)} |"
        )
    if any(r.get("batch") and not r["batch"].get("batch_on_all_frames", True) for r in rows):
        lines.append("\n\\* batch fit on the first frames only (memory cap), the rest online")
    return "\n".join(lines)


def machine_info(repo: Path) -> dict:
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=repo).stdout.strip()
        except OSError:
            return None

    model = re.search(r"Model name:\s*(.*)", sh("lscpu") or "")
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1) if model else platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "repo": str(repo),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
        "load_avg_start": os.getloadavg()[0],
    }


# ---- CLI -----------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench_regimes.py",
        description=__doc__.split("\n\n")[0],
        epilog="regimes: "
        + ", ".join(f"{n}{' (heavy, opt-in)' if r.heavy else ''}" for n, r in REGIMES.items()),
    )
    ap.add_argument("--regimes", help="comma-separated regimes (default: all but the heavy ones)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small/short version of every regime (128², 700-1200 frames)",
    )
    ap.add_argument("--skip-batch", action="store_true", help="run only the online pass")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="regimes run at once (default 1; >1 makes timings meaningless)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "benchmarks" / ".cache",
        help="movies and run outputs (default benchmarks/.cache/)",
    )
    ap.add_argument("--json", type=Path, help="write every number to this JSON file")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="extra parameter override for both runs (repeatable)",
    )
    ap.add_argument(
        "--repo",
        type=Path,
        default=ROOT,
        help="checkout whose online_cnmfe is benchmarked (default: this one)",
    )
    ap.add_argument(
        "--batch-max-gb",
        type=float,
        default=8.0,
        help="cap the batch fit's frames so its memory stays under this (default 8)",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="re-score existing run outputs instead of re-running (same overrides)",
    )
    ap.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="only print the table of a JSON file written by --json",
    )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    names = args.regimes.split(",") if args.regimes else default_selection()
    unknown = [n for n in names if n not in REGIMES]
    if unknown:
        ap.error(f"unknown regime(s) {unknown}; known: {', '.join(REGIMES)}")
    args.names = names
    args.cache = args.cache.resolve()
    args.repo = args.repo.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        sys.stdout.write(markdown(json.loads(args.report.read_text())["regimes"]) + "\n")
        return 0
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    if args.jobs > 1:
        logger.warning("--jobs %d: runs share the cores, timings are not comparable", args.jobs)
    t0 = time.perf_counter()
    machine = machine_info(args.repo)
    logger.info("regimes: %s (quick=%s) on %s", ",".join(args.names), args.quick, machine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda n: bench_regime(n, args), args.names))
    table = markdown(rows)
    sys.stdout.write(table + "\n")
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine,
        "total_s": round(time.perf_counter() - t0, 1),
        "regimes": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, allow_nan=False, default=_json))
        logger.info("wrote %s", args.json)
    logger.info("done in %.0f s", report["total_s"])
    return 0


def _json(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not math.isfinite(value) else float(value)
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
