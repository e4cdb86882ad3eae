"""The results writer: an HDF5 file written incrementally and readable after a crash.

Layout: docs/results-format.md. Symbols: A footprints (n_pixels × K, CSC, pixels flattened
row-major), C denoised calcium, S deconvolved activity, C_raw demixed trace, b0 baseline.

Crash safety comes from HDF5 SWMR (single writer, multiple readers): every dataset is created
up front, then the file switches to SWMR mode, in which HDF5 orders its metadata writes so that
the file on disk is always consistent. Per-frame values are buffered in memory and written in
blocks; :meth:`ResultsWriter.flush` writes the pending block and calls ``H5Fflush``. After a
SIGKILL the file holds everything up to the last flush; it must be opened with ``swmr=True``
(HDF5 leaves a "file open for writing" flag), which :func:`~.reader.read_results` does, and
:func:`~.recovery.recover_results` turns it into an ordinary file.

Trace rows follow ``neurons/neuron_ids`` (every neuron ever present, in order of first
appearance); footprint columns follow ``footprints/neuron_ids`` (neurons present at the last
flush). :func:`~.reader.read_results` aligns the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.blocks import (
    Block,
    append_rows,
    frame_values,
    utf8,
)
from online_cnmfe.results.bookkeeping import Ledger, upgrade_for_resume
from online_cnmfe.results.extras import PendingExtras
from online_cnmfe.results.finalise import (
    RewriteError,
    discard_partial,
    finalise,
    free_bytes,
)
from online_cnmfe.results.layout import (
    FRAME_FIELDS,
    REJECT_DTYPE,
    TRACE_NAMES,
)
from online_cnmfe.results.opening import create_file, reopen_file

logger = logging.getLogger(__name__)


class StoreError(OnlineCNMFEError):
    """The results file cannot be created or written (unwritable path, disk full, …)."""


class ResultsWriter:
    """Write a results file incrementally (docs/results-format.md).

    Parameters
    ----------
    path : str or Path
        File to create (overwritten) or, with ``resume=True``, to continue.
    dims : tuple of int
        (H, W) of the frames.
    params : CNMFEParams
        Stored as JSON in the root attribute ``params``; ``params.engine.flush_period_s`` is
        the longest time between two flushes.
    frame_rate_hz : float
    input_provenance : dict
        JSON-safe description of the input (source, path, session id, …).
    block_frames : int
        Frames buffered in memory before they are written (a flush writes earlier).
    resume : bool
        Continue an existing file (cleanly closed or crashed) instead of creating one.
    prepare : callable, optional
        ``prepare(file)`` creates extra groups/datasets (e.g. ``triggers/``) before SWMR mode
        starts; SWMR forbids creating objects later.
    flush_hooks : sequence of callable
        ``hook(file)`` is called at every flush, before the file is flushed, to append to
        those datasets (from the writer's thread).
    min_free_bytes : int
        Writing stops with a :class:`StoreError` (the file is closed cleanly) when the disk
        has less free space than this, before HDF5 itself hits a full disk.

    Notes
    -----
    When HDF5 itself fails a write (the disk filled up faster than the free-space check,
    a network file system vanished), :attr:`hdf5_failed` is set: the HDF5 library keeps
    the half-written file open and may crash the interpreter at exit, so a long-running
    process should leave with ``os._exit`` after its own clean-up (``online-cnmfe run``
    does).

    Raises
    ------
    StoreError
        If the file cannot be created or opened.

    Examples
    --------
    A writer is a context manager (``result`` is a :class:`FrameResult`)::

        with ResultsWriter("session.h5", (64, 64), CNMFEParams(), 20.0, {"source": "x"}) as w:
            w.append_frame(result, {"frame_index": 0, "seq": 0, "daq_frame": None,
                                    "t_acq_ms": 0.0, "latency_ms": 1.2})
    """

    def __init__(
        self,
        path: str | Path,
        dims: tuple[int, int],
        params: CNMFEParams,
        frame_rate_hz: float,
        input_provenance: dict[str, Any],
        *,
        block_frames: int = 256,
        resume: bool = False,
        min_free_bytes: int = 64 * 2**20,
        prepare: Callable[[h5py.File], Any] | None = None,
        flush_hooks: Sequence[Callable[[h5py.File], Any]] = (),
    ) -> None:
        if len(dims) != 2 or min(dims) <= 0:
            raise ValueError(f"dims must be (H, W) with H, W > 0, got {dims!r}")
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.path = Path(path)
        self.dims = (int(dims[0]), int(dims[1]))
        self.flush_period_s = float(params.engine.flush_period_s)
        self.error: str | None = None
        self.hdf5_failed = False
        self.file_id: str | None = None  # the file's ``file_id`` attribute (for checkpoints)
        self._min_free_bytes = int(min_free_bytes)
        self._prepare = prepare
        self._flush_hooks = list(flush_hooks)
        self._file: h5py.File | None = None
        self._id_to_row: dict[int, int] = {}
        self._row_ids: list[int] = []
        self._birth: list[int] = []
        self._last_ids: np.ndarray | None = None
        self._last_rows = np.zeros(0, np.int64)
        self._pending_fp: tuple[scipy.sparse.csc_array, np.ndarray, int] | None = None
        self._fp_ids = np.zeros(0, np.int64)  # footprint columns written to the file
        self._pending_b0: np.ndarray | None = None
        self._pending_drops: list[tuple[int, int]] = []
        self._pending_rejects: list[tuple[int, str]] = []
        self._extras = PendingExtras(self.dims)  # model events, flagged frames, summary images
        self._n_written = 0
        self._last_flush = time.monotonic()
        self.ledger = Ledger()  # the fate of every frame (results/bookkeeping.py)
        self.session = 0  # number of the current stream session (frames/session)
        try:
            discard_partial(self.path)  # left by a rewrite that was killed: the file is intact
            if resume and self.path.exists():
                self._open_existing()
            else:
                self._create(params, frame_rate_hz, input_provenance)
        except (OSError, ValueError, KeyError) as exc:
            self._close_quietly()
            raise StoreError(
                f"cannot {'reopen' if resume else 'create'} the results file {self.path}: {exc}. "
                "Check that the folder exists, is writable and has free space."
            ) from exc
        self._block = Block(block_frames, len(self._row_ids))

    # ---- creation ------------------------------------------------------------------------
    def _create(self, params: CNMFEParams, frame_rate_hz: float, provenance: dict) -> None:
        self._file, self.file_id = create_file(
            self.path, self.dims, params, frame_rate_hz, provenance, self._prepare
        )

    def _open_existing(self) -> None:
        f = self._file = reopen_file(self.path, self.dims)
        self._n_written = int(f["frames/frame_index"].shape[0])
        self._row_ids = [int(x) for x in f["neurons/neuron_ids"][:]]
        self._birth = [int(x) for x in f["neurons/birth_frame"][:]]
        self._id_to_row = {nid: row for row, nid in enumerate(self._row_ids)}
        self._fp_ids = f["footprints/neuron_ids"][:]
        self.ledger = upgrade_for_resume(f, self._n_written)  # older files lack some datasets
        self.session = max(0, self.ledger.n_sessions - 1)
        self.file_id = str(f.attrs["file_id"])
        f.swmr_mode = True

    # ---- public API ----------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Frames appended so far (written or still buffered)."""
        return self._n_written + self._block.n

    @property
    def ok(self) -> bool:
        """False once a write failed (see :attr:`error`)."""
        return self.error is None

    def append_frame(self, result: FrameResult, meta: dict[str, Any]) -> None:
        """Buffer the traces and bookkeeping of one frame.

        Parameters
        ----------
        result : FrameResult
        meta : dict
            ``frame_index``, ``seq``, ``daq_frame`` (None when unknown), ``t_acq_ms``,
            ``latency_ms``.

        Raises
        ------
        StoreError
            If an earlier write failed or this one (a block write or a periodic flush) fails.
        """
        self._check_ok()
        values = frame_values(meta)  # checked before anything is buffered
        block = self._block
        rows = self._rows_for(result.neuron_ids)
        block.ensure_rows(len(self._row_ids))
        j = block.n
        block.traces["C"][rows, j] = result.C
        block.traces["S"][rows, j] = result.S
        block.traces["C_raw"][rows, j] = result.C_raw
        for name, value in values.items():
            block.meta[name][j] = value
        block.meta["session"][j] = self.session
        block.motion.set(j, result)
        block.n += 1
        if result.skipped:
            index, reason = int(meta["frame_index"]), f"skipped: {result.skip_reason}"
            self._pending_rejects.append((index, reason))
            self.ledger.lost("skipped", index, index, reason, self.session)
        self._extras.add_frame(result, meta["frame_index"])  # its events and flag, if any
        if block.n == block.capacity or time.monotonic() - self._last_flush >= self.flush_period_s:
            self.flush()  # a full block goes out with the drops/rejects recorded so far

    def set_footprints(self, A, neuron_ids: np.ndarray, version: int) -> None:
        """Record the current footprints (written at the next flush).

        Parameters
        ----------
        A : sparse array of shape (n_pixels, K), float32
            Footprints, pixels flattened row-major. Copied.
        neuron_ids : ndarray of shape (K,), int64
        version : int
            The model's ``footprints_version``.
        """
        A = scipy.sparse.csc_array(A, dtype=np.float32, copy=True)
        ids = np.asarray(neuron_ids, np.int64).copy()
        n_pixels = self.dims[0] * self.dims[1]
        if A.shape != (n_pixels, ids.shape[0]):
            raise ValueError(
                f"footprints have shape {A.shape}; expected ({n_pixels}, {ids.shape[0]}) "
                "for these dims and neuron_ids"
            )
        A.sort_indices()
        self._pending_fp = (A, ids, int(version))

    def set_background(self, b0: np.ndarray) -> None:
        """Record the per-pixel baseline b0, (H, W) or (n_pixels,) (written at the next flush)."""
        b0 = np.asarray(b0, np.float32)
        if b0.size != self.dims[0] * self.dims[1]:
            raise ValueError(f"b0 has {b0.size} values; expected {self.dims[0] * self.dims[1]}")
        self._pending_b0 = b0.reshape(self.dims).copy()

    def set_images(self, images: dict[str, np.ndarray], **attrs: Any) -> None:
        """Record (H, W) summary images ``images/<name>`` (:mod:`.summary`) for the next flush;
        ``attrs`` (``n_frames``, ``source``) are stored on each."""
        self._extras.set_images(images, attrs)

    def record_drop(self, first: int, last: int, reason: str = "lost upstream", n: int = 0) -> None:
        """Record frames ``first..last`` (inclusive) that never reached the engine.

        ``first = last = -1`` with ``n`` frames: their indices are unknown.
        """
        if first >= 0:
            self._pending_drops.append((int(first), int(last)))
        self.ledger.lost("dropped", int(first), int(last), reason, self.session, n)

    def record_reject(self, frame_index: int, reason: str) -> None:
        """Record a frame refused by the engine or the model, with the reason."""
        self._pending_rejects.append((int(frame_index), str(reason)))
        self.ledger.lost("rejected", int(frame_index), int(frame_index), reason, self.session)

    def record_lost(self, kind: str, first: int, last: int, reason: str, n: int = 0) -> None:
        """Record frames ``first..last`` of another fate (``unprocessed``, ``unsaved``,
        ``daq_lost``; see :mod:`~online_cnmfe.results.bookkeeping`)."""
        self.ledger.lost(kind, int(first), int(last), reason, self.session, n)

    def start_session(
        self, session_id: str | None, frame_rate_hz: float | None, detail: str
    ) -> int:
        """Record that a stream session starts with the next frame; returns its number."""
        self.session = self.ledger.session(session_id, self.n_frames, frame_rate_hz, detail)
        return self.session

    def count_incident(self, name: str, n: int = 1) -> None:
        """Add to ``n_malformed``, ``n_restarts`` or ``n_out_of_order``."""
        self.ledger.count(name, n)

    def flush(self) -> None:
        """Write everything buffered and flush the file to disk.

        Raises
        ------
        StoreError
            If writing fails (the writer then refuses further writes).
        """
        self._check_ok()
        self._guard(self._flush)

    def close(self) -> None:
        """Flush, mark the file complete, close it, align its rows and add the quality table.

        (See :mod:`.finalise`.)

        Safe to call twice or after a failure. A kill at any instant of the close leaves a
        readable file: the last flush happens in SWMR mode, and the alignment writes a copy
        beside the file and renames it into place (skipped, with a warning, when the disk
        lacks the space: the file is then complete with rows in order of first appearance).
        """
        if self._file is None:
            return
        finished = None  # aligned rows and a quality table: nothing left to rewrite
        try:
            if self.ok:
                self._guard(self._flush_last)
                finished = bool(self._file.attrs["aligned"]) and "quality" in self._file
        finally:
            self._close_quietly()
        if finished is False:
            try:
                status = finalise(self.path, reserve_bytes=self._min_free_bytes)
            except RewriteError as exc:  # the file itself is complete and untouched
                logger.error("%s; the file is complete, its rows unaligned", exc)
                return
            logger.debug("finalising %s: %s", self.path, status)

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------
    def _check_ok(self) -> None:
        if self.error is not None:
            raise StoreError(f"the results file {self.path} is no longer written: {self.error}")

    def _guard(self, action) -> None:
        free = free_bytes(self.path.parent)
        if free is not None and free < self._min_free_bytes:
            self.error = (
                f"the disk holding {self.path.parent} has {free / 2**20:.0f} MiB free, "
                f"less than the {self._min_free_bytes / 2**20:.0f} MiB reserve"
            )
            logger.error("stopped writing %s: %s", self.path, self.error)
            self._close_quietly()  # nothing failed yet: the file closes cleanly
            raise StoreError(
                f"stopped writing the results file {self.path} after {self._n_written} frames: "
                f"{self.error}. Frames up to here are saved; free space, then restart with "
                "--resume."
            )
        try:
            action()
        except (OSError, RuntimeError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.hdf5_failed = True
            logger.error("writing %s failed: %s", self.path, self.error)
            self._close_quietly()
            raise StoreError(
                f"writing the results file {self.path} failed after {self._n_written} frames "
                f"({self.error}). Frames up to the last flush are on disk; free space or fix "
                "the path, then restart with --resume."
            ) from exc

    def _close_quietly(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:  # noqa: BLE001 - closing a failed file must not mask its error
                logger.debug("closing %s after a failure: %s", self.path, exc)
            self._file = None

    def _rows_for(self, neuron_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(neuron_ids)
        last = self._last_ids
        if last is not None and (last is ids or np.array_equal(last, ids)):
            return self._last_rows
        rows = np.empty(ids.shape[0], np.int64)
        for i, nid in enumerate(ids.tolist()):  # only when the set of neurons changes
            row = self._id_to_row.get(nid)
            if row is None:
                row = self._id_to_row[nid] = len(self._row_ids)
                self._row_ids.append(nid)
                self._birth.append(self.n_frames)
            rows[i] = row
        self._last_ids, self._last_rows = ids.copy(), rows
        return rows

    def _write_block(self) -> None:
        f, block, n = self._file, self._block, self._block.n
        if n == 0:
            return
        t0, t1, k = self._n_written, self._n_written + n, len(self._row_ids)
        for name in TRACE_NAMES:
            ds = f["traces"][name]
            ds.resize((max(k, ds.shape[0]), t1))
            if k:
                ds[:k, t0:t1] = block.traces[name][:k, :n]
        k0 = f["neurons/neuron_ids"].shape[0]
        if k > k0:  # only the rows added since the last block
            for name in ("neuron_ids", "birth_frame"):
                ds = f["neurons"][name]
                values = self._row_ids if name == "neuron_ids" else self._birth
                ds.resize((k,))
                ds[k0:k] = np.asarray(values[k0:k], np.int64)
        for name in FRAME_FIELDS:
            ds = f["frames"][name]
            ds.resize((t1,))
            ds[t0:t1] = block.meta[name][:n]
        block.motion.write(f, t0, n)
        self._n_written = t1
        f.attrs["n_frames"] = t1
        block.clear()

    def _flush(self) -> None:
        f = self._file
        if f is None:
            raise OSError("the file is closed")
        self._write_block()
        if self._pending_fp is not None:
            self._write_footprints(*self._pending_fp)
            self._pending_fp = None
        if self._pending_b0 is not None:
            f["background/b0"][...] = self._pending_b0
            f["background"].attrs["set"] = True
            self._pending_b0 = None
        if self._pending_drops:
            append_rows(f["frames/dropped"], np.asarray(self._pending_drops, np.int64))
            self._pending_drops = []
        if self._pending_rejects:
            rows = np.array([(i, utf8(r)) for i, r in self._pending_rejects], REJECT_DTYPE)
            append_rows(f["frames/rejected"], rows)
            self._pending_rejects = []
        self.ledger.write(f)
        self._extras.write(f)
        for hook in self._flush_hooks:
            hook(f)
        f.flush()
        self._last_flush = time.monotonic()

    def _flush_last(self) -> None:
        """The final flush: everything buffered, then ``complete`` and ``aligned`` set."""
        self._flush()
        f = self._file
        f.attrs["aligned"] = bool(np.array_equal(np.asarray(self._row_ids), self._fp_ids))
        f.attrs["complete"] = True
        f.flush()

    def _write_footprints(self, A: scipy.sparse.csc_array, ids: np.ndarray, version: int) -> None:
        fp = self._file["footprints"]
        # Data first, then the index arrays that make it reachable, then the shape/version.
        for name, values in (
            ("data", A.data.astype(np.float32)),
            ("indices", A.indices.astype(np.int32)),
            ("indptr", A.indptr.astype(np.int32)),
            ("neuron_ids", ids),
        ):
            fp[name].resize((values.shape[0],))
            fp[name][:] = values
        fp.attrs["shape"] = np.array(A.shape, np.int64)
        fp.attrs["version"] = version
        self._fp_ids = ids
