"""A live camera: the Miniscope DAQ enumerates as a UVC camera (V4L2 on Linux), read via OpenCV.

Untested here: no camera is attached to the build machine, so only the "no device" error path
is covered by tests. The DAQ's I²C-over-UVC controls (LED, gain, focus, frame rate) are not
driven; set them with the Miniscope software before streaming. Frames are converted to one
channel (channel 0, the DAQ delivers grey as BGR). ``t_acq_ms`` is the host monotonic time
since the first frame, taken right after ``read()`` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo, frame_rate_or_default
from acquisition.transforms import FrameTransform

__all__ = ["CameraSource"]

logger = logging.getLogger(__name__)


class CameraSource(FrameSource):
    """Frames from a UVC camera / Miniscope DAQ (OpenCV ``VideoCapture``).

    Parameters
    ----------
    index : int
        Device index (``/dev/video<index>`` on Linux).
    frame_rate_hz : float, optional
        Nominal rate to announce; default: what the driver reports, else 20 Hz.
    transform : FrameTransform, optional

    Raises
    ------
    SourceError
        If no camera answers at ``index`` or it delivers no first frame.
    """

    def __init__(
        self,
        index: int = 0,
        frame_rate_hz: float | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        super().__init__(transform)
        import cv2

        self.index = int(index)
        backend = getattr(cv2, "CAP_V4L2", cv2.CAP_ANY)
        self._cap = cv2.VideoCapture(self.index, backend)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"no camera at index {self.index}; check the cable / device permissions "
                "(/dev/video*, group 'video') / use `acquire replay` for recordings"
            )
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"camera {self.index} opened but delivered no frame")
        self._first = self._gray(first)
        self._t0_ns = time.monotonic_ns()
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._rate = frame_rate_hz or (reported if reported > 0 else None)

    @staticmethod
    def _gray(frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame[:, :, 0] if frame.ndim == 3 else frame)

    def _raw_info(self) -> SourceInfo:
        meta = {"device_index": self.index}
        desc = f"camera {self.index}"
        return SourceInfo(
            frame_rate_hz=frame_rate_or_default(self._rate, desc, meta),
            shape=(int(self._first.shape[0]), int(self._first.shape[1])),
            dtype=self._first.dtype.name,
            n_frames=None,
            description=desc,
            kind="live",
            metadata=meta,
        )

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        if start:
            raise ValueError("a live camera cannot start at a later frame")
        yield SourceFrame(0, 0.0, None, self._first)
        i = 1
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise SourceError(f"camera {self.index}: read failed at frame {i} (unplugged?)")
            t_ms = (time.monotonic_ns() - self._t0_ns) / 1e6
            yield SourceFrame(i, t_ms, None, self._gray(frame))
            i += 1

    def close(self) -> None:
        self._cap.release()
