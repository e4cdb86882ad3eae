"""The common interface of every frame source.

A source knows its frame rate, frame shape and dtype up front (:class:`SourceInfo`) and yields
:class:`SourceFrame` tuples ``(frame_index, t_acq_ms, daq_frame, pixels)``. Crop and binning
(:class:`~acquisition.transforms.FrameTransform`) are applied on the fly, and ``info`` describes
the transformed frames. Subclasses implement :meth:`FrameSource._raw_info` and
:meth:`FrameSource._iter_raw`; pacing is the publisher's job, not the source's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from acquisition.errors import SourceError
from acquisition.transforms import FrameTransform

__all__ = ["DEFAULT_FRAME_RATE_HZ", "FrameSource", "SourceFrame", "SourceInfo"]

logger = logging.getLogger(__name__)

DEFAULT_FRAME_RATE_HZ = 20.0


class SourceFrame(NamedTuple):
    """One frame from a source.

    Attributes
    ----------
    frame_index : int
        Acquisition frame number (0-based position in the recording).
    t_acq_ms : float
        Acquisition time in ms (recording timestamps, or ``frame_index / rate``).
    daq_frame : int or None
        Unwrapped hardware frame counter when the recording has one.
    pixels : ndarray of shape (H, W)
    """

    frame_index: int
    t_acq_ms: float
    daq_frame: int | None
    pixels: np.ndarray


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source delivers, known before the first frame.

    Attributes
    ----------
    frame_rate_hz : float
        Nominal frame rate (from metadata, timestamps or the user; see ``metadata``).
    shape : tuple of int
        (H, W) of the frames yielded (after crop and binning).
    dtype : str
        Pixel dtype name, e.g. ``"uint8"``.
    n_frames : int or None
        Number of frames, None for endless/live sources.
    description : str
        One line naming the source (path, device, simulator).
    kind : str
        Protocol source kind: ``"replay"``, ``"synthetic"`` or ``"live"``.
    metadata : dict
        JSON-safe extra information (metaData.json contents, lost DAQ frames, ...);
        ``declared_frame_rate_hz`` is the rate the recording itself states (None when it
        states none), whatever rate the user asked for.
    """

    frame_rate_hz: float
    shape: tuple[int, int]
    dtype: str
    n_frames: int | None
    description: str
    kind: str = "replay"
    metadata: dict[str, Any] = field(default_factory=dict)


class FrameSource:
    """Base class of frame sources: iteration, crop/binning and frame-range selection.

    Parameters
    ----------
    transform : FrameTransform, optional
        Crop and binning applied to every frame.
    """

    def __init__(self, transform: FrameTransform | None = None) -> None:
        self.transform = transform or FrameTransform()
        self._info: SourceInfo | None = None

    # -- to implement ------------------------------------------------------------------
    def _raw_info(self) -> SourceInfo:
        """Info of the untransformed frames."""
        raise NotImplementedError

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        """Yield untransformed frames from position ``start`` (0-based) on."""
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------
    @property
    def info(self) -> SourceInfo:
        """:class:`SourceInfo` of the frames this source yields (after crop/binning)."""
        if self._info is None:
            raw = self._raw_info()
            try:
                shape = self.transform.output_shape(raw.shape)
            except ValueError as exc:
                raise SourceError(f"{raw.description}: {exc}") from None
            metadata = dict(raw.metadata)
            if not self.transform.is_identity:
                metadata["source_shape"] = list(raw.shape)
                metadata["crop"] = (
                    None if self.transform.crop is None else list(self.transform.crop)
                )
                metadata["bin"] = self.transform.bin
            self._info = replace(raw, shape=shape, metadata=metadata)
        return self._info

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[SourceFrame]:
        """Yield frames ``start <= position < stop`` (positions are 0-based, stop exclusive).

        Raises
        ------
        ValueError
            If ``start`` is negative or ``stop < start``.
        SourceError
            If the recording cannot be read (naming the file and frame).
        """
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"frame range start={start}, stop={stop} is invalid")
        info = self.info
        if info.n_frames is not None and start >= info.n_frames and info.n_frames > 0:
            raise ValueError(
                f"start frame {start} is beyond the {info.n_frames} frames of the source"
            )
        count = 0 if stop is None else stop - start
        if stop is not None and count == 0:
            return
        n = 0
        # Stop right after the last wanted frame, without pulling one more: a file whose
        # header claims more frames than it holds must still read up to ``stop``.
        for frame in self._iter_raw(start):
            pixels = self.transform.apply(frame.pixels)
            yield frame._replace(pixels=pixels)
            n += 1
            if stop is not None and n >= count:
                return

    def __iter__(self) -> Iterator[SourceFrame]:
        return self.frames()

    def close(self) -> None:
        """Release files or devices (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frame_rate_or_default(rate: float | None, description: str, metadata: dict) -> float:
    """Return ``rate``, or the default rate with a warning and ``frame_rate_assumed`` set."""
    if rate is not None and rate > 0:
        return float(rate)
    logger.warning(
        "%s has no frame rate; assuming %.1f Hz (set it with --fps for `acquire`, "
        "--set data.frame_rate_hz=HZ for `process`)",
        description,
        DEFAULT_FRAME_RATE_HZ,
    )
    metadata["frame_rate_assumed"] = True
    return DEFAULT_FRAME_RATE_HZ
