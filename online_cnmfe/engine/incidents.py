"""The engine's handling of stream incidents (model thread): every control item of the frame
queue becomes a count in the status, an ``event`` on the results stream and a row of the
results file's bookkeeping (:mod:`online_cnmfe.results.bookkeeping`).

Also here: the stream's sessions (a publisher restart) and its declared frame rate, which
replaces ``data.frame_rate_hz`` before the initialisation unless the user set it; a mismatch
of more than 1 % between the two is a warning naming both.
"""

from __future__ import annotations

import logging
import math

from online_cnmfe.engine.frame_queue import Control
from online_cnmfe.engine.id_reservation import IdReservation
from online_cnmfe.engine.model_runner import ModelRunner
from online_cnmfe.results import stream as rs

logger = logging.getLogger(__name__)

RATE_TOLERANCE = 0.01


class IncidentsMixin:
    """Control items → counts, events and bookkeeping (the :class:`Engine`'s, model thread)."""

    def _on_control(self, c: Control) -> None:
        kind = c.kind
        if kind == "drop":
            n = c.count or c.last - c.first + 1
            self.counts["dropped"] += n
            self.store.submit("drop", c.first, c.last, c.detail, n)
            where = f"[{c.first}, {c.last}]" if c.first >= 0 else f"({n} frames)"
            self.publisher.send(rs.encode_event("drop", c.first, (), f"{c.detail} {where}"))
        elif kind == "reject":
            self._reject(c.first, c.detail)
        elif kind == "unreadable":
            self._unprocessed(c.first, c.detail)
        elif kind == "malformed":
            self.store.submit("count", "n_malformed", 1)
        elif kind == "out_of_order":
            self.counts["out_of_order"] += 1
            self.store.submit("count", "n_out_of_order", 1)
            if self.counts["out_of_order"] <= 3:
                logger.warning("frame %d out of order: %s", c.first, c.detail)
        elif kind == "daq_loss":
            n = c.last - c.first + 1
            self.counts["daq_lost"] += n
            self.store.submit("lost", "daq_lost", c.first, c.last, c.detail)
        elif kind == "session":
            self._on_session(c)
        elif kind == "restart":
            self._on_restart(c.detail)
        elif kind == "eos" and self.config.exit_on_eos:
            logger.info("end of stream (%s)", c.detail)
            self.request_stop("eos", drain=True)

    def _reject(self, frame_index: int, reason: str) -> None:
        self.counts["rejected"] += 1
        logger.warning("frame %d rejected: %s", frame_index, reason)
        self.store.submit("reject", frame_index, reason)
        self.publisher.send(rs.encode_event("reject", frame_index, (), reason))

    def _unprocessed(self, frame_index: int, reason: str) -> None:
        self.counts["unprocessed"] += 1
        logger.error("frame %d not processed: %s", frame_index, reason)
        self.store.submit("lost", "unprocessed", frame_index, frame_index, reason)

    # ---- sessions and the frame rate -----------------------------------------------------
    def _on_session(self, c: Control) -> None:
        new = c.session_id != self.stream_session
        self.stream_session = c.session_id
        if new:
            self.store.submit("session", c.session_id, c.frame_rate_hz, c.detail)
        if c.frame_rate_hz is not None:
            self._on_stream_rate(float(c.frame_rate_hz))

    def _on_stream_rate(self, rate: float) -> None:
        if self.stream_rate == rate:
            return
        self.stream_rate = rate
        if self.recorder is not None:
            self.recorder.set_frame_rate(rate)
        runner = self.runner
        model_rate = runner.params.data.frame_rate_hz
        if runner.phase == "waiting" and not self.config.frame_rate_set:
            if not math.isclose(model_rate, rate):
                logger.info("frame rate from the stream: %.3g Hz (data.frame_rate_hz)", rate)
                self.params = self.params.replace(**{"data.frame_rate_hz": rate})
                runner.params = self.params
            return
        if abs(rate - model_rate) > RATE_TOLERANCE * model_rate:
            how = "set by you" if self.config.frame_rate_set else "used by the running model"
            logger.warning(
                "the stream declares %.4g Hz but data.frame_rate_hz=%.4g Hz (%s); the model "
                "keeps %.4g Hz (time constants and the results file's rate follow it). Check "
                "the acquisition's rate or remove the setting to use the stream's.",
                rate, model_rate, how, model_rate,
            )  # fmt: skip

    def _on_restart(self, detail: str) -> None:
        self.counts["restarts"] += 1
        self.store.submit("count", "n_restarts", 1)
        policy = self.ep.on_restart
        logger.warning("frame stream restarted (%s); on_restart=%s", detail, policy)
        self.publisher.send(rs.encode_event("restart", self.frame_index, (), f"{detail}; {policy}"))
        self.stream_rate = None
        if policy == "stop":
            self.request_stop("restart", drain=False)
        elif policy == "reinitialise" and self.runner.phase != "waiting":
            if self.runner.phase == "initialising":  # finish it: its frames are in its file
                while self.runner.initialising:
                    self.runner.wait_init(0.5)
                self._finish_init()
            self._flush_footprints()  # the session's file ends with its final footprints
            self._checkpoint(wait=True)
            self._store_summary()
            self.store.submit("close_writer")
            self._session += 1
            self.ids = IdReservation(self.config.out and self._out_path())  # the new file's
            self.runner = ModelRunner(self.params, self.model_factory)
            self.images, self._fp_version, self._fp_message = None, None, None
            self._fp_latest = None
            self._fp_ids, self._fp_sent_s = None, -float("inf")
            self.projections = None
