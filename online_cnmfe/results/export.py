"""Export a results file to the formats downstream tools read.

- **NWB** (pynwb): processing module ``ophys`` with ``ImageSegmentation`` → ``PlaneSegmentation``
  (one ``image_mask`` (H, W) per neuron, columns ``neuron_id`` and ``birth_frame``) and a
  ``Fluorescence`` interface holding three ``RoiResponseSeries`` of shape (T, K) (time × ROIs):
  ``Denoised`` (C), ``Raw`` (C_raw) and ``Deconvolved`` (S). Timestamps are the acquisition
  times (``frames/t_acq_ms`` / 1000) when they increase strictly, else the nominal rate.
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
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from online_cnmfe.errors import InputFileError
from online_cnmfe.results.reader import Results, read_results

logger = logging.getLogger(__name__)


def footprint_images(res: Results) -> np.ndarray:
    """Footprints as a dense (K, H, W) float32 stack (row-major images)."""
    h, w = res.dims
    dense = res.A.toarray().astype(np.float32)  # (H·W, K), row-major pixels
    return np.ascontiguousarray(dense.T.reshape(-1, h, w))


def to_fortran_order(A: scipy.sparse.csc_array, dims: tuple[int, int]) -> scipy.sparse.csc_array:
    """Re-index the pixels of A from row-major (row·W + col) to Fortran order (col·H + row)."""
    A = scipy.sparse.csc_array(A)
    h, w = dims
    rows, cols = np.divmod(A.indices.astype(np.int64), w)
    out = scipy.sparse.csc_array((A.data, cols * h + rows, A.indptr), shape=A.shape)
    out.sort_indices()
    return out


def _timestamps(res: Results) -> np.ndarray | None:
    t = res.frames["t_acq_ms"].astype(np.float64) / 1000.0
    if t.size and np.all(np.isfinite(t)) and np.all(np.diff(t) > 0):
        return t
    return None


def export_nwb(results: str | Path, out: str | Path, *, description: str | None = None) -> Path:
    """Write an NWB file with the segmentation and the traces.

    Raises
    ------
    InputFileError
        If pynwb is not installed (``pip install online-cnmfe[nwb]``).
    """
    try:
        from pynwb import NWBHDF5IO, NWBFile
        from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries
    except ImportError as exc:
        raise InputFileError(
            "NWB export needs pynwb; install it with `pip install online-cnmfe[nwb]`"
        ) from exc
    res = read_results(results)
    rate = float(res.attrs.get("frame_rate_hz", 20.0))
    nwb = NWBFile(
        session_description=description or f"online-cnmfe results from {Path(results).name}",
        identifier=f"online-cnmfe-{Path(results).stem}",
        session_start_time=datetime.fromisoformat(res.attrs.get("created", "1970-01-01T00:00:00"))
        if res.attrs.get("created")
        else datetime.now(UTC),
    )
    device = nwb.create_device(name="Miniscope", description="1-photon miniscope")
    channel = OpticalChannel(name="green", description="GCaMP emission", emission_lambda=520.0)
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, imaging_rate=rate,
        description=f"{res.dims[0]}x{res.dims[1]} pixels", device=device,
        excitation_lambda=470.0, indicator="unknown", location="unknown",
    )  # fmt: skip
    ophys = nwb.create_processing_module(name="ophys", description="online CNMF-E")
    segmentation = ImageSegmentation()
    plane_seg = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="online CNMF-E footprints", imaging_plane=plane
    )
    plane_seg.add_column("neuron_id", "stable online-cnmfe neuron id")
    plane_seg.add_column("birth_frame", "frame at which the neuron was first present")
    for k, image in enumerate(footprint_images(res)):
        plane_seg.add_roi(
            image_mask=image, neuron_id=int(res.neuron_ids[k]), birth_frame=int(res.birth_frame[k])
        )
    ophys.add(segmentation)
    n = len(res.neuron_ids)
    fluorescence = Fluorescence()
    ophys.add(fluorescence)  # before the series, so their ROI regions share an ancestor
    timestamps = _timestamps(res)
    timing = {"timestamps": timestamps} if timestamps is not None else {"rate": rate}
    for name, data, what in (
        ("Denoised", res.C, "denoised calcium C"),
        ("Raw", res.C_raw, "demixed trace before deconvolution (C_raw)"),
        ("Deconvolved", res.S, "deconvolved activity S"),
    ):
        region = plane_seg.create_roi_table_region(description="all neurons", region=list(range(n)))
        fluorescence.add_roi_response_series(
            RoiResponseSeries(
                name=name,
                data=np.ascontiguousarray(data.T),
                rois=region,
                unit="a.u.",
                description=what,
                **timing,
            )  # fmt: skip
        )
    out = Path(out)
    with NWBHDF5IO(str(out), "w") as io:
        io.write(nwb)
    logger.info("wrote %s (%d neurons, %d frames)", out, n, res.n_frames)
    return out


def export_caiman(results: str | Path, out: str | Path) -> Path:
    """Write CaImAn-compatible HDF5 keys (A in Fortran pixel order)."""
    res = read_results(results)
    h, w = res.dims
    A = to_fortran_order(res.A, res.dims)
    out = Path(out)
    with h5py.File(out, "w") as f:
        f["dims"] = np.array([h, w], np.int64)
        est = f.create_group("estimates")
        grp = est.create_group("A")
        grp["data"], grp["indices"], grp["indptr"] = A.data, A.indices, A.indptr
        grp["shape"] = np.array(A.shape, np.int64)
        est["C"] = res.C
        est["S"] = res.S
        est["YrA"] = res.C_raw - res.C
        est["b0"] = res.b0.reshape(-1, order="F")
        est["neuron_ids"] = res.neuron_ids
        data = f.create_group("params/data")
        data["dims"] = np.array([h, w], np.int64)
        data["fr"] = float(res.attrs.get("frame_rate_hz", 20.0))
    logger.info("wrote %s (CaImAn layout, %d neurons)", out, A.shape[1])
    return out


def export_cellreg(results: str | Path, out: str | Path) -> Path:
    """Write the (N, H, W) footprint stack CellReg reads (first variable of the .mat)."""
    res = read_results(results)
    out = Path(out)
    scipy.io.savemat(out, {"footprints": footprint_images(res)}, do_compression=True)
    logger.info("wrote %s (CellReg footprints, %d neurons)", out, len(res.neuron_ids))
    return out
