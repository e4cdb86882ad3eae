"""Running a batch on Dask distributed: the cluster, submission, retries, progress, Ctrl-C.

The only module that imports Dask (and only ``online-cnmfe batch`` imports it, so the rest of
the command line starts fast). Each session is one Dask task (:func:`.task.run_session`) on a
worker with one thread: a worker processes one session at a time, with numba and BLAS pinned
to one thread, so N workers use N cores. A session is submitted only when a worker is free,
and pinned to it (Dask fails every task assigned to a worker that dies). A task that raises,
or whose worker dies (killed, out of memory, crashed), is submitted once more; a second
failure marks the session ``failed`` with the error, and the other sessions go on.
``summary.csv`` is rewritten after every session. Ctrl-C cancels what has not finished, marks
it ``cancelled`` and stops the cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask
from distributed import Client, Future, KilledWorker, LocalCluster, wait
from distributed.diagnostics.plugin import WorkerPlugin

from online_cnmfe.batch.plan import SessionTask
from online_cnmfe.batch.summary import Summary
from online_cnmfe.batch.task import THREAD_ENV, run_session
from online_cnmfe.errors import OnlineCNMFEError

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a failing session is retried once
POLL_S = 0.5  # how often free worker threads are counted while sessions run


class ClusterError(OnlineCNMFEError):
    """The Dask cluster cannot be started or reached."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    """Where the sessions run.

    Attributes
    ----------
    workers : int, optional
        Worker processes of the local cluster (default: one per available core).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); no local cluster then.
    memory_limit : str
        Memory limit per local worker (``"auto"``: the machine's memory / workers; or e.g.
        ``"4GiB"``); a worker over 95% of it is restarted and its session retried.
    dashboard_address : str
        Where the local cluster serves its dashboard (loopback by default).
    """

    workers: int | None = None
    scheduler: str | None = None
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("give either workers (a local cluster) or scheduler, not both")


def run_batch(
    tasks: list[SessionTask], out_dir: str | Path, options: ClusterOptions, *, progress=False
) -> Summary:
    """Run every session on the cluster; return the summary (also in ``out_dir/summary.csv``).

    Parameters
    ----------
    tasks : list of SessionTask
    out_dir : path-like
        Created if missing; receives the results files and ``summary.csv``.
    options : ClusterOptions
    progress : bool
        A progress bar over sessions on stderr.

    Raises
    ------
    ClusterError
        If the cluster cannot be started or reached.
    KeyboardInterrupt
        After Ctrl-C, once unfinished sessions are cancelled and marked in the summary.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(out_dir / "summary.csv", tasks)
    summary.write()
    t0 = time.perf_counter()
    with _client(options) as client:
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        logger.info(
            "%d sessions on %d Dask workers; dashboard: %s",
            len(tasks),
            n_workers,
            client.dashboard_link,
        )
        _run(client, tasks, summary, progress)
    counts = summary.counts()
    logger.info(
        "batch finished in %.0f s: %s; summary in %s",
        time.perf_counter() - t0,
        ", ".join(f"{counts[s]} {s}" for s in ("ok", "skipped", "failed") if counts[s]),
        summary.path,
    )
    return summary


@contextmanager
def _client(options: ClusterOptions) -> Iterator[Client]:
    # BLAS/OpenMP threads: Dask's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 before spawning
    # (its default "pre-spawn-environ", which also lands in this process's environment).
    # NUMBA_NUM_THREADS goes through the nanny's `env`, set in the worker process only (numba
    # is imported there later, with the first session): changed here, it would break numba
    # in a Python session that calls run_batch after using numba's threads.
    config = {"distributed.scheduler.allowed-failures": 0}  # a dead worker fails the task
    with dask.config.set(config):
        if options.scheduler is not None:
            try:
                client = Client(options.scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {options.scheduler} ({exc}); check "
                    "the address and that the scheduler is running"
                ) from None
            with client:
                yield client
            return
        n = options.workers or _available_cores()
        try:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=options.dashboard_address,
                memory_limit=options.memory_limit,
                env=THREAD_ENV,
            )
        except (OSError, ValueError, TimeoutError) as exc:
            raise ClusterError(f"cannot start a local Dask cluster of {n} workers: {exc}") from None
        with cluster, Client(cluster) as client:
            client.register_plugin(_IgnoreCtrlC(), name="online-cnmfe-ignore-ctrl-c")
            yield client


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (cgroups, taskset)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _IgnoreCtrlC(WorkerPlugin):
    """Local workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and
    the client, not each worker, decides what to cancel and stops the cluster."""

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Sessions:
    """Hands each session to a worker thread that is free, no faster.

    Dask assigns a task to a worker as soon as it is submitted, and when a worker dies every
    task assigned to it fails, run or not. So a session is submitted only when a running
    worker has a free thread, and pinned to that worker: a worker holds only the sessions it
    runs, a killed worker fails only those, and a worker that (re)joins gets the next one.
    """

    def __init__(self, client: Client, tasks: list[SessionTask]) -> None:
        self.client = client
        # longest first: the batch ends sooner when the long sessions are not left for last
        self.backlog = deque((t, 1) for t in sorted(tasks, key=lambda t: -t.size_bytes))
        self.running: dict[Future, tuple[SessionTask, int, str]] = {}

    def __bool__(self) -> bool:
        return bool(self.backlog or self.running)

    def submit_to_free_threads(self) -> None:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        busy = Counter(address for _, _, address in self.running.values())
        for address, worker in workers.items():
            if worker.get("status") != "running":
                continue
            for _ in range(int(worker.get("nthreads", 1)) - busy[address]):
                if not self.backlog:
                    return
                task, attempt = self.backlog.popleft()
                key = f"session-{task.name}-{attempt}-{uuid.uuid4().hex[:8]}"
                future = self.client.submit(
                    run_session,
                    task,
                    key=key,
                    pure=False,
                    workers=[address],
                    allow_other_workers=True,  # should it leave before the task arrives
                )
                self.running[future] = (task, attempt, address)

    def finished(self) -> list[tuple[SessionTask, int, dict]]:
        """Sessions whose task ended within :data:`POLL_S` (their result dicts)."""
        if not self.running:
            time.sleep(POLL_S)  # no worker yet (starting, or all restarting)
            return []
        try:
            done, _ = wait(list(self.running), timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        out = []
        for future in done:
            task, attempt, _ = self.running.pop(future)
            out.append((task, attempt, _result(future)))
            future.release()
        return out

    def retry(self, task: SessionTask, attempt: int) -> None:
        self.backlog.appendleft((task, attempt + 1))

    def cancel(self) -> list[tuple[SessionTask, int]]:
        """Cancel everything not finished; return it."""
        self.client.cancel(list(self.running), force=True)
        left = [(t, a) for t, a, _ in self.running.values()]
        left += [(t, a - 1) for t, a in self.backlog]
        self.running.clear()
        self.backlog.clear()
        return left


def _run(client: Client, tasks: list[SessionTask], summary: Summary, progress: bool) -> None:
    from tqdm import tqdm

    sessions = _Sessions(client, tasks)
    bar = tqdm(total=len(tasks), unit="session", disable=not progress, file=sys.stderr)
    try:
        while sessions:
            sessions.submit_to_free_threads()
            for task, attempt, result in sessions.finished():
                if result["status"] == "error" and attempt < MAX_ATTEMPTS:
                    logger.warning(
                        "%s: attempt %d failed (%s); retrying", task.name, attempt, result["error"]
                    )
                    sessions.retry(task, attempt)
                    summary.update(task.name, attempts=attempt, error=result["error"])
                    summary.write()
                    continue
                if result["status"] == "error":
                    logger.error(
                        "%s failed after %d attempts: %s", task.name, attempt, result["error"]
                    )
                    result["status"] = "failed"
                summary.update(task.name, attempts=attempt, **{"error": "", **result})
                summary.write()
                bar.update(1)
                bar.set_postfix(summary.counts(), refresh=False)
    except KeyboardInterrupt:
        left = sessions.cancel()
        _quiet_shutdown(client)
        for task, attempt in left:
            summary.update(
                task.name,
                status="cancelled",
                attempts=attempt,
                error="interrupted (Ctrl-C) before it finished; rerun the batch to process it",
            )
        summary.write()
        logger.warning("interrupted: %d sessions cancelled", len(left))
        raise
    finally:
        bar.close()


def _quiet_shutdown(client: Client) -> None:
    """Workers still busy in a session log every failed heartbeat while the cluster closes;
    after Ctrl-C that is expected, so only critical messages are kept."""
    try:
        client.run(_silence_distributed_logs)
    except Exception as exc:  # noqa: BLE001 - best effort: the cluster is being stopped anyway
        logger.debug("could not quiet the workers' logs: %s", exc)
    _silence_distributed_logs()


def _silence_distributed_logs() -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _result(future: Future) -> dict:
    """The task's result dict; a task that did not return one becomes ``status="error"``."""
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except Exception as err:  # noqa: BLE001 - a cancelled or lost future: say so
        return {"status": "error", "error": f"the task was {future.status} ({err!r})"}
    if isinstance(exc, KilledWorker):
        error = (
            "the worker running it died (killed, out of memory or crashed; see the worker's "
            "log and --memory-limit)"
        )
    else:
        error = f"{type(exc).__name__}: {exc}"
    return {"status": "error", "error": error}
