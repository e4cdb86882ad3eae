"""The results file's layout: names, dtypes and the reader's open (docs/results-format.md).

Symbols: A footprints (n_pixels × K, CSC, pixels flattened row-major), C denoised calcium,
S deconvolved activity, C_raw demixed trace, b0 baseline. Trace rows follow
``neurons/neuron_ids`` (every neuron ever present, in order of first appearance); footprint
columns follow ``footprints/neuron_ids`` (neurons present at the last flush).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from online_cnmfe.errors import StateFileError

FORMAT = "online-cnmfe-results"
FORMAT_VERSION = 1
REJECT_DTYPE = np.dtype([("frame_index", "<i8"), ("reason", "S200")])
# one row per (event, neuron): births, merges and removals as the model reported them
EVENT_DTYPE = np.dtype(
    [("frame_index", "<i8"), ("kind", "S16"), ("neuron_id", "<i8"), ("detail", "S120")]
)
IMAGE_NAMES = ("mean", "max", "corr", "pnr", "corr_pnr")  # images/ (results.summary)
FLAG_DTYPE = REJECT_DTYPE  # frames/flagged: processed, but did not update the model
FRAME_FIELDS = {
    "frame_index": np.int64,
    "seq": np.int64,
    "daq_frame": np.int64,
    "t_acq_ms": np.float64,
    "latency_ms": np.float32,
    "session": np.int32,  # row of bookkeeping/sessions
}
TRACE_NAMES = ("C", "S", "C_raw")
# per-frame motion correction, NaN where not measured: name -> trailing shape
MOTION_FIELDS = {"shifts": (2,), "quality": ()}
MOTION_SIGN = (
    "shifts[t] = (dy, dx) pixels: frame t shows the motion template's content moved by +(dy, dx) "
    "(frame[r, c] ~ template[r - dy, c - dx]); the model corrected it by sampling the frame at "
    "(r + dy, c + dx). quality: correlation of the band-passed frame with the template, [-1, 1]."
)
TRACE_CHUNKS = (32, 256)


def open_for_reading(path: Path) -> h5py.File:
    if not path.exists():
        raise StateFileError(f"results file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError:
        pass
    try:  # a writer still running or killed: SWMR readers may open it
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise StateFileError(f"cannot open results file {path}: {exc}") from exc


def create_datasets(f: h5py.File, dims: tuple[int, int]) -> None:
    """Create every group and (empty, resizable) dataset of a new results file.

    SWMR mode forbids creating objects later, so everything a session writes exists from the
    start; the writer then only resizes and fills.
    """
    n_pixels = dims[0] * dims[1]
    fp = f.create_group("footprints")
    fp.attrs.update(
        shape=np.array([n_pixels, 0], np.int64), dims=np.array(dims, np.int64), version=-1
    )
    for name, dtype in (("data", np.float32), ("indices", np.int32)):
        fp.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(16384,))
    fp.create_dataset("indptr", data=np.zeros(1, np.int32), maxshape=(None,), chunks=(1024,))
    fp.create_dataset("neuron_ids", (0,), np.int64, maxshape=(None,), chunks=(1024,))
    tr = f.create_group("traces")
    for name in TRACE_NAMES:
        tr.create_dataset(
            name, (0, 0), np.float32, maxshape=(None, None), chunks=TRACE_CHUNKS, fillvalue=0
        )
    ne = f.create_group("neurons")
    for name in ("neuron_ids", "birth_frame"):
        ne.create_dataset(name, (0,), np.int64, maxshape=(None,), chunks=(1024,))
    bg = f.create_group("background")
    bg.create_dataset("b0", dims, np.float32, fillvalue=0)
    bg.attrs["set"] = False
    fr = f.create_group("frames")
    for name, dtype in FRAME_FIELDS.items():
        fr.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))
    fr.create_dataset("dropped", (0, 2), np.int64, maxshape=(None, 2), chunks=(256, 2))
    fr.create_dataset("rejected", (0,), REJECT_DTYPE, maxshape=(None,), chunks=(256,))
    f.create_dataset("events", (0,), EVENT_DTYPE, maxshape=(None,), chunks=(256,))
    im = f.create_group("images")
    for name in IMAGE_NAMES:
        ds = im.create_dataset(name, dims, np.float32, fillvalue=np.nan)
        ds.attrs.update(set=False, n_frames=0, source="")
    fr.create_dataset("flagged", (0,), FLAG_DTYPE, maxshape=(None,), chunks=(256,))
    f.attrs["sanity_warning"] = ""  # the model's plausibility warning ("" = none)
    create_motion_datasets(f)


def create_motion_datasets(f: h5py.File) -> None:
    """The ``motion/`` group: per-frame shifts and registration quality."""
    mo = f.create_group("motion")
    mo.attrs["convention"] = MOTION_SIGN
    for name, tail in MOTION_FIELDS.items():
        mo.create_dataset(
            name, (0, *tail), np.float32, maxshape=(None, *tail), chunks=(4096, *tail),
            fillvalue=np.nan,
        )  # fmt: skip


def reason_rows(rows: list[tuple[int, str]]) -> np.ndarray:
    """``frames/rejected`` / ``frames/flagged`` rows: (frame index, reason UTF-8, cut to fit)."""
    size = REJECT_DTYPE["reason"].itemsize
    return np.array([(i, r.encode("utf-8", "replace")[:size]) for i, r in rows], REJECT_DTYPE)
