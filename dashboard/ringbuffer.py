"""Ring buffer of the per-frame traces of a changing set of neurons, Qt-free.

Each ``traces`` message carries, for one frame, the ids of the current neurons and their
``C`` (denoised calcium), ``S`` (deconvolved activity) and ``C_raw`` (demixed trace). Neurons
appear (born) and disappear (merged, removed) while the stream runs, so the buffer keeps one
row per neuron id ever seen (rows are never reused within a session) and one column per
frame, in a ring of ``capacity`` frames. A neuron absent from a frame has NaN there, which
the views draw as a gap.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["TraceBuffer", "row_peaks"]


def row_peaks(a: np.ndarray) -> np.ndarray:
    """Max of each row ignoring NaN; 1.0 where a row is all NaN, empty or not positive."""
    if a.ndim != 2 or a.shape[1] == 0:
        return np.ones(a.shape[0] if a.ndim else 0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        peak = np.nanmax(a, axis=1)
    return np.where(np.isfinite(peak) & (peak > 0), peak, 1.0).astype(np.float32)


class TraceBuffer:
    """Last ``capacity`` frames of C, S and C_raw for every neuron id seen.

    Parameters
    ----------
    capacity : int
        Number of frames kept.
    initial_rows : int
        Rows allocated up front; the row arrays double when more ids arrive.
    """

    def __init__(self, capacity: int, initial_rows: int = 64) -> None:
        if capacity < 2:
            raise ValueError(f"capacity={capacity!r} is out of range; allowed: >= 2 frames")
        self.capacity = int(capacity)
        self._initial_rows = max(1, int(initial_rows))
        self.clear()

    def clear(self) -> None:
        """Forget every frame and every neuron."""
        n = self._initial_rows
        self.frame_index = np.full(self.capacity, -1, dtype=np.int64)
        self.t_ms = np.full(self.capacity, np.nan, dtype=np.float64)
        self._C = np.full((n, self.capacity), np.nan, dtype=np.float32)
        self._S = np.full((n, self.capacity), np.nan, dtype=np.float32)
        self._C_raw = np.full((n, self.capacity), np.nan, dtype=np.float32)
        self._scale = np.zeros(n, dtype=np.float32)  # decaying running max of C per row
        self._last = np.full(n, np.nan, dtype=np.float32)  # latest C of each row
        self.row_ids = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._last_ids: np.ndarray | None = None
        self._last_rows = np.zeros(0, dtype=np.int64)
        self.head = 0  # next column to write
        self.n_frames = 0  # frames written since clear (may exceed capacity)

    # ---------------------------------------------------------------- writing
    def _grow(self, n_rows: int) -> None:
        old = self._C.shape[0]
        new = max(n_rows, 2 * old)

        def grown(a: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((new,) + a.shape[1:], fill, dtype=a.dtype)
            out[:old] = a
            return out

        self._C, self._S = grown(self._C, np.nan), grown(self._S, np.nan)
        self._C_raw = grown(self._C_raw, np.nan)
        self._scale, self._last = grown(self._scale, 0.0), grown(self._last, np.nan)

    def rows_for(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids``, allocating rows for ids never seen (cached while ids repeat)."""
        if self._last_ids is not None and np.array_equal(ids, self._last_ids):
            return self._last_rows
        rows = np.empty(ids.size, dtype=np.int64)
        new = []
        for i, nid in enumerate(ids.tolist()):  # only when the neuron set changes
            row = self._row_of.get(nid)
            if row is None:
                row = len(self._row_of)
                self._row_of[nid] = row
                new.append(nid)
            rows[i] = row
        if new:
            if len(self._row_of) > self._C.shape[0]:
                self._grow(len(self._row_of))
            self.row_ids = np.concatenate([self.row_ids, np.asarray(new, dtype=np.int64)])
        self._last_ids, self._last_rows = ids.copy(), rows
        return rows

    def append(self, frame_index: int, t_ms: float, ids, C, S, C_raw, decay: float = 0.999):
        """Write one frame; neurons not in ``ids`` get NaN for it.

        ``decay`` is the per-frame decay of each neuron's running maximum of C, which
        :meth:`activity` uses to normalise the current value to [0, 1].
        """
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.rows_for(ids)
        col = self.head
        n = len(self._row_of)
        self._C[:n, col] = np.nan
        self._S[:n, col] = np.nan
        self._C_raw[:n, col] = np.nan
        self._last[:n] = np.nan
        self._C[rows, col] = C
        self._S[rows, col] = S
        self._C_raw[rows, col] = C_raw
        c = np.nan_to_num(np.asarray(C, dtype=np.float32), nan=0.0)
        self._last[rows] = c
        self._scale[:n] *= decay
        self._scale[rows] = np.maximum(self._scale[rows], c)
        self.frame_index[col] = frame_index
        self.t_ms[col] = t_ms
        self.head = (col + 1) % self.capacity
        self.n_frames += 1

    def load(self, frame_index, t_ms, ids, C, S, C_raw) -> None:
        """Replace the content by a block of frames (oldest first), e.g. from a results file.

        Parameters
        ----------
        frame_index, t_ms : ndarray of shape (n,)
        ids : ndarray of shape (k,), int64
        C, S, C_raw : ndarray of shape (k, n)
            NaN where a neuron did not exist; the last ``capacity`` frames are kept.
        """
        self.clear()
        ids = np.asarray(ids, dtype=np.int64)
        n = min(int(np.shape(frame_index)[0]), self.capacity)
        sl = slice(np.shape(frame_index)[0] - n, None)
        rows = self.rows_for(ids)
        self.frame_index[:n] = np.asarray(frame_index)[sl]
        self.t_ms[:n] = np.asarray(t_ms)[sl]
        self._C[rows, :n] = np.asarray(C)[:, sl]
        self._S[rows, :n] = np.asarray(S)[:, sl]
        self._C_raw[rows, :n] = np.asarray(C_raw)[:, sl]
        self._scale[rows] = row_peaks(np.nan_to_num(self._C[rows, :n], nan=0.0))
        self._last[rows] = self._C[rows, n - 1] if n else np.nan
        present = ~np.isnan(self._last[rows])
        self._last_ids = ids[present] if n else ids[:0]
        self._last_rows = rows[present] if n else rows[:0]
        self.head = n % self.capacity
        self.n_frames = n

    # ---------------------------------------------------------------- reading
    @property
    def n_rows(self) -> int:
        """Number of neuron ids seen."""
        return len(self._row_of)

    @property
    def n_valid(self) -> int:
        """Number of frames held (at most ``capacity``)."""
        return min(self.n_frames, self.capacity)

    @property
    def current_ids(self) -> np.ndarray:
        """Ids of the last frame written."""
        return self._last_ids if self._last_ids is not None else np.zeros(0, np.int64)

    def row_of(self, neuron_id: int) -> int | None:
        """Row of a neuron id, or None when never seen."""
        return self._row_of.get(int(neuron_id))

    def _order(self, n_frames: int) -> np.ndarray:
        n = min(int(n_frames), self.n_valid)
        return (self.head - n + np.arange(n)) % self.capacity

    def _block(self, a: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
        """Copy of the last ``n`` columns (oldest first) of ``a`` for ``rows``."""
        start = (self.head - n) % self.capacity
        pieces = (
            [a[:, start : start + n]]
            if start + n <= self.capacity
            else [a[:, start:], a[:, : self.head]]
        )
        if rows is None:
            pieces = [p[: self.n_rows] for p in pieces]
        else:
            pieces = [p[rows] for p in pieces]
        return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces, axis=1)

    def window(
        self,
        n_frames: int,
        rows: np.ndarray | None = None,
        fields: tuple[str, ...] = ("C", "S", "C_raw"),
    ) -> dict[str, np.ndarray]:
        """The last ``n_frames`` frames (oldest first) as copies.

        Parameters
        ----------
        n_frames : int
        rows : ndarray of int, optional
            Rows to return (default: every row, in row order).
        fields : tuple of str
            Which of ``C``, ``S``, ``C_raw`` to copy (copy only what is drawn).

        Returns
        -------
        dict
            ``frame_index`` (n,), ``t_ms`` (n,) and the ``fields``, each (rows, n).
        """
        n = min(int(n_frames), self.n_valid)
        cols = self._order(n)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
        arrays = {"C": self._C, "S": self._S, "C_raw": self._C_raw}
        out = {"frame_index": self.frame_index[cols], "t_ms": self.t_ms[cols]}
        for name in fields:
            out[name] = self._block(arrays[name], rows, n)
        return out

    def activity(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Latest C of each row divided by its running maximum, in [0, 1] (NaN if absent)."""
        n = self.n_rows
        if rows is None:
            rows = np.arange(n)
        scale = self._scale[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(scale > 0, self._last[rows] / scale, 0.0)
        out[np.isnan(self._last[rows])] = np.nan
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def latest(self, rows: np.ndarray) -> np.ndarray:
        """Latest C of the given rows (NaN where absent from the last frame)."""
        return self._last[np.asarray(rows, dtype=np.int64)].copy()

    @property
    def last_frame_index(self) -> int | None:
        """Frame index of the last frame written, or None when empty."""
        if self.n_frames == 0:
            return None
        return int(self.frame_index[(self.head - 1) % self.capacity])
