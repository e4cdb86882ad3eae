"""Miniscope recordings as the UCLA DAQ software writes them (V4/V3, and the legacy layout).

Layout (DAQ-QT v1.x/v2.x)::

    <session>/metaData.json                      session level ("miniscopes": [names], ...)
    <session>/<device>/0.avi 1.avi ...           framesPerFile frames each, the last shorter
    <session>/<device>/metaData.json             device level ("frameRate": "20FPS", ROI, ...)
    <session>/<device>/timeStamps.csv            Frame Number,Time Stamp (ms),Buffer Index
                                                 [,DAQ Frame Number]   (v2 adds the DAQ column)

Legacy (v0.x / V3 software): ``msCam1.avi, msCam2.avi, ...`` (1-based) and a tab-separated
``timestamp.dat`` (``camNum frameNum sysClock buffer``) holding both cameras.

Frame indices and times come from the timestamps: chunk ``k`` holds rows ``k·framesPerFile``
onwards (:mod:`.miniscope_chunks`), so a missing, unreadable or short chunk leaves a gap in the
frame indices (reported in ``metadata["missing_ranges"]`` and a warning; a chunk found
truncated while reading is reported when it is read) and never shifts later frames onto the
missing ones' indices and times. ``frame_index`` is the ``Frame Number`` column (legacy
``frameNum`` minus 1).

Pacing comes from the timestamps; the AVI header's frame rate (always 60) is ignored. The
16-bit ``DAQ Frame Number`` is unwrapped modulo 65536; a jump larger than the number of rows is
recorded as lost frames (``metadata["lost_daq_frames"]``, ranges in ``lost_ranges``); a jump
backwards by more than half the counter range is a counter re-seed after a USB reconnect
(``daq_resets``). ``-1`` (register read failed) gives ``daq_frame=None``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from acquisition.errors import SourceError
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo, frame_rate_or_default
from acquisition.sources.miniscope_chunks import chunk_layout
from acquisition.sources.miniscope_timestamps import (
    Timestamps,
    parse_frame_rate,
    read_legacy_timestamps,
    read_timestamps_csv,
    unwrap_daq_counter,
)
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

MAX_LOST_RANGES = 1000
_CHUNK_RE = re.compile(r"^(\d+)\.avi$", re.IGNORECASE)
_LEGACY_RE = re.compile(r"^msCam(\d+)\.avi$", re.IGNORECASE)


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


def _chunk_number(path: Path, legacy: bool) -> int:
    """0-based number of a chunk file (``3.avi`` → 3, legacy ``msCam4.avi`` → 3)."""
    match = (_LEGACY_RE if legacy else _CHUNK_RE).match(path.name)
    return int(match.group(1)) - (1 if legacy else 0)


def _readable_count(path: Path) -> int | None:
    """Frames in a chunk from its header (0: not stated), None (warned) when unreadable."""
    try:
        return _chunk_frame_count(path)
    except SourceError as exc:
        logger.warning("%s; its frames are reported lost", exc)
        return None


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
        paths = _legacy_chunks(self.folder) if self.legacy else _chunks(self.folder)
        counts = [_readable_count(p) for p in paths]
        ok = [i for i, c in enumerate(counts) if c is not None]
        if not ok:
            raise SourceError(f"{self.folder}: no chunk of the recording can be read")
        self.chunk_paths = [paths[i] for i in ok]
        known = [counts[i] for i in ok]
        self.chunk_counts = known if all(known) else None
        self._probe = probe_video(self.chunk_paths[0])
        self._rate_override = frame_rate_hz
        self._load_timing()
        numbers = [_chunk_number(p, self.legacy) for p in paths]
        per_file = self._meta.get("device", {}).get("framesPerFile")
        per_file = per_file if isinstance(per_file, int) and per_file > 0 else None
        layout = chunk_layout(numbers, counts, [p.name for p in paths], per_file)
        if self.chunk_counts is None:  # a header without a frame count: read in sequence
            layout = chunk_layout([], [], [], None)
        self._first_rows = None
        if layout.first_rows is not None:
            self._first_rows = [layout.first_rows[i] for i in ok]
        self._missing = [[self._index(a), self._index(b), why] for a, b, why in layout.missing]
        if self._missing:
            n = sum(b - a + 1 for a, b, _ in self._missing)
            where = "; ".join(f"{a}-{b}: {why}" for a, b, why in self._missing[:5])
            logger.warning("%s: %d frame(s) missing from the recording (%s); their frame "
                           "indices are skipped", self.folder, n, where)  # fmt: skip
        self._check_timestamp_count()

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
        base = 1 if self.legacy else 0  # legacy frameNum counts from 1
        self._numbers = ts.frame_number - base if ts is not None else np.zeros(0, np.int64)
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
        self._meta = meta

    def _check_timestamp_count(self) -> None:
        """Warn when the timestamps do not cover the frames (present and missing)."""
        n_video = sum(self.chunk_counts) if self.chunk_counts else None
        n_rows = int(self._t_ms.size)
        if n_video is None or self._meta["timestamps_version"] is None:
            return
        expected = n_video + sum(b - a + 1 for a, b, _ in self._missing)
        if n_rows != expected:
            logger.warning(
                "%s: %d timestamps for %d video frames; missing times are extrapolated",
                self.folder, n_rows, expected,
            )  # fmt: skip
            self._meta["timestamp_count_mismatch"] = [n_rows, expected]

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
        meta["missing_ranges"] = self._missing[:MAX_LOST_RANGES]
        meta["first_frame_index"] = self._index(0)
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

    def _index(self, row: int) -> int:
        """Frame index of a timestamp row (extrapolated past the last row)."""
        numbers = self._numbers
        if row < numbers.size:
            return int(numbers[row])
        return int(numbers[-1]) + row - numbers.size + 1 if numbers.size else row

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
        offset = 0  # position (0-based, over the frames present) of the chunk's first frame
        for k, path in enumerate(self.chunk_paths):
            count = self.chunk_counts[k] if self.chunk_counts else None
            if count is not None and offset + count <= start:
                offset += count
                continue
            skip = max(0, start - offset)
            row0 = offset if self._first_rows is None else self._first_rows[k]
            n_read = yield from self._chunk_frames(path, skip, count, row0)
            offset += count if count is not None else n_read

    def _chunk_frames(self, path: Path, skip: int, count: int | None, row0: int):
        """Yield the frames of one chunk; a chunk that cannot be read to its end is reported
        (the frames left are lost, at their own indices) and the replay goes on."""
        frames = iter_video_frames(path, skip=skip, expected=count)
        j = skip
        while True:
            try:
                pixels = next(frames)
            except StopIteration:
                return j
            except SourceError as exc:
                left = "the rest" if count is None else f"{count - j} frame(s)"
                first = self._index(row0 + j)
                logger.warning("%s; %s of the chunk (frame indices from %d) are lost, the "
                               "replay goes on", exc, left, first)  # fmt: skip
                return j
            if pixels.shape != self._probe.shape:
                raise SourceError(
                    f"{path}: frame {j} has shape {pixels.shape}; {self._probe.shape} expected"
                )
            row = row0 + j
            t_acq, daq = self._timing(row)
            yield SourceFrame(self._index(row), t_acq, daq, pixels)
            j += 1
