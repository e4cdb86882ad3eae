"""The streaming engine: frames in over ZeroMQ, results out over ZeroMQ and into HDF5.

Threads (DESIGN.md §1):

- **receive** (:mod:`.receive`): drains the frame SUB socket into the frame queue
  (:mod:`.frame_queue`): in memory up to ``engine.queue_frames``, then in the disk spool
  (:mod:`.spool`), so no frame is dropped while the model initialises or falls behind; it
  keeps the ledger of frame indices (drops upstream, before the first frame, …);
- **model** (the thread calling :meth:`Engine.run`, normally the main thread, so SIGINT and
  SIGTERM reach it): buffers the first ``init_frames``, initialises (on a worker,
  :mod:`.model_runner`), then per frame (:mod:`.frame_path`) ``process_frame`` →
  closed-loop callbacks → ``traces`` → store, catching up at full speed on what waited; it
  owns the results PUB socket (:mod:`.publish`), records every stream incident
  (:mod:`.incidents`) and stops without losing track of a frame (:mod:`.stopping`);
- **store** (:mod:`.store_worker`): the HDF5 writer and the model checkpoints, off the frame path;
- **raw recorder** (:mod:`.raw_recorder`, with ``engine.record_raw``): every frame received, to
  ``<out stem>.raw.h5``.

Late joiners: ``footprints``, ``corr_pnr`` and ``max_projection`` images are re-published every
``engine.republish_period_s`` and ``ready``/``status`` every ``engine.status_period_s``, so a
client that connects at any time has everything within a few seconds (no snapshot socket).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from online_cnmfe.engine import heap, priority
from online_cnmfe.engine.config import EngineConfig
from online_cnmfe.engine.frame_path import FramePathMixin
from online_cnmfe.engine.frame_queue import Control, FrameQueue, QueuedFrame
from online_cnmfe.engine.id_reservation import IdReservation
from online_cnmfe.engine.incidents import IncidentsMixin
from online_cnmfe.engine.model_runner import ModelRunner
from online_cnmfe.engine.publish import (
    ImageMaker,
    PublishingMixin,
    ResultsPublisher,
    StatusTracker,
)
from online_cnmfe.engine.raw_recorder import RawFiles, RawRecorder
from online_cnmfe.engine.receive import Receiver
from online_cnmfe.engine.resume import ResumePlan, checkpoint_path, plan_resume
from online_cnmfe.engine.snapshot import Snapshotter
from online_cnmfe.engine.spool import DiskSpool
from online_cnmfe.engine.stopping import EXIT_NOTHING_FITTED, StoppingMixin
from online_cnmfe.engine.store_worker import StoreWorker
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import stream as rs
from online_cnmfe.results.summary import SessionSummary, init_images

logger = logging.getLogger(__name__)

CATCH_UP_S = 1.0  # a frame older than this when processed: catching up (fewer images)


def _default_model_factory(params: CNMFEParams) -> OnlineCNMFE:
    return OnlineCNMFE(params)


class Engine(FramePathMixin, PublishingMixin, IncidentsMixin, StoppingMixin):
    """The long-running service (see the module docstring).

    Parameters
    ----------
    config : EngineConfig
    model_factory : callable, optional
        ``model_factory(params)`` → a model with the ``OnlineCNMFE`` interface.

    Closed-loop hook: :meth:`add_frame_result_callback` registers ``callback(result, meta)``,
    called on the model thread as soon as a frame's traces are final (before they are
    published), with ``meta`` = ``frame_index``, ``seq``, ``daq_frame``, ``t_acq_ms``,
    ``t_send_ns``, ``t_recv_ns`` (engine ``monotonic_ns`` at arrival), ``age_ms``, ``stale``
    (age above ``engine.max_frame_age_ms``). :meth:`add_footprints_callback` registers
    ``callback(neuron_ids, centroids)``, called when the footprints change.
    """

    def __init__(self, config: EngineConfig, model_factory: Callable | None = None) -> None:
        self.config = config
        self.params = config.params
        self.ep = config.params.engine
        self.model_factory = model_factory or _default_model_factory
        self.stop_event = threading.Event()
        self.stop_reason = "running"
        self.exit_code = 0
        self.frame_result_callbacks: list[Callable[[Any, dict], Any]] = []
        self.footprints_callbacks: list[Callable[[Any, Any], Any]] = []
        self.shutdown_callbacks: list[Callable[[Engine], Any]] = []
        self.store_prepare: list[Callable] = []  # prepare(h5py.File) before SWMR starts
        self.store_flush_hooks: list[Callable] = []  # hook(h5py.File) at every flush
        self.status_extras: list[Callable[[], dict]] = []  # extra status fields
        self.counts = dict(
            dropped=0, rejected=0, unprocessed=0, restarts=0, stale=0, model_errors=0,
            out_of_order=0, daq_lost=0, init_frames=0, flagged=0,
        )  # fmt: skip
        self.last_motion: tuple = (None, None)  # (shift_px, quality) of the last frame
        self.frame_index = -1
        self.stream_session: str | None = None
        self.stream_rate: float | None = None  # the stream's declared rate (start message)
        self.recorder: RawRecorder | None = None
        self.receive_stop = threading.Event()
        self.between_frames = threading.Event()  # clear while a frame is processed (store)
        self.between_frames.set()
        self._drain_deadline: float | None = None
        self._drain_timeout = 0.0
        self._drain_by_signal = False
        self.summary = ""
        self._holding, self._held = False, []  # results messages held until traces are out
        self._consecutive_errors = 0
        self._fp_version: int | None = None
        self._fp_latest: tuple | None = None  # last footprints: (A, ids, version, centroids)
        self._fp_message: list | None = None  # ... and their message, once encoded
        self._fp_ids, self._fp_sent_s = None, -float("inf")  # last footprints: ids, when sent
        self._idle_count, self._idle_since = 0, time.monotonic()
        self._session = 0
        self._store_error_reported = False
        self.store_flush_hooks.append(self._write_sanity)  # results attr sanity_warning
        self.runner: ModelRunner | None = None
        self.publisher: ResultsPublisher | None = None
        self.projections: SessionSummary | None = None  # mean/max images of the session
        self.snapshots = Snapshotter()  # one reused copy of the state for checkpoints
        self.ids = IdReservation(None)  # neuron ids safe to publish (set by run())
        self.checkpoint_copy_ms = 0.0  # model-thread time of the last checkpoint copy
        self.model_priority = priority.ModelThreadPriority(0)  # (run() sets it)

    # ---- hooks ---------------------------------------------------------------------------
    def add_frame_result_callback(self, callback: Callable[[Any, dict], Any]) -> None:
        self.frame_result_callbacks.append(callback)

    def add_footprints_callback(self, callback: Callable[[Any, Any], Any]) -> None:
        self.footprints_callbacks.append(callback)

    def _on_frame_result(self, result, meta: dict) -> None:
        for callback in self.frame_result_callbacks:
            callback(result, meta)

    def publish(self, frames: list) -> None:
        """Send a message on the results socket (model thread only, e.g. from a callback)."""
        self.publisher.send(frames)

    # ---- lifecycle -----------------------------------------------------------------------
    def run(self) -> int:
        """Run until end of stream, a signal or :meth:`request_stop`; returns the exit code."""
        switch_interval_s = sys.getswitchinterval()  # restored: the engine may be in a test
        sys.setswitchinterval(1e-3 * self.ep.gil_switch_interval_ms)  # (see EngineParams)
        try:
            with priority.restored_scheduling():  # (engine.realtime_priority)
                return self._run()
        finally:
            sys.setswitchinterval(switch_interval_s)

    def _run(self) -> int:
        plan = ResumePlan(None, 0)  # decided before any socket or thread: errors are one line
        if self.config.resume and self.config.out is not None:
            plan = plan_resume(self.config.out)
        self.ids = IdReservation(self.config.out, plan.first_free_id)
        ep = self.ep
        self.model_priority = priority.ModelThreadPriority(ep.realtime_priority)  # 1st thread
        ctx = self.model_priority.zmq_context()
        self.publisher = ResultsPublisher(self.config.results_endpoint, ctx)
        self.spool = DiskSpool(
            self.config.spool_dir, reserve_bytes=int(ep.spool_reserve_mb * 2**20),
            max_bytes=int(ep.spool_max_mb * 2**20) or None,
        )  # fmt: skip
        self.queue = FrameQueue(ep.queue_frames, ep.queue_full, self.spool)
        if ep.record_raw and self.config.out is not None:
            files = RawFiles(
                self.config.out, "raw", "every frame the engine received",
                {"frames_endpoint": self.config.frames_endpoint}, ep.flush_period_s,
            )  # fmt: skip
            self.recorder = RawRecorder(files)
            self.recorder.start()
        self.receiver = Receiver(
            self.config.frames_endpoint, self.queue, self.receive_stop, ep.rcvhwm_frames, ctx,
            on_frame=None if self.recorder is None else self.recorder.put,
            realtime_priority=ep.realtime_priority,
        )  # fmt: skip
        self.store = StoreWorker(self.ep.flush_period_s, self.between_frames)
        pool = priority.slow_path_pool(ep.realtime_priority) if ep.slow_path_thread else None
        self._slow_pool = pool
        self.status = StatusTracker()
        self.images: ImageMaker | None = None
        self._install_signals()
        self.store.start()
        self.receiver.start()
        self.receiver.ready.wait(5)
        try:
            self._start_model(plan)
            self._send_ready()
            self._loop()
        finally:
            self._shutdown(ctx)
        return self.exit_code

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda n, _f: self._signal(signal.Signals(n).name))

    def _start_model(self, plan: ResumePlan) -> None:
        self.runner = ModelRunner(
            self.params, self.model_factory, plan.model, first_free_id=plan.first_free_id
        )
        if plan.model is not None:
            self._on_initialised(resume=True)

    def _loop(self) -> None:
        next_status = next_republish = time.monotonic()
        next_checkpoint = time.monotonic() + (self.ep.checkpoint_period_s or float("inf"))
        next_image = 0.0
        while not self.stop_event.is_set():
            if self.receiver.error is not None:
                logger.error("cannot receive frames: %s", self.receiver.error)
                self.exit_code = 2
                self.stop_reason = "receive error"
                break
            runner = self.runner
            item = None
            if runner.initialising:
                runner.wait_init(0.05)
            elif runner.phase == "initialising":
                self._finish_init()
            else:
                self.model_priority.critical()  # real-time until the frame's traces are out
                item = self.queue.get(0.05)
            now = time.monotonic()
            if isinstance(item, QueuedFrame):
                image_due = now >= next_image
                self.between_frames.clear()  # the store thread's next write waits for the end
                self._on_frame(item, image_due)
                self.between_frames.set()
                if image_due:  # catching up: fewer display images, more frames per second
                    behind = time.monotonic_ns() - item.t_recv_ns > CATCH_UP_S * 1e9
                    next_image = now + (CATCH_UP_S if behind else 1.0 / self.ep.image_rate_hz)
            elif isinstance(item, Control):
                self._on_control(item)
            if self._drain_deadline is not None and not self.stop_event.is_set():
                self._check_drained(idle=item is None and not runner.initialising)
            if now >= next_status:
                next_status = now + self.ep.status_period_s
                self._send_status()
            if now >= next_republish:
                next_republish = now + self.ep.republish_period_s
                self._republish()
            if self._idle_too_long(now):
                logger.warning(
                    "no frame for %.0f s; stopping (--idle-exit)", self.config.idle_exit_s
                )
                self.request_stop("idle", drain=True)
            if now >= next_checkpoint and runner.phase == "running":
                taken = self._checkpoint()  # the store thread still saving the last: soon
                next_checkpoint = now + (self.ep.checkpoint_period_s if taken else 1.0)
                self._store_summary()

    # ---- initialisation ------------------------------------------------------------------
    def _finish_init(self) -> None:
        if not self.runner.finish_init():
            logger.error("initialisation failed: %s", self.runner.init_error)
            self.exit_code = 1
            self.request_stop("initialisation failed")
            return
        self._on_initialised(resume=False)

    def _on_initialised(self, resume: bool) -> None:
        runner, cfg = self.runner, self.config
        model = runner.model
        if isinstance(model, OnlineCNMFE):  # the slow path overlaps the next frame's traces
            model.run_slow_path_on(self._slow_pool)
        if self.images is None:
            self.images = ImageMaker(runner.dims)
        self._open_store(runner.dims, runner.params, resume=cfg.resume and self._session == 0)
        self.projections = SessionSummary(runner.dims)
        if not resume:
            self.projections.add_many(runner.frames)
            n_init = len(runner.frames)
            for result, meta in runner.init_results():
                self.store.submit("frame", result, meta)
                self.counts["init_frames"] += 1
                self.counts["flagged"] += bool(result.flag)
            attrs = {"n_frames": n_init, "source": "initialisation frames"}
            self.store.submit("images", init_images(runner.init_result), attrs)
            self._store_summary()
        self.store.submit("b0", model.b0.copy())  # a view would be written as it is later
        if isinstance(model, OnlineCNMFE):  # allocate the checkpoint copy off this thread
            self.store.submit("prime_snapshot", self.snapshots, model.state)
        self._send_footprints()
        self._republish()
        heap.freeze()  # no full garbage collection over the model and the libraries per frame
        logger.info("running with %d neurons", len(model.neuron_ids))

    def _open_store(self, dims, params: CNMFEParams, resume: bool) -> None:
        """Open the results file (also with no model: its bookkeeping says why)."""
        cfg = self.config
        if cfg.out is None:
            return
        provenance = {
            "frames_endpoint": cfg.frames_endpoint,
            "session_id": self.receiver.session_id,
            "stream_frame_rate_hz": self.stream_rate,
            "engine_pid": os.getpid(),
        }
        kwargs = dict(
            path=self._out_path(), dims=dims, params=params,
            frame_rate_hz=params.data.frame_rate_hz, input_provenance=provenance,
            resume=resume, prepare=self._prepare_store, flush_hooks=self.store_flush_hooks,
        )  # fmt: skip
        self.store.submit("open", kwargs)

    def _store_summary(self) -> None:
        """Hand the mean / max projection images so far to the store (refreshed in the file)."""
        if self.projections is not None and self.projections.n_frames:
            self.store.submit("images", self.projections.images(), self.projections.attrs())

    def _prepare_store(self, f) -> None:
        for prepare in self.store_prepare:
            prepare(f)

    def _out_path(self) -> Path:
        out, n = self.config.out, self._session
        return out if n == 0 else out.with_name(f"{out.stem}-{n}{out.suffix}")

    def _checkpoint(self, wait: bool = False) -> bool:
        """Hand a copy of the state to the store thread for a checkpoint; False (nothing done)
        when it still saves the previous copy (``wait``: shutdown, restart, waits for it)."""
        if self.config.out is None:
            return True
        model = self.runner.model if self.runner else None
        if not isinstance(model, OnlineCNMFE):
            return True
        t0 = time.thread_time()
        try:
            model.settle_slow_path()  # its update is part of the state
            state = self.snapshots.take_model(model, wait=wait)  # finished on the store thread
        except Exception as exc:  # noqa: BLE001 - a model that cannot be copied: no checkpoints
            logger.warning("model cannot be snapshotted for checkpoints: %s", exc)
            return True
        if state is None:
            logger.debug("checkpoint postponed: the previous one is still being written")
            return False
        self.checkpoint_copy_ms = 1e3 * (time.thread_time() - t0)
        ckpt = checkpoint_path(self._out_path())
        self.store.submit("checkpoint", model.params, state, ckpt, self.snapshots.release)
        return True

    # ---- shutdown ------------------------------------------------------------------------
    def _shutdown(self, ctx: zmq.Context) -> None:
        logger.info("stopping (%s)", self.stop_reason)
        self.stop_event.set()
        self.receive_stop.set()
        self.receiver.join(5)
        self._settle_leftovers()
        runner = self.runner
        self._flush_footprints()  # the file and the last message hold the final footprints
        if runner is not None and runner.phase == "running":
            self._checkpoint(wait=True)
        elif runner is not None and runner.dims is not None and self.store.writer is None:
            resume = self.config.resume and self._session == 0  # never replace a resumed file
            self._open_store(runner.dims, runner.params, resume=resume)  # for its bookkeeping
        self._store_summary()
        if self._slow_pool is not None:
            self._slow_pool.shutdown(wait=True)
        self.store.close()
        if self.recorder is not None:
            self.recorder.close()
        self.spool.close()
        heap.thaw()
        fitted = runner is not None and runner.phase == "running"
        if not fitted and self.exit_code == 0:
            self.exit_code = EXIT_NOTHING_FITTED
            logger.error("%s", self._nothing_fitted_message())
        if self.config.out is not None and not self.store.ok and self.exit_code == 0:
            self.exit_code = 3  # the model ran but its results are not (all) on disk
        self.summary = self._summary()
        logger.info("stopped (%s): %s", self.stop_reason, self.summary)
        for callback in self.shutdown_callbacks:  # after the file is complete
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - one failing hook must not block the others
                logger.exception("shutdown callback failed")
        if self.runner is not None:  # (None: stopped before the model existed)
            self._send_status()
        self.publisher.send(
            rs.encode_eos(self.status.n_processed, self.stop_reason, **self._summary_fields())
        )
        self.publisher.close(linger_ms=1000)  # the last status and eos reach busy clients
        if self.receiver.is_alive():
            ctx.destroy(linger=0)
        else:
            ctx.term()

    @property
    def results_path(self) -> Path | None:
        """The results file written (None before initialisation or without --out)."""
        return None if self.store.writer is None else self.store.writer.path
