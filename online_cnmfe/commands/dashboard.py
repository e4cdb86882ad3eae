"""``online-cnmfe dashboard``: the live pyqtgraph viewer of a running extraction."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from online_cnmfe.errors import OnlineCNMFEError

logger = logging.getLogger(__name__)


def has_display() -> bool:
    """True when Qt can open a window (a display, or an explicit QT_QPA_PLATFORM)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def prepare_qt(screenshot: str | None) -> None:
    """Use the offscreen Qt platform for screenshot runs without a display; else insist."""
    if has_display():
        return
    if screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return
    raise OnlineCNMFEError(
        "no display to open the dashboard on (DISPLAY and WAYLAND_DISPLAY are unset); run it on "
        "a desktop session, forward X (ssh -X), or pass --screenshot FILE.png --quit-after S "
        "to render it offscreen"
    )


def add_display_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``dashboard`` and ``view``."""
    parser.add_argument(
        "--window-s",
        type=float,
        default=30.0,
        help="time window of the trace and raster panels in seconds (default 30)",
    )
    parser.add_argument(
        "--layer",
        default="auto",
        choices=(
            "auto",
            "raw",
            "background_subtracted",
            "denoised",
            "residual",
            "corr_pnr",
            "max_projection",
            "mean",
            "corr",
            "pnr",
            "background",
        ),
        help="image layer shown first (default auto: summary images while initialising, then "
        "the background-subtracted frame; the review shows the denoised frame A·C and the "
        "summary images of the file: max_projection, corr_pnr, mean, corr, pnr, background)",
    )
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a PNG of the window when quitting"
    )
    parser.add_argument(
        "--quit-after",
        type=float,
        metavar="SECONDS",
        help="close the window after SECONDS (for smoke tests and screenshots)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="live viewer of a running extraction (subscribes to the engine's results stream)",
        description=(
            "Open the live dashboard: image layers with neuron contours, traces of the selected "
            "neurons, a raster of all neurons, closed-loop triggers and the engine status. It "
            "subscribes to the engine's results stream and never slows the engine; it may be "
            "started before the engine and survives engine restarts. Click a neuron to show "
            "its traces, Ctrl+click to add it, click the background to go back to the most "
            "active neurons."
        ),
    )
    parser.add_argument(
        "--results",
        default="tcp://127.0.0.1:5556",
        help="address of the engine's results stream (default tcp://127.0.0.1:5556)",
    )
    parser.add_argument(
        "--history-frames",
        type=int,
        default=7200,
        help="frames of traces kept in memory per neuron (default 7200: 6 min at 20 Hz)",
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=3.0,
        help="seconds without frames (or without any message) before the stall / unreachable "
        "banner shows (default 3)",
    )
    parser.add_argument(
        "--max-fps",
        type=float,
        default=30.0,
        help="at most this many display updates per second (default 30); lower it to spare "
        "the CPU of a small acquisition computer",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=5,
        help="lower the dashboard's CPU priority by this much (default 5) so that on a busy "
        "machine the engine gets the CPU first; 0 keeps the normal priority",
    )
    parser.add_argument(
        "--triggers",
        metavar="RULES",
        help="the engine's trigger rules (TOML, as given to `online-cnmfe run --triggers`): the "
        "closed-loop panel then lists every rule from the start, not only those that fired",
    )
    add_display_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare_qt(args.screenshot)
    if args.nice > 0 and hasattr(os, "nice"):
        os.nice(args.nice)  # the display yields to the engine, never the other way round
    from dashboard.app import DashboardApp
    from dashboard.model import ModelConfig

    try:
        config = ModelConfig(
            history_frames=args.history_frames,
            silence_timeout_s=args.stall_s,
            stall_timeout_s=args.stall_s,
        )
    except ValueError as exc:
        raise OnlineCNMFEError(f"invalid dashboard option: {exc}") from exc
    from acquisition.publisher_config import check_endpoint

    try:
        check_endpoint(args.results, "--results")
    except ValueError as exc:
        raise OnlineCNMFEError(str(exc)) from None
    rule_names = []
    if args.triggers:
        from online_cnmfe.triggers import load_trigger_config

        rule_names = [rule.name for rule in load_trigger_config(args.triggers).rules]
    if not args.max_fps > 0:
        raise OnlineCNMFEError(f"--max-fps must be > 0, got {args.max_fps}")
    app = DashboardApp(args.results, config=config, window_s=args.window_s, max_fps=args.max_fps)
    app.model.declare_rules(rule_names)
    app.window.image.set_layer(args.layer)
    logger.info("dashboard subscribed to %s", args.results)
    code = app.run(screenshot=args.screenshot, quit_after_s=args.quit_after)
    # Qt's own teardown at interpreter exit can crash (PySide6 and pyqtgraph objects destroyed
    # in the wrong order: a SIGSEGV after a clean quit, seen about once in 20 test runs). The
    # window is closed, its sockets too and the figures logged: nothing is left to do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
