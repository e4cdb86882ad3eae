"""On-the-fly spatial transforms of source frames: crop, then 2×/3×/4× binning.

A crop is given as ``(top, left, height, width)`` in pixels of the source frame, the same
convention as the Miniscope recording ``ROI`` (``topEdge``, ``leftEdge``, ``height``, ``width``).
Binning averages non-overlapping ``b × b`` blocks; rows and columns that do not fill a whole
block at the bottom/right edge are dropped. Integer frames keep their dtype (the block mean is
rounded half up, so uint8 stays uint8 and the wire size shrinks by ``b²``); float frames are
averaged in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ALLOWED_BINS", "FrameTransform", "parse_crop"]

ALLOWED_BINS = (1, 2, 3, 4)


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """Parse ``"TOP,LEFT,HEIGHT,WIDTH"`` (pixels) into a crop tuple.

    Raises
    ------
    ValueError
        If the text is not four comma-separated integers with top, left >= 0 and
        height, width > 0.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"crop {text!r} is invalid; expected TOP,LEFT,HEIGHT,WIDTH in pixels")
    top, left, height, width = values
    if top < 0 or left < 0 or height <= 0 or width <= 0:
        raise ValueError(f"crop {text!r}: top/left must be >= 0 and height/width > 0")
    return values  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class FrameTransform:
    """Crop then bin a frame.

    Parameters
    ----------
    crop : tuple of int (top, left, height, width), optional
        Region of the source frame to keep; None keeps the whole frame.
    bin : int
        Binning factor, one of 1 (none), 2, 3, 4.
    """

    crop: tuple[int, int, int, int] | None = None
    bin: int = 1

    def __post_init__(self) -> None:
        if self.bin not in ALLOWED_BINS:
            raise ValueError(f"bin is {self.bin!r}; expected one of {ALLOWED_BINS}")
        if self.crop is not None:
            if len(self.crop) != 4:
                raise ValueError(f"crop is {self.crop!r}; expected (top, left, height, width)")
            top, left, height, width = self.crop
            if top < 0 or left < 0 or height <= 0 or width <= 0:
                raise ValueError(f"crop is {self.crop!r}; need top, left >= 0, height, width > 0")

    @property
    def is_identity(self) -> bool:
        """True when the transform returns frames unchanged."""
        return self.crop is None and self.bin == 1

    def output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of a transformed frame of source shape ``(H, W)``.

        Raises
        ------
        ValueError
            If the crop does not fit inside the frame or leaves less than one block.
        """
        height, width = int(shape[0]), int(shape[1])
        if self.crop is not None:
            top, left, ch, cw = self.crop
            if top + ch > height or left + cw > width:
                raise ValueError(
                    f"crop (top={top}, left={left}, height={ch}, width={cw}) does not fit in "
                    f"frames of shape ({height}, {width})"
                )
            height, width = ch, cw
        out = (height // self.bin, width // self.bin)
        if out[0] == 0 or out[1] == 0:
            raise ValueError(f"binning {self.bin}x of ({height}, {width}) leaves an empty frame")
        return out

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Return the transformed frame (a view when only cropping, else a new array).

        Parameters
        ----------
        frame : ndarray of shape (H, W)

        Returns
        -------
        ndarray of shape ``output_shape((H, W))``, same dtype as ``frame``.
        """
        if self.crop is not None:
            top, left, ch, cw = self.crop
            frame = frame[top : top + ch, left : left + cw]
        b = self.bin
        if b == 1:
            return frame
        h, w = frame.shape[0] // b, frame.shape[1] // b
        blocks = frame[: h * b, : w * b].reshape(h, b, w, b)
        if np.issubdtype(frame.dtype, np.floating):
            return blocks.mean(axis=(1, 3), dtype=np.float64).astype(frame.dtype)
        acc = np.int64 if frame.dtype.itemsize >= 4 else np.int32
        n = b * b
        summed = blocks.sum(axis=(1, 3), dtype=acc)
        # mean rounded half up; floor division keeps negatives consistent
        return ((summed + n // 2) // n).astype(frame.dtype)
