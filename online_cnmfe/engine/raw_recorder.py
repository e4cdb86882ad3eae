"""Raw frames kept by the engine: every frame received (``engine.record_raw``) and the frames
left unprocessed when it stops.

:class:`RawFiles` appends frames to ``<out stem>.<kind>.h5``
(:mod:`~online_cnmfe.results.raw_file`), opening ``<out stem>.<kind>-1.h5``, … when the frame
shape or dtype changes (a new session).
:class:`RawRecorder` runs it on its own thread for the receive thread, which hands over every
frame without waiting for the disk; a recorder that falls more than ``max_pending`` frames
behind (a disk much slower than the stream) leaves frames out, counts them and logs an error.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.protocol import FrameMessage
from online_cnmfe.results.raw_file import RawMovieWriter, raw_path

logger = logging.getLogger(__name__)


class RawFiles:
    """Raw recordings of one kind beside ``out`` (one file per frame shape/dtype)."""

    def __init__(self, out: Path, kind: str, contents: str, provenance: dict[str, Any],
                 flush_period_s: float = 2.0) -> None:  # fmt: skip
        self.out, self.kind, self.contents = Path(out), kind, contents
        self.provenance = provenance
        self.flush_period_s = flush_period_s
        self.paths: list[Path] = []
        self.n_frames = 0
        self.frame_rate_hz: float | None = None
        self._writer: RawMovieWriter | None = None

    def write(self, pixels: np.ndarray, meta: dict[str, Any]) -> None:
        """Append one frame (``meta``: see :meth:`RawMovieWriter.append`)."""
        w = self._writer
        if w is None or w.shape != pixels.shape or w.dtype != pixels.dtype:
            self.close()
            path = raw_path(self.out, self.kind, len(self.paths))
            w = self._writer = RawMovieWriter(
                path, pixels.shape, pixels.dtype.name, self.contents, self.provenance,
                self.flush_period_s,
            )  # fmt: skip
            w.set_frame_rate(self.frame_rate_hz)
            self.paths.append(path)
        w.append(pixels, meta)
        self.n_frames += 1

    def set_frame_rate(self, frame_rate_hz: float | None) -> None:
        self.frame_rate_hz = frame_rate_hz
        if self._writer is not None:
            self._writer.set_frame_rate(frame_rate_hz)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths) or "-"


def frame_meta(frame: FrameMessage, t_recv_ns: int) -> dict[str, Any]:
    """The per-frame fields of a raw recording, from a received frame."""
    return {
        "frame_index": frame.frame_index,
        "seq": frame.seq,
        "daq_frame": frame.daq_frame,
        "t_acq_ms": frame.t_acq_ms,
        "t_recv_ns": t_recv_ns,
        "session_id": frame.session_id,
    }


class RawRecorder(threading.Thread):
    """Record every frame received, off the receive thread (see the module docstring).

    Parameters
    ----------
    files : RawFiles
    max_pending : int
        Frames waiting for the disk before new ones are left out of the recording.
    """

    def __init__(self, files: RawFiles, max_pending: int = 512) -> None:
        super().__init__(name="engine-raw-recorder", daemon=True)
        self.files = files
        self.max_pending = max_pending
        self.n_not_recorded = 0
        self.error: str | None = None
        self._pending: deque[tuple[FrameMessage, int]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._rate: float | None = None

    def put(self, frame: FrameMessage, t_recv_ns: int) -> None:
        """Hand over a frame (receive thread; never blocks)."""
        with self._cond:
            if len(self._pending) >= self.max_pending or self.error is not None:
                self.n_not_recorded += 1
                if self.n_not_recorded % 100 == 1:
                    logger.error(
                        "raw recording: %d frame(s) not recorded (%s)", self.n_not_recorded,
                        self.error or f"the disk is {self.max_pending} frames behind",
                    )  # fmt: skip
                return
            self._pending.append((frame, t_recv_ns))
            self._cond.notify()

    def set_frame_rate(self, frame_rate_hz: float | None) -> None:
        with self._cond:
            self._rate = frame_rate_hz

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(0.5)
                    if not self._pending and self.files.n_frames:
                        break
                batch = list(self._pending)
                self._pending.clear()
                closing, rate = self._closing, self._rate
            self._write(batch, rate)
            if closing and not batch:
                break
        try:
            self.files.close()
        except Exception as exc:  # noqa: BLE001 - reported, the results are unaffected
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            logger.error("closing the raw recording failed: %s", exc)

    def _write(self, batch: list, rate: float | None) -> None:
        if self.error is not None:
            self.n_not_recorded += len(batch)
            return
        try:
            if rate != self.files.frame_rate_hz:
                self.files.set_frame_rate(rate)
            for frame, t_recv in batch:
                self.files.write(frame.pixels, frame_meta(frame, t_recv))
            if not batch:
                self.files.flush()
        except Exception as exc:  # noqa: BLE001 - a disk failure stops the recording, said so
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("raw recording to %s stopped: %s", self.files.describe(), self.error)
            self.n_not_recorded += len(batch)

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is pending, close the files and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.join(timeout_s)
