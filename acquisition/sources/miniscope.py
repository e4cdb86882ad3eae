"""Miniscope recordings as the UCLA DAQ software writes them (V4/V3, and the legacy layout).

Layout (DAQ-QT v1.x/v2.x)::

    <session>/metaData.json                      session level ("miniscopes": [names], ...)
    <session>/<device>/0.avi 1.avi ...           framesPerFile frames each, the last shorter
    <session>/<device>/metaData.json             device level ("frameRate": "20FPS", ROI, ...)
    <session>/<device>/timeStamps.csv            Frame Number,Time Stamp (ms),Buffer Index
                                                 [,DAQ Frame Number]   (v2 adds the DAQ column)

Legacy (v0.x / V3 software): ``msCam1.avi, msCam2.avi, ...`` (1-based) and a tab-separated
``timestamp.dat`` (``camNum frameNum sysClock buffer``) holding both cameras.

Pacing comes from the timestamps; the AVI header's frame rate (always 60) is ignored. The
16-bit ``DAQ Frame Number`` is unwrapped modulo 65536; a jump larger than the number of rows is
recorded as lost frames (``metadata["lost_daq_frames"]``, ranges in ``lost_ranges``); a jump
backwards by more than half the counter range is a counter re-seed after a USB reconnect
(``daq_resets``). ``-1`` (register read failed) gives ``daq_frame=None``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo, frame_rate_or_default
from acquisition.sources.video import _av, iter_video_frames, probe_video
from acquisition.transforms import FrameTransform

__all__ = [
    "MiniscopeSource",
    "Timestamps",
    "find_device_folder",
    "is_miniscope_folder",
    "parse_frame_rate",
    "read_legacy_timestamps",
    "read_timestamps_csv",
    "unwrap_daq_counter",
]

logger = logging.getLogger(__name__)

DAQ_MODULUS = 65536
MAX_LOST_RANGES = 1000
_CHUNK_RE = re.compile(r"^(\d+)\.avi$", re.IGNORECASE)
_LEGACY_RE = re.compile(r"^msCam(\d+)\.avi$", re.IGNORECASE)


def parse_frame_rate(value: Any) -> float | None:
    """Parse a Miniscope ``frameRate`` (``"20FPS"``, ``"20 FPS"``, ``20``) into Hz, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        match = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*(fps|hz)?\s*$", value, re.IGNORECASE)
        if match and float(match.group(1)) > 0:
            return float(match.group(1))
    return None


@dataclass(frozen=True, slots=True)
class Timestamps:
    """Per-frame timing of a recording.

    Attributes
    ----------
    frame_number : ndarray of int64
    t_ms : ndarray of float64
    daq_raw : ndarray of int64 or None
        The DAQ counter as written (16-bit, -1 = unknown), v2 files only.
    version : int
        1 (three columns), 2 (with DAQ Frame Number) or 0 (legacy timestamp.dat).
    """

    frame_number: np.ndarray
    t_ms: np.ndarray
    daq_raw: np.ndarray | None
    version: int


def read_timestamps_csv(path: Path) -> Timestamps:
    """Read a DAQ-QT ``timeStamps.csv`` (v1 or v2 layout).

    Raises
    ------
    SourceError
        If the header is not a known layout or a row is not numeric (naming the row).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise SourceError(f"{path}: empty timestamps file")
    header = [h.strip().lower() for h in rows[0]]
    if header[:3] != ["frame number", "time stamp (ms)", "buffer index"]:
        raise SourceError(
            f"{path}: header {rows[0]} is not 'Frame Number,Time Stamp (ms),Buffer Index"
            "[,DAQ Frame Number]'"
        )
    has_daq = len(header) >= 4 and header[3] == "daq frame number"
    ncol = 4 if has_daq else 3
    data = np.zeros((len(rows) - 1, ncol), dtype=np.float64)
    for i, row in enumerate(rows[1:]):
        try:
            data[i] = [float(x) for x in row[:ncol]]
        except (ValueError, TypeError):
            if i == len(rows) - 2 and len(row) < ncol:  # a truncated last line: ignore it
                data = data[:i]
                break
            raise SourceError(f"{path}: row {i + 2} {row!r} is not {ncol} numbers") from None
    return Timestamps(
        frame_number=data[:, 0].astype(np.int64),
        t_ms=data[:, 1],
        daq_raw=data[:, 3].astype(np.int64) if has_daq else None,
        version=2 if has_daq else 1,
    )


def read_legacy_timestamps(path: Path, n_video_frames: int | None) -> Timestamps:
    """Read a legacy ``timestamp.dat`` and keep the miniscope camera's rows.

    The miniscope camera is the ``camNum`` whose row count equals ``n_video_frames``; when
    none or several match, the lowest ``camNum`` is used and a warning logged.
    """
    path = Path(path)
    try:
        table = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise SourceError(
            f"{path}: not a tab-separated camNum/frameNum/sysClock table ({exc})"
        ) from None
    if table.shape[1] < 3:
        raise SourceError(f"{path}: expected columns camNum, frameNum, sysClock, buffer")
    cams = np.unique(table[:, 0]).astype(int)
    counts = {c: int(np.sum(table[:, 0] == c)) for c in cams}
    matching = [c for c in cams if counts[c] == n_video_frames]
    cam = matching[0] if len(matching) == 1 else int(cams[0])
    if len(matching) != 1 and len(cams) > 1:
        logger.warning("%s: cameras %s; using camNum %d for the miniscope", path, counts, cam)
    rows = table[table[:, 0] == cam]
    return Timestamps(rows[:, 1].astype(np.int64), rows[:, 2].astype(np.float64), None, 0)


def unwrap_daq_counter(raw: np.ndarray) -> tuple[np.ndarray, list[list[int]], int]:
    """Unwrap a 16-bit DAQ frame counter and find lost frames.

    Parameters
    ----------
    raw : ndarray of int64, shape (n,)
        Counter values as written; ``-1`` marks a failed read.

    Returns
    -------
    unwrapped : ndarray of int64, shape (n,)
        Monotonic counter (``-1`` where unknown).
    lost_ranges : list of [row, n_lost]
        For each jump: the row (0-based) after which ``n_lost`` hardware frames are missing.
    n_resets : int
        Counter re-seeds (backward jumps by more than half the range).
    """
    raw = np.asarray(raw, dtype=np.int64)
    out = np.full(raw.shape, -1, dtype=np.int64)
    valid = np.flatnonzero(raw >= 0)
    lost: list[list[int]] = []
    if valid.size == 0:
        return out, lost, 0
    values = raw[valid]
    step = np.mod(np.diff(values), DAQ_MODULUS)  # counter advance between valid rows
    expected = np.diff(valid)  # rows between them
    resets = step > DAQ_MODULUS // 2
    step = np.where(resets, expected, step)  # continue counting across a re-seed
    out[valid] = values[0] + np.concatenate(([0], np.cumsum(step)))
    gaps = np.flatnonzero(step > expected)
    lost = [[int(valid[g]), int(step[g] - expected[g])] for g in gaps]
    return out, lost, int(resets.sum())


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable metadata (%s); ignored", path, exc)
        return {}
    return value if isinstance(value, dict) else {}


def _chunks(folder: Path) -> list[Path]:
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHUNK_RE.match(p.name))]
    return [p for _, p in sorted(numbered)]


def _legacy_chunks(folder: Path) -> list[Path]:
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _LEGACY_RE.match(p.name))]
    return [p for _, p in sorted(numbered)]


def _is_device_folder(folder: Path) -> bool:
    return bool(_chunks(folder))


def is_miniscope_folder(path: Path) -> bool:
    """True if ``path`` is a Miniscope session, device or legacy folder."""
    path = Path(path)
    if not path.is_dir():
        return False
    if _is_device_folder(path) or _legacy_chunks(path):
        return True
    return any(_is_device_folder(p) for p in path.iterdir() if p.is_dir())


def find_device_folder(path: Path, device: str | None = None) -> Path:
    """Resolve a session or device folder to the miniscope device folder.

    A device folder (``0.avi``..., normally with ``timeStamps.csv``) or a legacy folder is
    returned as is.
    In a session folder, ``device`` (a subfolder name) wins; else the names listed under
    ``"miniscopes"`` in the session ``metaData.json``; else the only device subfolder whose
    name or ``deviceType`` mentions a miniscope; else the only device subfolder.

    Raises
    ------
    SourceError
        If no device folder is found, or several match (listing them).
    """
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"{path}: not a folder")
    if _is_device_folder(path) or _legacy_chunks(path):
        return path
    devices = sorted(p for p in path.iterdir() if p.is_dir() and _is_device_folder(p))
    if device is not None:
        chosen = path / device
        if chosen not in devices:
            raise SourceError(
                f"{path}: no device folder {device!r}; found {[p.name for p in devices]}"
            )
        return chosen
    listed = _read_json(path / "metaData.json").get("miniscopes") or []
    candidates = [p for p in devices if p.name in listed]
    if not candidates:
        candidates = [
            p
            for p in devices
            if "miniscope" in p.name.lower()
            or "miniscope" in str(_read_json(p / "metaData.json").get("deviceType", "")).lower()
        ]
    if not candidates:
        candidates = devices
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SourceError(
            f"{path}: no Miniscope recording found (expected timeStamps.csv with 0.avi, 1.avi, "
            "... in this folder or a device subfolder, or legacy msCam1.avi + timestamp.dat)"
        )
    raise SourceError(
        f"{path}: several devices {[p.name for p in candidates]}; choose one with --device"
    )


def _chunk_frame_count(path: Path) -> int:
    av = _av()
    try:
        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames or 0)
    except (av.error.FFmpegError, IndexError) as exc:
        raise SourceError(f"{path}: cannot read the video header ({exc})") from None


class MiniscopeSource(FrameSource):
    """Replay a Miniscope recording folder (session, device or legacy layout).

    Parameters
    ----------
    path : path-like
        The session folder or the device folder.
    device : str, optional
        Device subfolder to use when the session holds several.
    frame_rate_hz : float, optional
        Overrides the frame rate from ``metaData.json``.
    transform : FrameTransform, optional
    """

    def __init__(
        self,
        path,
        device: str | None = None,
        frame_rate_hz: float | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        super().__init__(transform)
        self.folder = find_device_folder(Path(path), device)
        self.legacy = not _is_device_folder(self.folder)
        self.chunk_paths = _legacy_chunks(self.folder) if self.legacy else _chunks(self.folder)
        counts = [_chunk_frame_count(p) for p in self.chunk_paths]
        self.chunk_counts = counts if all(counts) else None
        self._probe = probe_video(self.chunk_paths[0])
        self._rate_override = frame_rate_hz
        self._load_timing()

    def _load_timing(self) -> None:
        n_video = sum(self.chunk_counts) if self.chunk_counts else None
        meta: dict[str, Any] = {"folder": str(self.folder), "legacy": self.legacy}
        if self.legacy:
            ts_path = self.folder / "timestamp.dat"
            ts = read_legacy_timestamps(ts_path, n_video) if ts_path.is_file() else None
        else:
            ts_path = self.folder / "timeStamps.csv"
            ts = read_timestamps_csv(ts_path) if ts_path.is_file() else None
            meta["device"] = _read_json(self.folder / "metaData.json")
            meta["session"] = _read_json(self.folder.parent / "metaData.json")
        if ts is None:
            logger.warning("%s: no timestamps file; times are frame_index / rate", self.folder)
        t_ms = ts.t_ms.copy() if ts is not None else np.zeros(0)
        if t_ms.size >= 3 and t_ms[0] > t_ms[1]:  # garbage first timestamp (DAQ issue #72)
            t_ms[0] = t_ms[1] - float(np.median(np.diff(t_ms[1:])))
            meta["first_timestamp_fixed"] = True
        self._t_ms = t_ms
        self._daq = None
        if ts is not None and ts.daq_raw is not None:
            self._daq, lost, resets = unwrap_daq_counter(ts.daq_raw)
            meta["lost_daq_frames"] = int(sum(n for _, n in lost))
            meta["lost_ranges"] = lost[:MAX_LOST_RANGES]
            meta["daq_resets"] = resets
            if lost:
                logger.warning(
                    "%s: %d DAQ frame(s) lost before the software (%d gap(s))",
                    self.folder,
                    meta["lost_daq_frames"],
                    len(lost),
                )
        meta["timestamps_version"] = None if ts is None else ts.version
        meta["n_timestamps"] = int(t_ms.size)
        self.n_frames = n_video if n_video is not None else (int(t_ms.size) or None)
        if n_video is not None and ts is not None and t_ms.size != n_video:
            logger.warning(
                "%s: %d timestamps for %d video frames; missing times are extrapolated",
                self.folder,
                t_ms.size,
                n_video,
            )
            meta["timestamp_count_mismatch"] = [int(t_ms.size), n_video]
        self._meta = meta

    def _nominal_rate(self) -> float | None:
        device = self._meta.get("device", {})
        session = self._meta.get("session", {})
        rate = parse_frame_rate(device.get("frameRate")) or parse_frame_rate(
            session.get("frameRate")
        )
        if rate is None and self._t_ms.size >= 2:
            period = float(np.median(np.diff(self._t_ms)))
            rate = 1000.0 / period if period > 0 else None
        return rate

    def _raw_info(self) -> SourceInfo:
        meta = dict(self._meta)
        meta["chunks"] = [p.name for p in self.chunk_paths]
        meta["codec"] = self._probe.codec
        desc = f"miniscope {self.folder}"
        meta["declared_frame_rate_hz"] = self._nominal_rate()
        rate = frame_rate_or_default(self._rate_override or self._nominal_rate(), desc, meta)
        return SourceInfo(
            frame_rate_hz=rate,
            shape=self._probe.shape,
            dtype=self._probe.dtype,
            n_frames=self.n_frames,
            description=desc,
            kind="replay",
            metadata=meta,
        )

    def _timing(self, i: int) -> tuple[float, int | None]:
        t = self._t_ms
        period = 1000.0 / self.info.frame_rate_hz
        if i < t.size:
            t_acq = float(t[i])
        elif t.size:
            t_acq = float(t[-1]) + (i - t.size + 1) * period
        else:
            t_acq = i * period
        daq = None
        if self._daq is not None and i < self._daq.size and self._daq[i] >= 0:
            daq = int(self._daq[i])
        return t_acq, daq

    def _iter_raw(self, start: int) -> Iterator[SourceFrame]:
        offset = 0
        shape = self._probe.shape
        for k, path in enumerate(self.chunk_paths):
            count = self.chunk_counts[k] if self.chunk_counts else None
            if count is not None and offset + count <= start:
                offset += count
                continue
            n_read = 0
            for j, pixels in enumerate(
                iter_video_frames(path, skip=max(0, start - offset), expected=count)
            ):
                i = max(start, offset) + j
                if pixels.shape != shape:
                    raise SourceError(
                        f"{path}: frame {i - offset} has shape {pixels.shape}; {shape} expected"
                    )
                t_acq, daq = self._timing(i)
                yield SourceFrame(i, t_acq, daq, pixels)
                n_read = j + 1
            offset += count if count is not None else n_read + max(0, start - offset)
