"""``online-cnmfe demo``: the built-in default job (what ``make demo`` runs).

INTERIM VERSION: until the streaming engine exists, the demo simulates a short miniscope movie
(128 x 128, 500 frames, 40 neurons) into ``demo-output/`` and prints a summary of it. The
engine work replaces this module with the full pipeline (simulate -> process -> evaluate);
the command name stays the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the built-in demo (currently: simulate a short movie and summarise it)",
        description=(
            "Simulate a short 1-photon miniscope movie with ground truth into OUTDIR and print a "
            "summary. (Interim demo: the full online pipeline will run here once it exists.)"
        ),
    )
    parser.add_argument(
        "--outdir", default="demo-output", help="output folder (default: demo-output)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from acquisition.simulator import MiniscopeSimulator, SimulationParams, write_simulation
    from online_cnmfe.errors import InputFileError

    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot create output folder {outdir}: {exc.strerror}") from exc
    params = SimulationParams(
        height=128, width=128, n_frames=500, n_neurons=40, n_neuropil=15, seed=args.seed
    )
    simulator = MiniscopeSimulator(params)
    path = outdir / "demo_simulation.h5"
    logger.info("simulating %d frames of %dx%d ...", params.n_frames, params.height, params.width)
    summary = write_simulation(path, simulator, progress=not args.quiet)
    movie = simulator.render(0, params.n_frames, noise=False)
    neural = simulator.render(0, params.n_frames, background=False, noise=False)
    truth = simulator.truth
    lines = [
        f"demo movie: {path} ({summary['movie_bytes'] / 1e6:.1f} MB, written in "
        f"{summary['seconds']:.1f} s)",
        f"  {params.n_frames} frames of {params.height}x{params.width} {params.dtype} at "
        f"{params.frame_rate_hz:g} Hz",
        f"  {truth.n_neurons} neurons, PNR {truth.pnr.min():.1f}-{truth.pnr.max():.1f} "
        f"(median {np.median(truth.pnr):.1f}); {params.n_neuropil} neuropil cells, "
        f"{params.n_blobs} background blobs",
        f"  mean brightness {movie.mean():.0f}; neurons contribute {neural.mean():.1f} on "
        f"average and at most {neural.max():.0f}; noise sigma {params.noise_sigma:g}",
        f"  ground truth in {path}:/truth (footprints, C, S, pnr, birth_frame, motion)",
        "  (interim demo: the online pipeline will run on this movie once the engine exists)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
