"""Write a simulated movie and its ground truth to HDF5 (and optionally TIFF).

The layout is documented in docs/simulation-format.md; the evaluator
(``online-cnmfe evaluate``) reads it back.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from tqdm import tqdm

from acquisition.errors import InputFileError

if TYPE_CHECKING:
    from acquisition.simulator import MiniscopeSimulator

logger = logging.getLogger(__name__)

FORMAT = "online-cnmfe-simulation"
FORMAT_VERSION = 1
_WRITE_CHUNK = 64  # frames rendered and written at a time (a multiple of RENDER_FRAMES)


def _software_version() -> str:
    # The distribution's version, read from its metadata (no import of online_cnmfe).
    try:
        return version("online-cnmfe")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def write_simulation(
    path: str | Path,
    simulator: MiniscopeSimulator,
    n_frames: int | None = None,
    fmt: str = "h5",
    progress: bool = True,
) -> dict:
    """Render ``n_frames`` frames of ``simulator`` and write movie + truth to ``path``.

    Parameters
    ----------
    path : str or Path
        HDF5 file to create (overwritten if it exists).
    simulator : MiniscopeSimulator
    n_frames : int, optional
        Frames to write; defaults to ``simulator.params.n_frames`` (required if endless).
    fmt : {'h5', 'tiff'}
        'tiff' also writes the movie to ``path`` with suffix ``.tif`` (the truth stays in HDF5).
    progress : bool
        Show a tqdm bar on stderr (only when stderr is a terminal).

    Returns
    -------
    dict
        ``path``, ``tiff_path`` (or None), ``n_frames``, ``n_neurons``, ``seconds``,
        ``n_clipped``, ``movie_bytes``.

    Raises
    ------
    ValueError
        Bad ``fmt`` or ``n_frames``.
    InputFileError
        The output cannot be created.
    """
    if fmt not in ("h5", "tiff"):
        raise ValueError(f"fmt={fmt!r} is not supported; expected 'h5' or 'tiff'")
    p = simulator.params
    n_frames = p.n_frames if n_frames is None else int(n_frames)
    if n_frames is None or n_frames < 1 or (p.n_frames is not None and n_frames > p.n_frames):
        raise ValueError(
            f"n_frames={n_frames!r} is invalid; expected 1..{p.n_frames or 'any'} "
            "(and required when the simulator is endless)"
        )
    path = Path(path)
    tiff_path = path.with_suffix(".tif") if fmt == "tiff" else None
    h, w = p.dims
    t_start = time.perf_counter()
    try:
        f = h5py.File(path, "w")
    except OSError as exc:
        raise InputFileError(f"cannot create simulation file {path}: {exc}") from exc
    bar = tqdm(
        total=n_frames,
        unit="frame",
        desc="simulate",
        disable=not progress or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    try:
        with f:
            _write_attrs(f, simulator, n_frames)
            movie = f.create_dataset(
                "movie", shape=(n_frames, h, w), dtype=p.dtype, chunks=(1, h, w)
            )
            movie.attrs.update(
                units="movie units (arbitrary fluorescence)",
                offset=0.0,
                gain=1.0,
                noise_sigma=p.noise_sigma,
                dims_order="T, H, W (frames, rows, cols)",
            )
            for t0 in range(0, n_frames, _WRITE_CHUNK):
                t1 = min(n_frames, t0 + _WRITE_CHUNK)
                chunk = simulator.frames(t0, t1)
                movie[t0:t1] = chunk
                bar.update(t1 - t0)
            _write_truth(f, simulator, n_frames)
            if tiff_path is not None:
                _write_tiff(tiff_path, movie)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    return {
        "path": str(path),
        "tiff_path": str(tiff_path) if tiff_path else None,
        "n_frames": n_frames,
        "n_neurons": p.n_neurons,
        "dims": [h, w],
        "seconds": seconds,
        "n_clipped": simulator.n_clipped,
        "movie_bytes": n_frames * h * w * np.dtype(p.dtype).itemsize,
    }


def _write_tiff(tiff_path: Path, movie: h5py.Dataset) -> None:
    import tifffile

    frames = (movie[i] for i in range(movie.shape[0]))
    try:
        tifffile.imwrite(
            tiff_path,
            data=frames,
            shape=movie.shape,
            dtype=movie.dtype,
            bigtiff=movie.size * movie.dtype.itemsize > 3_500_000_000,
        )
    except OSError as exc:
        raise InputFileError(f"cannot write TIFF file {tiff_path}: {exc}") from exc


def _write_attrs(f: h5py.File, simulator: MiniscopeSimulator, n_frames: int) -> None:
    p = simulator.params
    f.attrs.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        frame_rate_hz=p.frame_rate_hz,
        dims=list(p.dims),
        n_frames=n_frames,
        params=p.to_json(),
        software_version=_software_version(),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _write_truth(f: h5py.File, simulator: MiniscopeSimulator, n_frames: int) -> None:
    p = simulator.params
    truth = simulator.truth
    g = f.create_group("truth")
    g.attrs["description"] = (
        "y_t = background_t + shift(footprints^T C[:, t], motion[t]) + noise; "
        "C[:, t] = g1 C[:, t-1] + g2 C[:, t-2] + S[:, t]; pnr = max_t C / noise_sigma"
    )
    g.attrs["noise_sigma"] = p.noise_sigma
    k = truth.n_neurons
    fp = g.create_dataset(
        "footprints",
        shape=(k, *p.dims),
        dtype=np.float32,
        chunks=(1, *p.dims) if k else None,
        compression="gzip",
        shuffle=True,
    )
    for i in range(0, k, 64):  # dense in slices: K x H x W may not fit in memory at once
        block = truth.A[:, i : i + 64].toarray().T
        fp[i : i + block.shape[0]] = block.reshape(-1, *p.dims)
    csc = g.create_group("footprints_csc")  # the same A, sparse (fast to read for large K)
    A = truth.A.tocsc()
    A.sort_indices()
    csc.create_dataset("data", data=A.data.astype(np.float32))
    csc.create_dataset("indices", data=A.indices.astype(np.int32))
    csc.create_dataset("indptr", data=A.indptr.astype(np.int64))
    csc.attrs.update(shape=[p.height * p.width, k], dims=list(p.dims))
    C = simulator.calcium(0, n_frames)
    g.create_dataset("C", data=C, chunks=True)
    g.create_dataset("S", data=simulator.spikes(0, n_frames), chunks=True)
    pnr = C.max(axis=1, initial=0) / np.float32(p.noise_sigma)
    g.create_dataset("pnr", data=pnr.astype(np.float32))
    g.create_dataset("birth_frame", data=truth.birth_frame.astype(np.int64))
    g.create_dataset("g", data=truth.g)
    g.create_dataset("motion", data=simulator.motion(0, n_frames))
    g.create_dataset("background_mean", data=truth.background_mean)
    g.create_dataset("centres", data=truth.centres.astype(np.float32))
    g.create_dataset("firing_rate_hz", data=truth.firing_rate_hz)
    g.create_dataset("corrupt", data=simulator.corrupt_frames(0, n_frames))
    if truth.fov_mask is not None:
        g.create_dataset("fov_mask", data=truth.fov_mask)


def load_simulator(path: str | Path) -> MiniscopeSimulator:
    """Rebuild the simulator that wrote a simulation file (from its ``params`` attribute).

    Raises
    ------
    InputFileError
        The file is missing, not HDF5 or not a simulation file.
    """
    from acquisition.simulator import MiniscopeSimulator, SimulationParams

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"simulation file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputFileError(
                    f"{path} is not a simulation file (attribute format="
                    f"{f.attrs.get('format')!r}, expected {FORMAT!r})"
                )
            params = json.loads(f.attrs["params"])
    except OSError as exc:
        raise InputFileError(f"{path} is not a readable HDF5 file: {exc}") from exc
    return MiniscopeSimulator(SimulationParams.from_dict(params))
