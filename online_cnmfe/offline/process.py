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
from typing import TYPE_CHECKING

import numpy as np

from online_cnmfe.errors import InputFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.model.frame_screen import screen_frames
from online_cnmfe.model.motion import init_frame_fields
from online_cnmfe.model.preprocessing.online import final_check
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.output_check import (
    WRITER_RESERVE_BYTES,
    check_output,
    estimate_results_bytes,
)

if TYPE_CHECKING:
    from acquisition.sources import FrameSource, SourceInfo

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
    overwrite : bool
        Replace ``out`` if it exists (otherwise that is an error, before any work).
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
    overwrite: bool = False


def frame_rate_fields(params: CNMFEParams, *, rate_given: bool) -> dict[str, float | bool | None]:
    """The ``frame_rate_hz``/``rate_from_file`` fields of a :class:`ProcessJob`.

    A rate the user gave (config file, ``--set data.frame_rate_hz=…``, a manifest column)
    overrides the file's metadata; otherwise the parameters take the file's rate.

    Examples
    --------
    >>> frame_rate_fields(CNMFEParams(), rate_given=False)
    {'frame_rate_hz': None, 'rate_from_file': True}
    """
    return {
        "frame_rate_hz": params.data.frame_rate_hz if rate_given else None,
        "rate_from_file": not rate_given,
    }


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
    n_missing : int
        Frame indices missing from the recording (e.g. a lost Miniscope chunk).
    frame_ms : ndarray of shape (n_online,), float64
        The model's time on each online frame.
    """

    out: Path
    n_frames: int
    n_components: int
    n_lost: int
    frame_ms: np.ndarray
    n_missing: int = 0


@dataclass(slots=True)
class Recording:
    """An opened recording and the parameters it is processed with (close it after use).

    Attributes
    ----------
    source : FrameSource
    info : SourceInfo
    params : CNMFEParams
        The job's parameters, with the source's frame rate when ``job.rate_from_file``: the
        parameters written into the results file.
    n_frames : int
        Frames to process (the recording's, at most ``job.max_frames``).
    """

    source: FrameSource
    info: SourceInfo
    params: CNMFEParams
    n_frames: int

    def close(self) -> None:
        """Release the recording's files (idempotent)."""
        self.source.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_recording(job: ProcessJob, *, preflight: bool = True) -> Recording:
    """Open the job's recording and check it can be processed; resolve the parameters.

    Parameters
    ----------
    job : ProcessJob
    preflight : bool
        Also check the output (:func:`check_output_of`) before returning. A caller that
        passes False (``batch``, which first decides whether the file is up to date) calls
        :func:`check_output_of` itself before :func:`process_opened`.

    Raises
    ------
    InputFileError
        If the recording is endless or too short for the initialisation.
    ConfigError
        If the output cannot be written as asked (``preflight``).
    SourceError
        If the recording cannot be opened.
    """
    from acquisition.sources import open_source

    source = open_source(job.movie, dataset=job.dataset, frame_rate_hz=job.frame_rate_hz)
    try:
        info = source.info
        if info.n_frames is None:
            raise InputFileError(f"{job.movie}: endless source; `process` needs a finite recording")
        n_total = info.n_frames if job.max_frames is None else min(info.n_frames, job.max_frames)
        if preflight:
            check_output_of(job, n_total)
        n_init = job.params.init.init_frames
        if n_total <= n_init:
            have = (
                f"{job.movie} has {n_total} frames"
                if n_total == info.n_frames
                else f"--max-frames {job.max_frames} keeps {n_total} of the {info.n_frames} "
                f"frames of {job.movie}"
            )
            raise InputFileError(
                f"{have}; initialisation needs init.init_frames={n_init} plus at least one "
                f"more. Pass a smaller --init-frames (at most {max(n_total - 1, 0)})"
                + ("." if n_total == info.n_frames else " or a larger --max-frames.")
            )
    except BaseException:
        source.close()
        raise
    params = job.params
    if job.rate_from_file:
        params = params.replace(**{"data.frame_rate_hz": float(info.frame_rate_hz)})
    else:
        warn_rate_mismatch(info.metadata.get("declared_frame_rate_hz"), params, str(job.movie))
    return Recording(source, info, params, n_total)


def check_output_of(job: ProcessJob, n_frames: int) -> None:
    """Refuse (ConfigError, one line) a ``job.out`` that cannot be written as the job asks:
    it exists without ``job.overwrite``, it is the input, its folder is not writable or its
    disk lacks room for ``n_frames`` frames of results. Checked before any frame is read."""
    check_output(
        job.out, overwrite=job.overwrite, inputs=(job.movie,),
        need_bytes=WRITER_RESERVE_BYTES + estimate_results_bytes(n_frames),
    )  # fmt: skip


def process_recording(job: ProcessJob) -> ProcessSummary:
    """Fit the initial model on the first frames, run the online model over the rest, write.

    Frames are read as the model needs them: only the initialisation frames are held in
    memory at once, and they are released before the online phase.

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
    ConfigError
        If ``out`` exists (without ``overwrite``), is not writable, or its disk lacks the
        space for the estimated results (checked before any frame is read).
    SourceError, StoreError
        If the recording cannot be read or the results file cannot be written.
    """
    with open_recording(job) as recording:
        return process_opened(job, recording)


def process_opened(job: ProcessJob, recording: Recording) -> ProcessSummary:
    """:func:`process_recording` on a recording already opened by :func:`open_recording`
    (whose preflight, or the caller's :func:`check_output_of`, has checked ``job.out``)."""
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results import state_file
    from online_cnmfe.results.summary import SessionSummary

    params, n_total = recording.params, recording.n_frames
    n_init = params.init.init_frames
    frames_iter = recording.source.frames(0, n_total)
    if job.init_result:  # fitted already, on exactly these frames
        head, rejected = [next(frames_iter) for _ in range(n_init)], []
    else:
        head, rejected = _init_frames(frames_iter, n_init, params, job.movie)
    init_frames = np.stack([f.pixels for f in head]).astype(np.float32)
    summary = SessionSummary(init_frames.shape[1:])  # images/mean and images/max
    for frame in head:
        summary.add(frame.pixels)
    head = [f._replace(pixels=None) for f in head]  # only the bookkeeping is written later
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
    del init_frames  # the online phase holds one frame at a time
    logger.info(
        "initialised %d neurons on %d frames in %.1f s",
        model.n_components,
        len(head),
        time.perf_counter() - t0,
    )
    with _slow_path_executor(params) as executor:
        model.run_slow_path_on(executor)
        return _process_online(
            job, recording, init, head, frames_iter, model, summary, rejected=rejected
        )


def _init_frames(frames_iter, n_init: int, params: CNMFEParams, movie) -> tuple[list, list]:
    """The first ``n_init`` frames fit for the initialisation, and (frame_index, reason) of
    those left out (NaN/inf, wild values: :func:`~online_cnmfe.model.frame_screen.
    screen_frames`); later frames take their place."""
    head: list = []
    rejected: list[tuple[int, str]] = []
    while len(head) < n_init:
        try:
            head += [next(frames_iter) for _ in range(n_init - len(head))]
        except StopIteration:
            raise InputFileError(
                f"{movie}: only {len(head)} frames fit for the initialisation "
                f"({len(rejected)} left out, e.g. frame {rejected[0][0]}: {rejected[0][1]}); "
                "it needs init.init_frames plus one"
            ) from None
        bad = screen_frames([f.pixels for f in head], params.online.max_pixel_excursion_ranges)
        rejected += [(int(head[i].frame_index), reason) for i, reason in sorted(bad.items())]
        head = [f for i, f in enumerate(head) if i not in bad]
    return head, sorted(rejected)


def _slow_path_executor(params: CNMFEParams) -> contextlib.AbstractContextManager:
    """A one-thread pool for the slow path's steps, or (``engine.slow_path_thread=false``)
    None: inline. Results are identical."""
    if not params.engine.slow_path_thread:
        return contextlib.nullcontext(None)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-path")


def _process_online(
    job, recording, init, head, frames_iter, model, summary, rejected=()
) -> ProcessSummary:
    """The online part of :func:`process_recording`: frames after the initialisation
    (``head``: their bookkeeping; ``summary``: the mean/max images, fed with them;
    ``rejected``: (frame_index, reason) of initialisation frames left out)."""
    from online_cnmfe.results import state_file
    from online_cnmfe.results.summary import init_images
    from online_cnmfe.results.writer import ResultsWriter

    params, info, n_total = recording.params, recording.info, recording.n_frames
    n_init = len(head)
    provenance = {"path": str(Path(job.movie).resolve()), "source": info.description}
    out = Path(job.out)
    sanity = {"message": ""}  # the plausibility warning (root attribute sanity_warning)

    def write_sanity(f) -> None:  # at every flush, the last one after the final check
        f.attrs["sanity_warning"] = sanity["message"]

    with ResultsWriter(
        out, model.dims, params, info.frame_rate_hz, provenance, flush_hooks=[write_sanity]
    ) as writer:
        writer.start_session(None, info.frame_rate_hz, info.description)
        drops = _DropTracker(writer, info.metadata.get("first_frame_index"))
        for frame_index, reason in rejected:
            writer.record_reject(frame_index, reason)
        _write_init_frames(writer, init, head, model.neuron_ids[: init.n_components], drops)
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        writer.set_images(init_images(init), n_frames=n_init, source="initialisation frames")
        writer.set_images(summary.images(), **summary.attrs())
        writer.set_background(model.b0)
        times = _run_online(
            model, frames_iter, writer, n_total - n_init, job.progress, drops, summary
        )
        writer.set_footprints(model.footprints, model.neuron_ids, model.footprints_version)
        writer.set_background(model.b0)
        writer.set_images(summary.images(), **summary.attrs())
        sanity["message"] = _final_sanity(model) or ""
        n_written = writer.n_frames
    if job.save_model:
        state_file.save_online_model(job.save_model, model)
    if len(times):
        logger.info(
            "processed %d frames: per frame median %.2f ms, p99 %.2f ms, max %.2f ms; "
            "%d neurons; %d frame(s) missing from the recording, %d hardware frames lost "
            "upstream; %d frames flagged (not used to update the model: frames/flagged); "
            "results in %s",
            len(times),
            np.median(times),
            np.percentile(times, 99),
            times.max(),
            model.n_components,
            drops.n_missing,
            drops.n_lost,
            model.state.n_flagged + _n_init_flagged(init),
            out,
        )
    return ProcessSummary(
        out, n_written, model.n_components, drops.n_lost, times, n_missing=drops.n_missing
    )


def warn_rate_mismatch(declared: float | None, params: CNMFEParams, what: str) -> bool:
    """Warn (naming both values) when the recording's own rate and ``data.frame_rate_hz``
    differ by more than 1 %; True if they do."""
    rate = params.data.frame_rate_hz
    if declared is None or not declared > 0 or abs(declared - rate) <= 0.01 * rate:
        return False
    logger.warning(
        "%s declares %.4g Hz but data.frame_rate_hz=%.4g Hz is set; %.4g Hz is used (time "
        "constants and the results file follow it). Remove the setting to use the recording's.",
        what, declared, rate, rate,
    )  # fmt: skip
    return True


def _write_init_frames(writer, init, head, ids, drops) -> None:
    pre = getattr(init, "preprocess", None)
    flags = pre.init.reason_of() if pre is not None and pre.init is not None else []
    for j, frame in enumerate(head):
        drops.see(frame)
        result = FrameResult(
            frame_index=j,
            neuron_ids=ids,
            C=np.asarray(init.C[:, j], np.float32),
            S=np.asarray(init.S[:, j], np.float32),
            C_raw=np.asarray(init.C_raw[:, j], np.float32),
            **init_frame_fields(
                getattr(init, "motion", None), j, flags[j] if j < len(flags) else None
            ),
        )
        writer.append_frame(result, _meta(frame, float("nan")))


class _DropTracker:
    """Records the frames missing from the recording in the file's bookkeeping: gaps in the
    frame indices (e.g. a lost Miniscope chunk) as ``dropped``, gaps in the DAQ frame counter
    (hardware frames the acquisition software never got) as ``daq_lost``."""

    def __init__(self, writer, first_index: int | None = None) -> None:
        self.writer = writer
        self.last: int | None = None
        self.next_index = first_index  # the recording's first frame index, when known
        self.n_lost = 0  # DAQ
        self.n_missing = 0  # frame indices

    def see(self, frame) -> None:
        index = int(frame.frame_index)
        if self.next_index is not None and index > self.next_index:
            why = (
                "missing from the recording (frame_index jumps from "
                f"{self.next_index - 1} to {index})"
            )
            self.writer.record_drop(self.next_index, index - 1, why)
            self.n_missing += index - self.next_index
        self.next_index = index + 1 if self.next_index is None else max(self.next_index, index + 1)
        daq = frame.daq_frame
        if daq is None:
            return
        if self.last is not None and daq > self.last + 1:
            why = f"DAQ frame counter jumps from {self.last} to {daq}: never reached the software"
            self.writer.record_lost("daq_lost", self.last + 1, daq - 1, why)
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


def _run_online(model, frames_iter, writer, n_frames: int, progress: bool, drops, summary):
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
            if not result.skipped and not result.flag:  # flagged: e.g. a motion outlier
                summary.add(frame.pixels)
            writer.append_frame(result, _meta(frame, times[n]))
            if result.footprints_version != version:
                version = result.footprints_version
                writer.set_footprints(model.footprints, model.neuron_ids, version)
            n += 1
            bar.update(1)
    return times[:n]


def _n_init_flagged(init) -> int:
    pre = getattr(init, "preprocess", None)
    return int(pre.init.flagged.sum()) if pre is not None and pre.init is not None else 0


def _final_sanity(model) -> str | None:
    """The plausibility check of the final components, logged loudly when it fails."""
    report = final_check(model)
    if report is not None and not report.ok:
        logger.warning("%s", report.message)
    return None if report is None else report.message
