"""``online-cnmfe view``: the dashboard window over a recorded results file, with a time slider."""

from __future__ import annotations

import argparse
import logging

from online_cnmfe.commands.dashboard import add_display_arguments, prepare_qt

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="review and curate a results file in the dashboard window (time slider, play)",
        description=(
            "Open a results file written by `online-cnmfe run` or `online-cnmfe process` in the "
            "dashboard window: footprints and contours over the file's summary images (max "
            "projection, corr x PNR, mean, ...) or the denoised image A·C at the chosen frame, "
            "traces (C, raw, deconvolved, dF/F) and raster over the window before it, the "
            "events up to that frame (drops, births, merges, removals), and a sortable table "
            "of every neuron's quality metrics. Drag the time slider or press Play. Curate "
            "with the keys A (accept), R (reject), U (unlabel) and N (next neuron): labels "
            "are saved in the file and exports leave rejected neurons out. Traces are read "
            "from the file by window, so long sessions open quickly; files left by a crashed "
            "run open too."
        ),
    )
    parser.add_argument("results", metavar="RESULTS.h5", help="results file to review")
    parser.add_argument(
        "--frame",
        type=int,
        default=None,
        help="frame index to show first, as in the event list and the status bar (default: "
        "the last frame; a dropped frame shows the next one kept)",
    )
    parser.add_argument(
        "--neuron", type=int, default=None, help="select this neuron id and centre on it"
    )
    add_display_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare_qt(args.screenshot)
    from dashboard.review_app import ReviewApp

    app = ReviewApp(args.results, window_s=args.window_s)
    app.window.image.set_layer(args.layer)
    if args.frame is not None:
        app.show_frame(args.frame)
    if args.neuron is not None:
        app.go_to_neuron(args.neuron)
    logger.info("reviewing %s (%d frames)", args.results, app.source.n_frames)
    return app.run(screenshot=args.screenshot, quit_after_s=args.quit_after)
