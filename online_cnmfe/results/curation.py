"""Curation: a user's accept / reject label per neuron, kept in the results file (``curation/``).

Layout: ``curation/neuron_ids`` (n,) int64 and ``curation/label`` (n,) int8 (+1 accepted,
-1 rejected; a neuron absent from the table is unlabelled), and ``curation/log``, one JSON line
per change (time, action, ids, who). Every export and the evaluator leave rejected neurons out
unless asked to keep them; accepted and unlabelled neurons are kept.

The labels are written into a closed results file (the engine or ``process`` must have
finished); ``online-cnmfe curate`` and the review window's accept / reject keys both call
:func:`set_labels`.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from online_cnmfe.errors import StateFileError

logger = logging.getLogger(__name__)

ACCEPTED, REJECTED, UNLABELLED = 1, -1, 0
LABEL_NAMES = {ACCEPTED: "accepted", REJECTED: "rejected", UNLABELLED: "unlabelled"}


def read_labels(f: h5py.File) -> dict[int, int]:
    """``{neuron_id: label}`` of an open results file (empty when never curated)."""
    g = f.get("curation")
    if g is None or "neuron_ids" not in g or "label" not in g:
        return {}
    ids, labels = g["neuron_ids"][()], g["label"][()]
    n = min(ids.shape[0], labels.shape[0])
    return {int(i): int(v) for i, v in zip(ids[:n], labels[:n], strict=True) if v != UNLABELLED}


def read_curation(path: str | Path) -> dict[int, int]:
    """``{neuron_id: label}`` of a results file (see :func:`read_labels`)."""
    from online_cnmfe.results.layout import open_for_reading

    with open_for_reading(Path(path)) as f:
        return read_labels(f)


def rejected(labels: dict[int, int]) -> set[int]:
    """Ids labelled rejected."""
    return {i for i, v in labels.items() if v == REJECTED}


def parse_ids(values: Iterable[int | str]) -> list[int]:
    """Neuron ids from ``"3,7 12-15"``-style text (commas or spaces, inclusive ranges).

    Examples
    --------
    >>> parse_ids(["3,7", "12-14"])
    [3, 7, 12, 13, 14]

    Raises
    ------
    ValueError
        Naming the part that is not an id or a START-STOP range.
    """
    out: list[int] = []
    for value in values:
        for part in str(value).replace(",", " ").split():
            lo, dash, hi = part.partition("-")
            try:
                a, b = (int(lo), int(hi)) if dash else (int(part), int(part))
            except ValueError:
                raise ValueError(
                    f"neuron id {part!r} is not an integer or a START-STOP range (e.g. 3,7,12-15)"
                ) from None
            if b < a:
                raise ValueError(f"neuron id range {part!r} runs backwards")
            out.extend(range(a, b + 1))
    return out


def set_labels(
    path: str | Path,
    *,
    accept: Iterable[int] = (),
    reject: Iterable[int] = (),
    clear: Iterable[int] = (),
    known_ids: Iterable[int] | None = None,
) -> dict[int, int]:
    """Label neurons of a closed results file and log the change.

    Parameters
    ----------
    path : str or Path
    accept, reject, clear : iterable of int
        Ids to label accepted, rejected, or unlabelled again. An id in two of them is an error.
    known_ids : iterable of int, optional
        Ids that exist (default: the file's footprint ids, removed neurons' ids included).

    Returns
    -------
    dict
        The labels after the change.

    Raises
    ------
    ValueError
        For an id in two lists or an id the file does not have (naming them).
    StateFileError
        If the file cannot be opened for writing (a session still writing it, read-only).
    """
    accept, reject, clear = (sorted(set(int(i) for i in x)) for x in (accept, reject, clear))
    both = (set(accept) & set(reject)) | (set(accept) & set(clear)) | (set(reject) & set(clear))
    if both:
        raise ValueError(f"neuron(s) {sorted(both)} given twice (accept/reject/clear)")
    path = Path(path)
    try:
        f = h5py.File(path, "r+")
    except OSError as exc:
        raise StateFileError(
            f"cannot open {path} for writing ({exc}); curate a session after it has finished "
            "(the engine or `process` still has it open, or the file is read-only)"
        ) from exc
    with f:
        if known_ids is None:
            known = set(f["footprints/neuron_ids"][()].tolist())
            if "removed" in f:
                known |= set(f["removed/neuron_ids"][()].tolist())
        else:
            known = {int(i) for i in known_ids}
        unknown = sorted(set(accept + reject + clear) - known)
        if unknown:
            raise ValueError(
                f"{path.name} has no neuron(s) {unknown[:20]}; its ids run "
                f"{min(known, default='-')}..{max(known, default='-')}"
            )
        labels = read_labels(f)
        labels.update({i: ACCEPTED for i in accept})
        labels.update({i: REJECTED for i in reject})
        for i in clear:
            labels.pop(i, None)
        _write(f, labels, {"accept": accept, "reject": reject, "clear": clear})
    logger.info("%s: labelled %d accepted, %d rejected, %d cleared", path.name, len(accept),
                len(reject), len(clear))  # fmt: skip
    return labels


def _write(f: h5py.File, labels: dict[int, int], change: dict[str, list[int]]) -> None:
    g = f.require_group("curation")
    ids = np.array(sorted(labels), np.int64)
    for name, values in (
        ("neuron_ids", ids),
        ("label", np.array([labels[i] for i in ids.tolist()], np.int8)),
    ):
        if name in g:
            del g[name]
        g.create_dataset(name, data=values)
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": _user(),
        **{k: v for k, v in change.items() if v},
    }
    line = np.frombuffer((json.dumps(entry) + "\n").encode(), np.uint8)
    if "log" not in g:
        g.create_dataset("log", (0,), np.uint8, maxshape=(None,), chunks=(4096,))
    log = g["log"]
    n = log.shape[0]
    log.resize((n + line.size,))
    log[n:] = line
    g.attrs["modified"] = entry["time"]


def read_log(f: h5py.File) -> list[dict]:
    """The curation log (one dict per change, oldest first)."""
    g = f.get("curation")
    if g is None or "log" not in g:
        return []
    text = g["log"][()].tobytes().decode("utf-8", "replace")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
