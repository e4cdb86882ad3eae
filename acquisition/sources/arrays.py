"""Frame stacks stored as arrays: TIFF (single or multi-file), HDF5 datasets and ``.npy``.

These formats carry no acquisition times, so ``t_acq_ms = frame_index * 1000 / rate``. The
rate comes from the caller (``--fps``), else from file metadata (ImageJ ``finterval``, HDF5
attributes ``frame_rate_hz``/``fr``/``fps``), else the default with a warning.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo, frame_rate_or_default
from acquisition.transforms import FrameTransform

__all__ = ["ArraySource", "HDF5Source", "NpySource", "TiffSource", "natural_key"]

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
RATE_ATTRS = ("frame_rate_hz", "frame_rate", "fr", "fps", "rate")
BLOCK = 16  # frames read at once from HDF5


def natural_key(path: Path) -> list:
    """Sort key putting ``img2.tif`` before ``img10.tif``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def _as_stack_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (1, int(shape[0]), int(shape[1]))
    if len(shape) == 3:
        return tuple(int(n) for n in shape)  # type: ignore[return-value]
    raise SourceError(f"{what} has shape {shape}; expected (T, H, W) or (H, W)")


class ArraySource(FrameSource):
    """Frames from anything indexable as ``stack[i] -> (H, W)``: a list of file segments.

    Subclasses fill ``self._segments`` (list of (description, array-like of shape (T, H, W)))
    and ``self._rate``/``self._desc``/``self._meta`` before :meth:`info` is used.
    """

    def __init__(self, transform: FrameTransform | None, frame_rate_hz: float | None) -> None:
        super().__init__(transform)
        self._segments: list[tuple[str, Any]] = []
        self._rate = frame_rate_hz
        self._desc = ""
        self._meta: dict[str, Any] = {}
        self._frame_index: np.ndarray | None = None  # per-frame indices/times stored beside
        self._t_ms: np.ndarray | None = None  # the movie (an engine recording), if any

    def _raw_info(self) -> SourceInfo:
        first = self._segments[0][1]
        shape = (int(first.shape[1]), int(first.shape[2]))
        for name, seg in self._segments:
            if tuple(seg.shape[1:]) != shape or seg.dtype != first.dtype:
                raise SourceError(
                    f"{name}: frames are {tuple(seg.shape[1:])} {seg.dtype}; the first file has "
                    f"{shape} {first.dtype}"
                )
        if np.dtype(first.dtype).kind not in "buif":
            raise SourceError(
                f"{self._segments[0][0]}: pixels are {np.dtype(first.dtype).name}; expected "
                "integer or real floating-point pixels (convert the movie first, e.g. to its "
                "magnitude)"
            )
        meta = dict(self._meta)
        rate = frame_rate_or_default(self._rate, self._desc, meta)
        return SourceInfo(
            frame_rate_hz=rate,
            shape=shape,
            dtype=np.dtype(first.dtype).name,
            n_frames=sum(int(s.shape[0]) for _, s in self._segments),
            description=self._desc,
            kind="replay",
            metadata=meta,
        )

    def _read_block(self, name: str, seg: Any, lo: int, hi: int) -> np.ndarray:
        try:
            return np.asarray(seg[lo:hi])
        except Exception as exc:  # noqa: BLE001 - any reader failure names file and frame
            raise SourceError(f"{name}: frames {lo}-{hi - 1} cannot be read ({exc})") from None

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        period_ms = 1000.0 / self.info.frame_rate_hz
        offset = 0
        for name, seg in self._segments:
            n = int(seg.shape[0])
            lo = max(0, start - offset)
            for block_lo in range(lo, n, BLOCK):
                block = self._read_block(name, seg, block_lo, min(n, block_lo + BLOCK))
                for j in range(block.shape[0]):
                    i = offset + block_lo + j
                    index = i if self._frame_index is None else int(self._frame_index[i])
                    t_ms = i * period_ms if self._t_ms is None else float(self._t_ms[i])
                    yield SourceFrame(index, t_ms, None, np.ascontiguousarray(block[j]))
            offset += n


class _TiffPages:
    """``stack[lo:hi]`` over a TIFF series, read page by page (no full load).

    A truncated file (a copy or a recording cut short) keeps its intact frames: when the
    metadata (ImageJ ``images``, tifffile's shaped ``shape``) announces more frames than the
    file holds, frames are read from the contiguous data of the first page while whole frames
    remain, or page by page up to the first page whose data runs past the end of the file;
    a warning says how many frames are left.
    """

    def __init__(self, path: Path) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            page0 = series.pages[0]
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types on bad files
            raise SourceError(f"{path}: not a readable TIFF ({exc})") from None
        self.path = path
        self.dtype = series.dtype
        self.shape = _as_stack_shape(tuple(series.shape), str(path))
        self._pages = series.pages if len(series.pages) == self.shape[0] else None
        self._series = series
        self._all: np.ndarray | None = None
        self._raw: tuple[int, int, np.dtype] | None = None  # (offset, frame bytes, dtype)
        meta = self._tif.imagej_metadata or {}
        self.finterval = meta.get("finterval")
        self._check_truncation(page0, _announced_frames(self._tif, self.shape[0]))

    def _check_truncation(self, page0, announced: int) -> None:
        size = self.path.stat().st_size
        frame_shape = tuple(int(n) for n in getattr(page0, "shape", ()))
        if len(frame_shape) == 2 and frame_shape != self.shape[1:]:
            return  # an unusual layout (one page holding the stack): leave it to tifffile
        n_pages = len(self._pages) if self._pages is not None else 1
        if n_pages >= announced and self._pages is not None:
            intact = _pages_within(self._pages, size)
        elif getattr(page0, "is_contiguous", False) and page0.compression == 1:
            dtype = np.dtype(page0.dtype).newbyteorder(self._tif.byteorder)
            offset, nbytes = int(page0.dataoffsets[0]), dtype.itemsize * math.prod(frame_shape)
            intact = min(announced, max(0, (size - offset) // nbytes))
            self._raw, self._pages = (offset, nbytes, dtype), None
        else:
            return
        if intact < announced:
            logger.warning(
                "%s is truncated: %d of the %d frames it announces are intact; reading those",
                self.path, intact, announced,
            )  # fmt: skip
            if intact == 0:
                raise SourceError(f"{self.path}: truncated TIFF without one intact frame")
        self.shape = (int(intact), *self.shape[1:])

    def __getitem__(self, item: slice) -> np.ndarray:
        lo, hi, _ = item.indices(self.shape[0])
        if self._raw is not None:
            offset, nbytes, dtype = self._raw
            fh = self._tif.filehandle
            fh.seek(offset + lo * nbytes)
            data = fh.read(max(0, hi - lo) * nbytes)
            if len(data) != max(0, hi - lo) * nbytes:
                raise OSError(f"the file ends inside frame {lo + len(data) // nbytes}")
            return (
                np.frombuffer(data, dtype)
                .astype(dtype.newbyteorder("="))
                .reshape(-1, *self.shape[1:])
            )
        if self._pages is not None:
            frames = [self._pages[i].asarray() for i in range(lo, hi)]
            return np.stack(frames).reshape(-1, *self.shape[1:])
        if self._all is None:  # one page holding the stack (ImageJ hyperstack)
            self._all = self._series.asarray().reshape(self.shape)
        return self._all[item]

    def close(self) -> None:
        self._tif.close()


def _announced_frames(tif, n_series: int) -> int:
    """Frames the file's metadata announces (ImageJ ``images``, shaped ``shape``)."""
    counts = [n_series]
    images = (tif.imagej_metadata or {}).get("images")
    if isinstance(images, int) and images > 0:
        counts.append(images)
    for shaped in tif.shaped_metadata or ():
        shape = shaped.get("shape") if isinstance(shaped, dict) else None
        if isinstance(shape, list) and len(shape) == 3 and isinstance(shape[0], int):
            counts.append(shape[0])
    return max(counts)


def _pages_within(pages, size: int) -> int:
    """Pages from the first whose data all lie inside a file of ``size`` bytes."""
    for i, page in enumerate(pages):
        ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts)]
        if not ends or max(ends) > size:
            return i
    return len(pages)


class TiffSource(ArraySource):
    """A TIFF stack, or a folder of TIFF files concatenated in natural order."""

    def __init__(self, path, frame_rate_hz=None, transform=None) -> None:
        super().__init__(transform, frame_rate_hz)
        path = Path(path)
        if path.is_dir():
            files = sorted(
                (p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=natural_key
            )
            if not files:
                raise SourceError(f"{path}: no .tif/.tiff files in the folder")
        elif path.is_file():
            files = [path]
        else:
            raise SourceError(f"{path}: no such TIFF file or folder")
        self._files = [_TiffPages(p) for p in files]
        self._segments = [(str(f.path), f) for f in self._files]
        first = self._files[0]
        if self._rate is None and first.finterval:
            self._rate = 1.0 / float(first.finterval)
        self._desc = f"tiff {path}" + (f" ({len(files)} files)" if len(files) > 1 else "")
        self._meta = {"path": str(path), "files": [p.name for p in files]}

    def close(self) -> None:
        for f in self._files:
            f.close()


class HDF5Source(ArraySource):
    """A 3-D dataset of an HDF5 file (``dataset`` path; default ``movie`` or the only 3-D one)."""

    def __init__(self, path, dataset: str | None = None, frame_rate_hz=None, transform=None):
        super().__init__(transform, frame_rate_hz)
        import h5py

        path = Path(path)
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None
        name = dataset or self._default_dataset(path)
        obj = self._file.get(name)
        if not isinstance(obj, h5py.Dataset):
            self._file.close()
            raise SourceError(f"{path}: no dataset {name!r}")
        _as_stack_shape(obj.shape, f"{path}:{name}")
        dset = obj if obj.ndim == 3 else obj[()][None]
        self._segments = [(f"{path}:{name}", dset)]
        declared = None
        for attrs in (obj.attrs, self._file.attrs):
            for key in RATE_ATTRS:
                if key in attrs:
                    declared = float(np.asarray(attrs[key]).ravel()[0])
                    break
            if declared is not None:
                break
        if declared is not None and not declared > 0:  # e.g. NaN: a recorder that did not know
            declared = None
        if self._rate is None:
            self._rate = declared
        self._desc = f"hdf5 {path}:{name}"
        self._meta = {"path": str(path), "dataset": name, "declared_frame_rate_hz": declared}
        parent = obj.parent  # an engine recording (online-cnmfe-raw) keeps indices and times
        n = dset.shape[0]
        for key, attr in (("frame_index", "_frame_index"), ("t_acq_ms", "_t_ms")):
            values = parent.get(key)
            if isinstance(values, h5py.Dataset) and values.shape == (n,):
                setattr(self, attr, values[()])

    def _default_dataset(self, path: Path) -> str:
        import h5py

        found: list[str] = []
        self._file.visititems(
            lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None
        )
        if "movie" in found:
            return "movie"
        if len(found) == 1:
            return found[0]
        self._file.close()
        raise SourceError(
            f"{path}: {len(found)} 3-D datasets {found[:10]}; choose one with --dataset"
        )

    def close(self) -> None:
        self._file.close()


class NpySource(ArraySource):
    """A ``.npy`` array of shape (T, H, W) or (H, W), memory-mapped."""

    def __init__(self, path, frame_rate_hz=None, transform=None) -> None:
        super().__init__(transform, frame_rate_hz)
        path = Path(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: not a readable .npy array ({exc})") from None
        _as_stack_shape(array.shape, str(path))
        self._segments = [(str(path), array if array.ndim == 3 else array[None])]
        self._desc = f"npy {path}"
        self._meta = {"path": str(path)}
