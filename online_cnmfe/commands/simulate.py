"""``online-cnmfe simulate OUT.h5``: write a ground-truth miniscope movie (HDF5, optional TIFF)."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="write a simulated 1-photon miniscope movie with its ground truth",
        description=(
            "Simulate a 1-photon microendoscopic movie (elliptical Gaussian neurons with AR "
            "calcium kinetics over a large fluctuating background of vignetting, broad blobs and "
            "out-of-focus neuropil, Gaussian noise, optional motion and vessels) and write it "
            "with its ground truth to an HDF5 file (layout: docs/simulation-format.md). "
            "The same seed always gives the same movie."
        ),
        epilog="example: online-cnmfe simulate sim.h5 --size 128 128 --frames 1000 --neurons 60",
    )
    parser.add_argument("out", metavar="OUT.h5", help="HDF5 file to write (overwritten)")
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=(256, 256),
        help="frame height and width in pixels (default: 256 256)",
    )
    parser.add_argument("--frames", type=int, default=2000, help="number of frames (default 2000)")
    parser.add_argument("--fps", type=float, default=20.0, help="frame rate in Hz (default 20)")
    parser.add_argument("--neurons", type=int, default=120, help="in-focus neurons (default 120)")
    parser.add_argument(
        "--diameter", type=float, default=13.0, help="neuron diameter in pixels (default 13)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--noise", type=float, default=10.0, help="pixel noise sigma in movie units (default 10)"
    )
    parser.add_argument(
        "--photons-per-unit",
        type=float,
        default=0.0,
        help="add Poisson shot noise at this many photons per movie unit (default 0 = none)",
    )
    parser.add_argument(
        "--background-strength",
        type=float,
        default=3.0,
        help="brightness of the background blobs relative to a typical neuron's peak (default 3)",
    )
    parser.add_argument(
        "--neuropil", type=int, default=40, help="dim out-of-focus neuropil cells (default 40)"
    )
    parser.add_argument("--blobs", type=int, default=6, help="broad background blobs (default 6)")
    parser.add_argument("--vessels", type=int, default=0, help="dark blood vessels (default 0)")
    parser.add_argument(
        "--motion", type=float, default=0.0, help="max rigid motion in pixels (default 0 = none)"
    )
    parser.add_argument(
        "--jumps",
        type=float,
        default=0.0,
        metavar="PER_S",
        help="sudden rigid jumps of 5-15 px per second, each held 0.5-5 s (default 0 = none)",
    )
    parser.add_argument(
        "--late-fraction",
        type=float,
        default=0.0,
        help="fraction of neurons silent until a random frame after --late-after (default 0)",
    )
    parser.add_argument(
        "--late-after", type=int, default=500, help="earliest birth frame of late neurons"
    )
    parser.add_argument(
        "--pnr-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=(3.0, 20.0),
        help="per-neuron peak-to-noise ratio range (default: 3 20)",
    )
    parser.add_argument(
        "--firing-rate", type=float, default=0.5, help="mean firing rate in Hz (default 0.5)"
    )
    parser.add_argument("--bursty", action="store_true", help="spikes come in bursts")
    parser.add_argument(
        "--decay", type=float, default=0.4, help="calcium decay time in seconds (default 0.4)"
    )
    parser.add_argument(
        "--rise",
        type=float,
        default=0.05,
        help="calcium rise time in seconds; 0 gives AR(1) kinetics (default 0.05)",
    )
    parser.add_argument(
        "--dtype", choices=("uint16", "float32"), default="uint16", help="movie pixel type"
    )
    parser.add_argument(
        "--format",
        choices=("h5", "tiff"),
        default="h5",
        help="'tiff' also writes the movie as OUT.tif (truth stays in OUT.h5)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def params_from_args(args: argparse.Namespace):
    """Build validated SimulationParams from parsed arguments (ConfigError on bad values)."""
    from acquisition.simulator import SimulationParams
    from online_cnmfe.errors import ConfigError

    try:
        return SimulationParams(
            height=args.size[0],
            width=args.size[1],
            n_frames=args.frames,
            frame_rate_hz=args.fps,
            n_neurons=args.neurons,
            neuron_diameter_px=args.diameter,
            decay_time_s=args.decay,
            rise_time_s=args.rise,
            firing_rate_hz=args.firing_rate,
            bursty=args.bursty,
            pnr_range=tuple(args.pnr_range),
            noise_sigma=args.noise,
            photons_per_unit=args.photons_per_unit,
            background_strength=args.background_strength,
            n_neuropil=args.neuropil,
            n_blobs=args.blobs,
            n_vessels=args.vessels,
            motion_px=args.motion,
            jump_rate_hz=args.jumps,
            late_fraction=args.late_fraction,
            late_after_frame=args.late_after,
            seed=args.seed,
            dtype=args.dtype,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid simulation option: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from acquisition.simulator import MiniscopeSimulator, write_simulation

    params = params_from_args(args)
    simulator = MiniscopeSimulator(params)
    summary = write_simulation(
        args.out, simulator, fmt=args.format, progress=not getattr(args, "quiet", False)
    )
    log_summary(simulator, summary)
    return 0


def log_summary(simulator, summary: dict) -> None:
    """Log a few lines describing a written simulation."""
    import numpy as np

    p = simulator.params
    truth = simulator.truth
    pnr = truth.pnr
    logger.info(
        "wrote %s: %d frames of %dx%d %s at %g Hz (%.1f MB) in %.1f s",
        summary["path"],
        summary["n_frames"],
        p.height,
        p.width,
        p.dtype,
        p.frame_rate_hz,
        summary["movie_bytes"] / 1e6,
        summary["seconds"],
    )
    if summary["tiff_path"]:
        logger.info("movie also written as %s", summary["tiff_path"])
    if truth.n_neurons:
        logger.info(
            "truth: %d neurons (%d late-born), PNR %.1f-%.1f (median %.1f), "
            "%d neuropil cells, %d blobs, motion up to %g px, noise sigma %g",
            truth.n_neurons,
            int((truth.birth_frame > 0).sum()),
            float(pnr.min()),
            float(pnr.max()),
            float(np.median(pnr)),
            p.n_neuropil,
            p.n_blobs,
            p.motion_px,
            p.noise_sigma,
        )
    if summary["n_clipped"]:
        logger.warning("%d pixel values were clipped to the uint16 range", summary["n_clipped"])
