"""The results store: an HDF5 file written incrementally and readable after a crash.

Layout: docs/results-format.md. Symbols: A footprints (n_pixels × K, CSC, pixels flattened
row-major), C denoised calcium, S deconvolved activity, C_raw demixed trace, b0 baseline.

Crash safety comes from HDF5 SWMR (single writer, multiple readers): every dataset is created
up front, then the file switches to SWMR mode, in which HDF5 orders its metadata writes so that
the file on disk is always consistent. Per-frame values are buffered in memory and written in
blocks; :meth:`ResultsWriter.flush` writes the pending block and calls ``H5Fflush``. After a
SIGKILL the file holds everything up to the last flush; it must be opened with ``swmr=True``
(HDF5 leaves a "file open for writing" flag), which :func:`read_results` does, and
:func:`recover_results` turns it into an ordinary file.

Trace rows follow ``neurons/neuron_ids`` (every neuron ever present, in order of first
appearance); footprint columns follow ``footprints/neuron_ids`` (neurons present at the last
flush). :func:`read_results` aligns the two.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe import __version__
from online_cnmfe.errors import OnlineCNMFEError, StateFileError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

FORMAT = "online-cnmfe-results"
FORMAT_VERSION = 1
REJECT_DTYPE = np.dtype([("frame_index", "<i8"), ("reason", "S200")])
FRAME_FIELDS = {
    "frame_index": np.int64,
    "seq": np.int64,
    "daq_frame": np.int64,
    "t_acq_ms": np.float64,
    "latency_ms": np.float32,
}
TRACE_NAMES = ("C", "S", "C_raw")
_TRACE_CHUNKS = (32, 256)


class StoreError(OnlineCNMFEError):
    """The results file cannot be created or written (unwritable path, disk full, …)."""


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "replace")[: REJECT_DTYPE["reason"].itemsize]


class _Block:
    """In-memory buffer of per-frame values, written to the file in one block."""

    def __init__(self, capacity: int, n_rows: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.traces = {
            name: np.zeros((max(n_rows, 8), capacity), np.float32) for name in TRACE_NAMES
        }
        self.meta = {name: np.zeros(capacity, dtype) for name, dtype in FRAME_FIELDS.items()}

    def ensure_rows(self, n_rows: int) -> None:
        have = self.traces["C"].shape[0]
        if n_rows > have:
            grow = max(n_rows, 2 * have)
            for name, buf in self.traces.items():
                new = np.zeros((grow, self.capacity), np.float32)
                new[:have] = buf
                self.traces[name] = new

    def clear(self) -> None:
        for buf in self.traces.values():
            buf[:, : self.n] = 0.0
        self.n = 0


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
        self._pending_b0: np.ndarray | None = None
        self._pending_drops: list[tuple[int, int]] = []
        self._pending_rejects: list[tuple[int, str]] = []
        self._n_written = 0
        self._last_flush = time.monotonic()
        try:
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
        self._block = _Block(block_frames, len(self._row_ids))

    # ---- creation ------------------------------------------------------------------------
    def _create(self, params: CNMFEParams, frame_rate_hz: float, provenance: dict) -> None:
        if not self.path.parent.is_dir():
            raise OSError(f"folder {self.path.parent} does not exist")
        f = self._file = h5py.File(self.path, "w", libver="latest")
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            software_version=__version__,
            dims=np.array(self.dims, np.int64),
            frame_rate_hz=float(frame_rate_hz),
            params=params.to_json(),
            input=json.dumps(provenance, default=str),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            n_frames=0,
            complete=False,
        )
        n_pixels = self.dims[0] * self.dims[1]
        fp = f.create_group("footprints")
        fp.attrs.update(shape=np.array([n_pixels, 0], np.int64), dims=f.attrs["dims"], version=-1)
        for name, dtype in (("data", np.float32), ("indices", np.int32)):
            fp.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(16384,))
        fp.create_dataset("indptr", data=np.zeros(1, np.int32), maxshape=(None,), chunks=(1024,))
        fp.create_dataset("neuron_ids", (0,), np.int64, maxshape=(None,), chunks=(1024,))
        tr = f.create_group("traces")
        for name in TRACE_NAMES:
            tr.create_dataset(
                name, (0, 0), np.float32, maxshape=(None, None), chunks=_TRACE_CHUNKS, fillvalue=0
            )
        ne = f.create_group("neurons")
        for name in ("neuron_ids", "birth_frame"):
            ne.create_dataset(name, (0,), np.int64, maxshape=(None,), chunks=(1024,))
        bg = f.create_group("background")
        bg.create_dataset("b0", self.dims, np.float32, fillvalue=0)
        bg.attrs["set"] = False
        fr = f.create_group("frames")
        for name, dtype in FRAME_FIELDS.items():
            fr.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))
        fr.create_dataset("dropped", (0, 2), np.int64, maxshape=(None, 2), chunks=(256, 2))
        fr.create_dataset("rejected", (0,), REJECT_DTYPE, maxshape=(None,), chunks=(256,))
        if self._prepare is not None:
            self._prepare(f)
        f.flush()
        f.swmr_mode = True

    def _open_existing(self) -> None:
        if not _opens_normally(self.path):
            recover_results(self.path, self.path)
        f = self._file = h5py.File(self.path, "r+", libver="latest")
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an online-cnmfe results file")
        if tuple(int(x) for x in f.attrs["dims"]) != self.dims:
            raise ValueError(f"it has dims {tuple(f.attrs['dims'])}, the stream has {self.dims}")
        self._n_written = int(f["frames/frame_index"].shape[0])
        self._row_ids = [int(x) for x in f["neurons/neuron_ids"][:]]
        self._birth = [int(x) for x in f["neurons/birth_frame"][:]]
        self._id_to_row = {nid: row for row, nid in enumerate(self._row_ids)}
        f.attrs["complete"] = False
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
        block = self._block
        rows = self._rows_for(result.neuron_ids)
        block.ensure_rows(len(self._row_ids))
        j = block.n
        block.traces["C"][rows, j] = result.C
        block.traces["S"][rows, j] = result.S
        block.traces["C_raw"][rows, j] = result.C_raw
        daq = meta.get("daq_frame")
        block.meta["frame_index"][j] = meta["frame_index"]
        block.meta["seq"][j] = meta.get("seq", -1)
        block.meta["daq_frame"][j] = -1 if daq is None else daq
        block.meta["t_acq_ms"][j] = meta.get("t_acq_ms", np.nan)
        block.meta["latency_ms"][j] = meta.get("latency_ms", np.nan)
        block.n += 1
        if result.skipped:
            self._pending_rejects.append(
                (int(meta["frame_index"]), f"skipped: {result.skip_reason}")
            )
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

    def record_drop(self, first: int, last: int) -> None:
        """Record frames ``first..last`` (inclusive) lost upstream."""
        self._pending_drops.append((int(first), int(last)))

    def record_reject(self, frame_index: int, reason: str) -> None:
        """Record a frame refused by the engine or the model, with the reason."""
        self._pending_rejects.append((int(frame_index), str(reason)))

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
        """Flush, mark the file complete and close it. Safe to call twice or after a failure."""
        if self._file is None:
            return
        ok = False
        try:
            if self.ok:
                self._guard(self._flush)
                ok = True
        finally:
            self._close_quietly()
        if ok:
            try:
                _finalise(self.path)
            except (OSError, KeyError, ValueError) as exc:
                self.error = f"finalising failed: {exc}"
                raise StoreError(f"could not finalise the results file {self.path}: {exc}") from exc

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------
    def _check_ok(self) -> None:
        if self.error is not None:
            raise StoreError(f"the results file {self.path} is no longer written: {self.error}")

    def _guard(self, action) -> None:
        free = _free_bytes(self.path.parent)
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
            _append_rows(f["frames/dropped"], np.asarray(self._pending_drops, np.int64))
            self._pending_drops = []
        if self._pending_rejects:
            rows = np.array([(i, _utf8(r)) for i, r in self._pending_rejects], REJECT_DTYPE)
            _append_rows(f["frames/rejected"], rows)
            self._pending_rejects = []
        for hook in self._flush_hooks:
            hook(f)
        f.flush()
        self._last_flush = time.monotonic()

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


def _finalise(path: Path, block: int = 4096) -> None:
    """Align trace rows with the final footprint columns, then mark the file complete.

    Runs after the SWMR writer closed (the file is an ordinary HDF5 file again). Rows of
    neurons absent from the final footprints move to ``removed/``.
    """
    with h5py.File(path, "r+") as f:
        row_ids = f["neurons/neuron_ids"][:]
        fp_ids = f["footprints/neuron_ids"][:]
        if not np.array_equal(row_ids, fp_ids):
            row_of = {int(nid): r for r, nid in enumerate(row_ids.tolist())}
            keep = np.array([row_of.get(int(i), -1) for i in fp_ids], np.int64)
            gone = np.setdiff1d(np.arange(row_ids.shape[0]), keep[keep >= 0])
            birth = f["neurons/birth_frame"][:]
            removed = f.require_group("removed")
            for name, rows in (("neuron_ids", row_ids), ("birth_frame", birth)):
                removed.create_dataset(name, data=rows[gone])
            for name in TRACE_NAMES:
                old = f[f"traces/{name}"]
                n = old.shape[1]
                new = f["traces"].create_dataset(
                    name + ".new", (fp_ids.shape[0], n), np.float32, chunks=_TRACE_CHUNKS,
                    maxshape=(None, None), fillvalue=0,
                )  # fmt: skip
                gone_ds = removed.create_dataset(name, (gone.shape[0], n), np.float32)
                for t0 in range(0, n, block):
                    chunk = old[:, t0 : t0 + block]
                    values = np.zeros((fp_ids.shape[0], chunk.shape[1]), np.float32)
                    values[keep >= 0] = chunk[keep[keep >= 0]]
                    new[:, t0 : t0 + block] = values
                    gone_ds[:, t0 : t0 + block] = chunk[gone]
                del f[f"traces/{name}"]
                f["traces"].move(name + ".new", name)
            new_birth = np.where(keep >= 0, birth[np.maximum(keep, 0)], -1)
            for name, values in (("neuron_ids", fp_ids), ("birth_frame", new_birth)):
                f[f"neurons/{name}"].resize((values.shape[0],))
                f[f"neurons/{name}"][:] = values
        f.attrs["complete"] = True


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _append_rows(ds: h5py.Dataset, rows: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize((n + rows.shape[0], *ds.shape[1:]))
    ds[n:] = rows


def _opens_normally(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def _open_for_reading(path: Path) -> h5py.File:
    if not path.exists():
        raise StateFileError(f"results file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError:
        pass
    try:  # a writer still running or killed: SWMR readers may open it
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise StateFileError(f"cannot open results file {path}: {exc}") from exc


def recover_results(src: str | Path, dst: str | Path) -> Path:
    """Copy a results file left by a killed writer into an ordinary, cleanly closed file.

    ``dst`` may equal ``src`` (the original is then replaced; a copy is kept as
    ``<src>.crashed``). Returns the path of the recovered file.

    Raises
    ------
    StateFileError
        If the file cannot be read even in SWMR mode.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".recovering")
    with _open_for_reading(src) as f_in, h5py.File(tmp, "w", libver="latest") as f_out:
        n = int(f_in.attrs.get("n_frames", f_in["frames/frame_index"].shape[0]))
        for key, value in f_in.attrs.items():
            f_out.attrs[key] = value
        for name in f_in:
            f_in.copy(f_in[name], f_out, name=name)
        for name in FRAME_FIELDS:
            f_out[f"frames/{name}"].resize((n,))
        for name in TRACE_NAMES:
            ds = f_out[f"traces/{name}"]
            ds.resize((ds.shape[0], n))
        f_out.attrs["n_frames"] = n
        f_out.attrs["recovered"] = True
    if dst == src:
        shutil.copy2(src, src.with_name(src.name + ".crashed"))
    os.replace(tmp, dst)
    logger.info("recovered %s into %s (%d frames)", src, dst, n)
    return dst


@dataclass
class Results:
    """Contents of a results file (see :func:`read_results`).

    ``C``, ``S``, ``C_raw`` and ``birth_frame`` are aligned with the footprint columns
    (``neuron_ids``); ``*_all`` and ``trace_neuron_ids`` keep every neuron ever present.
    """

    dims: tuple[int, int]
    A: scipy.sparse.csc_array
    neuron_ids: np.ndarray
    C: np.ndarray
    S: np.ndarray
    C_raw: np.ndarray
    birth_frame: np.ndarray
    trace_neuron_ids: np.ndarray
    C_all: np.ndarray
    S_all: np.ndarray
    C_raw_all: np.ndarray
    b0: np.ndarray
    frames: dict[str, np.ndarray]
    dropped: np.ndarray
    rejected: list[tuple[int, str]]
    params: dict[str, Any]
    input: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames["frame_index"].shape[0])


def read_results(path: str | Path) -> Results:
    """Read a results file, including one left by a killed writer (opened in SWMR mode).

    Raises
    ------
    StateFileError
        If the file is missing, not a results file or unreadable.
    """
    path = Path(path)
    with _open_for_reading(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise StateFileError(f"{path} is not an online-cnmfe results file (no format attr)")
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        dims = tuple(int(x) for x in f.attrs["dims"])
        frames = {name: f[f"frames/{name}"][:] for name in FRAME_FIELDS}
        n = min([int(f.attrs.get("n_frames", 10**18))] + [v.shape[0] for v in frames.values()])
        frames = {k: v[:n] for k, v in frames.items()}
        traces = {name: f[f"traces/{name}"][:, :n] for name in TRACE_NAMES}
        row_ids = f["neurons/neuron_ids"][:]
        birth = f["neurons/birth_frame"][:]
        k_rows = min(row_ids.shape[0], traces["C"].shape[0])
        fp = f["footprints"]
        ids = fp["neuron_ids"][:]
        indptr = fp["indptr"][:]
        data, indices = fp["data"][:], fp["indices"][:]
        if indptr.shape[0] != ids.shape[0] + 1 or indptr[-1] != data.shape[0]:
            logger.warning("%s: footprints were being rewritten at the crash; ignoring them", path)
            ids, indptr = ids[:0], indptr[:1]
        A = scipy.sparse.csc_array(
            (data, indices, indptr), shape=(dims[0] * dims[1], ids.shape[0]), dtype=np.float32
        )
        if "removed" in f:  # a cleanly closed file keeps removed neurons apart
            gone = f["removed"]
            row_ids = np.concatenate([row_ids[:k_rows], gone["neuron_ids"][:]])
            birth = np.concatenate([birth[:k_rows], gone["birth_frame"][:]])
            for name in TRACE_NAMES:
                traces[name] = np.concatenate([traces[name][:k_rows], gone[name][:, :n]])
            k_rows = row_ids.shape[0]
        b0 = f["background/b0"][:]
        dropped = f["frames/dropped"][:]
        rejected = [(int(i), r.decode("utf-8", "replace")) for i, r in f["frames/rejected"][:]]
    row_of = {int(nid): r for r, nid in enumerate(row_ids[:k_rows].tolist())}
    sel = np.array([row_of.get(int(nid), -1) for nid in ids], np.int64)
    aligned = {}
    for name, values in traces.items():
        out = np.zeros((ids.shape[0], n), np.float32)
        ok = sel >= 0
        out[ok] = values[sel[ok]]
        aligned[name] = out
    birth_aligned = np.where(sel >= 0, birth[np.maximum(sel, 0)] if birth.size else 0, -1)
    return Results(
        dims=dims,
        A=A,
        neuron_ids=ids,
        C=aligned["C"],
        S=aligned["S"],
        C_raw=aligned["C_raw"],
        birth_frame=birth_aligned.astype(np.int64),
        trace_neuron_ids=row_ids[:k_rows],
        C_all=traces["C"][:k_rows],
        S_all=traces["S"][:k_rows],
        C_raw_all=traces["C_raw"][:k_rows],
        b0=b0,
        frames=frames,
        dropped=dropped,
        rejected=rejected,
        params=json.loads(attrs.get("params", "{}")),
        input=json.loads(attrs.get("input", "{}")),
        attrs=attrs,
    )
