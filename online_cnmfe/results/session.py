"""A results file opened for review: small parts read at once, traces read on demand by window.

:func:`~.reader.read_results` loads every trace into memory (fine for exports, minutes for a
30-minute 608 × 608 session). :class:`ResultsSession` keeps the file open and reads at open
only what is small: the per-frame bookkeeping, footprints, events, quality and curation tables;
images are read when first asked for and traces by time window (:meth:`ResultsSession.traces`),
so opening does not depend on the session's length × neurons.

Columns and frame indices: trace column ``j`` holds frame ``frame_index[j]``; frames lost
upstream or refused by the engine have no column, so frame indices jump there
(:meth:`ResultsSession.column_of` maps a frame index to its column). Frames the model skipped
(``frames/rejected`` with reason ``skipped: …``) have a column repeating the previous values;
:meth:`ResultsSession.traces` returns NaN there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe.errors import StateFileError
from online_cnmfe.results import curation
from online_cnmfe.results.layout import FORMAT, TRACE_NAMES, open_for_reading
from online_cnmfe.results.quality import read_quality

logger = logging.getLogger(__name__)

EVENT_ORDER = ("drop", "reject", "born", "merged", "removed")


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened at a frame: a drop, a rejected frame, a birth, merge, removal."""

    frame_index: int
    kind: str
    neuron_ids: tuple[int, ...]
    detail: str = ""


class ResultsSession:
    """A results file open for reading (see the module docstring).

    Parameters
    ----------
    path : str or Path

    Raises
    ------
    StateFileError
        If the file is missing, not a results file or unreadable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: h5py.File | None = None
        self._images: dict[str, np.ndarray | None] = {}
        self._open()
        self._read_small()

    # ---- opening -------------------------------------------------------------------------
    def _open(self) -> None:
        self._f = open_for_reading(self.path)
        if self._f.attrs.get("format") != FORMAT:
            self.close()
            raise StateFileError(f"{self.path} is not an online-cnmfe results file (no format)")

    @property
    def file(self) -> h5py.File:
        if self._f is None:
            self._open()
        return self._f

    def close(self) -> None:
        """Close the file (reopened on the next read)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> ResultsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_small(self) -> None:
        f = self.file
        self.attrs = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()
        }
        self.dims = tuple(int(x) for x in f.attrs["dims"])
        self.params: dict[str, Any] = json.loads(self.attrs.get("params", "{}") or "{}")
        rate = self.attrs.get("frame_rate_hz")
        self.frame_rate_hz = float(rate) if rate else 20.0
        fr = f["frames"]
        n = min(int(f.attrs.get("n_frames", 10**18)), fr["frame_index"].shape[0])
        n = min(n, f["traces/C"].shape[1])
        self.n_frames = n
        self.frame_index = fr["frame_index"][:n].astype(np.int64)
        self.latency_ms = fr["latency_ms"][:n].astype(np.float64)
        t = fr["t_acq_ms"][:n].astype(np.float64)
        self.t_ms = _fill_times(t, self.frame_index, self.frame_rate_hz)
        self.dropped = fr["dropped"][()].astype(np.int64).reshape(-1, 2)
        self.rejected = [(int(i), r.decode("utf-8", "replace")) for i, r in fr["rejected"][()]]
        skipped = np.array([i for i, r in self.rejected if r.startswith("skipped")], np.int64)
        self.skipped_columns = np.flatnonzero(np.isin(self.frame_index, skipped))
        self._read_footprints(f)
        self._read_rows(f)
        self.b0 = f["background/b0"][()] if f["background"].attrs.get("set", True) else None
        self.quality = read_quality(f)
        self.labels = curation.read_labels(f)
        self.events = self._read_events(f)

    def _read_footprints(self, f: h5py.File) -> None:
        fp = f["footprints"]
        ids, indptr = fp["neuron_ids"][()], fp["indptr"][()]
        data, indices = fp["data"][()], fp["indices"][()]
        if indptr.shape[0] != ids.shape[0] + 1 or indptr[-1] != data.shape[0]:
            logger.warning("%s: footprints were being rewritten at the crash; ignored", self.path)
            ids, indptr = ids[:0], indptr[:1]
        self.A = scipy.sparse.csc_array(
            (data, indices, indptr), shape=(self.dims[0] * self.dims[1], ids.shape[0]),
            dtype=np.float32,
        )  # fmt: skip
        self.neuron_ids = ids.astype(np.int64)

    def _read_rows(self, f: h5py.File) -> None:
        """Where each neuron's traces are: (dataset group, row), and its birth column."""
        ids = f["neurons/neuron_ids"][()]
        k = min(ids.shape[0], f["traces/C"].shape[0])
        birth = f["neurons/birth_frame"][()][:k]
        groups = ["traces"] * k
        rows = list(range(k))
        ids, birth = ids[:k], birth
        if "removed" in f:
            gone = f["removed/neuron_ids"][()]
            ids = np.concatenate([ids, gone])
            birth = np.concatenate([birth, f["removed/birth_frame"][()]])
            groups += ["removed"] * gone.shape[0]
            rows += list(range(gone.shape[0]))
        self.trace_ids = ids.astype(np.int64)
        self.birth_column = birth.astype(np.int64)
        self._where = {int(i): (g, r) for i, g, r in zip(ids.tolist(), groups, rows, strict=True)}

    def _read_events(self, f: h5py.File) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        for first, last in self.dropped.tolist():
            n = last - first + 1
            out.append(
                SessionEvent(first, "drop", (), f"{n} frame{'s' * (n > 1)} lost [{first}, {last}]")
            )
        for frame, reason in self.rejected:
            out.append(SessionEvent(frame, "reject", (), reason))
        table = f.get("events")
        if table is not None and table.shape[0]:
            rows = table[()]
            grouped: dict[tuple[int, str, str], list[int]] = {}
            for row in rows:
                key = (
                    int(row["frame_index"]),
                    row["kind"].decode(),
                    row["detail"].decode("utf-8", "replace"),
                )
                grouped.setdefault(key, []).append(int(row["neuron_id"]))
            out += [SessionEvent(t, k, tuple(ids), d) for (t, k, d), ids in grouped.items()]
        elif self.n_frames:  # files without the events table: births from the birth columns
            for nid, col in zip(self.trace_ids.tolist(), self.birth_column.tolist(), strict=True):
                if 0 < col < self.n_frames:
                    out.append(SessionEvent(int(self.frame_index[col]), "born", (nid,)))
        out.sort(
            key=lambda e: (e.frame_index, EVENT_ORDER.index(e.kind) if e.kind in EVENT_ORDER else 9)
        )
        return out

    # ---- time ----------------------------------------------------------------------------
    def column_of(self, frame_index: int) -> int:
        """The column holding ``frame_index``, or the next one when it has none (a dropped or
        refused frame); the last column beyond the end."""
        col = int(np.searchsorted(self.frame_index, frame_index, side="left"))
        return min(col, max(self.n_frames - 1, 0))

    def birth_frame_index(self, neuron_id: int) -> int | None:
        """Frame index at which a neuron appeared (None when unknown)."""
        i = np.flatnonzero(self.trace_ids == int(neuron_id))
        if i.size == 0 or self.n_frames == 0:
            return None
        col = int(np.clip(self.birth_column[i[0]], 0, self.n_frames - 1))
        return int(self.frame_index[col])

    def events_until(self, frame_index: int) -> list[SessionEvent]:
        """Events at or before ``frame_index``, oldest first."""
        keys = [e.frame_index for e in self.events]
        return self.events[: int(np.searchsorted(keys, frame_index, side="right"))]

    # ---- images --------------------------------------------------------------------------
    def image(self, name: str) -> np.ndarray | None:
        """A summary image (``mean``, ``max``, ``corr``, ``pnr``, ``corr_pnr``) or the
        ``background`` (b0), (H, W) float32; None when the file does not have it."""
        if name not in self._images:
            if name == "background":
                img = self.b0
            else:
                ds = self.file.get(f"images/{name}")
                img = ds[()] if ds is not None and bool(ds.attrs.get("set", False)) else None
            self._images[name] = None if img is None else np.asarray(img, np.float32)
        return self._images[name]

    def image_info(self, name: str) -> dict[str, Any]:
        """``n_frames`` and ``source`` of a summary image (empty when unknown)."""
        ds = self.file.get(f"images/{name}")
        return (
            {} if ds is None else {k: ds.attrs[k] for k in ("n_frames", "source") if k in ds.attrs}
        )

    # ---- traces --------------------------------------------------------------------------
    def traces(
        self, ids, lo: int, hi: int, fields: tuple[str, ...] = TRACE_NAMES
    ) -> dict[str, np.ndarray]:
        """Traces of neurons ``ids`` over columns ``lo..hi-1``, read from the file.

        Returns
        -------
        dict
            Each field (len(ids), hi - lo) float32: NaN before a neuron's birth, at skipped
            frames, and for ids the file does not have.
        """
        ids = [int(i) for i in ids]
        lo, hi = max(0, int(lo)), min(self.n_frames, int(hi))
        n = max(hi - lo, 0)
        out = {name: np.full((len(ids), n), np.nan, np.float32) for name in fields}
        if n == 0 or not ids:
            return out
        by_group: dict[str, list[tuple[int, int]]] = {}
        for pos, nid in enumerate(ids):
            where = self._where.get(nid)
            if where is not None:
                by_group.setdefault(where[0], []).append((where[1], pos))
        f = self.file
        for group, pairs in by_group.items():
            pairs.sort()
            rows = np.array([r for r, _ in pairs], np.int64)
            pos = np.array([p for _, p in pairs], np.int64)
            unique, inverse = np.unique(rows, return_inverse=True)
            for name in fields:
                ds = f[f"{group}/{name}"]
                block = (
                    ds[unique.tolist(), lo:hi]
                    if unique.size > 1
                    else ds[int(unique[0]) : int(unique[0]) + 1, lo:hi]
                )
                out[name][pos] = block[inverse]
        birth = np.array([self._birth_of(i) for i in ids], np.int64)
        before = np.arange(lo, hi)[None, :] < birth[:, None]
        skipped = (
            self.skipped_columns[(self.skipped_columns >= lo) & (self.skipped_columns < hi)] - lo
        )
        for name in fields:
            out[name][before] = np.nan
            out[name][:, skipped] = np.nan
        return out

    def _birth_of(self, nid: int) -> int:
        i = np.flatnonzero(self.trace_ids == nid)
        return int(self.birth_column[i[0]]) if i.size else 0

    # ---- per neuron ----------------------------------------------------------------------
    def f0(self, ids) -> np.ndarray:
        """Background under each footprint (the dF/F baseline, :mod:`.quality`); NaN unknown."""
        out = np.full(len(ids), np.nan)
        if self.quality is None:
            return out
        pos = {int(i): k for k, i in enumerate(self.quality["neuron_id"].tolist())}
        for j, nid in enumerate(ids):
            k = pos.get(int(nid))
            if k is not None:
                out[j] = float(self.quality["f0"][k])
        return out

    def set_labels(self, *, accept=(), reject=(), clear=()) -> dict[int, int]:
        """Label neurons (:func:`.curation.set_labels`) and reload the labels.

        Raises
        ------
        StateFileError
            If the file cannot be written (a session still running, read-only).
        ValueError
            For unknown ids.
        """
        self.close()  # HDF5 refuses a second, writable handle on an open file
        try:
            self.labels = curation.set_labels(
                self.path, accept=accept, reject=reject, clear=clear,
                known_ids=self.trace_ids.tolist(),
            )  # fmt: skip
        finally:
            self._open()
        return self.labels


def _fill_times(t: np.ndarray, frame_index: np.ndarray, rate_hz: float) -> np.ndarray:
    """Acquisition times with the unknown (NaN) ones filled from the frame index and rate."""
    ok = np.isfinite(t)
    if ok.all():
        return t
    nominal = frame_index * 1000.0 / rate_hz
    offset = (t - nominal)[ok]
    return np.where(ok, t, nominal + (offset[0] if offset.size else -nominal[:1].sum()))
