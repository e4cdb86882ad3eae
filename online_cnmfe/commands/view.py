"""``online-cnmfe view``: the dashboard window over a recorded results file, with a time slider."""

from __future__ import annotations

import argparse
import logging

from online_cnmfe.commands.dashboard import add_display_arguments, prepare_qt

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="review a results file in the dashboard window (time slider, play)",
        description=(
            "Open a results file written by `online-cnmfe run` or `online-cnmfe process` in the "
            "dashboard window: footprints and contours, the denoised image A·C at the chosen "
            "frame, traces and raster over the window before it, births of new neurons. Drag "
            "the time slider or press Play. Files left by a crashed run open too."
        ),
    )
    parser.add_argument("results", metavar="RESULTS.h5", help="results file to review")
    parser.add_argument(
        "--frame",
        type=int,
        default=None,
        help="row of the file to show first (default: the last frame)",
    )
    add_display_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare_qt(args.screenshot)
    from dashboard.review import ReviewApp

    app = ReviewApp(args.results, window_s=args.window_s)
    app.window.image.set_layer(args.layer)
    if args.frame is not None:
        app.show(args.frame)
    logger.info("reviewing %s (%d frames)", args.results, app.source.n_frames)
    return app.run(screenshot=args.screenshot, quit_after_s=args.quit_after)
