"""Recovery of a results file left by a killed writer (SWMR flag set, last block unflushed)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py

from online_cnmfe.errors import StateFileError
from online_cnmfe.results.finalise import free_bytes
from online_cnmfe.results.layout import FRAME_FIELDS, MOTION_FIELDS, TRACE_NAMES, open_for_reading

logger = logging.getLogger(__name__)

RESERVE_BYTES = 64 * 2**20  # left free on the disk after the recovered copy


def recover_results(src: str | Path, dst: str | Path) -> Path:
    """Copy a results file left by a killed writer into an ordinary, cleanly closed file.

    ``dst`` may equal ``src`` (the original is then replaced; a copy is kept as
    ``<src>.crashed`` when the disk has room for it). Returns the path of the recovered file.
    The copy is written beside ``dst`` and renamed into place.

    Raises
    ------
    StateFileError
        If the file cannot be read even in SWMR mode, or the disk lacks the space for the
        recovered copy (checked first: nothing is written then).
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".recovering")
    size = src.stat().st_size if src.exists() else 0
    free = free_bytes(dst.parent)
    keep_copy = dst == src
    if free is not None and free < size + RESERVE_BYTES:
        raise StateFileError(
            f"cannot recover {src}: {free / 2**20:.0f} MiB free on the disk of {dst.parent}, "
            f"the recovered copy needs {(size + RESERVE_BYTES) / 2**20:.0f} MiB; free space "
            "first (the file itself is untouched)"
        )
    if keep_copy and free is not None and free < 2 * size + RESERVE_BYTES:
        logger.warning("%s: too little space to keep a .crashed copy; recovering in place", src)
        keep_copy = False
    with open_for_reading(src) as f_in, h5py.File(tmp, "w", libver="latest") as f_out:
        n = int(f_in.attrs.get("n_frames", f_in["frames/frame_index"].shape[0]))
        for key, value in f_in.attrs.items():
            f_out.attrs[key] = value
        for name in f_in:
            f_in.copy(f_in[name], f_out, name=name)
        for name in FRAME_FIELDS:
            if name in f_out["frames"]:  # older files lack newer fields
                f_out[f"frames/{name}"].resize((n,))
        for name in MOTION_FIELDS if "motion" in f_out else ():
            f_out[f"motion/{name}"].resize(n, axis=0)
        for name in TRACE_NAMES:
            ds = f_out[f"traces/{name}"]
            ds.resize((ds.shape[0], n))
        f_out.attrs["n_frames"] = n
        f_out.attrs["recovered"] = True
    if keep_copy:
        shutil.copy2(src, src.with_name(src.name + ".crashed"))
    os.replace(tmp, dst)
    logger.info("recovered %s into %s (%d frames)", src, dst, n)
    return dst
