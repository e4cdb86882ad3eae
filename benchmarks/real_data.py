"""Real-data coverage (no ground truth): how many visible cells a set of footprints covers.

As the project's guide asks: count the visible cells (bright, locally correlated blobs of the
max projection), then check how many lie under a contour, how many contours sit on nothing,
and how many cells have two contours; compare with minian's reference result.

The visible-cell finder (benchmarks/heldout/visible.py) is **not** the project's detector: a
difference-of-Gaussians high-pass of every frame at the neuron scale, its max projection P
times the local temporal correlation image Cn, local maxima above median + k x 1.4826 x MAD
(``--k``, default 5) with Cn above its own median + 1 MAD. Contours: each footprint >= 0.2 x
its max; a covered cell has *its own contour* when it is the visible cell nearest to the
centroid of a contour holding it (the others are covered by a neighbour's wide contour only).
A PNG per run shows the max projection (square-root grey scale), every contour
(yellow) and the visible cells: green covered, magenta under >= 2 contours, red missed.

Examples::

    # coverage of one or more results files (and minian's reference) on a movie
    PYTHONPATH=. .venv/bin/python benchmarks/real_data.py MOVIE.tif --diameter 14 \\
        --result online=online.h5 --result batch=batch.h5 --minian-ref REF_A.npz --out DIR

    # the whole study on ../shared/data: runs `online-cnmfe process` (online and batch) on the
    # minian CA1 fixture and the Inscopix movie, then the coverage of each
    PYTHONPATH=. .venv/bin/python benchmarks/real_data.py --fixtures --out bench-output/real
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import scipy.sparse

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.heldout import png  # noqa: E402
from benchmarks.heldout.visible import (  # noqa: E402
    FinderParams,
    contour_masks,
    coverage,
    find_visible_cells,
)

logger = logging.getLogger("real_data")

COLOURS = {
    "contour": (255, 210, 0),
    "covered": (0, 255, 0),
    "two": (255, 0, 255),
    "missed": (255, 0, 0),
}

# The real recordings (../shared/data/README.md) and how a user would run `process` on them.
FIXTURES = {
    "minian_ca1": {
        "movie": "minian_ca1_fixture_preproc_100x480x752_u8.tif",
        "finder_diameter": 14.0,
        "k": 5.0,
        "sets": ["data.frame_rate_hz=10", "data.neuron_diameter_px=12"],
        "online_init": 50,
        "batch_init": 99,  # `process` needs one frame after the initialisation
        "minian_ref": "minian_ca1_fixture_ref_A_sparse.npz",
    },
    "inscopix": {
        "movie": "inscopix_movie_part2_63x123x108_f32.tif",
        "finder_diameter": 8.0,
        "k": 5.0,
        "sets": ["data.frame_rate_hz=10", "data.neuron_diameter_px=8"],
        "online_init": 30,
        "batch_init": 62,
        "minian_ref": None,
    },
}


def shared_data() -> Path:
    """../shared/data next to the repository (or next to any parent, for worktrees)."""
    for parent in ROOT.parents:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no shared/data folder beside {ROOT} or its parents")


def load_movie(path: Path) -> np.ndarray:
    from acquisition.sources import open_source

    source = open_source(path, frame_rate_hz=10.0)
    frames = [f.pixels for f in source.frames(0, source.info.n_frames)]
    return np.stack(frames).astype(np.float32)


def load_footprints(path: Path, dims) -> scipy.sparse.csc_array:
    """A results file (docs/results-format.md) or a scipy sparse .npz (n_pixels x K)."""
    if path.suffix == ".npz":
        A = scipy.sparse.csc_array(scipy.sparse.load_npz(path))
    else:
        from online_cnmfe.evaluation import read_result

        res = read_result(path)
        if tuple(res["dims"]) != tuple(dims):
            raise ValueError(f"{path}: footprints are {res['dims']}, the movie is {dims}")
        A = res["A"]
    if A.shape[0] != dims[0] * dims[1]:
        raise ValueError(f"{path}: {A.shape[0]} pixels, the movie has {dims[0]}x{dims[1]}")
    return A


def picture(cells, A, dims, cov: dict | None, title_scale: int) -> np.ndarray:
    """Max projection with contours and coloured cell marks, upscaled by ``title_scale``."""
    up = title_scale
    img = png.upscale(png.to_grey(np.sqrt(np.clip(cells.max_projection, 0, None)), 0.5, 99.8), up)
    if A is not None and A.shape[1]:
        masks = contour_masks(A, dims).tocsc()
        for k in range(masks.shape[1]):
            m = np.zeros(dims[0] * dims[1], bool)
            m[masks.indices[masks.indptr[k] : masks.indptr[k + 1]]] = masks.data[
                masks.indptr[k] : masks.indptr[k + 1]
            ]
            png.draw_mask_outline(
                img, png.upscale(m.reshape(dims)[:, :, None], up)[:, :, 0], COLOURS["contour"]
            )
    per_cell = cov["cells_per_contour"] if cov else [None] * len(cells.rows)
    for r, c, n in zip(cells.rows, cells.cols, per_cell):
        colour = (
            COLOURS["covered"]
            if n == 1
            else COLOURS["two"]
            if n and n >= 2
            else COLOURS["missed"]
            if n == 0
            else (0, 255, 255)
        )
        png.draw_cross(img, r * up + up // 2, c * up + up // 2, colour, max(3, 2 * up))
    return img


def study(movie_path: Path, footprints: dict, finder: FinderParams, out: Path, name: str) -> dict:
    """Visible cells of the movie and the coverage of each footprint set; writes PNGs."""
    Y = load_movie(movie_path)
    dims = Y.shape[1:]
    cells = find_visible_cells(Y, finder)
    logger.info(
        "%s: %d visible cells (k=%g, diameter %g px)",
        name,
        len(cells.rows),
        finder.k_mad,
        finder.diameter_px,
    )
    up = max(1, 500 // max(dims))
    out.mkdir(parents=True, exist_ok=True)
    png.write_png(
        out / f"{name}_visible_cells.png",
        np.concatenate(
            [
                picture(cells, None, dims, None, up),
                png.upscale(png.to_grey(cells.score_image, 1, 99.8), up),
            ],
            axis=0 if dims[1] > dims[0] else 1,
        ),
    )
    report = {
        "movie": str(movie_path),
        "dims": list(dims),
        "n_frames": int(Y.shape[0]),
        "finder": cells.params,
        "n_visible": int(len(cells.rows)),
        "visible_cells": [[int(r), int(c)] for r, c in zip(cells.rows, cells.cols)],
        "sets": {},
    }
    for label, path in footprints.items():
        A = load_footprints(Path(path), dims)
        cov = coverage(cells, A, dims)
        masks = contour_masks(A, dims)
        areas = np.asarray(masks.sum(axis=0)).ravel()
        cov["median_contour_diameter_px"] = median_diameter(areas[areas > 0])
        # on a cell: the contours on nothing are often small fragments (minian's: 11 px)
        cov["median_contour_diameter_on_cells_px"] = median_diameter(
            areas[np.asarray(cov["contour_cells"]) > 0]
        )
        cov["path"] = str(path)
        report["sets"][label] = cov
        png_path = out / f"{name}_{label}.png"
        png.write_png(png_path, picture(cells, A, dims, cov, up))
        cov["png"] = str(png_path)
    return report


def median_diameter(areas: np.ndarray) -> float | None:
    """Diameter of the disk of the median area (px), None when there is no area."""
    return float(2 * np.sqrt(np.median(areas) / np.pi)) if areas.size else None


def table(report: dict) -> str:
    lines = [
        f"{report['movie']} ({report['n_frames']} frames, "
        f"{report['dims'][0]}x{report['dims'][1]}): "
        f"{report['n_visible']} visible cells (k={report['finder']['k_mad']:g}, "
        f"diameter {report['finder']['diameter_px']:g} px)",
        "",
        "| footprints | components | covered cells | with their own contour | cells under >= 2 "
        "contours | contours on nothing | median contour diameter (all / on a cell) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, c in report["sets"].items():
        frac = c["covered_fraction"]
        lines.append(
            f"| {label} | {c['n_components']} | {c['n_covered']} / {c['n_visible']}"
            f" ({'–' if frac is None else f'{100 * frac:.0f} %'}) | {c['n_own_contour']} | "
            f"{c['n_two_contours']} | {c['n_contours_on_nothing']} | "
            f"{c['median_contour_diameter_px'] or 0:.1f} / "
            f"{c['median_contour_diameter_on_cells_px'] or 0:.1f} px |"
        )
    return "\n".join(lines)


def run_fixtures(args) -> list[dict]:
    from benchmarks.bench_regimes import run_process

    data = shared_data()
    reports = []
    for name, fx in FIXTURES.items():
        movie = data / fx["movie"]
        run_dir = args.out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        sets = {}
        for kind in ("online", "batch"):
            out = run_dir / f"{kind}.h5"
            if not (args.reuse and out.exists()):
                init = fx[f"{kind}_init"]
                logger.info("%s: %s run (--init-frames %d)", name, kind, init)
                info = run_process(args.repo, movie, out, fx["sets"], init, run_dir / f"{kind}.log")
                (run_dir / f"{kind}.json").write_text(json.dumps(info, indent=1))
                if info["returncode"] != 0:
                    continue
            sets[f"ours_{kind}"] = out
        if fx["minian_ref"]:
            sets["minian_reference"] = data / fx["minian_ref"]
        k = args.k if args.k is not None else fx["k"]
        finder = FinderParams(diameter_px=fx["finder_diameter"], k_mad=k)
        report = study(movie, sets, finder, args.out, name)
        report["process_overrides"] = fx["sets"]
        reports.append(report)
    return reports


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="real_data.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("movie", nargs="?", type=Path, help="recording (any format `process` reads)")
    ap.add_argument("--diameter", type=float, help="neuron diameter in pixels (finder scale)")
    ap.add_argument("--k", type=float, help="finder threshold in MADs (default 5)")
    ap.add_argument(
        "--result",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="footprints to score: results file (.h5) or sparse .npz (repeatable)",
    )
    ap.add_argument("--minian-ref", type=Path, help="minian's reference A (.npz, row-major)")
    ap.add_argument(
        "--fixtures",
        action="store_true",
        help="run `process` and the coverage on the real recordings in shared/data",
    )
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout to run (with --fixtures)")
    ap.add_argument("--reuse", action="store_true", help="with --fixtures: keep existing runs")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / ".cache" / "real",
        help="folder for PNGs, runs and report.json",
    )
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    args.out = args.out.resolve()
    args.repo = args.repo.resolve()
    if args.fixtures:
        reports = run_fixtures(args)
    else:
        if args.movie is None or args.diameter is None:
            ap.error("give MOVIE and --diameter (or --fixtures)")
        sets = dict(r.split("=", 1) for r in args.result)
        if args.minian_ref:
            sets["minian_reference"] = args.minian_ref
        finder = FinderParams(diameter_px=args.diameter, k_mad=5.0 if args.k is None else args.k)
        reports = [study(args.movie, sets, finder, args.out, args.movie.stem)]
    for rep in reports:
        sys.stdout.write(table(rep) + "\n\n")
    (args.out / "report.json").write_text(json.dumps(reports, indent=1))
    logger.info("pictures and report.json in %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
