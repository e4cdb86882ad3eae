"""Generic framing of the wire protocol (version 1): ``[topic, header, *buffers]``.

- ``topic``: ASCII bytes (``b"frame"``, ``b"start"``, ``b"eos"``, ...), used by SUB filters;
- ``header``: a UTF-8 JSON object with ``"v"`` (protocol version), ``"topic"`` (frame 0 again)
  and ``"arrays"`` (one ``{"name", "dtype", "shape"}`` descriptor per buffer, in order);
- ``buffers``: raw C-contiguous little-endian array bytes, handed over without copying.

:func:`encode_message` / :func:`decode_message` implement the framing; the ``*_field``
helpers validate the header fields of typed messages (:mod:`acquisition.protocol`, and the
engine's results stream). Decoding raises :class:`~acquisition.errors.ProtocolError` naming
the problem; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acquisition.errors import ProtocolError

PROTOCOL_VERSION = 1
ALLOWED_DTYPES = frozenset(
    {"uint8", "uint16", "int16", "int32", "int64", "uint32", "float32", "float64", "bool"}
)
MAX_NDIM = 32
# Integer header fields are counts and indices: at most 2^53 - 1 (exact in a float64 and in
# JSON readers of any language, 285,000 years of frames at 1 kHz); int64 fields (clocks in ns)
# say so explicitly with INT64_MIN/INT64_MAX.
MAX_COUNT = 2**53 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_RESERVED_KEYS = ("v", "topic", "arrays")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


# --------------------------------------------------------------------------------------------
# Generic framing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its topic, its JSON header and its named arrays.

    Attributes
    ----------
    topic : str
        Frame 0 of the multipart message.
    header : dict
        The JSON header, including the ``"v"``, ``"topic"`` and ``"arrays"`` keys.
    arrays : dict of str to ndarray
        The buffers, decoded zero-copy with ``np.frombuffer`` (read-only views).
    """

    topic: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"header value {value!r} of type {type(value).__name__} is not JSON-safe")


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ValueError(
            f"topic {topic!r} is invalid; expected 1-64 ASCII letters, digits or '_.:/-'"
        )


_DTYPE_NAMES: dict[np.dtype, str] = {}


def _dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, remembered: numpy computes it in Python (~2 µs) on every access, and a
    traces message asks 8 times per frame."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def _wire_array(name: str, array: np.ndarray) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise ValueError(f"array name {name!r} must be a non-empty string")
    array = np.asarray(array)
    if _dtype_name(array.dtype) not in ALLOWED_DTYPES:
        raise ValueError(
            f"array {name!r} has dtype {array.dtype}; allowed: {', '.join(sorted(ALLOWED_DTYPES))}"
        )
    if array.ndim > MAX_NDIM:
        raise ValueError(f"array {name!r} has {array.ndim} dimensions; at most {MAX_NDIM}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.require(array, requirements="C")


def encode_message(
    topic: str,
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
) -> list[bytes | memoryview]:
    """Frame a message as ``[topic, header-json, *buffers]`` for ``socket.send_multipart``.

    Parameters
    ----------
    topic : str
        Message topic (ASCII letters, digits, ``_.:/-``; 1-64 characters).
    header : mapping
        JSON-safe fields (numpy scalars are converted). The keys ``"v"``, ``"topic"`` and
        ``"arrays"`` are reserved and filled in here.
    arrays : mapping of str to ndarray, optional
        Named arrays of an allowed dtype (see :data:`ALLOWED_DTYPES`). They are made
        C-contiguous and little-endian (a copy only when they are not already).

    Returns
    -------
    list of bytes or memoryview
        The frames. Array buffers are memoryviews of the (contiguous) arrays, not copies:
        the caller must not modify the arrays until the send is done.

    Raises
    ------
    ValueError
        If the topic, a dtype, a reserved header key or a header value is invalid.
    TypeError
        If a header value is not JSON-serialisable.
    """
    _check_topic(topic)
    if not isinstance(header, Mapping):
        raise TypeError(f"header must be a mapping, got {type(header).__name__}")
    for key in _RESERVED_KEYS:
        if key in header and key != "v":
            raise ValueError(f"header key {key!r} is reserved; it is filled in by encode_message")
    if "v" in header and header["v"] != PROTOCOL_VERSION:
        raise ValueError(f"header 'v' is {header['v']!r}; this encoder writes {PROTOCOL_VERSION}")
    wire = [(name, _wire_array(name, a)) for name, a in (arrays or {}).items()]
    full = dict(header)
    full["v"] = PROTOCOL_VERSION
    full["topic"] = topic
    full["arrays"] = [
        {"name": name, "dtype": _dtype_name(a.dtype), "shape": list(a.shape)} for name, a in wire
    ]
    try:
        text = json.dumps(full, default=_json_default, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"header is not valid JSON (NaN/inf are not allowed): {exc}") from exc
    frames: list[bytes | memoryview] = [topic.encode("ascii"), text.encode("utf-8")]
    frames.extend(memoryview(a).cast("B") if a.size else b"" for _, a in wire)
    return frames


def _as_buffer(part: Any, what: str) -> memoryview:
    buf = getattr(part, "buffer", part)  # zmq.Frame exposes .buffer
    try:
        view = memoryview(buf)
    except TypeError:
        raise ProtocolError(
            f"{what} is a {type(part).__name__}; expected bytes, memoryview or zmq.Frame"
        ) from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in JSON")


def _decode_header(frames: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(frames, Sequence) or isinstance(frames, bytes | str):
        raise ProtocolError(f"a message must be a list of frames, got {type(frames).__name__}")
    if len(frames) < 2:
        raise ProtocolError(
            f"message has {len(frames)} frame(s); expected at least 2 (topic, JSON header)"
        )
    raw_topic = bytes(_as_buffer(frames[0], "frame 0 (topic)"))
    try:
        topic = raw_topic.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"topic {raw_topic[:40]!r} is not ASCII") from None
    if not _TOPIC_RE.match(topic):
        raise ProtocolError(f"topic {raw_topic[:40]!r} is not a valid topic name")
    raw = bytes(_as_buffer(frames[1], "frame 1 (header)"))
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(
            f"{topic!r} header is not UTF-8 JSON ({exc}); starts with {raw[:40]!r}"
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError(f"{topic!r} header is a JSON {type(header).__name__}; expected object")
    version = header.get("v")
    if "v" not in header:
        raise ProtocolError(f"{topic!r} header has no protocol version 'v'")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{topic!r} message has protocol version {version!r}; this receiver speaks "
            f"version {PROTOCOL_VERSION} (upgrade the older side)"
        )
    if header.get("topic") != topic:
        raise ProtocolError(
            f"header topic {header.get('topic')!r} differs from frame-0 topic {topic!r}"
        )
    return topic, header


def _decode_descriptor(topic: str, i: int, desc: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    where = f"{topic!r} array descriptor {i}"
    if not isinstance(desc, dict):
        raise ProtocolError(f"{where} is a {type(desc).__name__}; expected an object")
    name, dtype, shape = desc.get("name"), desc.get("dtype"), desc.get("shape")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where} has name {name!r}; expected a non-empty string")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise ProtocolError(
            f"{where} ({name!r}) has dtype {dtype!r}; allowed: {', '.join(sorted(ALLOWED_DTYPES))}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise ProtocolError(
            f"{where} ({name!r}) has shape {shape!r}; expected a list of at most {MAX_NDIM} "
            "non-negative integers"
        )
    return name, np.dtype(dtype).newbyteorder("<"), tuple(shape)


def decode_message(frames: Sequence[Any]) -> Message:
    """Decode and validate a multipart message produced by :func:`encode_message`.

    Parameters
    ----------
    frames : sequence of bytes, memoryview or zmq.Frame
        The parts as received (``recv_multipart(copy=False)`` is fine).

    Returns
    -------
    Message
        Topic, header and arrays; arrays are zero-copy, read-only ``np.frombuffer`` views.

    Raises
    ------
    ProtocolError
        On a wrong frame count, non-ASCII topic, non-JSON or non-object header, unknown
        version, topic mismatch, bad array descriptors, a dtype outside the whitelist, or a
        buffer whose length is not ``prod(shape) * itemsize``.
    """
    topic, header = _decode_header(frames)
    descriptors = header.get("arrays")
    if not isinstance(descriptors, list):
        raise ProtocolError(f"{topic!r} header 'arrays' is {descriptors!r}; expected a list")
    if len(descriptors) != len(frames) - 2:
        raise ProtocolError(
            f"{topic!r} message has {len(frames) - 2} buffer frame(s) but its header "
            f"describes {len(descriptors)}"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, desc in enumerate(descriptors):
        name, dtype, shape = _decode_descriptor(topic, i, desc)
        if name in arrays:
            raise ProtocolError(f"{topic!r} message has two arrays named {name!r}")
        buf = _as_buffer(frames[2 + i], f"{topic!r} buffer {name!r}")
        expected = math.prod(shape) * dtype.itemsize
        if buf.nbytes != expected:
            raise ProtocolError(
                f"{topic!r} buffer {name!r} has {buf.nbytes} bytes; shape {list(shape)} of "
                f"{dtype.name} needs {expected} (truncated or corrupted message)"
            )
        arrays[name] = (
            np.frombuffer(buf, dtype=dtype).reshape(shape)
            if expected
            else (np.zeros(shape, dtype=dtype))
        )
    return Message(topic=topic, header=header, arrays=arrays)


# --------------------------------------------------------------------------------------------
# Field validation helpers for the typed messages
# --------------------------------------------------------------------------------------------
def header_field(header: Mapping[str, Any], topic: str, key: str) -> Any:
    if key not in header:
        raise ProtocolError(f"{topic!r} header lacks the field {key!r}")
    return header[key]


def int_field(
    header, topic, key, *, minimum=-MAX_COUNT, maximum=MAX_COUNT, nullable=False
) -> int | None:
    """An integer header field within ``[minimum, maximum]`` (default ±(2^53 − 1)).

    The range check keeps a crafted header (a ``seq`` of 2^63) from overflowing the int64
    arrays and counters downstream: it is a malformed message, not a crash later.
    """
    value = header_field(header, topic, key)
    if value is None and nullable:
        return None
    if type(value) is not int or not minimum <= value <= maximum:
        need = f"an integer in [{minimum}, {maximum}]"
        need += " or null" if nullable else ""
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ProtocolError(f"{topic!r} field {key!r} is {shown}; expected {need}")
    return value


def float_field(header, topic, key, *, positive=False) -> float:
    value = header_field(header, topic, key)
    if type(value) not in (int, float) or not math.isfinite(value) or (positive and value <= 0):
        need = "a positive finite number" if positive else "a finite number"
        raise ProtocolError(f"{topic!r} field {key!r} is {value!r}; expected {need}")
    return float(value)


def str_field(header, topic, key, *, choices=None, nonempty=False) -> str:
    value = header_field(header, topic, key)
    if not isinstance(value, str) or (nonempty and not value):
        raise ProtocolError(f"{topic!r} field {key!r} is {value!r}; expected a string")
    if choices is not None and value not in choices:
        raise ProtocolError(f"{topic!r} field {key!r} is {value!r}; expected one of {choices}")
    return value


def shape_field(header, topic, key="shape") -> tuple[int, int]:
    value = header_field(header, topic, key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(n) is int and n > 0 for n in value)
    ):
        raise ProtocolError(f"{topic!r} field {key!r} is {value!r}; expected [H, W] with H, W > 0")
    return (value[0], value[1])


def dtype_field(header, topic, key="dtype") -> str:
    return str_field(header, topic, key, choices=tuple(sorted(ALLOWED_DTYPES)))


def expect_topic(message: Message, topic: str) -> None:
    if message.topic != topic:
        raise ProtocolError(f"expected a {topic!r} message, got {message.topic!r}")
