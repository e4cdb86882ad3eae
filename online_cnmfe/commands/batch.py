"""``online-cnmfe batch``: process many recordings on Dask distributed, one task per session.

Each session runs exactly what ``online-cnmfe process`` runs (the same function), on a local
cluster of worker processes or on an existing Dask cluster; results go to
``OUT_DIR/<session>.h5`` and ``OUT_DIR/summary.csv`` accounts for every input.
docs/batch.md has the details (manifest, reruns, memory, SLURM).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from online_cnmfe.commands.options import add_set_option
from online_cnmfe.params import parse_overrides, user_sets

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "batch",
        help="process many recordings (an archive) on Dask distributed, like `process` each",
        description=(
            "Run `process` on every INPUT (a movie file or a Miniscope folder) as one task on "
            "Dask distributed: a local cluster of --workers processes, or an existing cluster "
            "with --scheduler. Writes OUT_DIR/<session>.h5 and OUT_DIR/summary.csv (one row "
            "per input: status ok/skipped/failed, frames, neurons, seconds, error). A rerun "
            "skips sessions whose results are complete with the same parameters (--force "
            "redoes them); a failing session is retried once, the others always finish. "
            "See docs/batch.md."
        ),
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="recordings (files or folders)")
    p.add_argument("--out-dir", required=True, help="folder for the results and summary.csv")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="local worker processes (default: one per available core)"
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="use a running Dask cluster, e.g. tcp://host:8786"
    )
    p.add_argument("--config", help="TOML or JSON parameter file ([stage] tables)")
    add_set_option(p, "override one parameter for every session (repeatable)")
    p.add_argument(
        "--init-frames", type=int, help="frames used for initialisation (default init.init_frames)"
    )
    p.add_argument(
        "--manifest",
        metavar="CSV",
        help="per-session settings: columns input, output, and parameters such as "
        "neuron_diameter_px, frame_rate_hz, init_frames (docs/batch.md)",
    )
    p.add_argument("--dataset", help="HDF5 dataset holding the movies (default: auto)")
    p.add_argument("--force", action="store_true", help="redo sessions already up to date")
    p.add_argument(
        "--memory-limit",
        default="auto",
        help="memory per local worker, e.g. 4GiB (default: machine memory / workers)",
    )
    p.add_argument(
        "--dashboard-address",
        default="127.0.0.1:8787",
        help="where the local cluster serves the Dask dashboard (default: 127.0.0.1:8787)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.batch.plan import batch_params, plan_sessions
    from online_cnmfe.errors import ConfigError

    overrides = parse_overrides(args.overrides)
    params = batch_params(args.config, overrides, args.init_frames)
    tasks = plan_sessions(
        args.inputs,
        args.out_dir,
        params,
        manifest=args.manifest,
        rate_given=user_sets("data.frame_rate_hz", args.config, args.overrides),
        dataset=args.dataset,
        force=args.force,
    )
    from online_cnmfe.batch.runner import ClusterOptions, run_batch  # imports Dask

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO is per event

    try:
        options = ClusterOptions(
            workers=args.workers,
            scheduler=args.scheduler,
            memory_limit=args.memory_limit,
            dashboard_address=args.dashboard_address,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    summary = run_batch(
        tasks, Path(args.out_dir), options, progress=not args.quiet and sys.stderr.isatty()
    )
    failed = summary.counts()["failed"]
    if failed:
        logger.error("%d of %d sessions failed; see %s", failed, len(tasks), summary.path)
        return 1
    return 0
