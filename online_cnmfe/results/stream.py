"""The results stream (engine → dashboard and closed-loop clients): encoders and a decoder.

Every message uses the generic framing of :mod:`acquisition.protocol` (``[topic, JSON header,
*raw arrays]``); the topics and their fields are documented in docs/protocol.md ("Results
stream"). Encoders take plain values and arrays and return the frames for
``socket.send_multipart``; :func:`decode_result` validates a received message and returns a
:class:`~acquisition.protocol.Message` whose required fields and arrays are known to be there.

Footprints travel as the CSC arrays of A (n_pixels × K, pixels flattened row-major, index =
row·W + col); :func:`footprints_from_message` rebuilds the sparse matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse

from acquisition.protocol import Message, decode_message, encode_message
from online_cnmfe.errors import ProtocolError

__all__ = [
    "EVENT_KINDS",
    "IMAGE_LAYERS",
    "PHASES",
    "RESULT_TOPICS",
    "centroids",
    "decode_result",
    "encode_eos",
    "encode_event",
    "encode_footprints",
    "encode_image",
    "encode_ready",
    "encode_status",
    "encode_traces",
    "encode_trigger",
    "footprints_from_message",
]

PHASES = ("waiting", "initialising", "running", "stopped")
EVENT_KINDS = ("born", "merged", "removed", "restart", "drop", "reject", "store_error")
IMAGE_LAYERS = (
    "raw",
    "background_subtracted",
    "denoised",
    "residual",
    "corr_pnr",
    "max_projection",
)

# topic -> (required header fields, required array names)
RESULT_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ready": (("session_id", "engine_pid"), ()),
    "status": (
        (
            "frame_index",
            "n_frames_processed",
            "fps_in",
            "fps_processed",
            "queue_depth",
            "latency_ms_p50",
            "latency_ms_p99",
            "n_neurons",
            "n_dropped",
            "n_rejected",
            "n_malformed",
            "phase",
            "init_progress",
            "store_ok",
            "store_error",
            "dims",
        ),
        (),
    ),
    "traces": (
        ("frame_index", "seq", "t_acq_ms", "t_send_ns", "age_ms", "footprints_version"),
        ("neuron_ids", "C", "S", "C_raw"),
    ),
    "footprints": (
        ("version", "dims", "n_neurons"),
        ("data", "indices", "indptr", "neuron_ids", "centroids"),
    ),
    "event": (("kind", "frame_index", "neuron_ids", "detail"), ()),
    "image": (("frame_index", "layer", "downsample"), ("image",)),
    "trigger": (("rule", "frame_index", "t_acq_ms", "value", "age_ms", "neuron_ids"), ()),
    "eos": (("n_frames_processed", "reason"), ()),
}


def encode_ready(session_id: str | None, engine_pid: int, **extra: Any) -> list:
    """``ready``: the engine's sockets are up (also re-sent with every status)."""
    return encode_message("ready", {"session_id": session_id, "engine_pid": engine_pid, **extra})


def encode_status(fields: dict[str, Any]) -> list:
    """``status``: the engine's counters (see docs/protocol.md for the fields)."""
    missing = [k for k in RESULT_TOPICS["status"][0] if k not in fields]
    if missing:
        raise ValueError(f"status lacks the fields {missing}")
    return encode_message("status", fields)


def encode_traces(
    meta: dict[str, Any],
    neuron_ids: np.ndarray,
    C: np.ndarray,
    S: np.ndarray,
    C_raw: np.ndarray,
    footprints_version: int,
    age_ms: float,
    flag: str | None = None,
    motion_shift_px: tuple[float, float] | None = None,
    motion_quality: float | None = None,
) -> list:
    """``traces``: the values of every neuron at one frame.

    Parameters
    ----------
    meta : dict
        ``frame_index``, ``seq``, ``t_acq_ms``, ``t_send_ns`` of the frame and, optionally,
        ``t_recv_ns`` (the engine's ``monotonic_ns`` at the frame's arrival; -1 when absent)
        and ``process_ms`` (the model's time on it; -1 when absent).
    neuron_ids : ndarray of shape (K,), int64
    C, S, C_raw : ndarray of shape (K,), float32
    footprints_version : int
    age_ms : float
        Frame age at publication: now minus the sender's ``t_send_ns`` (same host clock).
    flag : str or None
        Why the frame did not update the model (``FrameResult.flag``); None for an ordinary
        frame.
    motion_shift_px, motion_quality : optional
        The frame's motion correction, (dy, dx) pixels and quality (``FrameResult``); None
        when motion correction is off.
    """
    header = {
        "frame_index": int(meta["frame_index"]),
        "seq": int(meta["seq"]),
        "t_acq_ms": float(meta["t_acq_ms"]),
        "t_send_ns": int(meta["t_send_ns"]),
        "t_recv_ns": int(meta.get("t_recv_ns", -1)),
        "age_ms": float(age_ms),
        "footprints_version": int(footprints_version),
        "process_ms": float(meta.get("process_ms", -1.0)),
        "flag": None if flag is None else str(flag),
        "motion_shift_px": (
            None if motion_shift_px is None else [float(v) for v in motion_shift_px]
        ),
        "motion_quality": None if motion_quality is None else float(motion_quality),
    }
    arrays = {
        "neuron_ids": np.asarray(neuron_ids, np.int64),
        "C": np.asarray(C, np.float32),
        "S": np.asarray(S, np.float32),
        "C_raw": np.asarray(C_raw, np.float32),
    }
    return encode_message("traces", header, arrays)


def centroids(A: scipy.sparse.csc_array, dims: tuple[int, int]) -> np.ndarray:
    """Weighted (row, col) centre of each footprint column, float32 (K, 2)."""
    A = scipy.sparse.csc_array(A)
    k = A.shape[1]
    out = np.zeros((k, 2), np.float32)
    if A.nnz == 0:
        return out
    weights = np.abs(A.data).astype(np.float64)
    rows, cols = np.divmod(A.indices.astype(np.int32), np.int32(dims[1]))
    starts = np.minimum(A.indptr[:-1], A.nnz - 1)
    empty = np.diff(A.indptr) == 0
    total = np.add.reduceat(weights, starts)
    total[empty | (total == 0)] = 1.0
    out[:, 0] = np.add.reduceat(weights * rows, starts) / total
    out[:, 1] = np.add.reduceat(weights * cols, starts) / total
    out[empty] = 0.0
    return out


def encode_footprints(
    A: scipy.sparse.csc_array,
    neuron_ids: np.ndarray,
    version: int,
    dims: tuple[int, int],
    centroids_rc: np.ndarray | None = None,
) -> list:
    """``footprints``: A as CSC arrays plus ids and centroids.

    ``centroids_rc``: :func:`centroids` of A when the caller has them already (not recomputed).

    Raises
    ------
    ValueError
        If A is not (H·W) × len(neuron_ids).
    """
    A = scipy.sparse.csc_array(A)
    ids = np.asarray(neuron_ids, np.int64)
    if A.shape != (dims[0] * dims[1], ids.shape[0]):
        raise ValueError(f"A has shape {A.shape}; expected ({dims[0] * dims[1]}, {ids.shape[0]})")
    header = {"version": int(version), "dims": [int(dims[0]), int(dims[1])], "n_neurons": len(ids)}
    arrays = {
        "data": A.data.astype(np.float32, copy=False),
        "indices": A.indices.astype(np.int32, copy=False),
        "indptr": A.indptr.astype(np.int32, copy=False),
        "neuron_ids": ids,
        "centroids": centroids(A, dims) if centroids_rc is None else centroids_rc,
    }
    return encode_message("footprints", header, arrays)


def encode_event(kind: str, frame_index: int, neuron_ids: Sequence[int] = (), detail: str = ""):
    """``event``: a change of the neuron set or a stream incident."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind {kind!r}; expected one of {EVENT_KINDS}")
    header = {
        "kind": kind,
        "frame_index": int(frame_index),
        "neuron_ids": [int(i) for i in neuron_ids],
        "detail": str(detail),
    }
    return encode_message("event", header)


def encode_image(frame_index: int, layer: str, image: np.ndarray, downsample: int) -> list:
    """``image``: one display layer (row-major (h, w) float32)."""
    if layer not in IMAGE_LAYERS:
        raise ValueError(f"image layer {layer!r}; expected one of {IMAGE_LAYERS}")
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"image has shape {image.shape}; expected (h, w)")
    header = {"frame_index": int(frame_index), "layer": layer, "downsample": int(downsample)}
    return encode_message("image", header, {"image": image})


def encode_trigger(
    rule: str,
    frame_index: int,
    t_acq_ms: float,
    value: float,
    age_ms: float,
    neuron_ids: Sequence[int] = (),
    **extra: Any,
) -> list:
    """``trigger``: a closed-loop rule fired."""
    header = {
        "rule": str(rule),
        "frame_index": int(frame_index),
        "t_acq_ms": float(t_acq_ms),
        "value": float(value),
        "age_ms": float(age_ms),
        "neuron_ids": [int(i) for i in neuron_ids],
        **extra,
    }
    return encode_message("trigger", header)


def encode_eos(n_frames_processed: int, reason: str, **summary: Any) -> list:
    """``eos``: the engine is shutting down; ``summary`` adds the frame totals
    (``n_frames_received``, ``n_dropped``, …, ``summary``: docs/protocol.md)."""
    header = {"n_frames_processed": int(n_frames_processed), "reason": reason, **summary}
    return encode_message("eos", header)


def decode_result(frames: Sequence[Any]) -> Message:
    """Decode a results-stream message and check its required fields and arrays.

    Unknown topics are returned as they are (after the generic validation), so newer engines
    can add topics without breaking older clients.

    Raises
    ------
    ProtocolError
        If the framing is invalid or a known topic lacks a field or array.
    """
    message = decode_message(frames)
    spec = RESULT_TOPICS.get(message.topic)
    if spec is None:
        return message
    fields, arrays = spec
    missing = [k for k in fields if k not in message.header]
    if missing:
        raise ProtocolError(f"{message.topic!r} message lacks the header fields {missing}")
    missing = [k for k in arrays if k not in message.arrays]
    if missing:
        raise ProtocolError(f"{message.topic!r} message lacks the arrays {missing}")
    if message.topic == "status":
        _check_init_fields(message.header)
    if message.topic == "traces":
        k = message.arrays["neuron_ids"].shape
        if any(message.arrays[n].shape != k for n in ("C", "S", "C_raw")):
            raise ProtocolError("'traces' arrays neuron_ids, C, S, C_raw differ in length")
    return message


def _check_init_fields(header: dict[str, Any]) -> None:
    """The initialisation's progress fields of a status, when present (engines before they
    existed do not send them): ``init_stage`` a string or null, ``init_fit_progress`` and
    ``init_progress`` numbers in [0, 1]."""
    stage = header.get("init_stage")
    if stage is not None and not isinstance(stage, str):
        raise ProtocolError(f"'status' init_stage must be a string or null, got {stage!r}")
    for name in ("init_progress", "init_fit_progress"):
        if name not in header:
            continue
        value = header[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ProtocolError(f"'status' {name} must be a number in [0, 1], got {value!r}")


def footprints_from_message(message: Message) -> tuple[scipy.sparse.csc_array, np.ndarray]:
    """Rebuild (A, neuron_ids) from a decoded ``footprints`` message.

    Raises
    ------
    ProtocolError
        If the CSC arrays are inconsistent.
    """
    h, a = message.header, message.arrays
    dims = h["dims"]
    ids = np.array(a["neuron_ids"], np.int64)
    try:
        A = scipy.sparse.csc_array(
            (a["data"], a["indices"], a["indptr"]),
            shape=(int(dims[0]) * int(dims[1]), ids.shape[0]),
        )
        A.check_format(full_check=True)  # indices in range: a dashboard indexes with them
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"'footprints' CSC arrays are inconsistent: {exc}") from exc
    return A, ids
