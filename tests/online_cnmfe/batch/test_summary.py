"""summary.csv: a row per input from the start, rewritten atomically, one line per row."""

from __future__ import annotations

import pytest

from online_cnmfe.batch.plan import SessionTask
from online_cnmfe.batch.summary import FIELDS, Summary, read_summary


def _task(name: str) -> SessionTask:
    return SessionTask(name=name, movie=f"/in/{name}.h5", out=f"/out/{name}.h5", params_json="{}")


def test_every_input_has_a_row_before_anything_ran_and_updates_replace_the_file(tmp_path):
    path = tmp_path / "summary.csv"
    summary = Summary(path, [_task("a"), _task("b")])
    summary.write()
    rows = read_summary(path)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert list(rows[0]) == list(FIELDS)
    summary.update("b", status="failed", attempts=2, error="SourceError: bad\nfile, truncated")
    summary.update(
        "a", status="ok", attempts=1, frames=120, neurons=7, wall_s=1.5, cpu_s=float("nan")
    )
    summary.write()
    a, b = read_summary(path)
    assert (a["status"], a["frames"], a["neurons"], a["cpu_s"]) == ("ok", "120", "7", "")
    assert b["error"] == "SourceError: bad file, truncated"  # one line, commas quoted
    assert summary.counts() == {"ok": 1, "failed": 1}
    assert not (tmp_path / "summary.csv.tmp").exists()


def test_unknown_fields_and_statuses_are_refused(tmp_path):
    summary = Summary(tmp_path / "s.csv", [_task("a")])
    with pytest.raises(KeyError, match="speed"):
        summary.update("a", speed=3)
    with pytest.raises(ValueError, match="'done'"):
        summary.update("a", status="done")
