"""``online-cnmfe run``: the streaming engine (frames in over ZeroMQ, results out and to HDF5)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from online_cnmfe.commands.options import add_set_option
from online_cnmfe.errors import ConfigError
from online_cnmfe.params import CNMFEParams, load_params, read_config_file, user_sets

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the streaming engine during an experiment",
        description=(
            "Subscribe to a frame stream (online-cnmfe acquire, or any publisher speaking "
            "docs/protocol.md), initialise on the first frames, then process every frame: "
            "results are published on --results (traces, footprints, events, images, status) "
            "and written to --out. Frames that arrive while the model initialises or falls "
            "behind wait in memory, then in a disk spool beside --out, and are processed in "
            "catch-up mode; every frame index ends up processed or recorded as dropped, "
            "rejected or unprocessed, with the reason. At the end of the stream everything "
            "queued is processed; on Ctrl-C or SIGTERM for at most engine.drain_timeout_s "
            "(again: stop now), what is left is recorded as unprocessed and its pixels kept in "
            "<out>.unprocessed.h5. The frame rate comes from the stream unless you set "
            "data.frame_rate_hz. Exit codes: 0 done, 1 the model failed, 2 bad arguments or "
            "sockets, 3 the results file could not be (fully) written (the engine kept "
            "processing and publishing; see the status stream), 4 no model could be fitted "
            "(no frame, or too few frames, received)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--frames", default="tcp://127.0.0.1:5555", help="frame publisher to connect to")
    p.add_argument("--results", default="tcp://127.0.0.1:5556", help="where to publish results")
    p.add_argument("--out", type=Path, help="results file (HDF5); omit to only publish")
    p.add_argument("--config", type=Path, help="TOML/JSON parameter file ([stage] tables)")
    add_set_option(p, "override one parameter, e.g. --set init.init_frames=200 (repeatable)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue --out after a crash: reload the last model checkpoint "
        "(<out>.state.h5) and append to the results file",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="do not stop at the end of the stream; wait for the next session",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="stop cleanly when no frame arrived for SECONDS (after the first one); for "
        "replays whose end-of-stream message may be lost",
    )
    p.add_argument(
        "--triggers",
        type=Path,
        help="closed-loop trigger rules (TOML, see docs/closed-loop.md); default: the [triggers] "
        "table of --config, if it has one",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from acquisition.publisher_config import check_endpoint
    from online_cnmfe.engine.service import Engine, EngineConfig

    try:
        check_endpoint(args.frames, "--frames")
        check_endpoint(args.results, "--results")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    params = load_params(args.config, args.overrides)
    out = args.out
    if out is not None:  # before any socket or frame: a useless session is refused at once
        from online_cnmfe.results.output_check import WRITER_RESERVE_BYTES, check_output

        resuming = args.resume and out.exists()  # a killed file is copied aside first
        check_output(
            out, overwrite=args.resume or args.overwrite, also="--resume to continue it",
            need_bytes=2 * WRITER_RESERVE_BYTES + (2 * out.stat().st_size if resuming else 0),
        )  # fmt: skip
    if params.engine.record_raw and out is None:
        raise ConfigError("engine.record_raw needs --out (the recording goes beside it)")
    config = EngineConfig(
        frames_endpoint=args.frames,
        results_endpoint=args.results,
        out=out,
        params=params,
        resume=args.resume,
        exit_on_eos=not args.keep_running,
        idle_exit_s=args.idle_exit,
        frame_rate_set=user_sets("data.frame_rate_hz", args.config, args.overrides),
    )
    engine = Engine(config)
    triggers = args.triggers
    if triggers is None and args.config is not None:
        triggers = args.config if "triggers" in read_config_file(args.config) else None
    if triggers is not None:
        _attach_triggers(engine, triggers, params)
    code = engine.run()
    if engine.store.hdf5_failed:
        # HDF5 keeps a failed file open and may crash at interpreter exit: leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code or 3)
    return code


# ---- closed-loop triggers (owned by the triggers engineer; docs/closed-loop.md) ------------
def _attach_triggers(engine, path: Path, params: CNMFEParams) -> None:
    """Closed-loop hook: rules evaluated on the model thread, firings stored with the results,
    copied onto the results stream (topic ``trigger``), rules changeable over the control socket.
    """
    from online_cnmfe.results.triggers_table import (
        create_trigger_datasets,
        store_rule_log,
        store_triggers,
    )
    from online_cnmfe.triggers import TriggerEngine, load_trigger_config
    from online_cnmfe.triggers.auth import load_or_create_token
    from online_cnmfe.triggers.control import ControlServer
    from online_cnmfe.triggers.wire import encode_trigger

    config = load_trigger_config(path)
    if not config.enabled:
        logger.info("triggers are disabled in %s", path)
        return
    triggers = TriggerEngine.from_config(
        config,
        max_frame_age_ms=params.engine.max_frame_age_ms,
        frame_rate_hz=params.data.frame_rate_hz,
    )
    control = None
    if config.control_endpoint:
        try:
            token = load_or_create_token(config.control_token_file)
            control = ControlServer(triggers, config.control_endpoint, token=token).start()
        except ConfigError:
            triggers.close()
            raise
    logger.info(
        "%d trigger rule(s); triggers on %s (%s), control on %s", len(config.rules),
        triggers.dispatcher.publisher.endpoint, config.socket_type, config.control_endpoint or "-",
    )  # fmt: skip
    triggers.fire_listeners.append(  # the trigger socket's frames, reused; sent on the results
        lambda rec: engine.publish_after_traces(encode_trigger(rec))  # stream after the traces
    )

    def flush_hook(f) -> None:
        group = f["triggers"]
        store_triggers(group, triggers.drain_new())
        store_rule_log(group, triggers.drain_new_rule_log())

    engine.add_frame_result_callback(triggers.on_frame)
    engine.add_footprints_callback(triggers.update_centroids)
    engine.store_prepare.append(create_trigger_datasets)
    engine.store_flush_hooks.append(flush_hook)
    engine.status_extras.append(lambda: {"triggers": triggers.stats()})

    def close(_engine) -> None:
        if control is not None:
            control.close()
        triggers.close()

    engine.shutdown_callbacks.append(close)


# ---- end of closed-loop triggers ----------------------------------------------------------
