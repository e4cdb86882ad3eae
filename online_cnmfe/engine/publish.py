"""The engine's publishing side: the results PUB socket, status counters and display images.

Only the model thread calls these (a ZeroMQ socket belongs to one thread). Display images are
block-averaged so that their longer side is at most ``max_side`` pixels; the layers are
(docs/protocol.md): ``raw``, ``background_subtracted`` (y − B, i.e. the residual plus A·c_raw),
``denoised`` (A·c), ``residual``, ``corr_pnr`` (the initialisation's correlation × PNR image) and
``max_projection`` (of the frames shown).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque

import numpy as np
import zmq

from online_cnmfe.engine.subscriptions import SubscriptionGate, open_results_socket
from online_cnmfe.results import stream as rs

logger = logging.getLogger(__name__)


class ResultsPublisher:
    """The results socket (binds ``endpoint``): an XPUB whose subscriptions are kept to one
    per peer (:mod:`.subscriptions`); subscribers filter topics on their side.

    Parameters
    ----------
    endpoint : str
    context : zmq.Context
    sndhwm : int
        Messages queued per subscriber before ZeroMQ drops (a slow dashboard never blocks the
        engine).
    """

    def __init__(self, endpoint: str, context: zmq.Context, sndhwm: int = 2000) -> None:
        self.endpoint = endpoint
        self.socket = open_results_socket(endpoint, context, sndhwm)
        self.subscriptions = SubscriptionGate(self.socket)
        self.n_sent = 0

    def send(self, frames: list) -> None:
        """Send one multipart message; never blocks (PUB drops at the high-water mark)."""
        self.subscriptions.drain()  # new peers join; a flood of subscriptions goes nowhere
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            self.n_sent += 1
        except zmq.Again:  # pragma: no cover - PUB does not raise Again, kept for safety
            pass

    def wants(self, topic: str) -> bool:
        """Whether some subscriber may receive ``topic`` (:meth:`SubscriptionGate.wants`):
        False lets the engine skip building a message nobody would get."""
        return self.subscriptions.wants(topic)

    def close(self, linger_ms: int = 300) -> None:
        if not self.socket.closed:
            self.socket.close(linger=linger_ms)


class StatusTracker:
    """Rates and latency percentiles over the recent past, for the ``status`` message."""

    def __init__(self, window: int = 2000) -> None:
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.n_processed = 0
        self._last_t = time.monotonic()
        self._last_in = 0
        self._last_done = 0
        self.fps_in = 0.0
        self.fps_processed = 0.0

    def record(self, latency_ms: float) -> None:
        self.n_processed += 1
        self.latencies_ms.append(latency_ms)

    def tick(self, n_received: int) -> None:
        """Update the rates; call once per status period."""
        now = time.monotonic()
        dt = max(now - self._last_t, 1e-6)
        self.fps_in = (n_received - self._last_in) / dt
        self.fps_processed = (self.n_processed - self._last_done) / dt
        self._last_t, self._last_in, self._last_done = now, n_received, self.n_processed

    def percentiles(self) -> tuple[float, float]:
        if not self.latencies_ms:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.fromiter(self.latencies_ms, float), [50, 99])
        return float(p50), float(p99)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor × factor`` blocks (edges cropped), float32."""
    image = np.asarray(image, np.float32)
    if factor <= 1:
        return image.copy()
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


class ImageMaker:
    """Build the display layers of a frame (see the module docstring)."""

    def __init__(self, dims: tuple[int, int], max_side: int = 256) -> None:
        self.dims = dims
        self.downsample = max(1, math.ceil(max(dims) / max_side))
        self.max_projection: np.ndarray | None = None

    def raw(self, pixels: np.ndarray) -> np.ndarray:
        small = block_mean(pixels, self.downsample)
        if self.max_projection is None or self.max_projection.shape != small.shape:
            self.max_projection = small.copy()
        else:
            np.maximum(self.max_projection, small, out=self.max_projection)
        return small

    def layers(self, model, pixels: np.ndarray, result) -> dict[str, np.ndarray]:
        """``raw``, ``background_subtracted``, ``denoised`` and ``residual`` of this frame."""
        out = {"raw": self.raw(pixels)}
        try:
            A = model.footprints
            denoised = (A @ np.asarray(result.C, np.float64)).reshape(self.dims)
            ac_raw = (A @ np.asarray(result.C_raw, np.float64)).reshape(self.dims)
            residual = _model_residual(model, self.dims)
            if residual is None:
                residual = pixels.astype(np.float32) - model.b0.reshape(self.dims) - ac_raw
        except (AttributeError, ValueError) as exc:
            logger.debug("display layers unavailable: %s", exc)
            return out
        out["background_subtracted"] = block_mean(residual + ac_raw, self.downsample)
        out["denoised"] = block_mean(denoised, self.downsample)
        out["residual"] = block_mean(residual, self.downsample)
        return out

    def summary(self, corr_pnr: np.ndarray | None) -> dict[str, np.ndarray]:
        """``corr_pnr`` (when known) and ``max_projection`` for late joiners."""
        out = {}
        if corr_pnr is not None:
            out["corr_pnr"] = block_mean(corr_pnr, self.downsample)
        if self.max_projection is not None:
            out["max_projection"] = self.max_projection.copy()
        return out


def _model_residual(model, dims: tuple[int, int]) -> np.ndarray | None:
    """The model's residual of the frame just processed, when its state exposes it."""
    st = getattr(model, "state", None)
    buf = getattr(st, "residual", None)
    head = getattr(st, "residual_head", None)
    if buf is None or head is None or buf.ndim != 2 or buf.shape[1] != dims[0] * dims[1]:
        return None
    return np.asarray(buf[(head - 1) % buf.shape[0]], np.float32).reshape(dims)


def behind_s(engine) -> float:
    """How far the results lag the stream: age of the oldest frame waiting for the model (0
    when none waits; the frames buffered for the initialisation do not count)."""
    oldest = engine.queue.oldest_t_recv_ns()
    return 0.0 if oldest is None else max(0.0, (time.monotonic_ns() - oldest) / 1e9)


def status_fields(engine) -> dict:
    """The ``status`` fields of an :class:`~online_cnmfe.engine.Engine` (model thread)."""
    runner, store = engine.runner, engine.store
    p50, p99 = engine.status.percentiles()
    model = runner.model if runner.phase == "running" else None
    shift, quality = getattr(engine, "last_motion", (None, None))
    fields = {
        "frame_index": engine.frame_index,
        "n_frames_processed": engine.status.n_processed,
        "fps_in": round(engine.status.fps_in, 2),
        "fps_processed": round(engine.status.fps_processed, 2),
        "queue_depth": len(engine.queue),
        "latency_ms_p50": round(p50, 3),
        "latency_ms_p99": round(p99, 3),
        "n_neurons": 0 if model is None else len(model.neuron_ids),
        "n_dropped": engine.counts["dropped"],
        "n_rejected": engine.counts["rejected"],
        "n_malformed": engine.receiver.n_malformed,
        "phase": "stopped" if engine.stop_event.is_set() else runner.phase,
        "init_progress": round(runner.init_progress, 3),
        "init_stage": runner.init_stage,
        "init_fit_progress": round(runner.init_fit_progress, 3),
        "store_ok": store.ok,
        "store_error": store.error,
        "dims": list(runner.dims) if runner.dims else None,
        "session_id": engine.receiver.session_id,
        "n_restarts": engine.counts["restarts"],
        "n_stale": engine.counts["stale"],
        "n_model_errors": engine.counts["model_errors"],
        "n_flagged": engine.counts["flagged"],
        "motion_shift_px": None if shift is None else [round(float(v), 3) for v in shift],
        "motion_quality": None if quality is None else round(float(quality), 3),
        "sanity_warning": _sanity_warning(model),
        "n_frames_stored": store.n_frames,
        "store_backlog": store.backlog,
        "n_unsaved": store.n_unsaved,
        "store_path": str(store.writer.path) if store.writer else None,
        "n_frames_received": engine.receiver.n_received,
        "behind_s": round(behind_s(engine), 2),
        "n_spooled": engine.queue.n_spooled,
        "spool_mb": round(engine.spool.nbytes / 2**20, 1),
        "n_unprocessed": engine.counts["unprocessed"],
        "n_lost": engine.counts["dropped"] + engine.counts["unprocessed"] + store.n_unsaved,
        "draining": engine._drain_deadline is not None,
        "stream_frame_rate_hz": engine.stream_rate,
        "raw_path": None if engine.recorder is None else engine.recorder.files.describe(),
        "n_not_recorded": 0 if engine.recorder is None else engine.recorder.n_not_recorded,
        "n_checkpoints": store.n_checkpoints,
        "checkpoint_copy_ms": round(getattr(engine, "checkpoint_copy_ms", 0.0), 2),
    }
    for extra in engine.status_extras:
        fields.update(extra())
    return fields


def _sanity_warning(model) -> str | None:
    """The model's plausibility warning (``OnlineCNMFE.sanity``), None when all is well."""
    report = getattr(model, "sanity", None)
    return getattr(report, "message", None)


class PublishingMixin:
    """The :class:`~online_cnmfe.engine.Engine`'s publication methods (model thread only)."""

    def _publish_images(self, frame_index: int, model, pixels, result=None) -> None:
        """This frame's display layers (only ``raw`` before the model runs: ``model`` None),
        built only while a subscriber can receive ``image``; the max projection follows the
        frames either way, so a dashboard that connects later sees the same one."""
        if not self.publisher.wants("image"):
            self.images.raw(pixels)
            return
        if model is None:
            layers = {"raw": self.images.raw(pixels)}
        else:
            layers = self.images.layers(model, pixels, result)
        for layer, image in layers.items():
            self._send_image(frame_index, layer, image)

    def _send_image(self, frame_index: int, layer: str, image) -> None:
        self.publisher.send(rs.encode_image(frame_index, layer, image, self.images.downsample))

    def _footprints_due(self, result) -> bool:
        """Whether footprints that changed at this frame go out now: at once when the neuron
        set changed (a birth, merge or removal: traces carry the new ids), else when
        ``engine.footprints_period_s`` passed since the last ones (shape refreshes come every
        few frames; building, encoding and storing all of A for each cost ~1.4 ms per frame
        at 256² with 300 neurons, BENCHMARKS.md "Initialisation at 608² (issue 17)")."""
        ids = result.neuron_ids
        if self._fp_ids is None or ids.shape != self._fp_ids.shape:
            return True
        if time.monotonic() - self._fp_sent_s >= self.ep.footprints_period_s:
            return True
        return not np.array_equal(ids, self._fp_ids)

    def _flush_footprints(self) -> None:
        """Send footprints held back by the period (a pause in the stream, the stop)."""
        runner = self.runner
        if runner is not None and runner.phase == "running":
            if runner.model.footprints_version != self._fp_version:
                self._send_footprints()

    def _send_footprints(self) -> None:
        """The current footprints to the store, the footprints callbacks and, when a
        subscriber can receive ``footprints``, the results stream (the message is encoded
        only then: ~0.4 ms at 256² with 300 neurons; :meth:`_footprints_message`)."""
        model = self.runner.model
        A, ids = model.footprints.copy(), model.neuron_ids.copy()  # sent zero-copy: own them
        self.ids.cover(ids)
        version = model.footprints_version
        self._fp_version = version
        self._fp_ids, self._fp_sent_s = ids, time.monotonic()
        cents = rs.centroids(A, self.runner.dims)  # once, for the message and the callbacks
        self._fp_latest, self._fp_message = (A, ids, version, cents), None
        if self.publisher.wants("footprints"):
            self.publisher.send(self._footprints_message())
        self.store.submit("footprints", A, ids, version)
        for callback in self.footprints_callbacks:
            callback(ids.copy(), cents.copy())

    def _footprints_message(self) -> list:
        """The ``footprints`` message of the latest footprints, encoded once (re-sending the
        cached message costs no encoding)."""
        if self._fp_message is None:
            A, ids, version, cents = self._fp_latest
            self._fp_message = rs.encode_footprints(A, ids, version, self.runner.dims, cents)
        return self._fp_message

    def _republish(self) -> None:
        runner = self.runner
        self._flush_footprints()
        if (
            runner.phase == "running"
            and self._fp_latest is not None
            and self.publisher.wants("footprints")
        ):
            self.publisher.send(self._footprints_message())
        if self.images is not None and self.publisher.wants("image"):
            for layer, image in self.images.summary(runner.corr_pnr).items():
                self._send_image(self.frame_index, layer, image)

    def _send_ready(self) -> None:
        pixel_um = self.params.data.pixel_size_um  # for the dashboards' scale bar
        self.publisher.send(
            rs.encode_ready(self.receiver.session_id, os.getpid(), pixel_size_um=pixel_um)
        )

    def status_fields(self) -> dict:
        """The fields of the ``status`` message (docs/protocol.md)."""
        return status_fields(self)

    def _write_sanity(self, f) -> None:
        """Flush hook (store thread): the model's plausibility warning into the results
        file's root attribute ``sanity_warning`` ("" when none)."""
        runner = self.runner
        model = runner.model if runner is not None and runner.phase == "running" else None
        f.attrs["sanity_warning"] = _sanity_warning(model) or ""

    def _send_status(self) -> None:
        self.status.tick(self.receiver.n_received)
        self.publisher.send(rs.encode_status(self.status_fields()))
        self._send_ready()
        if self.store.error and not self._store_error_reported:
            self._store_error_reported = True
            self.publisher.send(
                rs.encode_event("store_error", self.frame_index, (), self.store.error)
            )
