"""Where the slow path's steps run: :class:`InlineExecutor` (the calling thread) or any
``concurrent.futures.Executor`` the caller provides (the engine and ``process`` pass a
one-thread pool, so a step overlaps the next frame's critical path).
"""

from __future__ import annotations

from concurrent.futures import Executor, Future


class InlineExecutor(Executor):
    """Runs each submitted call at once on the calling thread; returns a completed Future."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - re-raised by Future.result()
            future.set_exception(exc)
        return future
