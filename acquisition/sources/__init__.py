"""Frame sources: recordings, the simulator and live cameras, behind one interface.

Every source is a :class:`FrameSource` with an ``info`` (:class:`SourceInfo`: frame rate,
shape, dtype, n_frames, description, kind, metadata) known up front, yielding
:class:`SourceFrame` ``(frame_index, t_acq_ms, daq_frame, pixels)`` with crop and binning
applied. :func:`open_source` picks the reader from the path.
"""

from __future__ import annotations

from pathlib import Path

from acquisition.errors import SourceError
from acquisition.sources.arrays import (
    HDF5_SUFFIXES,
    TIFF_SUFFIXES,
    HDF5Source,
    NpySource,
    TiffSource,
)
from acquisition.sources.base import DEFAULT_FRAME_RATE_HZ, FrameSource, SourceFrame, SourceInfo
from acquisition.sources.miniscope import MiniscopeSource, is_miniscope_folder
from acquisition.sources.video import VIDEO_SUFFIXES, VideoSource
from acquisition.transforms import FrameTransform

__all__ = [
    "DEFAULT_FRAME_RATE_HZ",
    "FrameSource",
    "FrameTransform",
    "HDF5Source",
    "MiniscopeSource",
    "NpySource",
    "SourceFrame",
    "SourceInfo",
    "TiffSource",
    "VideoSource",
    "open_source",
]


def open_source(
    path,
    *,
    dataset: str | None = None,
    device: str | None = None,
    frame_rate_hz: float | None = None,
    transform: FrameTransform | None = None,
) -> FrameSource:
    """Open a recording as a frame source, choosing the reader from the path.

    - a Miniscope session, device or legacy folder → :class:`MiniscopeSource`;
    - a folder of TIFF files or a ``.tif``/``.tiff`` file → :class:`TiffSource`;
    - ``.h5``/``.hdf5``/``.hdf`` → :class:`HDF5Source` (``dataset`` selects the dataset);
    - ``.npy`` → :class:`NpySource` (memory-mapped);
    - ``.avi``/``.mkv``/``.mp4``/``.mov`` → :class:`VideoSource`.

    Parameters
    ----------
    path : path-like
    dataset : str, optional
        HDF5 dataset path.
    device : str, optional
        Miniscope device subfolder when a session has several.
    frame_rate_hz : float, optional
        Overrides the frame rate from the file's metadata.
    transform : FrameTransform, optional
        Crop and binning.

    Raises
    ------
    SourceError
        If the path does not exist or is of no known kind.
    """
    path = Path(path)
    kw = {"frame_rate_hz": frame_rate_hz, "transform": transform}
    if path.is_dir():
        if is_miniscope_folder(path):
            return MiniscopeSource(path, device=device, **kw)
        if any(p.suffix.lower() in TIFF_SUFFIXES for p in path.iterdir()):
            return TiffSource(path, **kw)
        raise SourceError(
            f"{path}: folder holds neither a Miniscope recording (timeStamps.csv + 0.avi..., "
            "or msCam1.avi...) nor TIFF files"
        )
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return TiffSource(path, **kw)
    if suffix in HDF5_SUFFIXES:
        return HDF5Source(path, dataset=dataset, **kw)
    if suffix == ".npy":
        return NpySource(path, **kw)
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path, **kw)
    raise SourceError(
        f"{path}: unknown kind {suffix!r}; expected a Miniscope folder, .tif/.tiff, "
        ".h5/.hdf5, .npy or .avi/.mkv/.mp4"
    )
