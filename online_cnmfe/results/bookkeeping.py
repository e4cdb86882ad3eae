"""The fate of every frame, stored in the results file (docs/results-format.md, "Bookkeeping").

Every frame index from the first to the last of a session is either **processed** (it has a
column in ``frames/*`` and ``traces/*``) or listed in ``bookkeeping/lost`` with its kind and
reason:

- ``dropped``: never reached the engine (lost in transit, sent before the engine received the
  first frame, missing from the source, refused by a full queue or spool);
- ``rejected``: received and refused (wrong shape or dtype, a model error);
- ``unprocessed``: received but not processed when the engine stopped (the reason says why
  and where the pixels were kept);
- ``unsaved``: processed but not written (the disk fell behind or failed).

Two more kinds describe frames outside that sequence: ``skipped`` (processed with a repeated
trace column because the model skipped it, e.g. NaN pixels; it also has a column) and
``daq_lost`` (hardware frames that never reached the acquisition software; ``first``/``last``
are DAQ counter values, not frame indices). Ranges whose indices are unknown (frames of a
session none of which arrived) have ``first = last = -1`` and their count in ``n``.

``bookkeeping/sessions`` lists the stream sessions (a publisher restart starts a new one; the
per-frame ``frames/session`` column points into it), and the root attributes hold the totals
(:data:`SUMMARY_ATTRS`), updated at every flush.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import h5py
import numpy as np

from online_cnmfe.results.layout import FRAME_FIELDS

LOST_KINDS = ("dropped", "rejected", "unprocessed", "unsaved", "skipped", "daq_lost")
LOST_DTYPE = np.dtype(
    [
        ("session", "<i4"),
        ("first", "<i8"),
        ("last", "<i8"),
        ("n", "<i8"),
        ("kind", "S12"),
        ("reason", "S200"),
    ]
)
SESSION_DTYPE = np.dtype(
    [
        ("session", "<i4"),
        ("session_id", "S64"),
        ("first_row", "<i8"),
        ("frame_rate_hz", "<f8"),
        ("detail", "S200"),
    ]
)
# Root attributes: totals over the file (frames of each kind and stream incidents).
SUMMARY_ATTRS = (
    "n_frames_dropped",
    "n_frames_rejected",
    "n_frames_unprocessed",
    "n_frames_unsaved",
    "n_frames_skipped",
    "n_daq_lost",
    "n_malformed",
    "n_restarts",
    "n_out_of_order",
)
_KIND_ATTR = {
    "dropped": "n_frames_dropped",
    "rejected": "n_frames_rejected",
    "unprocessed": "n_frames_unprocessed",
    "unsaved": "n_frames_unsaved",
    "skipped": "n_frames_skipped",
    "daq_lost": "n_daq_lost",
}


def _utf8(value: str, size: int) -> bytes:
    return str(value).encode("utf-8", "replace")[:size]


def create_bookkeeping(f: h5py.File) -> None:
    """Create the ``bookkeeping`` group and the summary attributes (if missing).

    Must run before the file enters SWMR mode; a file written by an older version gets them
    when it is resumed.
    """
    group = f.require_group("bookkeeping")
    if "lost" not in group:
        group.create_dataset("lost", (0,), LOST_DTYPE, maxshape=(None,), chunks=(256,))
    if "sessions" not in group:
        group.create_dataset("sessions", (0,), SESSION_DTYPE, maxshape=(None,), chunks=(64,))
    for name in SUMMARY_ATTRS:
        if name not in f.attrs:
            f.attrs[name] = np.int64(0)


def upgrade_for_resume(f: h5py.File, n_frames: int) -> Ledger:
    """Before a resumed file enters SWMR mode: create what an older version did not write
    (``frames/session``, the bookkeeping) and return the ledger continuing its totals."""
    for name, dtype in FRAME_FIELDS.items():
        if name not in f["frames"]:
            f["frames"].create_dataset(name, (n_frames,), dtype, maxshape=(None,), chunks=(4096,))
    create_bookkeeping(f)
    return Ledger.from_file(f)


@dataclass
class Ledger:
    """Rows and totals waiting for the next flush (the writer's side of the bookkeeping)."""

    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMMARY_ATTRS, 0))
    n_sessions: int = 0
    _lost: list[tuple] = field(default_factory=list)
    _sessions: list[tuple] = field(default_factory=list)

    @classmethod
    def from_file(cls, f: h5py.File) -> Ledger:
        """Continue the totals of an existing file (``--resume``)."""
        ledger = cls()
        for name in SUMMARY_ATTRS:
            ledger.totals[name] = int(f.attrs.get(name, 0))
        if "bookkeeping/sessions" in f:
            ledger.n_sessions = int(f["bookkeeping/sessions"].shape[0])
        return ledger

    def lost(self, kind: str, first: int, last: int, reason: str, session: int, n: int = 0) -> None:
        """Record frames ``first..last`` (or ``n`` unplaced frames when ``first < 0``)."""
        if kind not in LOST_KINDS:
            raise ValueError(f"kind must be one of {LOST_KINDS}, got {kind!r}")
        n = n if first < 0 else last - first + 1
        if n <= 0:
            raise ValueError(f"an empty range: first={first}, last={last}, n={n}")
        self._lost.append((session, first, last, n, kind.encode(), _utf8(reason, 200)))
        self.totals[_KIND_ATTR[kind]] += n

    def session(self, session_id: str, first_row: int, frame_rate_hz: float, detail: str) -> int:
        """Record the start of a session; returns its number (the ``frames/session`` value)."""
        number = self.n_sessions
        self.n_sessions += 1
        rate = float("nan") if frame_rate_hz is None else float(frame_rate_hz)
        self._sessions.append(
            (number, _utf8(session_id or "", 64), first_row, rate, _utf8(detail, 200))
        )
        return number

    def count(self, name: str, n: int = 1) -> None:
        """Add to an incident total (``n_malformed``, ``n_restarts``, ``n_out_of_order``)."""
        self.totals[name] += int(n)

    def write(self, f: h5py.File) -> None:
        """Append the pending rows and update the summary attributes."""
        for name, rows, dtype in (
            ("lost", self._lost, LOST_DTYPE),
            ("sessions", self._sessions, SESSION_DTYPE),
        ):
            if rows:
                ds = f["bookkeeping"][name]
                n = ds.shape[0]
                ds.resize((n + len(rows),))
                ds[n:] = np.array(rows, dtype)
                rows.clear()
        for name, value in self.totals.items():
            f.attrs[name] = np.int64(value)


def describe(attrs: dict, n_processed: int) -> str:
    """One line: how many frames were processed, and the losses (for logs and ``eos``)."""
    parts = [f"{n_processed} frames processed"]
    for name, label in (
        ("n_frames_dropped", "dropped"),
        ("n_frames_rejected", "rejected"),
        ("n_frames_unprocessed", "unprocessed"),
        ("n_frames_unsaved", "not saved"),
        ("n_daq_lost", "lost by the hardware"),
        ("n_malformed", "malformed messages"),
        ("n_restarts", "restarts"),
    ):
        value = int(attrs.get(name, 0))
        if value:
            parts.append(f"{value} {label}")
    if len(parts) == 1:
        parts.append("none lost")
    return ", ".join(parts)


def coverage_problems(
    frame_index: np.ndarray, frame_session: np.ndarray, lost: np.ndarray
) -> list[str]:
    """Check that every frame index from the first to the last of each session is accounted
    for exactly once (processed, or dropped/rejected/unprocessed/unsaved).

    Parameters
    ----------
    frame_index, frame_session : ndarray of shape (T,)
        ``frames/frame_index`` and ``frames/session``.
    lost : structured ndarray of :data:`LOST_DTYPE`
        ``bookkeeping/lost``.

    Returns
    -------
    list of str
        One line per problem (empty when every frame is accounted for).
    """
    problems = []
    exclusive = {b"dropped", b"rejected", b"unprocessed", b"unsaved"}
    sessions = set(np.unique(frame_session).tolist()) | set(np.unique(lost["session"]).tolist())
    for s in sorted(sessions):
        counts: dict[int, int] = {}
        for i in frame_index[frame_session == s].tolist():
            counts[i] = counts.get(i, 0) + 1
        for row in lost[(lost["session"] == s) & (lost["first"] >= 0)]:
            if row["kind"] not in exclusive:
                continue
            for i in range(int(row["first"]), int(row["last"]) + 1):
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            continue
        lo, hi = min(counts), max(counts)
        missing = [i for i in range(lo, hi + 1) if i not in counts]
        twice = sorted(i for i, c in counts.items() if c > 1)
        if missing:
            problems.append(f"session {s}: {len(missing)} frame(s) unaccounted, e.g. {missing[:5]}")
        if twice:
            problems.append(f"session {s}: {len(twice)} frame(s) counted twice, e.g. {twice[:5]}")
    return problems


def lost_frames(lost: np.ndarray, kinds: Iterable[str]) -> int:
    """Total frames of the given kinds in a ``bookkeeping/lost`` table."""
    wanted = {k.encode() for k in kinds}
    return int(sum(int(r["n"]) for r in lost if r["kind"] in wanted))
