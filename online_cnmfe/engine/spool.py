"""The disk spool: frames the model cannot take yet, kept on disk in their raw dtype.

When more frames wait for the model than the engine keeps in memory (``engine.queue_frames``),
the receive thread appends the newest frame's pixels to the current *chunk* file of the spool
folder (by default ``<out stem>.spool/`` beside the results file); the model thread reads them
back in order. A chunk holds whole frames, back to back, raw (no header: the frame's shape and
dtype travel with its queue item); a chunk file is deleted as soon as every frame in it has
been read, so the spool shrinks while the engine catches up, and :meth:`DiskSpool.close`
removes the folder at a clean close.

The spool refuses a frame (the caller then records it as dropped, with the reason) only when
the disk would fall below ``reserve_bytes`` of free space or the spool would exceed
``max_bytes``; both are checked once per chunk, not per frame.

Threads: the receive thread hands a frame over with :meth:`DiskSpool.submit`, which returns
at once (a few microseconds) with a :class:`SpoolTicket`; the spool's own writer thread
appends the pixels to disk (:meth:`DiskSpool.append`) and the model thread gets them back
with :meth:`DiskSpool.fetch` (from memory if the writer has not reached it yet, which then
skips it). The chunk table is guarded by a lock; writes and reads use separate descriptors.
At most ``max_pending`` frames wait for the writer: beyond that :meth:`submit` waits, so a disk
much slower than the stream cannot fill the memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True, slots=True)
class SpoolRef:
    """Where one spooled frame is: chunk number, byte offset, shape and dtype."""

    chunk: int
    offset: int
    shape: tuple[int, int]
    dtype: str

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize


class SpoolTicket:
    """A frame handed to the spool: its pixels until the writer has put them on disk."""

    __slots__ = ("cancelled", "lock", "pixels", "ref")

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels: np.ndarray | None = pixels
        self.ref: SpoolRef | None = None
        self.cancelled = False
        self.lock = threading.Lock()


class SpoolFull(Exception):
    """The spool cannot take another frame (disk reserve or size limit reached); the message
    says which."""


@dataclass(slots=True)
class _Chunk:
    path: Path
    n_written: int = 0
    n_read: int = 0
    nbytes: int = 0
    closed: bool = False  # no more frames will be appended
    read_fd: int = -1


class DiskSpool:
    """Append-only chunk files of raw frames, read back in order (see the module docstring).

    Parameters
    ----------
    folder : Path or None
        Folder for the chunk files, created on the first frame; None: a new temporary folder.
    reserve_bytes : int
        Free disk space that must remain after a new chunk is started.
    max_bytes : int or None
        Largest total size of the chunk files on disk (None: no limit besides the reserve).
    chunk_bytes : int
        Target size of one chunk file.
    """

    def __init__(
        self,
        folder: Path | None,
        reserve_bytes: int,
        max_bytes: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._folder = None if folder is None else Path(folder)
        self.reserve_bytes = int(reserve_bytes)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        if self.max_bytes is not None:  # a small limit still holds several chunks
            chunk_bytes = min(chunk_bytes, self.max_bytes // 4)
        self.chunk_bytes = max(1, int(chunk_bytes))
        self._chunks: dict[int, _Chunk] = {}
        self._lock = threading.Lock()
        self._write_id = -1
        self._write_fd = -1
        self._next_id = 0
        self._created = False
        self.n_spooled_total = 0  # frames ever written
        self.peak_bytes = 0
        self.error: str | None = None  # why the writer could not spool the last frame
        self.error_at = 0.0  # monotonic time of that failure
        self.max_pending = 64
        self._pending: deque[SpoolTicket] = deque()
        self._pending_cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._busy = False

    # ---- state -----------------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """The spool folder (None until the first frame was spooled)."""
        return self._folder if self._created else None

    @property
    def n_frames(self) -> int:
        """Frames on disk not read yet."""
        with self._lock:
            return sum(c.n_written - c.n_read for c in self._chunks.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the chunk files on disk now."""
        with self._lock:
            return sum(c.nbytes for c in self._chunks.values())

    # ---- asynchronous writing (receive thread → writer thread → model thread) ----------------
    def submit(self, pixels: np.ndarray) -> SpoolTicket:
        """Hand a frame to the writer thread; returns at once unless ``max_pending`` frames
        already wait for it."""
        ticket = SpoolTicket(pixels)
        with self._pending_cond:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="engine-spool",
                                                daemon=True)  # fmt: skip
                self._writer.start()
            while len(self._pending) >= self.max_pending and not self._closing:
                self._pending_cond.wait(0.05)
            self._pending.append(ticket)
            self._pending_cond.notify_all()
        return ticket

    def fetch(self, ticket: SpoolTicket) -> np.ndarray:
        """The pixels of a submitted frame: read back from disk, or taken from memory when the
        writer has not written them (it then skips them). Frames must be fetched in order.

        Raises
        ------
        OSError
            If the spooled frame cannot be read back.
        """
        with ticket.lock:
            if ticket.ref is None:
                ticket.cancelled = True
                pixels, ticket.pixels = ticket.pixels, None
                return pixels
            ref = ticket.ref
        return self.read(ref)

    def wait_written(self, timeout_s: float = 10.0) -> bool:
        """Wait until the writer thread has handled every frame submitted (True if so)."""
        deadline = time.monotonic() + timeout_s
        while self._pending or self._busy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    @property
    def n_pending(self) -> int:
        """Frames waiting for the writer thread."""
        return len(self._pending)

    def _write_loop(self) -> None:
        while True:
            with self._pending_cond:
                while not self._pending and not self._closing:
                    self._pending_cond.wait(0.5)
                if not self._pending:
                    return
                ticket = self._pending.popleft()
                self._busy = True
                self._pending_cond.notify_all()
            with ticket.lock:
                if ticket.cancelled:
                    self._busy = False
                    continue
                try:
                    ticket.ref = self.append(ticket.pixels)
                    ticket.pixels = None
                    self.error = None
                except (SpoolFull, OSError) as exc:  # the frame stays in memory
                    self.error, self.error_at = str(exc), time.monotonic()
                    logger.error("cannot spool a frame to disk (kept in memory): %s", exc)
            self._busy = False

    # ---- writer side -----------------------------------------------------------------------
    def append(self, pixels: np.ndarray) -> SpoolRef:
        """Write one frame's pixels (any dtype, C-contiguous) at the end of the spool.

        Raises
        ------
        SpoolFull
            When the disk reserve or ``max_bytes`` would be crossed; nothing is written.
        OSError
            When the write itself fails (the caller treats it like SpoolFull).
        """
        pixels = np.ascontiguousarray(pixels)
        nbytes = pixels.nbytes
        chunk = self._chunks.get(self._write_id)
        if chunk is None or chunk.nbytes + nbytes > self.chunk_bytes:
            chunk = self._start_chunk(nbytes)
        offset = chunk.nbytes
        view = memoryview(pixels).cast("B")
        done = 0
        while done < nbytes:  # os.write may write less than asked (e.g. a signal)
            done += os.write(self._write_fd, view[done:])
        with self._lock:
            chunk.nbytes += nbytes
            chunk.n_written += 1
            total = sum(c.nbytes for c in self._chunks.values())
        self.peak_bytes = max(self.peak_bytes, total)
        self.n_spooled_total += 1
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        return SpoolRef(self._write_id, offset, shape, pixels.dtype.name)

    def _start_chunk(self, frame_bytes: int) -> _Chunk:
        folder = self._ensure_folder()
        size = max(self.chunk_bytes, frame_bytes)
        free = shutil.disk_usage(folder).free
        if free - size < self.reserve_bytes:
            raise SpoolFull(
                f"the disk holding the spool {folder} has {free / 2**20:.0f} MiB free, less "
                f"than a chunk ({size / 2**20:.0f} MiB) plus the reserve "
                f"({self.reserve_bytes / 2**20:.0f} MiB, engine.spool_reserve_mb)"
            )
        if self.max_bytes is not None and self.nbytes + size > self.max_bytes:
            raise SpoolFull(
                f"the spool {folder} reached its limit of {self.max_bytes / 2**20:.0f} MiB "
                "(engine.spool_max_mb)"
            )
        self._close_write_chunk()
        cid = self._next_id
        self._next_id += 1
        path = folder / f"chunk-{cid:06d}.raw"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        chunk = _Chunk(path)
        with self._lock:
            self._chunks[cid] = chunk
            self._write_id = cid
        return chunk

    def _close_write_chunk(self) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        with self._lock:
            chunk = self._chunks.get(self._write_id)
            if chunk is not None:
                chunk.closed = True
                self._maybe_delete(self._write_id, chunk)

    def _ensure_folder(self) -> Path:
        if not self._created:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="online-cnmfe-spool-"))
            else:
                self._folder.mkdir(parents=True, exist_ok=True)
            self._created = True
            logger.info("spooling frames the model cannot take yet to %s", self._folder)
        return self._folder

    # ---- reader side -----------------------------------------------------------------------
    def read(self, ref: SpoolRef) -> np.ndarray:
        """Read a spooled frame back (a new array) and release its place in the spool.

        Frames must be read in the order they were appended.
        """
        with self._lock:
            chunk = self._chunks[ref.chunk]
            if chunk.read_fd < 0:
                chunk.read_fd = os.open(chunk.path, os.O_RDONLY)
            fd = chunk.read_fd
        out = np.empty(ref.shape, ref.dtype)
        view = memoryview(out).cast("B")
        done = 0
        while done < ref.nbytes:
            n = os.preadv(fd, [view[done:]], ref.offset + done)
            if n <= 0:
                raise OSError(f"spool chunk {chunk.path} ends before frame at byte {ref.offset}")
            done += n
        with self._lock:
            chunk.n_read += 1
            self._maybe_delete(ref.chunk, chunk)
        return out

    def _maybe_delete(self, cid: int, chunk: _Chunk) -> None:
        """Delete a chunk every frame of which was read and to which nothing will be appended
        (called with the lock held)."""
        if not chunk.closed or chunk.n_read < chunk.n_written:
            return
        if chunk.read_fd >= 0:
            os.close(chunk.read_fd)
            chunk.read_fd = -1
        try:
            chunk.path.unlink()
        except OSError as exc:
            logger.warning("cannot delete spool chunk %s: %s", chunk.path, exc)
        del self._chunks[cid]

    # ---- end -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the writer thread, delete every chunk file and the folder (frames not fetched
        are gone: fetch them first)."""
        with self._pending_cond:
            self._closing = True
            self._pending_cond.notify_all()
        if self._writer is not None:
            self._writer.join(30)
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        with self._lock:
            for chunk in self._chunks.values():
                if chunk.read_fd >= 0:
                    os.close(chunk.read_fd)
                chunk.path.unlink(missing_ok=True)
            self._chunks.clear()
        if self._created and self._folder is not None:
            try:
                self._folder.rmdir()
            except OSError as exc:  # a file not ours in it: leave the folder
                logger.warning("spool folder %s not removed: %s", self._folder, exc)
            self._created = False
