"""Per-neuron quality metrics and the dF/F baseline, computed from a closed results file.

Symbols: a_k footprint of neuron k (column of A), c_k its denoised trace C, r_k = C_raw − C
its residual (demixing noise), s_k its deconvolved activity S, b0 the per-pixel baseline.
Frames before a neuron's birth column are left out of every statistic.

====================  ==========================================================================
column                meaning
====================  ==========================================================================
``neuron_id``         stable id (the footprint column's)
``snr``               std(c) / std(r): signal over demixing noise (CNMF-E's var(C)/var(YrA), as
                      an amplitude ratio)
``pnr``               max(c) / std(r): peak over noise
``noise``             std(r), in trace units
``spatial_corr``      Pearson correlation, over the footprint's pixels, of its weights a_k
                      with CNMF-E's seeding image corr × PNR (``images/corr_pnr``, of the
                      initialisation frames): the footprint's shape matches a blob there for a
                      real soma, not for neuropil or noise (NaN without the image or with
                      fewer than 3 pixels). On a simulated 128 × 160 movie (40 cells, 8 born
                      late) true neurons scored median 0.70, false ones median 0.12 (AUC
                      0.84; a box padded by a radius gave 0.73); a neuron born late and
                      silent during initialisation scores low too
``size_px``           pixels of a_k at or above 0.25 × its maximum (the contour drawn)
``f0``                background under the footprint, in trace units: (a·b0)/(a·a), the
                      least-squares amplitude of b0 in the footprint's shape
``peak_dff``          max(c) / f0: the largest dF/F
``event_rate_hz``     onsets of runs of s > 0 (events) per second alive
``birth_frame``       trace column at which the neuron appeared
====================  ==========================================================================

dF/F (:func:`dff`) is ``c / f0``: CNMF-E normalises C by the background under the footprint, so
a value of 0.5 means a transient half as bright as the baseline fluorescence there. It is NaN
where f0 <= 0 (b0 unknown, or removed by preprocessing: background-subtracted movies have no
baseline to divide by).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe.errors import StateFileError

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.25  # fraction of a footprint's maximum: its contour and size
QUALITY_DTYPE = np.dtype(
    [
        ("neuron_id", "<i8"),
        ("snr", "<f4"),
        ("pnr", "<f4"),
        ("noise", "<f4"),
        ("spatial_corr", "<f4"),
        ("size_px", "<i4"),
        ("f0", "<f4"),
        ("peak_dff", "<f4"),
        ("event_rate_hz", "<f4"),
        ("birth_frame", "<i8"),
    ]
)
QUALITY_COLUMNS = QUALITY_DTYPE.names


def _footprints(f: h5py.File) -> tuple[scipy.sparse.csc_array, np.ndarray, tuple[int, int]]:
    fp = f["footprints"]
    dims = tuple(int(x) for x in f.attrs["dims"])
    ids = fp["neuron_ids"][:]
    indptr = fp["indptr"][:]
    if indptr.shape[0] != ids.shape[0] + 1:
        raise StateFileError(f"{f.filename}: footprints are incomplete (a crash mid-write?)")
    A = scipy.sparse.csc_array(
        (fp["data"][:], fp["indices"][:], indptr), shape=(dims[0] * dims[1], ids.shape[0])
    )
    return A, ids, dims


def _trace_stats(f: h5py.File, rows: np.ndarray, birth: np.ndarray, block: int) -> dict:
    """Streaming sums over the trace columns (``block`` frames at a time)."""
    k = rows.shape[0]
    n = int(f.attrs.get("n_frames", f["traces/C"].shape[1]))
    n = min(n, f["traces/C"].shape[1])
    acc = {name: np.zeros(k) for name in ("n", "c1", "c2", "r1", "r2", "spikes")}
    acc["cmax"] = np.full(k, -np.inf)
    ok = rows >= 0
    prev_active = np.zeros(k, bool)  # S > 0 in the last column of the previous block
    for t0 in range(0, n, block):
        t1 = min(n, t0 + block)
        C = np.zeros((k, t1 - t0), np.float64)
        R = np.zeros_like(C)
        S = np.zeros_like(C)
        C[ok] = f["traces/C"][:, t0:t1][rows[ok]]
        R[ok] = f["traces/C_raw"][:, t0:t1][rows[ok]] - C[ok]
        S[ok] = f["traces/S"][:, t0:t1][rows[ok]]
        alive = (np.arange(t0, t1)[None, :] >= birth[:, None]) & ok[:, None]
        acc["n"] += alive.sum(axis=1)
        acc["c1"] += np.where(alive, C, 0).sum(axis=1)
        acc["c2"] += np.where(alive, C * C, 0).sum(axis=1)
        acc["r1"] += np.where(alive, R, 0).sum(axis=1)
        acc["r2"] += np.where(alive, R * R, 0).sum(axis=1)
        active = alive & (S > 0)
        before = np.concatenate([prev_active[:, None], active[:, :-1]], axis=1)
        acc["spikes"] += (active & ~before).sum(axis=1)  # onsets of S > 0 runs
        prev_active = active[:, -1]
        acc["cmax"] = np.maximum(acc["cmax"], np.where(alive, C, -np.inf).max(axis=1))
    return acc


def _std(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        return np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))


def _spatial_corr(A, corr: np.ndarray | None) -> np.ndarray:
    out = np.full(A.shape[1], np.nan, np.float32)
    if corr is None:
        return out
    image = corr.ravel().astype(np.float64)
    for k in range(A.shape[1]):
        sl = slice(A.indptr[k], A.indptr[k + 1])
        a, x = A.data[sl].astype(np.float64), image[A.indices[sl]]
        ok = np.isfinite(x)
        if ok.sum() < 3 or np.ptp(a[ok]) <= 0 or np.ptp(x[ok]) <= 0:
            continue
        out[k] = np.corrcoef(a[ok], x[ok])[0, 1]
    return out


def neuron_quality(f: h5py.File, block: int = 4096) -> np.ndarray:
    """Quality metrics of every neuron of the final footprints (module docstring).

    Parameters
    ----------
    f : h5py.File
        An open results file (docs/results-format.md).
    block : int
        Trace columns read at a time (memory: 3 × rows × block float64).

    Returns
    -------
    ndarray of shape (K,), dtype QUALITY_DTYPE
        One row per footprint column, in footprint order.
    """
    A, ids, dims = _footprints(f)
    row_ids = f["neurons/neuron_ids"][:]
    row_birth = f["neurons/birth_frame"][:]
    row_of = {int(n): r for r, n in enumerate(row_ids.tolist())}
    rows = np.array([row_of.get(int(n), -1) for n in ids.tolist()], np.int64)
    birth = np.where(rows >= 0, row_birth[np.maximum(rows, 0)] if row_birth.size else 0, 0)
    st = _trace_stats(f, rows, birth, block)
    rate = float(f.attrs.get("frame_rate_hz", 20.0)) or 20.0
    noise = _std(st["r1"], st["r2"], st["n"])
    sd_c = _std(st["c1"], st["c2"], st["n"])
    cmax = np.where(np.isfinite(st["cmax"]), st["cmax"], np.nan)
    b0 = f["background/b0"][:].ravel().astype(np.float64)
    if not bool(f["background"].attrs.get("set", True)):
        b0 = np.zeros_like(b0)
    aa = np.asarray(A.multiply(A).sum(axis=0)).ravel()
    ab = A.T @ b0
    corr_ds = f.get("images/corr_pnr")
    corr = corr_ds[()] if corr_ds is not None and corr_ds.attrs.get("set", False) else None
    col_max = A.max(axis=0).toarray().ravel() if A.shape[1] else np.zeros(0)
    out = np.zeros(ids.shape[0], QUALITY_DTYPE)
    with np.errstate(invalid="ignore", divide="ignore"):
        f0 = np.where((aa > 0) & (ab > 0), ab / np.where(aa > 0, aa, 1), np.nan)
        out["snr"] = np.where(noise > 0, sd_c / noise, np.nan)
        out["pnr"] = np.where(noise > 0, cmax / noise, np.nan)
        out["peak_dff"] = cmax / f0
        out["event_rate_hz"] = np.where(st["n"] > 0, st["spikes"] / (st["n"] / rate), np.nan)
    out["neuron_id"] = ids
    out["noise"] = noise
    out["f0"] = f0
    out["birth_frame"] = birth
    out["spatial_corr"] = _spatial_corr(A, corr)
    above = A.data >= MASK_THRESHOLD * np.repeat(col_max, np.diff(A.indptr))
    out["size_px"] = np.add.reduceat(above, A.indptr[:-1]) if A.nnz else 0
    out["size_px"][np.diff(A.indptr) == 0] = 0
    return out


def write_quality(path: str | Path) -> np.ndarray:
    """Compute :func:`neuron_quality` and store it as the ``quality`` table of a closed file.

    Raises
    ------
    StateFileError
        If the file cannot be opened for writing (still being written, read-only, missing).
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r+")
    except OSError as exc:
        raise StateFileError(
            f"cannot open {path} for writing ({exc}); is the session still being written?"
        ) from exc
    with f:
        table = store_quality(f)
    logger.info("quality metrics of %d neurons written to %s", table.shape[0], path)
    return table


def store_quality(f: h5py.File) -> np.ndarray:
    """Compute :func:`neuron_quality` and (re)write the ``quality`` table of an open file."""
    table = neuron_quality(f)
    if "quality" in f:
        del f["quality"]
    ds = f.create_dataset("quality", data=table)
    ds.attrs["doc"] = "per-neuron quality metrics: online_cnmfe.results.quality"
    return table


def read_quality(f: h5py.File) -> np.ndarray | None:
    """The ``quality`` table of an open results file, or None when it has none."""
    ds = f.get("quality")
    if ds is None:
        return None
    table = ds[()]
    missing = [c for c in QUALITY_COLUMNS if c not in (table.dtype.names or ())]
    return None if missing else table


def dff(C: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """dF/F = C / f0 per row (NaN where f0 is not positive).

    Parameters
    ----------
    C : ndarray of shape (K, T)
    f0 : ndarray of shape (K,)

    Examples
    --------
    >>> dff(np.array([[0.0, 5.0], [1.0, 2.0]]), np.array([10.0, np.nan])).tolist()
    [[0.0, 0.5], [nan, nan]]
    """
    f0 = np.asarray(f0, np.float64)
    scale = np.where(np.isfinite(f0) & (f0 > 0), 1.0 / np.where(f0 > 0, f0, 1.0), np.nan)
    return (np.asarray(C, np.float64) * scale[:, None]).astype(np.float32)
