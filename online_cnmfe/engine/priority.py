"""Real-time scheduling for the engine's latency-critical threads (``engine.realtime_priority``).

On a machine shared with other work (the acquisition, a display, another session), a frame's
traces wait whenever the model thread, woken by the frame, finds both cores busy: the
scheduler gives it a core only at its next tick. Under ``SCHED_FIFO`` the receive and model
threads (the latter until the frame's traces are out: :class:`ModelThreadPriority`), and
ZeroMQ's I/O thread that carries the frames in and the traces out, take a core at once when
they wake; they sleep between frames, so they do not starve anything (and Linux
keeps 5 % of each second for normal threads regardless). Threads they start afterwards (the
initialisation's, the store's) get the normal policy back (``SCHED_RESET_ON_FORK``): only the
frame's critical path is raised, and the slow path's thread one step below it
(:func:`slow_path_pool`): the model thread waits for the previous frame's slow step at the
next frame, so a slow-path thread left to the normal scheduler would hand the load back to
the model thread (seen: 34 ms waits at load 4 on two cores).

It needs the right to (``CAP_SYS_NICE``: root, or an ``rtprio`` limit in
/etc/security/limits.conf); without it the thread keeps its normal scheduling and a warning
says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import zmq

logger = logging.getLogger(__name__)


def raise_to_realtime(priority: int, thread: str) -> bool:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` (1-99; 0 leaves it as it is).

    Returns
    -------
    bool
        True when raised; False when ``priority`` is 0 or the OS refused (logged).
    """
    if priority <= 0:
        return False
    policy = getattr(os, "SCHED_FIFO", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        logger.warning("%s thread: no real-time scheduling on this system", thread)
        return False
    try:  # pid 0: the calling thread (Linux schedules threads)
        os.sched_setscheduler(0, policy | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:
        logger.warning(
            "%s thread: real-time priority %d refused (%s); it keeps normal scheduling "
            "(engine.realtime_priority needs CAP_SYS_NICE or an rtprio limit)",
            thread, priority, exc.strerror or exc,
        )  # fmt: skip
        return False
    logger.info("%s thread: real-time priority %d (SCHED_FIFO)", thread, priority)
    return True


class ModelThreadPriority:
    """The model thread's scheduling (create it on that thread, before any other thread).

    Real-time while the thread waits for a frame and until that frame's traces are out
    (:meth:`critical`), normal for the rest of the frame's work — the residual, the slow
    path's hand-over, storing, display images — (:meth:`relaxed`): a real-time thread keeps
    its core until it sleeps, so the subscribers that must now receive the traces (the closed
    loop's trigger client, normally scheduled) would wait for that work (seen: +1.7 ms median
    delivery at 608² on a loaded machine). One system call each way.
    """

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.enabled = raise_to_realtime(priority, "model")
        self._raised = self.enabled

    def zmq_context(self) -> zmq.Context:
        """A ZeroMQ context whose I/O threads (frames in, traces out) run at the same priority
        when this thread's was allowed (only then: libzmq aborts the process when it may not
        set a thread's priority). Call before any socket."""
        ctx = zmq.Context()
        if self.enabled:
            ctx.set(zmq.THREAD_SCHED_POLICY, os.SCHED_FIFO)
            ctx.set(zmq.THREAD_PRIORITY, self.priority)
        return ctx

    def critical(self) -> None:
        """Before waiting for the next frame."""
        if self.enabled and not self._raised:
            os.sched_setscheduler(0, _FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(self.priority))
            self._raised = True

    def relaxed(self) -> None:
        """Once the frame's traces are out."""
        if self._raised:
            os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
            self._raised = False


_FIFO = getattr(os, "SCHED_FIFO", 1)


@contextmanager
def restored_scheduling() -> Iterator[None]:
    """Give the calling thread its scheduling policy back on exit (an engine run inside a
    larger process, e.g. the tests, does not leave its thread real-time)."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        try:
            os.sched_setscheduler(0, policy, param)
        except OSError as exc:  # (lowering one's own priority is always allowed)
            logger.warning("could not restore the thread's scheduling: %s", exc)


def slow_path_pool(priority: int) -> ThreadPoolExecutor:
    """The slow path's one-thread executor; its thread runs at ``priority - 1`` (normal
    scheduling when that is 0), below the model thread it must never delay."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="slow-path",
        initializer=raise_to_realtime, initargs=(max(0, priority - 1), "slow-path"),
    )  # fmt: skip
