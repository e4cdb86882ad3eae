"""Video files (AVI, MKV, MP4...) decoded with PyAV, and the plain-video frame source.

Grey pixel formats (``gray``, ``gray16le``) are returned as they are; anything else is
converted to BGR and channel 0 is kept, as OpenCV-based Miniscope readers do
(``frame[:, :, 0]``), so 3-channel grey recordings give single-channel frames. A decode failure
becomes a :class:`~acquisition.errors.SourceError` naming the file and the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo, frame_rate_or_default
from acquisition.transforms import FrameTransform

__all__ = ["VideoProbe", "VideoSource", "iter_video_frames", "probe_video"]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mkv", ".mp4", ".mov")


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a declared dependency of the video extra
        raise SourceError(
            "reading video needs PyAV; install it with `pip install online-cnmfe[video]`"
        ) from None
    return av


class VideoProbe:
    """Header facts of a video file: shape, dtype, frame count (0 if unknown), rate, codec."""

    __slots__ = ("codec", "dtype", "frame_rate_hz", "n_frames", "path", "shape")

    def __init__(self, path, shape, dtype, n_frames, frame_rate_hz, codec) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.n_frames = n_frames
        self.frame_rate_hz = frame_rate_hz
        self.codec = codec


def _gray(frame) -> np.ndarray:
    name = frame.format.name
    if name in ("gray", "gray8", "gray16le"):
        return np.ascontiguousarray(frame.to_ndarray())
    return np.ascontiguousarray(frame.to_ndarray(format="bgr24")[:, :, 0])


def probe_video(path: Path) -> VideoProbe:
    """Read the header of a video file (and decode its first frame for the dtype).

    Raises
    ------
    SourceError
        If the file cannot be opened, has no video stream or its first frame cannot be decoded.
    """
    av = _av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"{path}: no video stream in the file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise SourceError(f"{path}: frame 0 cannot be decoded (empty or truncated file)")
            pixels = _gray(first)
            return VideoProbe(
                path=path,
                shape=(int(pixels.shape[0]), int(pixels.shape[1])),
                dtype=pixels.dtype.name,
                n_frames=int(stream.frames or 0),
                frame_rate_hz=float(Fraction(rate)) if rate else None,
                codec=stream.codec_context.name,
            )
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: cannot read the video ({exc})") from None


def iter_video_frames(
    path: Path, skip: int = 0, expected: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the grey frames of a video file, after skipping the first ``skip`` frames.

    Parameters
    ----------
    path : Path
    skip : int
        Frames decoded and dropped first.
    expected : int, optional
        Frame count from the header; ending earlier means the file is truncated.

    Raises
    ------
    SourceError
        Naming the file and the (0-based) frame index in the file when decoding fails or the
        file ends before ``expected`` frames.
    """
    av = _av()
    index = 0
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: cannot open the video ({exc})") from None
    try:
        stream = container.streams.video[0]
        # frame threading: ~1.5x faster FFV1 on 2 cores; an error then names the first frame
        # not delivered (the damaged one may be up to thread_count frames later)
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                raise SourceError(
                    f"{path}: frame {index} cannot be decoded ({exc}); the file is corrupt or "
                    "truncated"
                ) from None
            for frame in decoded:
                if index >= skip:
                    yield _gray(frame)
                index += 1
        if expected and index < expected:
            raise SourceError(
                f"{path}: the header claims {expected} frames but the file ends after {index}; "
                f"it is truncated or its header is wrong. Read only the first {index} frames "
                f"(e.g. --max-frames {index}, or --stop {index} for a replay)"
            )
    finally:
        container.close()


class VideoSource(FrameSource):
    """A plain video file; times are ``frame_index / frame_rate``.

    Parameters
    ----------
    path : path-like
    frame_rate_hz : float, optional
        Overrides the container frame rate (which is wrong for Miniscope AVIs: always 60).
    transform : FrameTransform, optional
    """

    def __init__(
        self,
        path,
        frame_rate_hz: float | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        super().__init__(transform)
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self._probe = probe_video(self.path)
        self._rate = frame_rate_hz

    def _raw_info(self) -> SourceInfo:
        p = self._probe
        metadata = {"path": str(self.path), "codec": p.codec, "container_fps": p.frame_rate_hz,
                    "declared_frame_rate_hz": p.frame_rate_hz}  # fmt: skip
        desc = f"video {self.path}"
        rate = frame_rate_or_default(self._rate or p.frame_rate_hz, desc, metadata)
        return SourceInfo(
            frame_rate_hz=rate,
            shape=p.shape,
            dtype=p.dtype,
            n_frames=p.n_frames or None,
            description=desc,
            kind="replay",
            metadata=metadata,
        )

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        period_ms = 1000.0 / self.info.frame_rate_hz
        for i, pixels in enumerate(
            iter_video_frames(self.path, skip=start, expected=self._probe.n_frames), start=start
        ):
            if pixels.shape != self._probe.shape:
                raise SourceError(
                    f"{self.path}: frame {i} has shape {pixels.shape}; frame 0 had "
                    f"{self._probe.shape}"
                )
            yield SourceFrame(i, i * period_ms, None, pixels)
