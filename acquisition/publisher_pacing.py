"""The absolute send schedule of one publishing run, and its counters (never drifts: frame i
is due at ``t0 + (t_acq[i] - t_acq[0])`` or ``t0 + i / rate``)."""

from __future__ import annotations

import math
import threading
import time


class PacedRun:
    """Counters and the absolute schedule of one publishing run."""

    def __init__(self, rate: str | float, frame_rate_hz: float) -> None:
        self.paced = rate != "max"
        self.fixed_period = None if isinstance(rate, str) else 1.0 / rate
        self.late_after_s = self.fixed_period or 1.0 / frame_rate_hz
        self.reason = "complete"
        self.n_sent = self.n_late = 0
        self.n_read = 0  # frames taken from the source
        self.n_unsubscribed = 0  # frames sent while no subscriber was connected
        self.t_zero: float | None = None
        self.t_first = self.t_last = 0.0
        self._due = -math.inf

    def wait_until_due(self, offset_s: float, stop: threading.Event) -> bool:
        """Sleep until this frame's due time; False if ``stop`` was set meanwhile.

        Due time: ``t_zero + offset_s`` (timestamps) or ``t_zero + n * period`` (fixed rate),
        never earlier than the previous frame's; ``t_zero`` is the first frame's send time.
        """
        if not self.paced:
            return True
        now = time.monotonic()
        if self.t_zero is None:
            self.t_zero = now
        step = offset_s if self.fixed_period is None else self.n_sent * self.fixed_period
        self._due = max(self.t_zero + step, self._due)
        if self._due > now and stop.wait(self._due - now):
            return False
        if time.monotonic() - self._due > self.late_after_s:
            self.n_late += 1
        return True

    def sent(self) -> None:
        self.t_last = time.monotonic()
        if self.n_sent == 0:
            self.t_first = self.t_last
        self.n_sent += 1
