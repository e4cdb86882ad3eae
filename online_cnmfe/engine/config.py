"""Where the engine connects and writes: :class:`EngineConfig` (algorithm settings are params)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from online_cnmfe.engine.resume import checkpoint_path
from online_cnmfe.params import CNMFEParams


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Where the engine connects and writes (the algorithm settings are in ``params``)."""

    frames_endpoint: str = "tcp://127.0.0.1:5555"
    results_endpoint: str = "tcp://127.0.0.1:5556"
    out: Path | None = None  # results file; None: do not store
    params: CNMFEParams = field(default_factory=CNMFEParams)
    resume: bool = False
    exit_on_eos: bool = True
    idle_exit_s: float | None = None  # stop when no frame came for this long (after the first)
    frame_rate_set: bool = False  # the user set data.frame_rate_hz: the stream's does not win

    @property
    def checkpoint(self) -> Path | None:
        return None if self.out is None else checkpoint_path(self.out)

    @property
    def spool_dir(self) -> Path | None:
        """Where frames the model cannot take yet go (None: a temporary folder)."""
        return None if self.out is None else self.out.with_name(self.out.stem + ".spool")
