"""Recovery of a results file left by a killed writer (SWMR flag set, last block unflushed)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py

from online_cnmfe.results.layout import FRAME_FIELDS, MOTION_FIELDS, TRACE_NAMES, open_for_reading

logger = logging.getLogger(__name__)


def recover_results(src: str | Path, dst: str | Path) -> Path:
    """Copy a results file left by a killed writer into an ordinary, cleanly closed file.

    ``dst`` may equal ``src`` (the original is then replaced; a copy is kept as
    ``<src>.crashed``). Returns the path of the recovered file.

    Raises
    ------
    StateFileError
        If the file cannot be read even in SWMR mode.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".recovering")
    with open_for_reading(src) as f_in, h5py.File(tmp, "w", libver="latest") as f_out:
        n = int(f_in.attrs.get("n_frames", f_in["frames/frame_index"].shape[0]))
        for key, value in f_in.attrs.items():
            f_out.attrs[key] = value
        for name in f_in:
            f_in.copy(f_in[name], f_out, name=name)
        for name in FRAME_FIELDS:
            f_out[f"frames/{name}"].resize((n,))
        for name in MOTION_FIELDS if "motion" in f_out else ():
            f_out[f"motion/{name}"].resize(n, axis=0)
        for name in TRACE_NAMES:
            ds = f_out[f"traces/{name}"]
            ds.resize((ds.shape[0], n))
        f_out.attrs["n_frames"] = n
        f_out.attrs["recovered"] = True
    if dst == src:
        shutil.copy2(src, src.with_name(src.name + ".crashed"))
    os.replace(tmp, dst)
    logger.info("recovered %s into %s (%d frames)", src, dst, n)
    return dst
