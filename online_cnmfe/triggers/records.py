"""What a firing leaves behind: :class:`TriggerRecord` (its storage in the results file is
:mod:`online_cnmfe.results.triggers_table`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TriggerRecord"]


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One firing of one rule.

    Attributes
    ----------
    rule : str
    frame_index : int
    seq : int
        Sender sequence number of the frame, -1 when unknown.
    t_acq_ms : float
        Acquisition time of the frame (NaN when unknown).
    value : float
        Threshold: the largest crossing value; k_of_n: number of active neurons; ensemble: the sum.
    age_ms : float
        Age of the frame at firing, measured from its arrival at the engine (``t_recv_ns``);
        NaN when the arrival time is unknown (library use without the engine).
    neuron_ids : tuple of int
        Neurons that crossed (threshold), were active in the window (k_of_n), or the ensemble.
    t_recv_ns : int
        Engine ``time.monotonic_ns()`` at frame arrival (-1 unknown).
    t_fire_ns : int
        Engine ``time.monotonic_ns()`` when the rule fired.
    count : int
        Running number of firings in the session (all rules), from 1.
    """

    rule: str
    frame_index: int
    seq: int
    t_acq_ms: float
    value: float
    age_ms: float
    neuron_ids: tuple[int, ...]
    t_recv_ns: int
    t_fire_ns: int
    count: int

    def to_header(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes null) used as the trigger message header."""
        return {
            "rule": self.rule,
            "frame_index": self.frame_index,
            "seq": self.seq,
            "t_acq_ms": None if math.isnan(self.t_acq_ms) else self.t_acq_ms,
            "value": self.value if math.isfinite(self.value) else None,
            "age_ms": None if math.isnan(self.age_ms) else self.age_ms,
            "neuron_ids": list(self.neuron_ids),
            "t_recv_ns": self.t_recv_ns,
            "t_fire_ns": self.t_fire_ns,
            "count": self.count,
        }
