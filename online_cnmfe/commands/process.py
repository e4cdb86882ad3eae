"""``online-cnmfe process``: initialisation + online updates over a movie file, no sockets.

The command parses its options into a :class:`~online_cnmfe.offline.process.ProcessJob` and
calls :func:`~online_cnmfe.offline.process.process_recording`, which does the work
(docs/results-format.md describes the file it writes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from online_cnmfe.commands.options import add_set_option
from online_cnmfe.params import CNMFEParams, load_params, user_sets

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "process",
        help="run initialisation + online CNMF-E over a movie file and write RESULT.h5",
        description=(
            "Run the online CNMF-E model over a recording in one process (no sockets): fit the "
            "initial model on the first --init-frames frames, then update it frame by frame. "
            "Writes the results file described in docs/results-format.md."
        ),
    )
    p.add_argument("movie", help="recording: Miniscope folder, .tif, .h5 (dataset), .npy, .avi")
    p.add_argument("--out", required=True, help="results file to write (HDF5)")
    p.add_argument("--config", help="TOML or JSON parameter file ([stage] tables)")
    add_set_option(p, "override one parameter, e.g. --set data.frame_rate_hz=10 (repeatable)")
    p.add_argument(
        "--init-frames", type=int, help="frames used for initialisation (default init.init_frames)"
    )
    p.add_argument("--dataset", help="HDF5 dataset holding the movie (default: auto)")
    p.add_argument(
        "--init-result",
        help="use this saved InitResult (written by --save-init) instead of fitting one",
    )
    p.add_argument("--save-init", help="also save the fitted InitResult to this file")
    p.add_argument("--save-model", help="also save the final model state to this file")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def _params(args) -> CNMFEParams:
    params = load_params(args.config, args.overrides)
    if args.init_frames is not None:
        params = params.replace(**{"init.init_frames": args.init_frames})
    return params


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.offline.process import ProcessJob, frame_rate_fields, process_recording

    params = _params(args)
    rate_given = user_sets("data.frame_rate_hz", args.config, args.overrides)
    job = ProcessJob(
        movie=Path(args.movie),
        out=Path(args.out),
        params=params,
        **frame_rate_fields(params, rate_given=rate_given),
        dataset=args.dataset,
        init_result=Path(args.init_result) if args.init_result else None,
        save_init=Path(args.save_init) if args.save_init else None,
        save_model=Path(args.save_model) if args.save_model else None,
        max_frames=args.max_frames,
        progress=not args.quiet and sys.stderr.isatty(),
        overwrite=args.overwrite,
    )
    process_recording(job)
    return 0
