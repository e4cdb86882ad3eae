"""Export a results file to NWB (pynwb), compactly.

Layout: processing module ``ophys`` with

- ``ImageSegmentation`` → ``PlaneSegmentation``: one ROI per kept neuron as a **pixel mask**
  ``(x, y, weight)`` with x = image row and y = image column (suite2p's convention, the same
  axes as an ``image_mask[row, col]``), only the pixels where the footprint is non-zero; columns
  ``neuron_id``, ``birth_frame``, ``curation`` and the quality metrics (:mod:`.quality`).
  ``--nwb-masks image`` writes dense ``image_mask`` (K, H, W) instead, gzip-compressed per ROI.
- ``Fluorescence``: ``Denoised`` (C), ``Raw`` (C_raw), ``Deconvolved`` (S), each (T, K) time ×
  ROIs; ``DfOverF``: ``DfOverF`` (C / background under the footprint) when known. Series are
  gzip-compressed; timestamps are the acquisition times when they increase strictly, else the
  rate.
- ``SummaryImages`` (``Images``): ``mean``, ``max``, ``corr_pnr``, ``background`` when present.

Closed-loop triggers go to the interval table ``closed_loop_triggers`` (start = stop = the
firing's acquisition time; columns rule, frame_index, value, age_ms, neuron_ids). Session facts
come from :class:`.export_meta.ExportMetadata`; the identifier is a fresh UUID unless given.
The export of an 8.7 MB results file was 600 MB with dense uncompressed masks; it is now about
the size of the traces (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from online_cnmfe.errors import InputFileError
from online_cnmfe.results.export import Curated, curated, footprint_images, timestamps_s
from online_cnmfe.results.export_meta import ExportMetadata
from online_cnmfe.results.quality import QUALITY_COLUMNS
from online_cnmfe.results.reader import read_trigger_log

logger = logging.getLogger(__name__)

QUALITY_DOC = {
    "snr": "std(C) / std(C_raw - C)",
    "pnr": "max(C) / std(C_raw - C)",
    "spatial_corr": "correlation of the footprint with the corr x PNR image",
    "size_px": "pixels above 25 % of the footprint maximum",
    "f0": "background under the footprint (dF/F baseline), trace units",
    "peak_dff": "largest dF/F",
    "event_rate_hz": "onsets of deconvolved activity per second",
}
LABELS = {1: "accepted", -1: "rejected", 0: "unlabelled"}


def _pynwb():
    try:
        import pynwb
    except ImportError as exc:
        raise InputFileError(
            "NWB export needs pynwb; install it with `pip install online-cnmfe[nwb]`"
        ) from exc
    return pynwb


def _compressed(data: np.ndarray, chunks: tuple[int, ...] | None = None):
    from hdmf.backends.hdf5.h5_utils import H5DataIO

    return H5DataIO(data, compression="gzip", compression_opts=4, chunks=chunks or True)


def _start_time(res, meta: ExportMetadata) -> datetime:
    text = meta.session_start_time or res.attrs.get("created") or ""
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        start = datetime.now(UTC)
    return start if start.tzinfo else start.replace(tzinfo=UTC)


def _file(res, results: Path, meta: ExportMetadata):
    pynwb = _pynwb()
    from pynwb.file import Subject

    subject = None
    subject_fields = {
        "subject_id": meta.subject_id, "species": meta.species, "sex": meta.sex or None,
        "age": meta.age or None, "genotype": meta.genotype or None,
        "description": meta.subject_description or None,
    }  # fmt: skip
    if any(v for v in subject_fields.values()):
        subject = Subject(**{k: v for k, v in subject_fields.items() if v})
    return pynwb.NWBFile(
        session_description=meta.session_description
        or f"online CNMF-E extraction ({results.name})",
        identifier=meta.identifier,
        session_start_time=_start_time(res, meta),
        experimenter=[meta.experimenter] if meta.experimenter else None,
        lab=meta.lab or None,
        institution=meta.institution or None,
        keywords=[k.strip() for k in meta.keywords.split(",") if k.strip()] or None,
        subject=subject,
        source_script=f"online-cnmfe {res.attrs.get('software_version', '')}".strip(),
        source_script_file_name=results.name,
    )


def _plane(nwb, res, meta: ExportMetadata):
    from pynwb.ophys import OpticalChannel

    device = nwb.create_device(
        name=meta.device, description=meta.device_description,
        manufacturer=meta.manufacturer or None,
    )  # fmt: skip
    channel = OpticalChannel(
        name="green", description="emission", emission_lambda=meta.emission_lambda_nm
    )
    pixel = res.params.get("data", {}).get("pixel_size_um")
    kwargs = {}
    if pixel:
        kwargs = {"grid_spacing": [pixel * 1e-6, pixel * 1e-6], "grid_spacing_unit": "meters"}
    return nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel,
        imaging_rate=float(res.attrs.get("frame_rate_hz", 20.0)),
        description=f"{res.dims[0]}x{res.dims[1]} pixels", device=device,
        excitation_lambda=meta.excitation_lambda_nm, indicator=meta.indicator or "unknown",
        location=meta.location or "unknown", **kwargs,
    )  # fmt: skip


def _segmentation(ophys, plane, cur: Curated, masks: str):
    from pynwb.ophys import ImageSegmentation

    segmentation = ImageSegmentation()
    seg = segmentation.create_plane_segmentation(
        name="PlaneSegmentation",
        description="online CNMF-E footprints (rejected neurons left out)",
        imaging_plane=plane,
    )
    seg.add_column("neuron_id", "stable online-cnmfe neuron id")
    seg.add_column("birth_frame", "trace column at which the neuron was first present")
    seg.add_column("curation", "accepted, rejected or unlabelled (online-cnmfe curate)")
    if cur.quality is not None:
        for name in QUALITY_COLUMNS:
            if name in QUALITY_DOC:
                seg.add_column(name, QUALITY_DOC[name])
    A, h, w = cur.A, *cur.res.dims
    birth = cur.res.birth_frame[cur.keep]
    images = footprint_images(A, cur.res.dims) if masks == "image" else None
    for k, nid in enumerate(cur.ids.tolist()):
        extra = {}
        if cur.quality is not None:
            extra = {n: cur.quality[n][k].item() for n in QUALITY_COLUMNS if n in QUALITY_DOC}
        if images is not None:
            mask = {"image_mask": images[k]}
        else:
            sl = slice(A.indptr[k], A.indptr[k + 1])
            rows, cols = np.divmod(A.indices[sl].astype(np.int64), w)
            pixels = zip(rows.tolist(), cols.tolist(), A.data[sl].tolist(), strict=True)
            mask = {"pixel_mask": list(pixels)}
        seg.add_roi(
            neuron_id=int(nid), birth_frame=int(birth[k]),
            curation=LABELS[cur.labels.get(int(nid), 0)], **mask, **extra,
        )  # fmt: skip
    if images is not None and len(images):  # one gzip chunk per ROI: mostly zeros, tiny
        from hdmf.backends.hdf5.h5_utils import H5DataIO

        seg["image_mask"].set_data_io(
            H5DataIO, {"compression": "gzip", "compression_opts": 4, "chunks": (1, h, w)}
        )
    ophys.add(segmentation)
    return seg


def _series(ophys, seg, cur: Curated) -> None:
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    n, res = len(cur.keep), cur.res
    rate = float(res.attrs.get("frame_rate_hz", 20.0))
    t = timestamps_s(res)
    timing = {"timestamps": t} if t is not None else {"rate": rate}
    fluorescence = Fluorescence()
    ophys.add(fluorescence)  # before the series, so their ROI regions share an ancestor
    series = [
        (fluorescence, "Denoised", cur.traces("C"), "denoised calcium C"),
        (fluorescence, "Raw", cur.traces("C_raw"), "demixed trace before deconvolution"),
        (fluorescence, "Deconvolved", cur.traces("S"), "deconvolved activity S"),
    ]
    dff = cur.dff()
    if dff is not None:
        container = DfOverF()
        ophys.add(container)
        series.append((container, "DfOverF", dff, "C / background under the footprint"))
    for parent, name, data, what in series:
        region = seg.create_roi_table_region(description="all neurons", region=list(range(n)))
        values = np.ascontiguousarray(np.asarray(data, np.float32).T)
        chunks = (min(max(values.shape[0], 1), 4096), max(values.shape[1], 1))
        parent.add_roi_response_series(
            RoiResponseSeries(
                name=name,
                data=_compressed(values, chunks) if values.size else values,
                rois=region,
                unit="a.u." if name != "DfOverF" else "dF/F",
                description=what,
                **timing,
            )  # fmt: skip
        )


def _images(ophys, results: Path) -> None:
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    from online_cnmfe.results.session import ResultsSession

    with ResultsSession(results) as s:
        found = {
            name: s.image(name) for name in ("mean", "max", "corr_pnr", "background")
            if s.image(name) is not None
        }  # fmt: skip
    if found:
        ophys.add(Images(
            name="SummaryImages", description="summary images of the session (row-major)",
            images=[GrayscaleImage(name=k, data=_compressed(v)) for k, v in found.items()],
        ))  # fmt: skip


def _triggers(nwb, results: Path, res) -> int:
    log = read_trigger_log(results)
    if log is None or not len(log["fired"]):
        return 0
    table = nwb.create_time_intervals(
        name="closed_loop_triggers",
        description="closed-loop trigger firings (online-cnmfe run --triggers): start and "
        "stop are the acquisition time of the frame that fired",
    )
    for name, doc in (
        ("rule", "rule name"), ("frame_index", "frame that fired"),
        ("value", "rule value at firing"), ("age_ms", "frame age at firing (ms)"),
        ("neuron_ids", "neurons that crossed / were active"),
    ):  # fmt: skip
        table.add_column(name, doc, index=name == "neuron_ids")
    t0 = timestamps_s(res)
    offset = 0.0 if t0 is not None else None
    rate = float(res.attrs.get("frame_rate_hz", 20.0))
    for rule, row, ids in zip(log["rule"], log["fired"], log["neuron_ids"], strict=True):
        t = float(row["t_acq_ms"]) / 1000.0
        if offset is None or not np.isfinite(t):
            t = float(row["frame_index"]) / rate
        table.add_row(
            start_time=t, stop_time=t, rule=str(rule), frame_index=int(row["frame_index"]),
            value=float(row["value"]), age_ms=float(row["age_ms"]),
            neuron_ids=[int(i) for i in ids],
        )  # fmt: skip
    return len(log["fired"])


def export_nwb(
    results: str | Path,
    out: str | Path,
    *,
    metadata: ExportMetadata | None = None,
    include_rejected: bool = False,
    masks: str = "pixel",
) -> Path:
    """Write an NWB file (module docstring) and return its path.

    Parameters
    ----------
    results, out : str or Path
    metadata : ExportMetadata, optional
        Session facts; the identifier defaults to a new UUID.
    include_rejected : bool
        Keep the neurons rejected by curation.
    masks : {'pixel', 'image'}
        ROI masks as sparse pixel masks (compact) or gzip-compressed dense image masks.

    Raises
    ------
    InputFileError
        If pynwb is not installed (``pip install online-cnmfe[nwb]``).
    """
    pynwb = _pynwb()
    if masks not in ("pixel", "image"):
        raise ValueError(f"masks={masks!r}; allowed: 'pixel' or 'image'")
    results, out = Path(results), Path(out)
    meta = (metadata or ExportMetadata()).with_identifier()
    cur = curated(results, include_rejected)
    nwb = _file(cur.res, results, meta)
    plane = _plane(nwb, cur.res, meta)
    ophys = nwb.create_processing_module(name="ophys", description="online CNMF-E")
    seg = _segmentation(ophys, plane, cur, masks)
    _series(ophys, seg, cur)
    _images(ophys, results)
    n_triggers = _triggers(nwb, results, cur.res)
    with pynwb.NWBHDF5IO(str(out), "w") as io:
        io.write(nwb)
    logger.info(
        "wrote %s (%d neurons, %d frames, %d triggers; identifier %s)",
        out, len(cur.keep), cur.res.n_frames, n_triggers, meta.identifier,
    )  # fmt: skip
    return out
