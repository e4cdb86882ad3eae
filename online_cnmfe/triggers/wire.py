"""The ``trigger`` message (protocol version 1) and the control requests, encode and decode.

A trigger is ``[b"trigger", header-json]`` framed by :func:`acquisition.protocol.encode_message`
(no buffers). Header fields: ``rule`` (str), ``frame_index`` (int >= 0), ``seq`` (int, -1
unknown), ``t_acq_ms`` (float or null), ``value`` (float or null), ``age_ms`` (float or null: age
of the frame at firing, from its arrival at the engine), ``neuron_ids`` (list of int),
``t_recv_ns`` / ``t_fire_ns`` (engine ``time.monotonic_ns()`` at frame arrival / firing; -1
unknown; comparable with a client's monotonic clock on the same host), ``count`` (int >= 1).

Control requests and replies are single-frame UTF-8 JSON objects with ``"v": 1`` (never pickle);
see :mod:`online_cnmfe.triggers.control`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from acquisition.protocol import PROTOCOL_VERSION, decode_message, encode_message
from online_cnmfe.errors import ProtocolError
from online_cnmfe.triggers.records import TriggerRecord

__all__ = ["TOPIC_TRIGGER", "decode_json", "decode_trigger", "encode_json", "encode_trigger"]

TOPIC_TRIGGER = "trigger"
MAX_JSON_BYTES = 1 << 20


_RECENT_ENCODED = 8  # records whose frames are kept: every rule firing at one frame
_recent_encoded: tuple[tuple[TriggerRecord, list], ...] = ()


def encode_trigger(record: TriggerRecord) -> list[bytes | memoryview]:
    """Frames of the ``trigger`` message for ``record``.

    A firing goes out twice, on the trigger socket and on the results stream, as the same
    message: the frames of the last few records encoded are kept and returned again for them
    (they are bytes, which ZeroMQ copies when sending), so the JSON is built once per firing,
    also when several rules fire at one frame (all sent on the trigger socket first).
    """
    global _recent_encoded
    recent = _recent_encoded  # one read of an immutable tuple: safe if another thread encodes
    for rec, frames in recent:
        if rec is record:
            return list(frames)
    frames = encode_message(TOPIC_TRIGGER, record.to_header())
    _recent_encoded = (*recent[1 - _RECENT_ENCODED :], (record, frames))
    return list(frames)


def _int(h: dict[str, Any], key: str, minimum: int) -> int:
    v = h.get(key)
    if type(v) is not int or v < minimum:
        raise ProtocolError(f"'trigger' field {key!r} is {v!r}; expected an integer >= {minimum}")
    return v


def _float_or_nan(h: dict[str, Any], key: str) -> float:
    v = h.get(key, "missing")
    if v is None:
        return math.nan
    if type(v) not in (int, float) or not math.isfinite(v):
        raise ProtocolError(f"'trigger' field {key!r} is {v!r}; expected a number or null")
    return float(v)


def decode_trigger(frames: Sequence[Any]) -> TriggerRecord:
    """Decode and validate a ``trigger`` message into a :class:`TriggerRecord`.

    Raises
    ------
    ProtocolError
        On any framing problem, another topic, or a missing or mistyped field.
    """
    msg = decode_message(frames)
    if msg.topic != TOPIC_TRIGGER:
        raise ProtocolError(f"expected a 'trigger' message, got {msg.topic!r}")
    h = msg.header
    rule, ids = h.get("rule"), h.get("neuron_ids")
    if not isinstance(rule, str) or not rule:
        raise ProtocolError(f"'trigger' field 'rule' is {rule!r}; expected a non-empty string")
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise ProtocolError(f"'trigger' field 'neuron_ids' is {ids!r}; expected a list of ints")
    return TriggerRecord(
        rule=rule,
        frame_index=_int(h, "frame_index", 0),
        seq=_int(h, "seq", -1),
        t_acq_ms=_float_or_nan(h, "t_acq_ms"),
        value=_float_or_nan(h, "value"),
        age_ms=_float_or_nan(h, "age_ms"),
        neuron_ids=tuple(ids),
        t_recv_ns=_int(h, "t_recv_ns", -1),
        t_fire_ns=_int(h, "t_fire_ns", -1),
        count=_int(h, "count", 1),
    )


def encode_json(obj: dict[str, Any]) -> bytes:
    """A control request/reply as one JSON frame with ``"v": 1``."""
    return json.dumps({"v": PROTOCOL_VERSION, **obj}, allow_nan=False).encode("utf-8")


def decode_json(frame: Any, what: str) -> dict[str, Any]:
    """Parse one JSON control frame; raises ProtocolError naming ``what`` on any problem."""
    raw = bytes(getattr(frame, "bytes", frame))
    if len(raw) > MAX_JSON_BYTES:
        raise ProtocolError(f"{what} is {len(raw)} bytes; at most {MAX_JSON_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"{what} is not UTF-8 JSON ({exc}); starts with {raw[:40]!r}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is a JSON {type(obj).__name__}; expected an object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{what} has protocol version {obj.get('v')!r}; expected {PROTOCOL_VERSION}"
        )
    return obj
