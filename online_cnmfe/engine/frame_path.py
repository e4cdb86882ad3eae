"""The engine's frame path on the model thread: a queued frame → buffered for the
initialisation, or → ``process_frame`` → closed-loop callbacks → the ``traces`` message → the
store, events, footprints and display images.

Between a frame's arrival and its ``traces`` message only the model's critical path, the
closed-loop callbacks (the trigger rules and their trigger socket) and the traces message itself
run. A message a callback publishes on the results stream in that window (the copy of each
trigger firing, :meth:`FramePathMixin.publish_after_traces`) is held and sent right after the
traces, so it does not delay them (issue 17); outside a frame it is sent at once.
"""

from __future__ import annotations

import logging
import time

from online_cnmfe.engine.frame_queue import QueuedFrame
from online_cnmfe.engine.publish import ImageMaker
from online_cnmfe.results import stream as rs

logger = logging.getLogger(__name__)


class FramePathMixin:
    """The :class:`~online_cnmfe.engine.Engine`'s per-frame methods (model thread only).

    Uses the engine's ``_holding`` (bool) and ``_held`` (list of messages), set in its
    ``__init__``.
    """

    def publish_after_traces(self, frames: list) -> None:
        """Send a message on the results stream once the current frame's traces are out (at
        once between frames); for closed-loop callbacks (model thread only)."""
        if self._holding:
            self._held.append(frames)
        else:
            self.publisher.send(frames)

    def _release_held(self) -> None:
        self._holding = False
        held, self._held = self._held, []
        for frames in held:
            self.publisher.send(frames)

    def _on_frame(self, item: QueuedFrame, image_due: bool) -> None:
        f = item.frame
        self.frame_index = f.frame_index
        meta = {
            "frame_index": f.frame_index,
            "seq": f.seq,
            "daq_frame": f.daq_frame,
            "t_acq_ms": f.t_acq_ms,
            "t_send_ns": f.t_send_ns,
            "t_recv_ns": item.t_recv_ns,
        }
        runner = self.runner
        if runner.dims is not None and f.shape != runner.dims:
            self._reject(f.frame_index, f"frame shape {f.shape}; the model has {runner.dims}")
            return
        if runner.phase == "waiting":
            if self.images is None:
                self.images = ImageMaker(f.shape)
            if image_due:
                self._publish_images(f.frame_index, None, f.pixels)
            if runner.buffer(f.pixels, meta):
                for frame_index, reason in runner.screen():  # not in the fit: recorded
                    self._reject(frame_index, reason)
                if len(runner.frames) >= self.params.init.init_frames:
                    logger.info("initialising on %d frames of %s", len(runner.frames), f.shape)
                    runner.start_init()
            return
        self._process(f, meta, item.t_recv_ns, image_due)

    def _process(self, f, meta: dict, t_recv_ns: int, image_due: bool) -> None:
        self._holding = True  # until the traces are out (publish_after_traces)
        try:
            self._process_frame(f, meta, t_recv_ns, image_due)
        finally:
            self._release_held()  # (a model error: no traces; what was held goes now)

    def _process_frame(self, f, meta: dict, t_recv_ns: int, image_due: bool) -> None:
        model = self.runner.model
        t_start = time.monotonic_ns()
        sent = []

        def on_traces(traces) -> None:
            # Closed-loop rules and the traces message go out as soon as the frame's traces are
            # final, before the model's slow path (footprint/W refresh, detection) runs.
            self._send_traces(traces, f, meta, t_start)
            sent.append(True)

        try:
            result = model.process_frame(f.pixels, on_traces=on_traces)
        except Exception as exc:  # noqa: BLE001 - counted, surfaced, and limited below
            self._model_error(f.frame_index, exc)
            return
        self._consecutive_errors = 0
        if not sent:  # a skipped frame has no early traces
            self._send_traces(result, f, meta, t_start)
        latency_ms = (time.monotonic_ns() - t_recv_ns) / 1e6
        self.status.record(latency_ms)
        self.store.submit("frame", result, dict(meta, latency_ms=latency_ms))
        if result.skipped:
            self.counts["rejected"] += 1
        elif self.projections is not None and not result.flag:
            self.projections.add(f.pixels)  # mean / max projection images (~0.1 ms)
        self.counts["flagged"] += bool(result.flag)
        self.last_motion = (result.motion_shift_px, result.motion_quality)
        for ev in result.events:
            if ev.kind in rs.EVENT_KINDS:
                self.publisher.send(
                    rs.encode_event(ev.kind, f.frame_index, ev.neuron_ids, ev.detail)
                )
        if result.footprints_version != self._fp_version and self._footprints_due(result):
            self._send_footprints()
        if image_due and self.images is not None:
            self._publish_images(f.frame_index, model, f.pixels, result)

    def _send_traces(self, traces, f, meta: dict, t_start: int) -> None:
        self.ids.cover(traces.neuron_ids)  # before triggers, traces and events carry them
        t_done = time.monotonic_ns()
        meta["process_ms"] = (t_done - t_start) / 1e6
        meta["age_ms"] = (t_done - f.t_send_ns) / 1e6
        meta["stale"] = meta["age_ms"] > self.ep.max_frame_age_ms
        self.counts["stale"] += meta["stale"]
        self._on_frame_result(traces, meta)
        t_pub = time.monotonic_ns()
        self.publisher.send(
            rs.encode_traces(
                meta, traces.neuron_ids, traces.C, traces.S, traces.C_raw,
                traces.footprints_version, (t_pub - f.t_send_ns) / 1e6, flag=traces.flag,
                motion_shift_px=traces.motion_shift_px, motion_quality=traces.motion_quality,
            )
        )  # fmt: skip
        self.model_priority.relaxed()  # the subscribers now need a core more than the model
        self._release_held()

    def _model_error(self, frame_index: int, exc: Exception) -> None:
        self.counts["model_errors"] += 1
        self._consecutive_errors += 1
        logger.error("frame %d: the model failed: %s: %s", frame_index, type(exc).__name__, exc)
        self._reject(frame_index, f"model error: {type(exc).__name__}: {exc}")
        if self._consecutive_errors >= self.ep.max_model_errors:
            logger.error("%d consecutive model errors; stopping", self._consecutive_errors)
            self.exit_code = 1
            self.request_stop("model errors")
