"""A simulated live miniscope: frames generated on the fly by the ground-truth simulator.

Frames come from :class:`acquisition.simulator.MiniscopeSimulator` in blocks, endless when
``n_frames`` is None. Times are ``frame_index * 1000 / frame_rate_hz`` (the publisher paces
them in real time by default). The simulation parameters go into the ``start`` metadata, so a
receiver can rebuild the ground truth with the same seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo
from acquisition.transforms import FrameTransform

__all__ = ["SimulatedSource"]

logger = logging.getLogger(__name__)

BLOCK = 32  # frames generated per simulator call


class SimulatedSource(FrameSource):
    """Frames of a simulated miniscope session.

    Parameters
    ----------
    params : acquisition.simulator_params.SimulationParams, optional
        Simulation parameters (default parameters when None). ``params.n_frames`` None means
        endless.
    transform : FrameTransform, optional
    """

    def __init__(self, params: Any = None, transform: FrameTransform | None = None) -> None:
        super().__init__(transform)
        try:
            from acquisition.simulator import MiniscopeSimulator
            from acquisition.simulator_params import SimulationParams
        except ImportError as exc:  # pragma: no cover - the simulator ships with the package
            raise SourceError(f"the simulator is not available ({exc})") from None
        self.params = params if params is not None else SimulationParams()
        self.simulator = MiniscopeSimulator(self.params)

    def _raw_info(self) -> SourceInfo:
        p = self.params
        to_dict = getattr(p, "to_dict", None)
        meta = {"simulation": to_dict() if to_dict else {}}
        n = p.n_frames
        return SourceInfo(
            frame_rate_hz=float(p.frame_rate_hz),
            shape=(int(p.height), int(p.width)),
            dtype=np.dtype(p.dtype).name,
            n_frames=None if n is None else int(n),
            description=(
                f"simulated miniscope {p.height}x{p.width} @ {p.frame_rate_hz:g} Hz, seed {p.seed}"
                + ("" if n is not None else ", endless")
            ),
            kind="synthetic",
            metadata=meta,
        )

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        period_ms = 1000.0 / float(self.params.frame_rate_hz)
        n_total = self.params.n_frames
        lo = start
        while n_total is None or lo < n_total:
            hi = lo + BLOCK if n_total is None else min(n_total, lo + BLOCK)
            block = self.simulator.frames(lo, hi)
            for j, pixels in enumerate(block):
                i = lo + j
                yield SourceFrame(i, i * period_ms, None, np.ascontiguousarray(pixels))
            lo = hi
