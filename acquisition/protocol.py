"""The wire protocol of online-cnmfe (version 1): pure encode/decode functions, no sockets.

Every message is a ZeroMQ multipart message ``[topic, header, *buffers]`` (docs/protocol.md):

- ``topic``: ASCII bytes (``b"frame"``, ``b"start"``, ``b"eos"``, ...), used by SUB filters;
- ``header``: a UTF-8 JSON object with ``"v"`` (protocol version), ``"topic"`` (frame 0 again)
  and ``"arrays"`` (one ``{"name", "dtype", "shape"}`` descriptor per buffer, in order);
- ``buffers``: raw C-contiguous little-endian array bytes, handed over without copying.

The generic framing (``encode_message`` / ``decode_message``) lives in :mod:`acquisition.wire`
and is re-exported here; the typed messages (:class:`FrameMessage`, :class:`StartMessage`,
:class:`EosMessage`) build the acquisition → engine frame stream on top. Decoding validates
every field and raises :class:`~acquisition.errors.ProtocolError` naming the problem; nothing
is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acquisition.errors import ProtocolError
from acquisition.wire import (
    ALLOWED_DTYPES,
    INT64_MAX,
    INT64_MIN,
    PROTOCOL_VERSION,
    Message,
    decode_message,
    dtype_field,
    encode_message,
    expect_topic,
    float_field,
    header_field,
    int_field,
    shape_field,
    str_field,
)

__all__ = [
    "ALLOWED_DTYPES",
    "PROTOCOL_VERSION",
    "SOURCE_KINDS",
    "TOPIC_EOS",
    "TOPIC_FRAME",
    "TOPIC_START",
    "EOS_REASONS",
    "EosMessage",
    "FrameMessage",
    "Message",
    "StartMessage",
    "decode_any",
    "decode_eos",
    "decode_frame",
    "decode_message",
    "decode_start",
    "encode_eos",
    "encode_frame",
    "encode_message",
    "encode_start",
]

TOPIC_FRAME = "frame"
TOPIC_START = "start"
TOPIC_EOS = "eos"
SOURCE_KINDS = ("live", "replay", "synthetic")
EOS_REASONS = ("complete", "interrupted", "error")


def _check_source(source: str) -> None:
    if source not in SOURCE_KINDS:
        raise ValueError(f"source is {source!r}; expected one of {SOURCE_KINDS}")


# --------------------------------------------------------------------------------------------
# Typed messages
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FrameMessage:
    """One frame on the acquisition → engine stream (topic ``frame``).

    Attributes
    ----------
    seq : int
        Sender counter, +1 per frame sent, never reset within a session.
    frame_index : int
        Acquisition frame number (e.g. ``Frame Number`` of timeStamps.csv).
    daq_frame : int or None
        Unwrapped hardware (DAQ) frame counter when known.
    t_acq_ms : float
        Acquisition time in ms since the session start.
    t_send_ns : int
        Sender ``time.monotonic_ns()`` when the frame was handed to the socket.
    session_id : str
        Identifier of the stream session; changes when the sender restarts.
    source : str
        ``"live"``, ``"replay"`` or ``"synthetic"``.
    pixels : ndarray of shape (H, W)
        The image, row-major; uint8 or uint16 for camera data.
    """

    seq: int
    frame_index: int
    daq_frame: int | None
    t_acq_ms: float
    t_send_ns: int
    session_id: str
    source: str
    pixels: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the pixels."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def dtype(self) -> str:
        """Name of the pixel dtype, e.g. ``"uint8"``."""
        return self.pixels.dtype.name


def encode_frame(msg: FrameMessage) -> list[bytes | memoryview]:
    """Encode a :class:`FrameMessage` as ``[b"frame", header, pixels]`` (pixels not copied).

    Raises
    ------
    ValueError
        If the pixels are not 2-D of an allowed dtype, or a field has the wrong value.
    """
    pixels = np.asarray(msg.pixels)
    if pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(f"frame pixels have shape {pixels.shape}; expected a non-empty (H, W)")
    _check_source(msg.source)
    if not isinstance(msg.session_id, str) or not msg.session_id:
        raise ValueError(f"session_id is {msg.session_id!r}; expected a non-empty string")
    header = {
        "seq": int(msg.seq),
        "frame_index": int(msg.frame_index),
        "daq_frame": None if msg.daq_frame is None else int(msg.daq_frame),
        "t_acq_ms": float(msg.t_acq_ms),
        "t_send_ns": int(msg.t_send_ns),
        "shape": [int(pixels.shape[0]), int(pixels.shape[1])],
        "dtype": pixels.dtype.name,
        "session_id": msg.session_id,
        "source": msg.source,
    }
    return encode_message(TOPIC_FRAME, header, {"pixels": pixels})


def frame_from_message(message: Message) -> FrameMessage:
    """Validate a generic :class:`Message` as a frame (see :func:`decode_frame`)."""
    expect_topic(message, TOPIC_FRAME)
    h, t = message.header, TOPIC_FRAME
    shape, dtype = shape_field(h, t), dtype_field(h, t)
    if set(message.arrays) != {"pixels"}:
        raise ProtocolError(f"'frame' message has arrays {sorted(message.arrays)}; expected pixels")
    pixels = message.arrays["pixels"]
    if pixels.shape != shape or pixels.dtype.name != dtype:
        raise ProtocolError(
            f"'frame' pixels are {pixels.shape} {pixels.dtype.name} but the header says "
            f"{shape} {dtype}"
        )
    return FrameMessage(
        seq=int_field(h, t, "seq", minimum=0),
        frame_index=int_field(h, t, "frame_index", minimum=0),
        daq_frame=int_field(h, t, "daq_frame", nullable=True),
        t_acq_ms=float_field(h, t, "t_acq_ms"),
        t_send_ns=int_field(h, t, "t_send_ns", minimum=INT64_MIN, maximum=INT64_MAX),
        session_id=str_field(h, t, "session_id", nonempty=True),
        source=str_field(h, t, "source", choices=SOURCE_KINDS),
        pixels=pixels,
    )


def decode_frame(frames: Sequence[Any]) -> FrameMessage:
    """Decode and validate a ``frame`` message.

    Raises
    ------
    ProtocolError
        On any framing problem (see :func:`decode_message`), a topic other than ``frame``, a
        missing or mistyped header field, or pixels whose shape/dtype differ from the header.
    """
    return frame_from_message(decode_message(frames))


@dataclass(frozen=True, slots=True)
class StartMessage:
    """Session metadata, sent first and re-sent every second (topic ``start``).

    Attributes
    ----------
    session_id : str
    source : str
        ``"live"``, ``"replay"`` or ``"synthetic"``.
    frame_rate_hz : float
        Nominal acquisition frame rate.
    shape : tuple of int
        (H, W) of every frame of the session (after crop/binning).
    dtype : str
    description : str
        Human-readable description of the source (path, device, simulator seed...).
    n_frames : int or None
        Number of frames the sender will send, or None when endless/unknown.
    metadata : dict
        JSON-safe extra information (Miniscope metaData.json, simulator parameters...).
    """

    session_id: str
    source: str
    frame_rate_hz: float
    shape: tuple[int, int]
    dtype: str
    description: str = ""
    n_frames: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def encode_start(msg: StartMessage) -> list[bytes | memoryview]:
    """Encode a :class:`StartMessage` as ``[b"start", header]``."""
    _check_source(msg.source)
    if msg.dtype not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {msg.dtype!r} is not allowed on the wire")
    header = {
        "session_id": msg.session_id,
        "source": msg.source,
        "frame_rate_hz": float(msg.frame_rate_hz),
        "shape": [int(msg.shape[0]), int(msg.shape[1])],
        "dtype": msg.dtype,
        "description": msg.description,
        "n_frames": None if msg.n_frames is None else int(msg.n_frames),
        "metadata": dict(msg.metadata),
    }
    return encode_message(TOPIC_START, header)


def start_from_message(message: Message) -> StartMessage:
    """Validate a generic :class:`Message` as a ``start`` message."""
    expect_topic(message, TOPIC_START)
    h, t = message.header, TOPIC_START
    metadata = header_field(h, t, "metadata")
    if not isinstance(metadata, dict):
        raise ProtocolError(f"'start' field 'metadata' is {metadata!r}; expected an object")
    return StartMessage(
        session_id=str_field(h, t, "session_id", nonempty=True),
        source=str_field(h, t, "source", choices=SOURCE_KINDS),
        frame_rate_hz=float_field(h, t, "frame_rate_hz", positive=True),
        shape=shape_field(h, t),
        dtype=dtype_field(h, t),
        description=str_field(h, t, "description"),
        n_frames=int_field(h, t, "n_frames", minimum=0, nullable=True),
        metadata=metadata,
    )


def decode_start(frames: Sequence[Any]) -> StartMessage:
    """Decode and validate a ``start`` message; raises ProtocolError on any problem."""
    return start_from_message(decode_message(frames))


@dataclass(frozen=True, slots=True)
class EosMessage:
    """End of stream (topic ``eos``): the sender stops after this message.

    Attributes
    ----------
    session_id : str
    n_sent : int
        Frames sent in the session.
    reason : str
        ``"complete"``, ``"interrupted"`` or ``"error"``.
    """

    session_id: str
    n_sent: int
    reason: str = "complete"


def encode_eos(msg: EosMessage) -> list[bytes | memoryview]:
    """Encode an :class:`EosMessage` as ``[b"eos", header]``."""
    if msg.reason not in EOS_REASONS:
        raise ValueError(f"eos reason is {msg.reason!r}; expected one of {EOS_REASONS}")
    header = {"session_id": msg.session_id, "n_sent": int(msg.n_sent), "reason": msg.reason}
    return encode_message(TOPIC_EOS, header)


def eos_from_message(message: Message) -> EosMessage:
    """Validate a generic :class:`Message` as an ``eos`` message."""
    expect_topic(message, TOPIC_EOS)
    h, t = message.header, TOPIC_EOS
    return EosMessage(
        session_id=str_field(h, t, "session_id", nonempty=True),
        n_sent=int_field(h, t, "n_sent", minimum=0),
        reason=str_field(h, t, "reason", choices=EOS_REASONS),
    )


def decode_eos(frames: Sequence[Any]) -> EosMessage:
    """Decode and validate an ``eos`` message; raises ProtocolError on any problem."""
    return eos_from_message(decode_message(frames))


_TYPED = {
    TOPIC_FRAME: frame_from_message,
    TOPIC_START: start_from_message,
    TOPIC_EOS: eos_from_message,
}


def decode_any(frames: Sequence[Any]) -> FrameMessage | StartMessage | EosMessage | Message:
    """Decode a message of the frame stream into its typed form.

    ``frame``, ``start`` and ``eos`` become :class:`FrameMessage`, :class:`StartMessage` and
    :class:`EosMessage`; any other (valid) topic is returned as a generic :class:`Message`.

    Raises
    ------
    ProtocolError
        If the message is malformed.
    """
    message = decode_message(frames)
    typed = _TYPED.get(message.topic)
    return typed(message) if typed is not None else message
