"""Score an extraction (footprints A, traces C) against the simulator's ground truth.

Matching follows CaImAn's ``register_ROIs``: each footprint is binarised at ``threshold`` times
its maximum, the cost of pairing true neuron i with estimate j is ``1 - IoU(i, j)``, pairs with
IoU below ``min_iou`` or centroids further apart than ``max_dist_px`` are forbidden, and the
Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) picks the pairs.

Reported: recall = matched / n_true, precision = matched / n_found, F1; Pearson correlation of
matched traces (estimated C vs true C over the scored frames); cosine similarity of matched
(unthresholded) footprints; recall and trace correlation per PNR bin; the same metrics restricted
to neurons of PNR >= ``min_pnr`` (estimates matched to lower-PNR neurons are then left out of
the precision, neither counted right nor wrong); recall of late-born neurons.

Symbols: A (n_pixels x K) footprints with pixels flattened row-major, C (K x T) calcium traces.
File layouts: docs/results-format.md (result) and docs/simulation-format.md (truth).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.optimize
import scipy.sparse

from online_cnmfe.errors import InputFileError
from online_cnmfe.evaluation.files import format_report, metrics_json, read_result, read_truth

__all__ = [
    "EvaluationParams",
    "FootprintMatch",
    "estimate_from_arrays",
    "evaluate",
    "evaluate_files",
    "format_report",
    "match_footprints",
    "metrics_json",
    "read_result",
    "read_truth",
    "truth_from_simulator",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationParams:
    """How footprints are matched and which frames and neurons are scored.

    Parameters
    ----------
    threshold : float
        A footprint's mask is where it is >= ``threshold`` x its maximum (0 < threshold < 1).
    min_iou : float
        Smallest intersection-over-union of a matched pair.
    max_dist_px : float
        Largest centroid distance of a matched pair, in pixels.
    frames : (int, int) or None
        Score traces on truth frames ``[start, stop)`` only (None: every frame the result
        covers). Matching always uses the final footprints.
    pnr_bins : tuple of float
        Bin edges of the per-PNR breakdown (default: < 5, 5-10, >= 10).
    min_pnr : float
        Threshold of the "high PNR" metrics.
    """

    threshold: float = 0.2
    min_iou: float = 0.3
    max_dist_px: float = 10.0
    frames: tuple[int, int] | None = None
    pnr_bins: tuple[float, ...] = (5.0, 10.0)
    min_pnr: float = 5.0

    def __post_init__(self) -> None:
        def check(name, ok, allowed):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range; {allowed}")

        check("threshold", 0 < self.threshold < 1, "allowed: (0, 1)")
        check("min_iou", 0 < self.min_iou <= 1, "allowed: (0, 1]")
        check("max_dist_px", self.max_dist_px > 0, "allowed: > 0")
        if self.frames is not None:
            start, stop = self.frames
            check("frames", 0 <= start < stop, "expected (start, stop) with 0 <= start < stop")
        edges = list(self.pnr_bins)
        check(
            "pnr_bins",
            edges == sorted(edges) and all(e > 0 for e in edges),
            "expected increasing positive edges",
        )
        check("min_pnr", self.min_pnr >= 0, "allowed: >= 0")


@dataclass(frozen=True, slots=True)
class FootprintMatch:
    """Pairs chosen by :func:`match_footprints` (index into the true and estimated columns)."""

    true_index: np.ndarray  # (n_matched,) int64
    est_index: np.ndarray  # (n_matched,) int64
    iou: np.ndarray  # (n_matched,) float64
    distance_px: np.ndarray  # (n_matched,) float64
    n_true: int
    n_found: int


# ---- matching ------------------------------------------------------------------------------
def _masks_and_centroids(A: scipy.sparse.csc_array, dims, threshold: float):
    """Binary masks (csc bool) and weighted centroids (K, 2) of the thresholded footprints."""
    A = scipy.sparse.csc_array(A, dtype=np.float64, copy=True)  # sum_duplicates sorts in place
    A.sum_duplicates()
    k = A.shape[1]
    col = np.repeat(np.arange(k), np.diff(A.indptr))
    colmax = np.zeros(k)
    np.maximum.at(colmax, col, A.data)
    keep = (A.data > 0) & (A.data >= threshold * colmax[col])
    values = np.where(keep, A.data, 0.0)
    mask = scipy.sparse.csc_array((keep.astype(np.float64), A.indices, A.indptr), shape=A.shape)
    pix_row, pix_col = np.divmod(A.indices, dims[1])
    weight = np.bincount(col, values, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.stack(
            [
                np.bincount(col, values * pix_row, minlength=k) / weight,
                np.bincount(col, values * pix_col, minlength=k) / weight,
            ],
            axis=1,
        )
    return mask, centroids


def match_footprints(
    A_est, A_true, dims, *, threshold: float = 0.2, min_iou: float = 0.3, max_dist_px: float = 10.0
) -> FootprintMatch:
    """Match estimated to true footprints: binarise, IoU cost, Hungarian with a distance cap.

    Parameters
    ----------
    A_est : sparse or ndarray of shape (n_pixels, n_found)
    A_true : sparse or ndarray of shape (n_pixels, n_true)
        Footprints with pixels flattened row-major (index = row * W + col).
    dims : (H, W)
    threshold, min_iou, max_dist_px : float
        See :class:`EvaluationParams`.

    Returns
    -------
    FootprintMatch

    Examples
    --------
    >>> a = np.zeros((16, 2)); a[[0, 1], 0] = 1; a[[10, 11], 1] = 1
    >>> m = match_footprints(a[:, ::-1], a, (4, 4))
    >>> m.true_index.tolist(), m.est_index.tolist()
    ([0, 1], [1, 0])
    """
    n_pixels = dims[0] * dims[1]
    for name, A in (("A_est", A_est), ("A_true", A_true)):
        if A.ndim != 2 or A.shape[0] != n_pixels:
            raise ValueError(
                f"{name} has shape {A.shape}; expected ({n_pixels}, K) for dims {dims}"
            )
    m_est, c_est = _masks_and_centroids(A_est, dims, threshold)
    m_true, c_true = _masks_and_centroids(A_true, dims, threshold)
    n_true, n_found = m_true.shape[1], m_est.shape[1]
    empty = np.zeros(0, np.int64)
    if n_true == 0 or n_found == 0:
        return FootprintMatch(empty, empty, np.zeros(0), np.zeros(0), n_true, n_found)
    inter = (m_true.T @ m_est).toarray()
    area_t = np.asarray(m_true.sum(axis=0)).ravel()
    area_e = np.asarray(m_est.sum(axis=0)).ravel()
    union = area_t[:, None] + area_e[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        dist = np.hypot(
            c_true[:, None, 0] - c_est[None, :, 0], c_true[:, None, 1] - c_est[None, :, 1]
        )
    dist = np.where(np.isfinite(dist), dist, np.inf)
    ok = (iou >= min_iou) & (dist <= max_dist_px)
    cost = np.where(ok, 1.0 - iou, 2.0)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    good = ok[rows, cols]
    rows, cols = rows[good], cols[good]
    return FootprintMatch(
        rows.astype(np.int64),
        cols.astype(np.int64),
        iou[rows, cols],
        dist[rows, cols],
        n_true,
        n_found,
    )


# ---- scoring -------------------------------------------------------------------------------
def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation over the frames where both are finite (NaN marks frames a
    result skipped); 0 where either row is constant or fewer than 2 frames remain."""
    valid = np.isfinite(x) & np.isfinite(y)
    n = valid.sum(axis=1, keepdims=True)
    x = np.where(valid, x, 0.0)
    y = np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(valid, x - x.sum(axis=1, keepdims=True) / n, 0.0)
        y = np.where(valid, y - y.sum(axis=1, keepdims=True) / n, 0.0)
        den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
        corr = np.where(den > 0, (x * y).sum(axis=1) / den, 0.0)
    return np.where(n[:, 0] >= 2, corr, 0.0)


def _cosine(A_true, A_est, ti: np.ndarray, ei: np.ndarray) -> np.ndarray:
    if len(ti) == 0:
        return np.zeros(0)
    a = scipy.sparse.csc_array(A_true[:, ti], dtype=np.float64)
    b = scipy.sparse.csc_array(A_est[:, ei], dtype=np.float64)
    dot = np.asarray(a.multiply(b).sum(axis=0)).ravel()
    na = np.sqrt(np.asarray(a.multiply(a).sum(axis=0)).ravel())
    nb = np.sqrt(np.asarray(b.multiply(b).sum(axis=0)).ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(na * nb > 0, dot / (na * nb), 0.0)


def _stat(values: np.ndarray, fn) -> float | None:
    return float(fn(values)) if len(values) else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(recall, precision) -> float | None:
    if recall is None or precision is None:
        return None
    return 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0


def _scored_columns(est: dict, n_truth_frames: int, frames) -> tuple[np.ndarray, np.ndarray]:
    fi = est["frame_index"]
    if len(fi) and (fi.min() < 0 or fi.max() >= n_truth_frames):
        raise InputFileError(
            f"the result covers frames {int(fi.min())}-{int(fi.max())} but the truth has "
            f"{n_truth_frames} frames (0-{n_truth_frames - 1}); is this the right truth file?"
        )
    sel = np.ones(len(fi), bool)
    if frames is not None:
        sel &= (fi >= frames[0]) & (fi < frames[1])
    cols = np.flatnonzero(sel)
    return cols, fi[cols]


def evaluate(est: dict, truth: dict, params: EvaluationParams | None = None) -> dict:
    """Score an estimate against the truth (dicts as returned by the readers).

    Returns
    -------
    dict
        JSON-safe metrics (see module docstring); None where a metric is undefined.
    """
    params = EvaluationParams() if params is None else params
    if tuple(est["dims"]) != tuple(truth["dims"]):
        raise InputFileError(
            f"the result's frames are {est['dims'][0]}x{est['dims'][1]} pixels but the truth's "
            f"are {truth['dims'][0]}x{truth['dims'][1]}; score a result of the same movie"
        )
    match = match_footprints(
        est["A"],
        truth["A"],
        truth["dims"],
        threshold=params.threshold,
        min_iou=params.min_iou,
        max_dist_px=params.max_dist_px,
    )
    ti, ei = match.true_index, match.est_index
    cols, tframes = _scored_columns(est, truth["C"].shape[1], params.frames)
    corr = np.zeros(len(ti))
    if len(cols) >= 2 and len(ti):
        corr = _pearson(
            est["C"][ei][:, cols].astype(np.float64), truth["C"][ti][:, tframes].astype(np.float64)
        )
    cosine = _cosine(truth["A"], est["A"], ti, ei)
    pnr, birth = truth["pnr"], truth["birth_frame"]
    matched_true = np.zeros(match.n_true, bool)
    matched_true[ti] = True
    corr_of = np.full(match.n_true, np.nan)
    corr_of[ti] = corr

    out = {
        "n_true": match.n_true,
        "n_found": match.n_found,
        "n_matched": len(ti),
        "recall": _ratio(len(ti), match.n_true),
        "precision": _ratio(len(ti), match.n_found),
    }
    out["f1"] = _f1(out["recall"], out["precision"])
    out.update(
        trace_corr_median=_stat(corr, np.median),
        trace_corr_mean=_stat(corr, np.mean),
        footprint_cosine_median=_stat(cosine, np.median),
        footprint_cosine_mean=_stat(cosine, np.mean),
        iou_median=_stat(match.iou, np.median),
        centroid_dist_median_px=_stat(match.distance_px, np.median),
        n_frames_scored=len(cols),
        frames_scored=[int(tframes.min()), int(tframes.max()) + 1] if len(cols) else None,
    )
    out.update(_high_pnr(params.min_pnr, pnr, matched_true, corr_of, match.n_found))
    matched_est = np.zeros(match.n_found, bool)
    matched_est[ei] = True
    out["missed_true"] = np.flatnonzero(~matched_true).tolist()
    out["unmatched_found"] = np.flatnonzero(~matched_est).tolist()
    out["pnr_bins"] = _pnr_bins(params.pnr_bins, pnr, matched_true, corr_of)
    out["late"] = _late(est, birth, matched_true, corr_of, ti, ei)
    out["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()}
    return out


def _high_pnr(min_pnr, pnr, matched_true, corr_of, n_found) -> dict:
    """Metrics on neurons of PNR >= min_pnr; estimates matched to weaker neurons are left out
    of the precision (neither right nor wrong)."""
    hi = pnr >= min_pnr
    n_hi, n_matched = int(hi.sum()), int(matched_true[hi].sum())
    recall = _ratio(n_matched, n_hi)
    precision = _ratio(n_matched, n_found - int(matched_true[~hi].sum()))
    corr = corr_of[hi & matched_true]
    return {
        "high_pnr_min": min_pnr,
        "n_true_high_pnr": n_hi,
        "n_matched_high_pnr": n_matched,
        "recall_high_pnr": recall,
        "precision_high_pnr": precision,
        "f1_high_pnr": _f1(recall, precision),
        "trace_corr_median_high_pnr": _stat(corr, np.median),
        "trace_corr_mean_high_pnr": _stat(corr, np.mean),
    }


def _pnr_bins(edges, pnr, matched_true, corr_of) -> list[dict]:
    bounds = [0.0, *edges, math.inf]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (pnr >= lo) & (pnr < hi)
        corr = corr_of[sel & matched_true]
        if lo == 0:
            label = f"<{hi:g}"
        elif math.isinf(hi):
            label = f">={lo:g}"
        else:
            label = f"{lo:g}-{hi:g}"
        rows.append(
            {
                "label": label,
                "lo": lo,
                "hi": None if math.isinf(hi) else hi,
                "n_true": int(sel.sum()),
                "n_matched": int((sel & matched_true).sum()),
                "recall": _ratio(int((sel & matched_true).sum()), int(sel.sum())),
                "trace_corr_median": _stat(corr, np.median),
            }
        )
    return rows


def _late(est, birth, matched_true, corr_of, ti, ei) -> dict | None:
    late = birth > 0
    if not late.any():
        return None
    out = {
        "n_true": int(late.sum()),
        "n_matched": int((late & matched_true).sum()),
        "recall": _ratio(int((late & matched_true).sum()), int(late.sum())),
        "trace_corr_median": _stat(corr_of[late & matched_true], np.median),
        "detection_delay_frames_median": None,
    }
    if est.get("birth_frame") is not None and len(ti):
        pair_late = late[ti]
        delay = est["birth_frame"][ei[pair_late]] - birth[ti[pair_late]]
        out["detection_delay_frames_median"] = _stat(delay, np.median)
    return out


def evaluate_files(
    result, truth, params: EvaluationParams | None = None, include_rejected: bool = False
) -> dict:
    """Read a results file and a simulation file and score them (see :func:`evaluate`).

    Neurons rejected by curation are left out unless ``include_rejected``; ``n_rejected``
    says how many.

    Raises
    ------
    InputFileError
        A file is missing, not HDF5, lacks a dataset, or the two do not describe the same movie.
    """
    est = read_result(result, include_rejected=include_rejected)
    metrics = evaluate(est, read_truth(truth), params)
    metrics["n_rejected"] = est["n_rejected"]
    metrics["result_path"] = str(result)
    metrics["truth_path"] = str(truth)
    return metrics


def estimate_from_arrays(A, C, dims, frame_index=None, birth_frame=None) -> dict:
    """Wrap in-memory model outputs for :func:`evaluate` (no file needed).

    Parameters
    ----------
    A : sparse or ndarray of shape (n_pixels, K)
        Footprints, pixels flattened row-major.
    C : ndarray of shape (K, T)
    dims : (H, W)
    frame_index : ndarray of shape (T,), optional
        Truth frame of each column of C (default 0..T-1).
    birth_frame : ndarray of shape (K,), optional
    """
    C = np.asarray(C, np.float32)
    fi = np.arange(C.shape[1]) if frame_index is None else np.asarray(frame_index, np.int64)
    return {
        "A": scipy.sparse.csc_array(A, dtype=np.float32),
        "dims": tuple(dims),
        "C": C,
        "frame_index": fi,
        "birth_frame": None if birth_frame is None else np.asarray(birth_frame, np.int64),
    }


def truth_from_simulator(simulator, n_frames: int) -> dict:
    """The truth of the first ``n_frames`` of an :class:`acquisition.simulator.MiniscopeSimulator`
    for :func:`evaluate` (what ``read_truth`` returns for the file it would write)."""
    C = simulator.calcium(0, n_frames)
    return {
        "A": simulator.truth.A,
        "dims": tuple(simulator.truth.dims),
        "C": C,
        "pnr": C.max(axis=1, initial=0) / simulator.params.noise_sigma,
        "birth_frame": simulator.truth.birth_frame,
    }
