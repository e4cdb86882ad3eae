"""One recording → one results file: initialisation + online updates, no sockets.

Reads any recording the acquisition sources read (Miniscope folder, TIFF, HDF5, npy, video),
fits the initial model on the first frames (or loads a saved InitResult), runs the online
model over every frame and writes the results file (docs/results-format.md) incrementally.
The initialisation frames are stored too (their traces from the initial fit), so the traces
cover the whole movie.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from online_cnmfe.errors import InputFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.model.motion import init_frame_fields
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessJob:
    """What to process and where to write it.

    Attributes
    ----------
    movie : Path
        Recording: Miniscope folder, .tif, .h5 (dataset), .npy, .avi.
    out : Path
        Results file to write (HDF5).
    params : CNMFEParams
    frame_rate_hz : float, optional
        Frame rate given by the user; it overrides the file's metadata in the source.
    rate_from_file : bool
        Replace ``params.data.frame_rate_hz`` by the source's frame rate.
    dataset : str, optional
        HDF5 dataset holding the movie (default: auto).
    init_result : Path, optional
        Saved InitResult used instead of fitting one.
    save_init, save_model : Path, optional
        Also save the fitted InitResult / the final model state there.
    max_frames : int, optional
        Stop after this many frames.
    progress : bool
        Progress bars on stderr.
    """

    movie: Path
    out: Path
    params: CNMFEParams
    frame_rate_hz: float | None = None
    rate_from_file: bool = False
    dataset: str | None = None
    init_result: Path | None = None
    save_init: Path | None = None
    save_model: Path | None = None
    max_frames: int | None = None
    progress: bool = False


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """What :func:`process_recording` did.

    Attributes
    ----------
    out : Path
        The results file written.
    n_frames : int
        Frames written (initialisation + online).
    n_components : int
        Neurons in the final model.
    n_lost : int
        Hardware frames lost upstream (gaps in the DAQ frame counter).
    frame_ms : ndarray of shape (n_online,), float64
        The model's time on each online frame.
    """

    out: Path
    n_frames: int
    n_components: int
    n_lost: int
    frame_ms: np.ndarray


def process_recording(job: ProcessJob) -> ProcessSummary:
    """Fit the initial model on the first frames, run the online model over the rest, write.

    Parameters
    ----------
    job : ProcessJob

    Returns
    -------
    ProcessSummary

    Raises
    ------
    InputFileError
        If the recording is endless or too short for the initialisation.
    SourceError, StoreError
        If the recording cannot be read or the results file cannot be written.
    """
    from acquisition.sources import open_source
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results import state_file

    params = job.params
    source = open_source(job.movie, dataset=job.dataset, frame_rate_hz=job.frame_rate_hz)
    info = source.info
    if info.n_frames is None:
        raise InputFileError(f"{job.movie}: endless source; `process` needs a finite recording")
    n_total = info.n_frames if job.max_frames is None else min(info.n_frames, job.max_frames)
    n_init = params.init.init_frames
    if n_total <= n_init:
        raise InputFileError(
            f"{job.movie} has {n_total} frames; initialisation needs init.init_frames={n_init} "
            "plus at least one more. Pass a smaller --init-frames."
        )
    if job.rate_from_file:
        params = params.replace(**{"data.frame_rate_hz": float(info.frame_rate_hz)})
    frames_iter = source.frames(0, n_total)
    head = [next(frames_iter) for _ in range(n_init)]
    init_frames = np.stack([f.pixels for f in head]).astype(np.float32)
    t0 = time.perf_counter()
    if job.init_result:
        _, init = state_file.load_model(job.init_result, fmt=state_file.INIT_FORMAT)
    else:
        from online_cnmfe.model.initialization.fit import fit_initial

        init = fit_initial(init_frames, params, progress=job.progress)
    if job.save_init:
        state_file.save_model(job.save_init, params, init, fmt=state_file.INIT_FORMAT)
    model = OnlineCNMFE(params)
    model.initialize_from(init, init_frames)
    logger.info(
        "initialised %d neurons on %d frames in %.1f s",
        model.n_components,
        n_init,
        time.perf_counter() - t0,
    )
    with _slow_path_executor(params) as executor:
        model.run_slow_path_on(executor)
        return _process_online(job, params, info, init, head, frames_iter, model, n_total)


def _slow_path_executor(params: CNMFEParams) -> contextlib.AbstractContextManager:
    """A one-thread pool for the slow path's steps, or (``engine.slow_path_thread=false``)
    None: inline. Results are identical."""
    if not params.engine.slow_path_thread:
        return contextlib.nullcontext(None)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-path")


def _process_online(job, params, info, init, head, frames_iter, model, n_total) -> ProcessSummary:
    """The online part of :func:`process_recording`: frames after the initialisation."""
    from online_cnmfe.results import state_file
    from online_cnmfe.results.writer import ResultsWriter

    n_init = len(head)
    provenance = {"path": str(Path(job.movie).resolve()), "source": info.description}
    out = Path(job.out)
    with ResultsWriter(out, model.dims, params, info.frame_rate_hz, provenance) as writer:
        drops = _DropTracker(writer)
        _write_init_frames(writer, init, head, model.neuron_ids[: init.n_components], drops)
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        times = _run_online(model, frames_iter, writer, n_total - n_init, job.progress, drops)
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        writer.set_background(model.b0)
        n_written = writer.n_frames
    if job.save_model:
        state_file.save_online_model(job.save_model, model)
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
    return ProcessSummary(out, n_written, model.n_components, drops.n_lost, times)


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


def _run_online(model, frames_iter, writer, n_frames: int, progress: bool, drops) -> np.ndarray:
    from tqdm import tqdm

    times = np.zeros(n_frames, np.float64)
    version = model.footprints_version
    bar = tqdm(total=n_frames, unit="frame", disable=not progress, file=sys.stderr)
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
