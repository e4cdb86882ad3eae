"""``online-cnmfe process``: initialisation + online updates over a movie file, no sockets.

Reads any recording the acquisition sources read (Miniscope folder, TIFF, HDF5, npy, video),
fits the initial model on the first frames (or loads a saved InitResult), runs the online
model over every frame and writes the results file (docs/results-format.md) incrementally.
The initialisation frames are stored too (their traces from the initial fit), so the traces
cover the whole movie.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from online_cnmfe.errors import InputFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.model.motion import init_frame_fields
from online_cnmfe.params import CNMFEParams, load_params, parse_overrides

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
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override one parameter, e.g. --set data.frame_rate_hz=10 (repeatable)",
    )
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
    p.set_defaults(func=run)


def _params(args) -> CNMFEParams:
    params = load_params(args.config, args.overrides)
    if args.init_frames is not None:
        params = params.replace(**{"init.init_frames": args.init_frames})
    return params


def run(args: argparse.Namespace) -> int:
    from acquisition.sources import open_source
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results import state_file
    from online_cnmfe.results.writer import ResultsWriter

    params = _params(args)
    rate_given = "data.frame_rate_hz" in parse_overrides(args.overrides)
    source = open_source(
        args.movie,
        dataset=args.dataset,
        frame_rate_hz=params.data.frame_rate_hz if rate_given else None,
    )
    info = source.info
    if info.n_frames is None:
        raise InputFileError(f"{args.movie}: endless source; `process` needs a finite recording")
    n_total = info.n_frames if args.max_frames is None else min(info.n_frames, args.max_frames)
    n_init = params.init.init_frames
    if n_total <= n_init:
        raise InputFileError(
            f"{args.movie} has {n_total} frames; initialisation needs init.init_frames={n_init} "
            "plus at least one more. Pass a smaller --init-frames."
        )
    if args.config is None and not rate_given:
        params = params.replace(**{"data.frame_rate_hz": float(info.frame_rate_hz)})
    frames_iter = source.frames(0, n_total)
    head = [next(frames_iter) for _ in range(n_init)]
    init_frames = np.stack([f.pixels for f in head]).astype(np.float32)
    t0 = time.perf_counter()
    if args.init_result:
        _, init = state_file.load_model(args.init_result, fmt=state_file.INIT_FORMAT)
    else:
        from online_cnmfe.model.initialization.fit import fit_initial

        init = fit_initial(init_frames, params, progress=not args.quiet and sys.stderr.isatty())
    if args.save_init:
        state_file.save_model(args.save_init, params, init, fmt=state_file.INIT_FORMAT)
    model = OnlineCNMFE(params)
    model.initialize_from(init, init_frames)
    logger.info(
        "initialised %d neurons on %d frames in %.1f s",
        model.n_components,
        n_init,
        time.perf_counter() - t0,
    )
    provenance = {"path": str(Path(args.movie).resolve()), "source": info.description}
    out = Path(args.out)
    with ResultsWriter(out, model.dims, params, info.frame_rate_hz, provenance) as writer:
        drops = _DropTracker(writer)
        _write_init_frames(writer, init, head, model.neuron_ids[: init.n_components], drops)
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        times = _run_online(model, frames_iter, writer, n_total - n_init, args.quiet, drops)
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        writer.set_background(model.b0)
    if args.save_model:
        state_file.save_online_model(args.save_model, model)
    if len(times):
        logger.info(
            "processed %d frames: per frame median %.2f ms, p99 %.2f ms, max %.2f ms; "
            "%d neurons; %d hardware frames lost upstream; results in %s",
            len(times),
            np.median(times),
            np.percentile(times, 99),
            times.max(),
            model.n_components,
            drops.n_lost,
            out,
        )
    return 0


def _write_init_frames(writer, init, head, ids, drops) -> None:
    for j, frame in enumerate(head):
        drops.see(frame)
        result = FrameResult(
            frame_index=j,
            neuron_ids=ids,
            C=np.asarray(init.C[:, j], np.float32),
            S=np.asarray(init.S[:, j], np.float32),
            C_raw=np.asarray(init.C_raw[:, j], np.float32),
            **init_frame_fields(init.motion, j),
        )
        writer.append_frame(result, _meta(frame, float("nan")))


class _DropTracker:
    """Records hardware frames lost before the recording (gaps in the DAQ frame counter)."""

    def __init__(self, writer) -> None:
        self.writer = writer
        self.last: int | None = None
        self.n_lost = 0

    def see(self, frame) -> None:
        daq = frame.daq_frame
        if daq is None:
            return
        if self.last is not None and daq > self.last + 1:
            self.writer.record_drop(self.last + 1, daq - 1)
            self.n_lost += daq - self.last - 1
        self.last = daq


def _meta(frame, latency_ms: float) -> dict:
    return {
        "frame_index": int(frame.frame_index),
        "seq": int(frame.frame_index),
        "daq_frame": frame.daq_frame,
        "t_acq_ms": float(frame.t_acq_ms),
        "latency_ms": latency_ms,
    }


def _run_online(model, frames_iter, writer, n_frames: int, quiet: bool, drops) -> np.ndarray:
    from tqdm import tqdm

    times = np.zeros(n_frames, np.float64)
    version = model.footprints_version
    bar = tqdm(
        total=n_frames, unit="frame", disable=quiet or not sys.stderr.isatty(), file=sys.stderr
    )
    n = 0
    with bar:
        for frame in frames_iter:
            drops.see(frame)
            result = model.process_frame(frame.pixels)
            times[n] = result.timings_ms.get("total", np.nan)
            writer.append_frame(result, _meta(frame, times[n]))
            if result.footprints_version != version:
                version = result.footprints_version
                writer.set_footprints(model.footprints, model.neuron_ids, version)
            n += 1
            bar.update(1)
    return times[:n]
