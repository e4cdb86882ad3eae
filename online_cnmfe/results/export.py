"""Export a results file to the formats downstream tools read.

Every export leaves out the neurons rejected by curation (``curation/``, see
:mod:`.curation`) unless asked to keep them (``include_rejected``).

- **NWB** (:mod:`.export_nwb`): segmentation as pixel masks, C / C_raw / S / dF/F series,
  summary images, closed-loop triggers, session metadata.
- **CSV** (:mod:`.export_csv`): one folder of plain tables.
- **CaImAn** HDF5 (the keys ``load_CNMF`` and roiextractors read): ``estimates/A/{data,indices,
  indptr,shape}`` as CSC with pixels flattened in **Fortran order** (index = col·H + row, as
  CaImAn does everywhere), ``estimates/C``, ``S``, ``YrA`` (= C_raw − C), ``b0`` (Fortran
  order), ``dims``, ``params/data/{dims,fr}``.
- **CellReg** ``.mat`` (scipy.io.savemat, MAT v5): one variable ``footprints`` of shape
  (N, H, W), which MATLAB sees as N×H×W, CellReg's input layout.

Our own files flatten pixels row-major (index = row·W + col); each exporter converts explicitly
and the tests round-trip the orientation with an asymmetric image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.results.curation import read_labels
from online_cnmfe.results.layout import open_for_reading
from online_cnmfe.results.quality import dff, neuron_quality, read_quality
from online_cnmfe.results.reader import Results, read_results

logger = logging.getLogger(__name__)


def footprint_images(A: scipy.sparse.csc_array, dims: tuple[int, int]) -> np.ndarray:
    """Footprints as a dense (K, H, W) float32 stack (row-major images)."""
    h, w = dims
    dense = A.toarray().astype(np.float32)  # (H·W, K), row-major pixels
    return np.ascontiguousarray(dense.T.reshape(-1, h, w))


def to_fortran_order(A: scipy.sparse.csc_array, dims: tuple[int, int]) -> scipy.sparse.csc_array:
    """Re-index the pixels of A from row-major (row·W + col) to Fortran order (col·H + row)."""
    A = scipy.sparse.csc_array(A)
    h, w = dims
    rows, cols = np.divmod(A.indices.astype(np.int64), w)
    out = scipy.sparse.csc_array((A.data, cols * h + rows, A.indptr), shape=A.shape)
    out.sort_indices()
    return out


def timestamps_s(res: Results) -> np.ndarray | None:
    """Acquisition times in seconds when they increase strictly, else None (use the rate)."""
    t = res.frames["t_acq_ms"].astype(np.float64) / 1000.0
    if t.size and np.all(np.isfinite(t)) and np.all(np.diff(t) > 0):
        return t
    return None


@dataclass
class Curated:
    """A results file with the columns an export keeps (curation honoured).

    Attributes
    ----------
    res : Results
    keep : ndarray of int
        Footprint columns kept (rejected neurons left out unless asked).
    labels : dict
        ``{neuron_id: label}`` (+1 accepted, -1 rejected).
    quality : ndarray or None
        The quality table rows of the kept columns (computed when the file has none).
    n_rejected : int
        Rejected neurons left out.
    """

    res: Results
    keep: np.ndarray
    labels: dict[int, int]
    quality: np.ndarray | None
    n_rejected: int

    @property
    def ids(self) -> np.ndarray:
        return self.res.neuron_ids[self.keep]

    @property
    def A(self) -> scipy.sparse.csc_array:
        return scipy.sparse.csc_array(self.res.A[:, self.keep])

    def traces(self, name: str) -> np.ndarray:
        """``C``, ``S`` or ``C_raw`` of the kept neurons, (K, T)."""
        return getattr(self.res, name)[self.keep]

    def dff(self) -> np.ndarray | None:
        """dF/F of the kept neurons (:func:`.quality.dff`), None without a quality table."""
        if self.quality is None:
            return None
        return dff(self.traces("C"), self.quality["f0"])


def curated(results: str | Path, include_rejected: bool = False) -> Curated:
    """Read a results file for an export: every neuron but those rejected by curation."""
    res = read_results(results)
    with open_for_reading(Path(results)) as f:
        labels = read_labels(f)
        table = read_quality(f)
        if table is None and res.neuron_ids.size:
            try:
                table = neuron_quality(f)
            except (KeyError, ValueError, OnlineCNMFEError) as exc:
                logger.warning("%s: no quality metrics (%s); dF/F left out", results, exc)
    rejected = np.array([labels.get(int(i), 0) < 0 for i in res.neuron_ids], bool)
    keep = np.flatnonzero(~rejected if not include_rejected else np.ones_like(rejected))
    quality = None
    if table is not None:
        pos = {int(i): k for k, i in enumerate(table["neuron_id"].tolist())}
        rows = [pos.get(int(i), -1) for i in res.neuron_ids[keep]]
        if all(r >= 0 for r in rows):
            quality = table[np.asarray(rows, np.int64)]
    n_rej = int(rejected.sum()) if not include_rejected else 0
    if n_rej:
        logger.info("%s: %d neuron(s) rejected by curation left out", results, n_rej)
    return Curated(res, keep, labels, quality, n_rej)


def export_caiman(results: str | Path, out: str | Path, include_rejected: bool = False) -> Path:
    """Write CaImAn-compatible HDF5 keys (A in Fortran pixel order)."""
    cur = curated(results, include_rejected)
    res = cur.res
    h, w = res.dims
    A = to_fortran_order(cur.A, res.dims)
    out = Path(out)
    with h5py.File(out, "w") as f:
        f["dims"] = np.array([h, w], np.int64)
        est = f.create_group("estimates")
        grp = est.create_group("A")
        grp["data"], grp["indices"], grp["indptr"] = A.data, A.indices, A.indptr
        grp["shape"] = np.array(A.shape, np.int64)
        est["C"] = cur.traces("C")
        est["S"] = cur.traces("S")
        est["YrA"] = cur.traces("C_raw") - cur.traces("C")
        est["b0"] = res.b0.reshape(-1, order="F")
        est["neuron_ids"] = cur.ids
        data = f.create_group("params/data")
        data["dims"] = np.array([h, w], np.int64)
        data["fr"] = float(res.attrs.get("frame_rate_hz", 20.0))
    logger.info("wrote %s (CaImAn layout, %d neurons)", out, A.shape[1])
    return out


def export_cellreg(results: str | Path, out: str | Path, include_rejected: bool = False) -> Path:
    """Write the (N, H, W) footprint stack CellReg reads (first variable of the .mat)."""
    cur = curated(results, include_rejected)
    out = Path(out)
    images = footprint_images(cur.A, cur.res.dims)
    scipy.io.savemat(out, {"footprints": images}, do_compression=True)
    logger.info("wrote %s (CellReg footprints, %d neurons)", out, images.shape[0])
    return out
