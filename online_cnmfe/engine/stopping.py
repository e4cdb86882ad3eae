"""How the engine stops without losing track of a frame (model thread).

- **End of stream** (``eos``): the receive thread stops and the model thread processes every
  frame still queued (memory and disk spool: the catch-up), then stops.
- **Ctrl-C / SIGTERM**: the same, for at most ``engine.drain_timeout_s`` of processing (time
  spent finishing an initialisation does not count); a second signal stops at once.
- **Stopped before the initialisation ended** (a stream shorter than ``init.init_frames``, or
  a signal): when at least :data:`MIN_INIT_FRAMES` frames were received, the model is
  initialised on them and their results are written; else nothing can be fitted, the engine
  says so and exits with :data:`EXIT_NOTHING_FITTED`.
- **Leftovers**: frames received but not processed when the engine stops (the drain timed
  out, a second signal, a fatal error) are recorded as ``unprocessed`` in the results file,
  with the reason, and their pixels are kept in ``<out stem>.unprocessed.h5`` (or are already
  in the ``engine.record_raw`` recording). Stream incidents still queued are recorded too.
"""

from __future__ import annotations

import logging
import math
import time

from online_cnmfe.engine.frame_queue import Control, QueuedFrame
from online_cnmfe.engine.raw_recorder import RawFiles
from online_cnmfe.results.bookkeeping import describe

logger = logging.getLogger(__name__)

MIN_INIT_FRAMES = 20  # the batch initialisation's own minimum
EXIT_NOTHING_FITTED = 4


class StoppingMixin:
    """Draining, the early initialisation and the leftovers (the :class:`Engine`'s)."""

    def request_stop(self, reason: str, drain: bool = False) -> None:
        """Stop the engine; with ``drain``, first process what is queued (see the module
        docstring). While draining for a signal, another request stops at once."""
        if self.stop_event.is_set():
            return
        draining = self._drain_deadline is not None
        if not drain:
            if draining:
                logger.warning("stopping now (%s); frames still queued stay unprocessed", reason)
            else:
                self.stop_reason = reason
            self.receive_stop.set()
            self.stop_event.set()
            return
        timeout = math.inf if reason == "eos" else self.ep.drain_timeout_s
        if draining:  # a signal while catching up after the eos: bound the time left
            self._drain_by_signal = True
            self._drain_timeout = min(self._drain_timeout, timeout)
            self._drain_deadline = min(self._drain_deadline, time.monotonic() + timeout)
            return
        self.stop_reason = reason
        self._drain_by_signal = reason != "eos"
        self._drain_timeout = timeout
        self._drain_deadline = time.monotonic() + timeout
        self.receive_stop.set()
        n = len(self.queue) + len(getattr(self.runner, "frames", ()))
        if n and reason != "eos":
            logger.warning(
                "stopping (%s): processing the %d frame(s) still waiting for at most %.0f s "
                "(engine.drain_timeout_s); send the signal again to stop now", reason, n, timeout,
            )  # fmt: skip

    def _signal(self, name: str) -> None:
        """SIGINT/SIGTERM: drain; a second one (or one while draining for a signal) stops."""
        self.request_stop(name, drain=not self._drain_by_signal)

    def _idle_too_long(self, now: float) -> bool:
        """No frame arrived for ``idle_exit_s`` while nothing was queued or initialising."""
        n = self.receiver.n_received
        busy = len(self.queue) > 0 or self.runner.phase == "initialising"
        if n != self._idle_count or busy:
            self._idle_count, self._idle_since = n, now
        limit = self.config.idle_exit_s
        return bool(limit) and n > 0 and now - self._idle_since > limit

    def _check_drained(self, idle: bool) -> None:
        """While draining: stop once everything queued is processed or the time is up."""
        runner = self.runner
        if runner.initialising:  # finishing an initialisation does not use the drain time
            self._drain_deadline = time.monotonic() + self._drain_timeout
            return
        if time.monotonic() > self._drain_deadline:
            logger.warning("drain time (engine.drain_timeout_s) over; stopping")
            self.stop_event.set()
        elif idle and len(self.queue) == 0 and runner.phase != "initialising":
            if runner.phase == "waiting" and len(runner.frames) >= MIN_INIT_FRAMES:
                self._early_init()
            else:
                self.stop_event.set()

    def _early_init(self) -> None:
        runner = self.runner
        for frame_index, reason in runner.screen():  # unfit frames stay out of this fit too
            self._reject(frame_index, reason)
        n = len(runner.frames)
        if n < MIN_INIT_FRAMES:
            logger.warning("the stream stopped with %d usable frame(s): nothing to fit", n)
            self.stop_event.set()
            return
        logger.warning(
            "the stream stopped after %d frame(s), fewer than init.init_frames=%d: "
            "initialising on those", n, self.params.init.init_frames,
        )  # fmt: skip
        runner.start_init(n_frames=n)

    # ---- the summary ---------------------------------------------------------------------------
    def _summary_fields(self) -> dict:
        c = self.counts
        return {
            "n_frames_received": self.receiver.n_received,
            "n_frames_stored": self.store.n_frames,
            "n_dropped": c["dropped"],
            "n_rejected": c["rejected"],
            "n_unprocessed": c["unprocessed"],
            "n_unsaved": self.store.n_unsaved,
            "n_malformed": self.receiver.n_malformed,
            "n_restarts": c["restarts"],
            "summary": self.summary,
        }

    def _summary(self) -> str:
        c = self.counts
        totals = {
            "n_frames_dropped": c["dropped"], "n_frames_rejected": c["rejected"],
            "n_frames_unprocessed": c["unprocessed"], "n_frames_unsaved": self.store.n_unsaved,
            "n_daq_lost": c["daq_lost"], "n_malformed": self.receiver.n_malformed,
            "n_restarts": c["restarts"],
        }  # fmt: skip
        n_init = c["init_frames"]
        line = describe(totals, self.status.n_processed + n_init)
        line = f"{self.receiver.n_received} frames received; {line}"
        if n_init:
            line = line.replace(" processed", f" processed ({n_init} by the initialisation)", 1)
        path = self.results_path
        return f"{line}; results in {path}" if path is not None else line

    def _nothing_fitted_message(self) -> str:
        runner, n = self.runner, self.receiver.n_received
        if n == 0:
            return f"no frame was received from {self.config.frames_endpoint}; nothing to fit"
        where = self.config.out or "nowhere (no --out)"
        if runner is not None and runner.init_error is not None:
            why = f"the initialisation failed ({runner.init_error})"
        else:
            why = (
                f"the stream stopped ({self.stop_reason}) after {n} frame(s), fewer than the "
                f"{MIN_INIT_FRAMES} a model needs"
            )
        return (
            f"no model was fitted: {why}. The frames received are recorded as unprocessed in "
            f"{where}; lower init.init_frames or stream longer, then run again."
        )

    # ---- leftovers ---------------------------------------------------------------------------
    def _settle_leftovers(self) -> None:
        """Record what is still queued or buffered (see the module docstring)."""
        runner = self.runner
        if runner.phase == "initialising" and not runner.initialising:
            self._finish_init()  # it ended while we stopped: keep its results
        runner = self.runner
        left = Leftovers(self)
        if runner.phase != "running":
            why = "before the model was initialised"
            for pixels, meta in zip(runner.frames, runner.metas, strict=True):
                left.add(pixels, meta, why)
            runner.frames, runner.metas = [], []
        while True:
            item = self.queue.get(0.0)
            if item is None:
                break
            if isinstance(item, Control):
                if item.kind not in ("eos", "restart"):
                    self._on_control(item)
                elif item.kind == "restart":
                    self.counts["restarts"] += 1
                    self.store.submit("count", "n_restarts", 1)
            elif isinstance(item, QueuedFrame):
                f = item.frame
                meta = {"frame_index": f.frame_index, "seq": f.seq, "daq_frame": f.daq_frame,
                        "t_acq_ms": f.t_acq_ms, "t_recv_ns": item.t_recv_ns,
                        "session_id": f.session_id}  # fmt: skip
                left.add(f.pixels, meta, "still queued")
        left.close()


class Leftovers:
    """Frames not processed at shutdown: recorded in ranges, pixels kept (see the module
    docstring)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.files: RawFiles | None = None
        self.range: list | None = None  # [first, last, why]
        self.n = 0
        self.where = self._where()

    def _where(self) -> str:
        e = self.engine
        if e.recorder is not None:
            return f"the pixels are in the raw recording {e.recorder.files.describe()}"
        if e.config.out is None:
            return "the pixels were not kept (no --out)"
        return "the pixels are in {unprocessed}"

    def add(self, pixels, meta: dict, why: str) -> None:
        e = self.engine
        self.n += 1
        if e.recorder is None and e.config.out is not None:
            self._keep(pixels, meta)
        index = int(meta["frame_index"])
        r = self.range
        if r is not None and r[1] == index - 1 and r[2] == why:
            r[1] = index
            return
        self._flush()
        self.range = [index, index, why]

    def _keep(self, pixels, meta: dict) -> None:
        if self.files is None:
            e = self.engine
            self.files = RawFiles(
                e.config.out, "unprocessed", "frames the engine received but did not process",
                {"frames_endpoint": e.config.frames_endpoint}, e.ep.flush_period_s,
            )  # fmt: skip
            self.files.set_frame_rate(e.stream_rate)
        try:
            self.files.write(pixels, meta)
        except Exception as exc:  # noqa: BLE001 - the bookkeeping must still be written
            logger.error("cannot keep the unprocessed frames: %s", exc)
            self.where = f"the pixels could not be kept ({exc})"

    def _flush(self) -> None:
        if self.range is None:
            return
        first, last, why = self.range
        self.range = None
        e = self.engine
        where = self.where
        if "{unprocessed}" in where and self.files is not None:
            where = where.format(unprocessed=self.files.describe())
        reason = f"the engine stopped ({e.stop_reason}) {why}; {where}"
        e.counts["unprocessed"] += last - first + 1
        e.store.submit("lost", "unprocessed", first, last, reason)

    def close(self) -> None:
        if self.files is not None:
            self.files.close()  # before the last range names them
        self._flush()
        if self.n:
            logger.warning(
                "%d frame(s) received but not processed; %s", self.n,
                self.where.format(unprocessed=self.files.describe() if self.files else "-"),
            )  # fmt: skip
