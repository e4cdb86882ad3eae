"""Finalising a results file at a clean close: trace rows aligned with the footprint columns.

While a session runs, trace rows follow ``neurons/neuron_ids`` (every neuron ever present) and
footprint columns ``footprints/neuron_ids`` (the neurons present now). At a clean close the
rows of neurons absent from the final footprints move to ``removed/`` and the others are put in
footprint-column order, the per-neuron ``quality`` table is computed (:mod:`.quality`), then
``complete`` is set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.results.layout import TRACE_CHUNKS, TRACE_NAMES
from online_cnmfe.results.quality import store_quality

logger = logging.getLogger(__name__)


def finalise(path: Path, block: int = 4096) -> None:
    """Align trace rows with the final footprint columns, then mark the file complete.

    Runs after the SWMR writer closed (the file is an ordinary HDF5 file again). Rows of
    neurons absent from the final footprints move to ``removed/``.
    """
    with h5py.File(path, "r+") as f:
        row_ids = f["neurons/neuron_ids"][:]
        fp_ids = f["footprints/neuron_ids"][:]
        if not np.array_equal(row_ids, fp_ids):
            row_of = {int(nid): r for r, nid in enumerate(row_ids.tolist())}
            keep = np.array([row_of.get(int(i), -1) for i in fp_ids], np.int64)
            gone = np.setdiff1d(np.arange(row_ids.shape[0]), keep[keep >= 0])
            birth = f["neurons/birth_frame"][:]
            removed = f.require_group("removed")
            for name, rows in (("neuron_ids", row_ids), ("birth_frame", birth)):
                removed.create_dataset(name, data=rows[gone])
            for name in TRACE_NAMES:
                old = f[f"traces/{name}"]
                n = old.shape[1]
                new = f["traces"].create_dataset(
                    name + ".new", (fp_ids.shape[0], n), np.float32, chunks=TRACE_CHUNKS,
                    maxshape=(None, None), fillvalue=0,
                )  # fmt: skip
                gone_ds = removed.create_dataset(name, (gone.shape[0], n), np.float32)
                for t0 in range(0, n, block):
                    chunk = old[:, t0 : t0 + block]
                    values = np.zeros((fp_ids.shape[0], chunk.shape[1]), np.float32)
                    values[keep >= 0] = chunk[keep[keep >= 0]]
                    new[:, t0 : t0 + block] = values
                    gone_ds[:, t0 : t0 + block] = chunk[gone]
                del f[f"traces/{name}"]
                f["traces"].move(name + ".new", name)
            new_birth = np.where(keep >= 0, birth[np.maximum(keep, 0)], -1)
            for name, values in (("neuron_ids", fp_ids), ("birth_frame", new_birth)):
                f[f"neurons/{name}"].resize((values.shape[0],))
                f[f"neurons/{name}"][:] = values
        _store_quality_or_say_why(f)
        f.attrs["complete"] = True


def _store_quality_or_say_why(f: h5py.File) -> None:
    """Per-neuron quality metrics (derived data: a failure leaves the file valid)."""
    try:
        store_quality(f)
    except (OSError, KeyError, ValueError, OnlineCNMFEError) as exc:
        logger.warning(
            "%s: no quality metrics (%s); `online-cnmfe curate --metrics` retries", f.filename, exc
        )
