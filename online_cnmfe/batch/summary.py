"""``summary.csv``: one row per session, rewritten (atomically) after every change.

Every input has a row from the start (status ``pending``), so the file accounts for all of
them even if the client itself is killed: ``ok``, ``skipped`` (results already up to date),
``failed`` (with the error of the last attempt), ``cancelled`` (Ctrl-C before it finished) or
``pending`` (never reported back).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from online_cnmfe.batch.plan import SessionTask

FIELDS = (
    "session",
    "input",
    "output",
    "status",
    "attempts",
    "frames",
    "neurons",
    "wall_s",
    "cpu_s",
    "peak_rss_mib",
    "worker",
    "note",
    "error",
)
STATUSES = ("ok", "skipped", "failed", "cancelled", "pending")


class Summary:
    """The rows of ``summary.csv``, keyed by session name, in input order.

    Parameters
    ----------
    path : Path
        The CSV file (rewritten by :meth:`write`).
    tasks : list of SessionTask
    """

    def __init__(self, path: str | Path, tasks: list[SessionTask]) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {
            t.name: {
                "session": t.name,
                "input": t.movie,
                "output": t.out,
                "status": "pending",
                "attempts": 0,
            }
            for t in tasks
        }

    def update(self, name: str, **fields: Any) -> None:
        """Set fields of a session's row (unknown field names raise ``KeyError``)."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise KeyError(f"unknown summary fields {sorted(unknown)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status {fields['status']!r} is not one of {STATUSES}")
        self.rows[name].update(fields)

    def counts(self) -> Counter:
        """Sessions per status."""
        return Counter(row["status"] for row in self.rows.values())

    def write(self) -> None:
        """Write the CSV atomically (a reader never sees half a file)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, FIELDS, extrasaction="raise")
            writer.writeheader()
            for row in self.rows.values():
                writer.writerow({k: _cell(row.get(k)) for k in FIELDS})
        os.replace(tmp, self.path)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return " ".join(value.split())  # one line per row
    return value


def read_summary(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``summary.csv`` as dicts of strings."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
