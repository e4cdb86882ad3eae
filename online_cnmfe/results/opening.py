"""Creating a results file, and reopening one to continue a session (``--resume``).

A new file gets its root attributes and every group and dataset before SWMR mode starts (SWMR
forbids creating objects later); a reopened one is first recovered (a killed writer) and
unfinalised (a cleanly closed file's removed neurons come back as rows), and learns the
datasets added since it was written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.blocks import opens_normally
from online_cnmfe.results.bookkeeping import create_bookkeeping
from online_cnmfe.results.finalise import unfinalise
from online_cnmfe.results.layout import FORMAT, FORMAT_VERSION, create_datasets
from online_cnmfe.results.motion_table import add_missing_datasets
from online_cnmfe.results.recovery import recover_results
from online_cnmfe.version import __version__


def create_file(
    path: Path, dims: tuple[int, int], params: CNMFEParams, frame_rate_hz: float,
    provenance: dict, prepare: Callable[[h5py.File], Any] | None,
) -> tuple[h5py.File, str]:  # fmt: skip
    """A new results file, in SWMR mode, and its random ``file_id``."""
    if not path.parent.is_dir():
        raise OSError(f"folder {path.parent} does not exist")
    f = h5py.File(path, "w", libver="latest")
    try:
        file_id = uuid.uuid4().hex
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            software_version=__version__,
            dims=np.array(dims, np.int64),
            frame_rate_hz=float(frame_rate_hz),
            params=params.to_json(),
            params_sha256=params.sha256(),
            input=json.dumps(provenance, default=str),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            n_frames=0,
            complete=False,
            aligned=False,
            file_id=file_id,
        )
        create_datasets(f, dims)
        create_bookkeeping(f)
        if prepare is not None:
            prepare(f)
        f.flush()
        f.swmr_mode = True
    except BaseException:
        f.close()
        raise
    return f, file_id


def reopen_file(path: Path, dims: tuple[int, int]) -> h5py.File:
    """An existing results file opened to append (not yet in SWMR mode: the caller may still
    create datasets, e.g. the bookkeeping of older files)."""
    if not opens_normally(path):
        recover_results(path, path)
    unfinalise(path)  # a cleanly closed file: removed neurons' rows come back
    f = h5py.File(path, "r+", libver="latest")
    try:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an online-cnmfe results file")
        if tuple(int(x) for x in f.attrs["dims"]) != tuple(dims):
            raise ValueError(f"it has dims {tuple(f.attrs['dims'])}, the stream has {dims}")
        # a file written before frames/flagged or motion/ existed gets them
        add_missing_datasets(f, int(f["frames/frame_index"].shape[0]))
        f.attrs["complete"] = False
        f.attrs["aligned"] = False  # attributes are created before SWMR mode, set during it
        if "file_id" not in f.attrs:
            f.attrs["file_id"] = uuid.uuid4().hex
    except BaseException:
        f.close()
        raise
    return f
