"""``online-cnmfe acquire {replay,simulate,camera}``: publish frames on a ZeroMQ socket.

The acquisition process of the pipeline: it binds a PUB-style socket (default
``tcp://127.0.0.1:5555``) and streams a recording, the simulator or a camera with the wire
protocol of docs/protocol.md. Ctrl-C or SIGTERM ends the stream with an ``eos`` message and
exit code 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

logger = logging.getLogger(__name__)


def _add_common(parser: argparse.ArgumentParser, *, replay: bool) -> None:
    from acquisition.publisher import DEFAULT_ENDPOINT

    net = parser.add_argument_group("stream")
    net.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"address to bind (default {DEFAULT_ENDPOINT}; loopback only unless you give "
        "another address, e.g. tcp://0.0.0.0:5555; ipc:///tmp/frames also works)",
    )
    net.add_argument(
        "--rate",
        default="real",
        help="pacing: 'real' (follow the timestamps on an absolute schedule), 'max' (as fast as "
        "the slowest subscriber takes frames; lossless: waits for a subscriber first and "
        "whenever the last one left) or a rate in Hz (default: real)",
    )
    net.add_argument(
        "--linger-s",
        type=float,
        default=None,
        help="how long the publisher waits at the end for queued frames and the end-of-stream "
        "message to reach a slow receiver (default: 60 s with --rate max, where nothing may be "
        "lost, else 2 s)",
    )
    net.add_argument(
        "--sndhwm",
        type=int,
        default=256,
        help="send high-water mark in frames per subscriber; beyond it paced streams drop "
        "(default 256)",
    )
    net.add_argument(
        "--wait-for-subscriber",
        type=float,
        default=None,
        metavar="SECONDS",
        help="hold the first frame until a subscriber is connected, at most SECONDS (default: "
        "as long as it takes with --rate max; 2 s with the paced rates, so an engine started "
        "first gets frame 0, then the stream starts anyway and receivers join mid-stream)",
    )
    frames = parser.add_argument_group("frames")
    frames.add_argument(
        "--crop",
        metavar="TOP,LEFT,HEIGHT,WIDTH",
        help="keep this region of each frame (pixels, before binning)",
    )
    frames.add_argument(
        "--bin", type=int, default=1, choices=(1, 2, 3, 4), help="spatial binning (default 1)"
    )
    frames.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate in Hz, overriding the recording's metadata (files without one: 20)",
    )
    if replay:
        frames.add_argument("--start", type=int, default=0, help="first frame (0-based)")
        frames.add_argument("--stop", type=int, default=None, help="stop before this frame")
        frames.add_argument("--loop", action="store_true", help="replay again and again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "acquire",
        help="publish frames (replayed recording, simulator or camera) on a ZeroMQ socket",
        description=(
            "Stream frames to the engine and dashboard with the versioned wire protocol "
            "(docs/protocol.md): a 'start' message (re-sent every second), one 'frame' per "
            "image, and 'eos' at the end or on Ctrl-C/SIGTERM (exit 0). A summary (frames read, "
            "delivered to subscribers, sent with none connected, achieved rate, lost in the "
            "recording) is logged at the end. Exit 1 when frames were read but none reached a "
            "subscriber."
        ),
    )
    sub = parser.add_subparsers(dest="acquire_mode", metavar="MODE", required=True)

    replay = sub.add_parser(
        "replay",
        help="replay a recording",
        description=(
            "Replay a Miniscope folder (session or device folder; 0.avi, 1.avi... with "
            "timeStamps.csv and metaData.json; or legacy msCam1.avi + timestamp.dat), a TIFF "
            "stack or folder of TIFFs, an HDF5 dataset, a .npy array or a video file."
        ),
        epilog="example: online-cnmfe acquire replay ~/data/2024_01_01/10_00_00 --rate real",
    )
    replay.add_argument("path", help="recording file or folder")
    replay.add_argument("--dataset", help="HDF5 dataset path (default: 'movie' or the only 3-D)")
    replay.add_argument("--device", help="Miniscope device subfolder when there are several")
    _add_common(replay, replay=True)
    replay.set_defaults(func=run)

    sim = sub.add_parser(
        "simulate",
        help="stream a simulated live miniscope (ground truth from the seed)",
        description="Generate frames on the fly with the ground-truth simulator and stream them.",
        epilog="example: online-cnmfe acquire simulate --size 256 256 --frames 2000 --rate real",
    )
    sim.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), default=(256, 256), help="(256 256)"
    )
    sim.add_argument("--frames", type=int, default=None, help="frames to send (default endless)")
    sim.add_argument("--neurons", type=int, default=120, help="in-focus neurons (default 120)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument(
        "--dtype", choices=("uint16", "float32"), default="uint16", help="(default uint16)"
    )
    _add_common(sim, replay=False)
    sim.set_defaults(func=run)

    cam = sub.add_parser(
        "camera",
        help="stream a live UVC camera / Miniscope DAQ (untested here: no device attached)",
        description=(
            "Open a UVC camera (the Miniscope DAQ enumerates as one; V4L2 on Linux) with OpenCV "
            "and stream its frames (channel 0). Set LED, gain and focus with the Miniscope "
            "software first."
        ),
    )
    cam.add_argument("--index", type=int, default=0, help="device index, /dev/videoN (default 0)")
    _add_common(cam, replay=False)
    cam.set_defaults(func=run)


def _open(args):
    from acquisition.sources import open_source
    from acquisition.transforms import FrameTransform, parse_crop

    try:
        crop = parse_crop(args.crop) if args.crop else None
        transform = FrameTransform(crop=crop, bin=args.bin)
    except ValueError as exc:
        from online_cnmfe.errors import ConfigError

        raise ConfigError(str(exc)) from None
    if args.acquire_mode == "replay":
        return open_source(
            args.path,
            dataset=args.dataset,
            device=args.device,
            frame_rate_hz=args.fps,
            transform=transform,
        )
    if args.acquire_mode == "simulate":
        from acquisition.simulator_params import SimulationParams
        from acquisition.sources.simulated import SimulatedSource

        params = SimulationParams(
            height=args.size[0],
            width=args.size[1],
            n_frames=args.frames,
            frame_rate_hz=args.fps or 20.0,
            n_neurons=args.neurons,
            seed=args.seed,
            dtype=args.dtype,
        )
        return SimulatedSource(params, transform=transform)
    from acquisition.sources.camera import CameraSource

    return CameraSource(args.index, frame_rate_hz=args.fps, transform=transform)


def run(args: argparse.Namespace) -> int:
    import zmq
    from tqdm import tqdm

    from acquisition.publisher import FramePublisher, PublisherConfig, stop_on_signals
    from online_cnmfe.errors import ConfigError

    stop = threading.Event()
    with stop_on_signals(stop):
        try:
            config = PublisherConfig(
                endpoint=args.endpoint,
                rate=args.rate,
                sndhwm=args.sndhwm,
                loop=getattr(args, "loop", False),
                start=getattr(args, "start", 0),
                stop=getattr(args, "stop", None),
                wait_for_subscriber_s=args.wait_for_subscriber,
                linger_ms=_linger_ms(args),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # A context of our own, terminated below: only zmq's context termination waits (up to
        # the linger time) for queued frames to leave; a process that just exits drops them.
        context = zmq.Context()
        with _open(args) as source, FramePublisher(config, context=context) as publisher:
            info = source.info
            if info.n_frames is not None and config.start >= info.n_frames:
                raise ConfigError(
                    f"--start {config.start} is beyond the {info.n_frames} frames of "
                    f"{info.description}"
                )
            if info.n_frames is not None and (config.stop or 0) > info.n_frames:
                raise ConfigError(
                    f"--stop {config.stop} is beyond the {info.n_frames} frames of "
                    f"{info.description}; pass --stop {info.n_frames} or leave it out to "
                    "replay to the end"
                )
            logger.info(
                "publishing %s on %s: %dx%d %s at %.2f Hz, %s frames, session %s",
                info.description,
                publisher.endpoint,
                info.shape[0],
                info.shape[1],
                info.dtype,
                info.frame_rate_hz,
                "endless" if info.n_frames is None else info.n_frames,
                publisher.session_id,
            )
            n_total = publisher.n_to_send(info)
            show = not args.quiet and sys.stderr.isatty() and args.acquire_mode == "replay"
            with tqdm(total=n_total, unit="frame", disable=not show, file=sys.stderr) as bar:
                summary = publisher.publish(source, stop=stop, progress=bar)
        context.term()
    logger.info("%s", summary.describe())
    if summary.n_read > 0 and summary.n_delivered == 0 or summary.reason == "no subscriber":
        logger.error(
            "no frame reached a subscriber of %s: is the engine (online-cnmfe run --frames ...) "
            "connected to this endpoint?", config.endpoint,
        )  # fmt: skip
        return 1
    if summary.n_unsubscribed:
        logger.warning("%d frame(s) were sent before any subscriber connected and are lost; "
                       "use --wait-for-subscriber", summary.n_unsubscribed)  # fmt: skip
    return 0


def _linger_ms(args) -> int:
    from online_cnmfe.errors import ConfigError

    """Lossless max-rate replays wait for a slow receiver to drain; paced streams don't."""
    if args.linger_s is not None:
        if args.linger_s < 0:
            raise ConfigError(f"--linger-s must be >= 0, got {args.linger_s}")
        return int(args.linger_s * 1000)
    return 60_000 if args.rate == "max" else 2000
