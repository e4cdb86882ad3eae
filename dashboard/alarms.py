"""When the engine loses data or falls behind: the red banner's text (Qt-free)."""

from __future__ import annotations

from dashboard.records import Banner


def n_lost(fields: dict) -> int:
    """Frames lost for good (dropped, unprocessed, not saved) in a ``status`` or ``eos``."""
    if type(fields.get("n_lost")) is int:
        return fields["n_lost"]
    keys = ("n_dropped", "n_unprocessed", "n_unsaved")
    return sum(v for k in keys if type(v := fields.get(k)) is int)


def lag_or_loss(status: dict, behind_alarm_s: float) -> Banner | None:
    """A red banner when the results lag the stream by more than ``behind_alarm_s`` or frames
    were lost (``status`` fields of docs/protocol.md), else None."""
    parts = []
    behind = status.get("behind_s")
    if type(behind) in (int, float) and behind > behind_alarm_s:
        waiting, spooled = status.get("queue_depth", "?"), status.get("n_spooled", 0)
        disk = f", {spooled} of them on disk" if spooled else ""
        parts.append(
            f"{behind:.0f} s behind the stream: {waiting} frames wait{disk} and are "
            "processed in catch-up mode; nothing is lost while the disk has room."
        )
    lost = n_lost(status)
    if lost:
        parts.append(
            f"{lost} frame(s) lost (dropped {status.get('n_dropped', 0)}, unprocessed "
            f"{status.get('n_unprocessed', 0)}): every one is listed with its reason in the "
            "results file (bookkeeping/lost)."
        )
    return Banner(" ".join(parts), "error") if parts else None
