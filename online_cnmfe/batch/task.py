"""One batch session on a worker: the same code path as ``online-cnmfe process``.

:func:`run_session` is what a Dask worker executes. It pins the numerical libraries to one
thread (a worker runs one session at a time, and N workers on N cores must not oversubscribe
them), skips the session when its results file is already up to date, otherwise calls
:func:`~online_cnmfe.offline.process.process_opened`, and returns a plain dict for the
summary. A failure comes back as a result too (``status="error"`` and a one-line ``error``):
the runner retries it and records the error, and only plain data crosses the wire.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from dataclasses import replace
from typing import Any

from online_cnmfe.batch.plan import SessionTask
from online_cnmfe.errors import USER_ERRORS
from online_cnmfe.offline.process import check_output_of, open_recording, process_opened
from online_cnmfe.offline.up_to_date import why_redo

logger = logging.getLogger(__name__)

# Set in the environment of the worker processes the runner starts (before numpy and numba
# are imported); run_session also pins numba at run time for workers started elsewhere.
THREAD_ENV = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def pin_threads() -> None:
    """One numba thread for the calling thread's parallel kernels (BLAS is pinned by the
    environment: ``OPENBLAS/MKL/OMP_NUM_THREADS=1``, which Dask's nannies set by default)."""
    import numba

    numba.set_num_threads(1)


def run_session(task: SessionTask) -> dict[str, Any]:
    """Process one session (or skip it when its results are up to date).

    Parameters
    ----------
    task : SessionTask

    Returns
    -------
    dict
        ``status`` (``"ok"``, ``"skipped"`` or ``"error"``), ``frames``, ``neurons``,
        ``wall_s``, ``cpu_s`` (CPU time of this thread), ``peak_rss_mib`` (the worker
        process's peak resident memory so far), ``worker`` (host:pid), ``note`` (why it was
        redone or skipped) and, for ``"error"``, ``error``: what ``process`` would have
        reported (unreadable file, too short, disk full, or an unexpected exception).
    """
    pin_threads()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        result = _run(task)
    except USER_ERRORS as exc:
        logger.warning("%s failed: %s", task.name, exc)
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - any failure is reported in the summary, not lost
        logger.exception("%s failed with an unexpected error", task.name)
        result = {"status": "error", "error": f"unexpected {type(exc).__name__}: {exc}"}
    result.update(
        wall_s=round(time.perf_counter() - wall0, 3),
        cpu_s=round(time.thread_time() - cpu0, 3),
        peak_rss_mib=round(_peak_rss_mib(), 1),
        worker=worker,
    )
    return result


def _run(task: SessionTask) -> dict[str, Any]:
    job = task.job()
    with open_recording(job, preflight=False) as recording:
        reason = "--force" if task.force else why_redo(job.out, recording, job.movie)
        if reason is None:
            frames, neurons = _existing_counts(job.out)
            status, note = "skipped", "results up to date (same parameters)"
        else:
            logger.info("%s: processing (%s)", task.name, reason)
            # The rerun rule above decides: a stale, interrupted or --force'd file is replaced
            # (process's preflight still refuses writing over the input or a full disk).
            job = replace(job, overwrite=True)
            check_output_of(job, recording.n_frames)
            summary = process_opened(job, recording)
            frames, neurons = summary.n_frames, summary.n_components
            status, note = "ok", reason
    return {"status": status, "frames": int(frames), "neurons": int(neurons), "note": note}


def _existing_counts(path) -> tuple[int, int]:
    from online_cnmfe.results.layout import open_for_reading

    with open_for_reading(path) as f:
        return int(f.attrs["n_frames"]), int(f["footprints"].attrs["shape"][1])


def _peak_rss_mib() -> float:
    try:
        import resource
    except ImportError:  # Windows: no getrusage
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB
