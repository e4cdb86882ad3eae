"""Neuron ids published only below a durable high-water mark (``--resume`` never reuses one).

A subscriber learns a neuron's id from the traces, trigger, event and footprints messages the
moment it is born; the results file learns it at its next flush. After a SIGKILL between the
two, the file's largest id (and the last checkpoint's) is below ids the subscribers already saw,
and a resumed engine would give such an id to another cell. So before any message carries an
id at or above the reserved mark, the engine writes a new mark ``RESERVE_BLOCK`` ids higher to
``<stem>.ids.json`` beside the results file (written to a temporary file, fsynced, renamed: a
kill leaves the old mark or the new one), and ``--resume`` starts past it
(:func:`read_reservation`). One small write per ``RESERVE_BLOCK`` births, on the model thread.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from online_cnmfe.errors import StateFileError

logger = logging.getLogger(__name__)

FORMAT = "online-cnmfe-id-reservation"
RESERVE_BLOCK = 1024  # ids reserved at a time
MAX_ID = 2**53  # a reservation beyond this is not one (ids are int64, and JSON-safe below it)


def reservation_path(out: Path) -> Path:
    """The id reservation of a results file: ``<stem>.ids.json`` beside it."""
    return out.with_name(out.stem + ".ids.json")


def read_reservation(out: Path) -> int:
    """The first id no message of an earlier session of ``out`` can have carried (0 when the
    file does not exist).

    Raises
    ------
    StateFileError
        The file exists but is not a reservation (damaged or foreign).
    """
    path = reservation_path(Path(out))
    if not path.exists():
        return 0
    try:
        doc = json.loads(path.read_text())
        ok = isinstance(doc, dict) and doc.get("format") == FORMAT
        first_free = doc["first_free"] if ok else None
        ok = ok and isinstance(first_free, int) and not isinstance(first_free, bool)
    except (OSError, ValueError, KeyError) as exc:
        raise StateFileError(f"{path} cannot be read ({exc}); {_WAY_OUT}") from exc
    if not ok or not 0 <= first_free <= MAX_ID:
        raise StateFileError(f"{path} is not a neuron id reservation; {_WAY_OUT}")
    return first_free


_WAY_OUT = (
    "restore it, or delete it to resume anyway (ids published after the results file's last "
    "flush may then be given to other cells)"
)


class IdReservation:
    """The durable mark below which published ids lie (see the module docstring).

    ``path`` None (no results file) makes :meth:`cover` a no-op.
    """

    def __init__(self, out: Path | None, first_free: int = 0) -> None:
        self.path = None if out is None else reservation_path(Path(out))
        self.first_free = int(first_free)  # ids >= this may not be published yet
        self.written = 0  # reservation files written this session

    def cover(self, ids: np.ndarray) -> None:
        """Make every id in ``ids`` safe to publish: reserve past the largest first if needed."""
        if self.path is None or len(ids) == 0:
            return
        top = int(np.max(ids))
        if top < self.first_free:
            return
        try:
            self._write(top + 1 + RESERVE_BLOCK)
        except OSError as exc:  # the session goes on (the live experiment comes first)
            logger.error(
                "cannot write the neuron id reservation %s (%s): ids are published without "
                "it from now on, and a --resume of this session could give one of them to "
                "another cell", self.path, exc,
            )  # fmt: skip
            self.path = None

    def _write(self, first_free: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"format": FORMAT, "first_free": int(first_free)})
        with open(tmp, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.first_free = int(first_free)
        self.written += 1
        logger.debug("neuron ids below %d reserved in %s", first_free, self.path)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
