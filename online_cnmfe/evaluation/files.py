"""Readers of the result and truth files, and the evaluator's report (table and JSON line).

Layouts: docs/results-format.md (result) and docs/simulation-format.md (truth). Used by
:mod:`online_cnmfe.evaluation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from online_cnmfe.errors import InputFileError


# ---- reading files -------------------------------------------------------------------------
def _open(path, kind: str) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{kind} file {path} does not exist")
    if not path.is_file():
        raise InputFileError(f"{kind} path {path} is not a file")
    try:
        return h5py.File(path, "r")
    except OSError:
        pass
    try:  # a results file whose writer was killed (or still runs) opens as an SWMR reader
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise InputFileError(f"{kind} file {path} is not a readable HDF5 file ({exc})") from None


def _dataset(f: h5py.File, name: str, kind: str, doc: str) -> np.ndarray:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise InputFileError(
            f"{kind} file {f.filename} has no dataset '{name}'; expected the layout of {doc}"
        )
    return obj[()]


def _rejected_columns(f: h5py.File, k: int) -> np.ndarray:
    """Footprint columns the user rejected (``curation/``, docs/results-format.md)."""
    g, ids = f.get("curation"), f.get("footprints/neuron_ids")
    if g is None or "neuron_ids" not in g or "label" not in g or ids is None:
        return np.zeros(0, np.int64)
    labels = dict(zip(g["neuron_ids"][()].tolist(), g["label"][()].tolist(), strict=False))
    cols = [j for j, nid in enumerate(ids[()][:k].tolist()) if labels.get(nid, 0) < 0]
    return np.asarray(cols, np.int64)


def read_result(path, include_rejected: bool = False) -> dict:
    """Read footprints (CSC), traces C and frame bookkeeping from a results file.

    Neurons the user rejected (``online-cnmfe curate``, the review's R key) are left out
    unless ``include_rejected``.

    Returns
    -------
    dict
        ``A`` (csc_array, n_pixels x K, float32), ``dims`` (H, W), ``C`` (K, T) float32,
        ``frame_index`` (T,) int64 (0..T-1 when absent), ``birth_frame`` (K,) int64 or None,
        ``n_rejected`` the number of rejected neurons left out.

    Raises
    ------
    InputFileError
        Missing file, not HDF5, missing dataset, or inconsistent shapes.
    """
    doc = "docs/results-format.md"
    with _open(path, "result") as f:
        data = _dataset(f, "footprints/data", "result", doc).astype(np.float32)
        indices = _dataset(f, "footprints/indices", "result", doc).astype(np.int64)
        indptr = _dataset(f, "footprints/indptr", "result", doc).astype(np.int64)
        C = _dataset(f, "traces/C", "result", doc).astype(np.float32)
        dims = f["footprints"].attrs.get("dims", f.attrs.get("dims"))
        if dims is None:
            raise InputFileError(
                f"result file {path} has no 'dims' attribute on footprints/ or the root; "
                f"expected [H, W] as in {doc}"
            )
        dims = (int(dims[0]), int(dims[1]))
        frame_index = f.get("frames/frame_index")
        frame_index = None if frame_index is None else frame_index[()].astype(np.int64)
        birth = f.get("neurons/birth_frame")
        birth = None if birth is None else birth[()].astype(np.int64)
        rejected = np.zeros(0, np.int64) if include_rejected else _rejected_columns(f, C.shape[0])
    k = len(indptr) - 1
    n_pixels = dims[0] * dims[1]
    if k < 0 or indptr[-1] != len(data) or len(indices) != len(data):
        raise InputFileError(f"result file {path}: footprints/indptr does not match data/indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_pixels):
        raise InputFileError(
            f"result file {path}: footprint pixel indices exceed dims {dims[0]}x{dims[1]}"
        )
    if C.ndim != 2 or C.shape[0] != k:
        raise InputFileError(
            f"result file {path}: traces/C has shape {C.shape} but footprints have {k} "
            "columns; expected (K, T)"
        )
    if frame_index is None:
        frame_index = np.arange(C.shape[1], dtype=np.int64)
    elif len(frame_index) != C.shape[1]:
        raise InputFileError(
            f"result file {path}: frames/frame_index has {len(frame_index)} entries but "
            f"traces/C has {C.shape[1]} frames"
        )
    if not np.isfinite(data).all():
        raise InputFileError(
            f"result file {path}: footprints/data holds {int((~np.isfinite(data)).sum())} "
            "NaN or infinite values; footprints must be finite"
        )
    A = scipy.sparse.csc_array((data, indices, indptr), shape=(n_pixels, k))
    if rejected.size:
        keep = np.setdiff1d(np.arange(k), rejected)
        A, C = scipy.sparse.csc_array(A[:, keep]), C[keep]
        birth = None if birth is None or birth.shape[0] != k else birth[keep]
    return {
        "A": A, "dims": dims, "C": C, "frame_index": frame_index, "birth_frame": birth,
        "n_rejected": int(rejected.size),
    }  # fmt: skip


def read_truth(path) -> dict:
    """Read the ground truth of a simulation file (docs/simulation-format.md).

    Returns
    -------
    dict
        ``A`` (csc_array, n_pixels x K), ``dims``, ``C`` (K, T), ``pnr`` (K,),
        ``birth_frame`` (K,).
    """
    doc = "docs/simulation-format.md"
    with _open(path, "truth") as f:
        C = _dataset(f, "truth/C", "truth", doc).astype(np.float32)
        pnr = _dataset(f, "truth/pnr", "truth", doc).astype(np.float64)
        ds = f.get("truth/footprints")
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
            raise InputFileError(
                f"truth file {path} has no (K, H, W) dataset 'truth/footprints'; expected the "
                f"layout of {doc}"
            )
        k, h, w = ds.shape
        if isinstance(f.get("truth/footprints_csc/indptr"), h5py.Dataset):
            g = f["truth/footprints_csc"]
            A = scipy.sparse.csc_array(
                (g["data"][()], g["indices"][()], g["indptr"][()]), shape=(h * w, k)
            )
        else:  # dense only: sparsify in slices (K x H x W need not fit in memory)
            parts = [
                scipy.sparse.csc_array(ds[i : i + 64].reshape(-1, h * w).T.astype(np.float32))
                for i in range(0, k, 64)
            ]
            A = (
                scipy.sparse.csc_array(scipy.sparse.hstack(parts, format="csc"))
                if parts
                else scipy.sparse.csc_array((h * w, 0), dtype=np.float32)
            )
        birth = f.get("truth/birth_frame")
        birth = np.zeros(len(pnr), np.int64) if birth is None else birth[()].astype(np.int64)
    if C.ndim != 2 or not (k == len(C) == len(pnr) == len(birth)):
        raise InputFileError(
            f"truth file {path}: truth/footprints ({k} neurons), truth/C {C.shape} and "
            f"truth/pnr {pnr.shape} disagree on the number of neurons"
        )
    return {"A": A, "dims": (h, w), "C": C, "pnr": pnr, "birth_frame": birth}


# ---- report --------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.{digits}f}"


def format_report(metrics: dict) -> str:
    """A human-readable table of :func:`evaluate`'s metrics (no trailing JSON)."""
    p = metrics["params"]
    frames = metrics["frames_scored"]
    lines = [
        f"matching: footprints >= {p['threshold']:g} x max, IoU >= {p['min_iou']:g}, "
        f"centroid distance <= {p['max_dist_px']:g} px",
        "traces scored on "
        + (
            f"frames {frames[0]}-{frames[1] - 1} ({metrics['n_frames_scored']} frames)"
            if frames
            else "no frames"
        ),
        *(
            [f"{metrics['n_rejected']} neuron(s) rejected by curation left out"]
            if metrics.get("n_rejected")
            else []
        ),
        "",
        f"{'neurons':<14}{'true':>6}{'found':>7}{'matched':>9}{'recall':>8}{'precision':>11}"
        f"{'F1':>7}{'corr med':>10}{'corr mean':>11}",
    ]

    def row(label, n_true, n_found, n_matched, recall, precision, f1, cmed, cmean):
        lines.append(
            f"{label:<14}{_fmt(n_true):>6}{_fmt(n_found):>7}{_fmt(n_matched):>9}"
            f"{_fmt(recall):>8}{_fmt(precision):>11}{_fmt(f1):>7}{_fmt(cmed):>10}"
            f"{_fmt(cmean):>11}"
        )

    m = metrics
    row(
        "all",
        m["n_true"],
        m["n_found"],
        m["n_matched"],
        m["recall"],
        m["precision"],
        m["f1"],
        m["trace_corr_median"],
        m["trace_corr_mean"],
    )
    row(
        f"PNR >= {m['high_pnr_min']:g}",
        m["n_true_high_pnr"],
        None,
        m["n_matched_high_pnr"],
        m["recall_high_pnr"],
        m["precision_high_pnr"],
        m["f1_high_pnr"],
        m["trace_corr_median_high_pnr"],
        m["trace_corr_mean_high_pnr"],
    )
    for b in m["pnr_bins"]:
        row(
            f"PNR {b['label']}",
            b["n_true"],
            None,
            b["n_matched"],
            b["recall"],
            None,
            None,
            b["trace_corr_median"],
            None,
        )
    if m["late"]:
        late = m["late"]
        row(
            "late-born",
            late["n_true"],
            None,
            late["n_matched"],
            late["recall"],
            None,
            None,
            late["trace_corr_median"],
            None,
        )
        if late["detection_delay_frames_median"] is not None:
            lines.append(
                f"late-born neurons found a median of {late['detection_delay_frames_median']:g} "
                "frames after their first spike"
            )
    lines.append(
        f"matched footprints: cosine median {_fmt(m['footprint_cosine_median'])}, "
        f"mean {_fmt(m['footprint_cosine_mean'])}; IoU median {_fmt(m['iou_median'])}; "
        f"centroid distance median {_fmt(m['centroid_dist_median_px'], 2)} px"
    )
    return "\n".join(lines)


def metrics_json(metrics: dict) -> str:
    """The metrics as one JSON line (NaN-free)."""
    return json.dumps(metrics, sort_keys=True, allow_nan=False, default=_json_default)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
