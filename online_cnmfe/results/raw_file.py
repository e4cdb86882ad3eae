"""Raw frame recordings of the engine: ``<out stem>.raw.h5`` and ``<out stem>.unprocessed.h5``.

An HDF5 file (docs/results-format.md, "Raw recordings") that ``online-cnmfe acquire replay`` and
``online-cnmfe process`` read like any movie (dataset ``movie``):

- ``movie`` (T, H, W) in the stream's dtype, one chunk per frame; attrs ``frame_rate_hz`` (the
  stream's declared rate, NaN when unknown);
- ``frame_index``, ``seq``, ``daq_frame`` (-1 when unknown), ``t_acq_ms``, ``t_recv_ns`` (engine
  ``monotonic_ns`` at arrival; -1 for frames not received live), ``session`` (row of
  ``session_ids``), all (T,);
- ``session_ids`` (n,) the stream sessions' ids;
- root attrs ``format = "online-cnmfe-raw"``, ``contents`` (what the file holds), ``n_frames``.

Written in SWMR mode and flushed every ``flush_period_s`` (a crash leaves the frames up to the
last flush readable with ``h5py.File(path, "r", swmr=True)``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

logger = logging.getLogger(__name__)

RAW_FORMAT = "online-cnmfe-raw"
FIELDS = {
    "frame_index": np.int64,
    "seq": np.int64,
    "daq_frame": np.int64,
    "t_acq_ms": np.float64,
    "t_recv_ns": np.int64,
    "session": np.int32,
}
BLOCK_FRAMES = 16


class RawMovieWriter:
    """Append frames of one shape and dtype to a raw recording (see the module docstring).

    Parameters
    ----------
    path : Path
        File to create (replaced if it exists).
    shape : tuple of int
        (H, W) of every frame.
    dtype : str
    contents : str
        One line for the ``contents`` attribute ("every frame received", …).
    provenance : dict
        JSON-safe description of the stream, stored in the ``input`` attribute.
    flush_period_s : float
        Longest time between two flushes.

    Raises
    ------
    OSError
        If the file cannot be created.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int],
        dtype: str,
        contents: str,
        provenance: dict[str, Any],
        flush_period_s: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.flush_period_s = float(flush_period_s)
        self.n_frames = 0
        self._sessions: list[str] = []
        self._pending: list[tuple[np.ndarray, dict[str, Any]]] = []
        self._last_flush = time.monotonic()
        f = self._file = h5py.File(self.path, "w", libver="latest")
        f.attrs.update(
            format=RAW_FORMAT,
            contents=contents,
            input=json.dumps(provenance, default=str),
            n_frames=0,
        )
        movie = f.create_dataset(
            "movie", (0, *self.shape), self.dtype, maxshape=(None, *self.shape),
            chunks=(1, *self.shape),
        )  # fmt: skip
        movie.attrs["frame_rate_hz"] = np.nan
        for name, field_dtype in FIELDS.items():
            f.create_dataset(name, (0,), field_dtype, maxshape=(None,), chunks=(4096,))
        f.create_dataset("session_ids", (0,), "S64", maxshape=(None,), chunks=(64,))
        f.swmr_mode = True

    def set_frame_rate(self, frame_rate_hz: float | None) -> None:
        """Record the stream's declared frame rate (the movie's ``frame_rate_hz``)."""
        if frame_rate_hz is not None and frame_rate_hz > 0:
            self._file["movie"].attrs["frame_rate_hz"] = float(frame_rate_hz)

    def append(self, pixels: np.ndarray, meta: dict[str, Any]) -> None:
        """Buffer one frame; ``meta`` has ``frame_index``, ``seq``, ``daq_frame``,
        ``t_acq_ms``, ``t_recv_ns`` and ``session_id``.

        Raises
        ------
        ValueError
            If the frame's shape or dtype differ from the file's.
        """
        if pixels.shape != self.shape or pixels.dtype != self.dtype:
            raise ValueError(
                f"frame {meta.get('frame_index')} is {pixels.shape} {pixels.dtype}; the raw "
                f"recording {self.path} holds {self.shape} {self.dtype}"
            )
        self._pending.append((pixels, meta))
        if len(self._pending) >= BLOCK_FRAMES:
            self._write_pending()
        if time.monotonic() - self._last_flush >= self.flush_period_s:
            self.flush()

    def _session_row(self, session_id: str | None) -> int:
        sid = session_id or ""
        if not self._sessions or self._sessions[-1] != sid:
            self._sessions.append(sid)
            ds = self._file["session_ids"]
            ds.resize((len(self._sessions),))
            ds[-1] = sid.encode("utf-8", "replace")[:64]
        return len(self._sessions) - 1

    def _write_pending(self) -> None:
        if not self._pending:
            return
        f, n0, n = self._file, self.n_frames, len(self._pending)
        block = np.stack([p for p, _ in self._pending])
        values = {name: np.zeros(n, dtype) for name, dtype in FIELDS.items()}
        for j, (_, meta) in enumerate(self._pending):
            for name in FIELDS:
                if name == "session":
                    values[name][j] = self._session_row(meta.get("session_id"))
                else:
                    value = meta.get(name)
                    values[name][j] = -1 if value is None else value
        f["movie"].resize((n0 + n, *self.shape))
        f["movie"][n0:] = block
        for name, vals in values.items():
            f[name].resize((n0 + n,))
            f[name][n0:] = vals
        self.n_frames = n0 + n
        f.attrs["n_frames"] = self.n_frames
        self._pending = []

    def flush(self) -> None:
        """Write what is buffered and flush the file to disk."""
        self._write_pending()
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None


def raw_path(out: Path, kind: str, index: int = 0) -> Path:
    """``<out stem>.<kind>.h5`` (``<out stem>.<kind>-<index>.h5`` for the index-th extra file)."""
    suffix = f".{kind}.h5" if index == 0 else f".{kind}-{index}.h5"
    return out.with_name(out.stem + suffix)
