"""The motion-correction trace of the session: per-frame shift, quality and flag (no Qt).

Fed by the ``traces`` messages (``motion_shift_px`` = [dy, dx] pixels: the frame's content
moved by +(dy, dx) relative to the engine's motion template; ``motion_quality`` in [-1, 1];
``flag`` set when the frame did not update the model). A ring buffer of the last
``capacity`` frames; frames without motion correction are not stored.
"""

from __future__ import annotations

import numpy as np


class MotionTrace:
    """Ring buffer of (frame, dy, dx, quality, flagged) over the last ``capacity`` frames."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.frame = np.zeros(self.capacity, np.int64)
        self.shift = np.zeros((self.capacity, 2), np.float32)
        self.quality = np.zeros(self.capacity, np.float32)
        self.flagged = np.zeros(self.capacity, bool)
        self.n = 0  # frames stored (at most capacity)
        self.head = 0  # next slot
        self.n_flagged = 0  # flagged frames seen this session (also those overwritten)

    def clear(self) -> None:
        self.n = self.head = self.n_flagged = 0

    def append(self, frame: int, shift, quality: float, flagged: bool) -> None:
        """Store one frame; ``shift`` is (dy, dx) in pixels."""
        i = self.head
        self.frame[i] = frame
        self.shift[i] = shift
        self.quality[i] = quality
        self.flagged[i] = flagged
        self.head = (i + 1) % self.capacity
        self.n = min(self.n + 1, self.capacity)
        self.n_flagged += bool(flagged)

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(frame, shift (n, 2), quality, flagged), oldest first (copies)."""
        order = (np.arange(self.n) + self.head - self.n) % self.capacity
        return self.frame[order], self.shift[order], self.quality[order], self.flagged[order]

    def last(self) -> tuple[int, np.ndarray, float, bool] | None:
        """The newest entry, or None."""
        if not self.n:
            return None
        i = (self.head - 1) % self.capacity
        return (
            int(self.frame[i]),
            self.shift[i].copy(),
            float(self.quality[i]),
            bool(self.flagged[i]),
        )


def parse_motion(header: dict) -> tuple[tuple[float, float], float] | None:
    """((dy, dx), quality) from a ``traces`` header; None when it has no motion correction.

    Raises
    ------
    ValueError
        If ``motion_shift_px`` is present but not two finite numbers.
    """
    shift = header.get("motion_shift_px")
    if shift is None:
        return None
    if (
        not isinstance(shift, list)
        or len(shift) != 2
        or not all(type(v) in (int, float) for v in shift)
    ):
        raise ValueError(f"motion_shift_px is {shift!r}; expected [dy, dx]")
    quality = header.get("motion_quality")
    q = float(quality) if type(quality) in (int, float) else float("nan")
    return (float(shift[0]), float(shift[1])), q
