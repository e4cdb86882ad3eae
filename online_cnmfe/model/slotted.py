"""Slotted CSC: sparse columns that can be replaced, dropped and appended in O(column).

Column k holds entries ``start[k]:stop[k]`` of ``indices`` / ``data`` inside a slot of
``cap[k]`` entries. A replaced column is written in place when it fits its slot, else into fresh
space at the tail; storage is compacted (with slack) only when the tail is full, which is rare.
Kernels read it like CSC with separate start/stop arrays, so a slow-path update never copies the
whole matrix on the frame path. Row indices are int32 (``INDEX_DTYPE``): the frame path reads
every entry of A and G twice per frame, and 4-byte indices cut that traffic by a third.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

_SLACK = 1.5  # slot capacity relative to the column length
_EXTRA = 8  # plus this many entries
_TAIL = 1.0  # spare space at the tail, relative to the used length (compactions are rare)
INDEX_DTYPE = np.int32  # row indices (n_rows < 2**31: any sensor's pixel count)


@dataclass(slots=True)
class SlottedColumns:
    """Sparse (n_rows × K) matrix in slotted CSC (see module docstring)."""

    n_rows: int
    start: np.ndarray
    stop: np.ndarray
    cap: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    end: int

    def __post_init__(self) -> None:
        if int(self.n_rows) >= 2**31:
            raise ValueError(
                f"a slotted matrix of {self.n_rows} rows: row indices are int32, at most 2**31 - 1 "
                "rows (pixels); crop or bin the frames"
            )
        if self.indices.dtype != INDEX_DTYPE:  # e.g. a state file written with int64 indices
            self.indices = np.ascontiguousarray(self.indices, dtype=INDEX_DTYPE)

    @property
    def n_columns(self) -> int:
        return int(self.start.shape[0])

    @property
    def nnz(self) -> int:
        return int((self.stop - self.start).sum())

    @classmethod
    def from_columns(cls, columns, n_rows: int) -> SlottedColumns:
        """From a list of (indices, values) pairs (indices sorted)."""
        lengths = np.array([len(c[0]) for c in columns], np.int64)
        cap = np.ceil(lengths * _SLACK).astype(np.int64) + _EXTRA
        start = np.zeros(len(columns), np.int64)
        if len(columns):
            start[1:] = np.cumsum(cap)[:-1]
        used = int(cap.sum())
        total = used + int(used * _TAIL) + _EXTRA
        indices = np.zeros(total, INDEX_DTYPE)
        data = np.zeros(total, np.float32)
        for k, (idx, val) in enumerate(columns):
            indices[start[k] : start[k] + len(idx)] = idx
            data[start[k] : start[k] + len(idx)] = val
        return cls(n_rows, start, start + lengths, cap, indices, data, used)

    @classmethod
    def from_csc(cls, M) -> SlottedColumns:
        M = scipy.sparse.csc_array(M)
        M.sort_indices()
        cols = [
            (M.indices[M.indptr[k] : M.indptr[k + 1]], M.data[M.indptr[k] : M.indptr[k + 1]])
            for k in range(M.shape[1])
        ]
        return cls.from_columns(cols, M.shape[0])

    def column(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of (indices, values) of column k."""
        return (
            self.indices[self.start[k] : self.stop[k]],
            self.data[self.start[k] : self.stop[k]],
        )

    def to_csc(self) -> scipy.sparse.csc_array:
        """A compact copy as scipy.sparse.csc_array (float32)."""
        lengths = self.stop - self.start
        indptr = np.zeros(self.n_columns + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # entry q of column k sits at start[k] + (q - indptr[k]): no loop over the columns
        take = np.repeat(self.start - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return scipy.sparse.csc_array(
            (self.data[take], self.indices[take], indptr), shape=(self.n_rows, self.n_columns)
        )

    def write(self, k: int, idx: np.ndarray, val: np.ndarray) -> None:
        """Replace column k (in place when it fits its slot)."""
        n = len(idx)
        if n > self.cap[k]:
            self.start[k], self.cap[k] = self._allocate(n), int(np.ceil(n * _SLACK)) + _EXTRA
        s = self.start[k]
        self.indices[s : s + n] = idx
        self.data[s : s + n] = val
        self.stop[k] = s + n

    def select(self, keep: np.ndarray, n_new: int) -> None:
        """Keep columns ``keep`` (in that order) and append ``n_new`` empty columns.

        Empty columns have no slot; their first :meth:`write` allocates one at the tail.
        """
        z = np.zeros(n_new, np.int64)
        self.start = np.concatenate([self.start[keep], z])
        self.stop = np.concatenate([self.stop[keep], z])
        self.cap = np.concatenate([self.cap[keep], z])

    def _allocate(self, n: int) -> int:
        need = int(np.ceil(n * _SLACK)) + _EXTRA
        if self.end + need > len(self.indices):
            self._compact(need)
        s = self.end
        self.end += need
        return s

    def _compact(self, extra: int) -> None:
        cols = [self.column(k) for k in range(self.n_columns)]
        cols = [(i.copy(), v.copy()) for i, v in cols]
        fresh = SlottedColumns.from_columns(cols, self.n_rows)
        grow = int(fresh.end * _TAIL) + extra + _EXTRA
        fresh.indices = np.concatenate([fresh.indices, np.zeros(grow, INDEX_DTYPE)])
        fresh.data = np.concatenate([fresh.data, np.zeros(grow, np.float32)])
        for name in ("start", "stop", "cap", "indices", "data", "end"):
            setattr(self, name, getattr(fresh, name))
