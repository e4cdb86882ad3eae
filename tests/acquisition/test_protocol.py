"""Wire protocol: round trips (hypothesis) and every kind of malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acquisition.protocol import (
    ALLOWED_DTYPES,
    PROTOCOL_VERSION,
    EosMessage,
    FrameMessage,
    Message,
    StartMessage,
    decode_any,
    decode_eos,
    decode_frame,
    decode_message,
    decode_start,
    encode_eos,
    encode_frame,
    encode_message,
    encode_start,
)
from online_cnmfe.errors import ProtocolError


def _frame(pixels=None, **kw) -> FrameMessage:
    if pixels is None:
        pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    fields = dict(
        seq=7,
        frame_index=3,
        daq_frame=65537,
        t_acq_ms=150.25,
        t_send_ns=123456789,
        session_id="abc",
        source="replay",
    )
    fields.update(kw)
    return FrameMessage(pixels=pixels, **fields)


def _header(frames) -> dict:
    return json.loads(bytes(frames[1]))


def _with_header(frames, **changes) -> list:
    header = _header(frames)
    for key, value in changes.items():
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


_DELETE = object()


# ---------------------------------------------------------------- round trips
@settings(max_examples=60, deadline=None)
@given(
    pixels=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int16]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20),
    ),
    seq=st.integers(0, 2**53 - 1),
    daq=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    t_acq=st.floats(-1e9, 1e9, allow_nan=False),
    session=st.text(min_size=1, max_size=20),
)
def test_frame_round_trip(pixels, seq, daq, t_acq, session):
    msg = _frame(pixels, seq=seq, daq_frame=daq, t_acq_ms=t_acq, session_id=session)
    out = decode_frame([bytes(p) for p in encode_frame(msg)])
    assert out.seq == seq and out.daq_frame == daq and out.t_acq_ms == t_acq
    assert out.session_id == session and out.source == "replay"
    assert out.pixels.dtype == pixels.dtype and out.shape == pixels.shape
    np.testing.assert_array_equal(out.pixels, pixels)


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.dictionaries(
        st.text(min_size=1, max_size=8),
        hnp.arrays(
            dtype=st.sampled_from(sorted(ALLOWED_DTYPES)),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        ),
        max_size=4,
    ),
    header=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("v", "topic", "arrays")),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
        max_size=5,
    ),
)
def test_generic_round_trip(arrays, header):
    frames = encode_message("some_topic", header, arrays)
    msg = decode_message(frames)
    assert msg.topic == "some_topic"
    assert msg.header["v"] == PROTOCOL_VERSION
    for key, value in header.items():
        assert msg.header[key] == value
    assert list(msg.arrays) == list(arrays)
    for name, array in arrays.items():
        assert msg.arrays[name].shape == array.shape
        assert msg.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(msg.arrays[name], array)


def test_encode_does_not_copy_contiguous_pixels():
    pixels = np.zeros((64, 64), np.uint8)
    frames = encode_frame(_frame(pixels))
    buf = frames[2]
    assert isinstance(buf, memoryview)
    pixels[0, 0] = 9  # the buffer is a view of the array
    assert buf[0] == 9


def test_non_contiguous_and_big_endian_are_normalised():
    base = np.arange(40, dtype=">u2").reshape(5, 8)
    view = base[:, ::2]
    out = decode_frame(encode_frame(_frame(view)))
    np.testing.assert_array_equal(out.pixels, view)
    assert out.pixels.dtype == np.dtype("uint16")


def test_decode_accepts_memoryviews_and_bytearrays():
    frames = encode_frame(_frame())
    out = decode_frame([bytearray(frames[0]), memoryview(bytes(frames[1])), frames[2]])
    assert out.seq == 7


def test_decoded_pixels_are_zero_copy_and_read_only():
    frames = [bytes(p) for p in encode_frame(_frame())]
    out = decode_frame(frames)
    assert not out.pixels.flags.writeable


def test_start_and_eos_round_trip():
    start = StartMessage(
        session_id="s1",
        source="synthetic",
        frame_rate_hz=20.0,
        shape=(608, 608),
        dtype="uint8",
        description="simulator seed 0",
        n_frames=None,
        metadata={"frameRate": "20FPS", "nested": [1, 2]},
    )
    assert decode_start(encode_start(start)) == start
    eos = EosMessage(session_id="s1", n_sent=42, reason="interrupted")
    assert decode_eos(encode_eos(eos)) == eos
    assert decode_any(encode_eos(eos)) == eos
    assert decode_any(encode_start(start)) == start
    assert isinstance(decode_any(encode_frame(_frame())), FrameMessage)
    other = decode_any(encode_message("status", {"x": 1}))
    assert isinstance(other, Message) and other.header["x"] == 1


# ---------------------------------------------------------------- encode misuse
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", {}), ValueError),
        (("bad topic", {}), ValueError),
        (("t", {"arrays": []}), ValueError),
        (("t", {"v": 2}), ValueError),
        (("t", {"x": float("nan")}), ValueError),
        (("t", {"x": object()}), TypeError),
        (("t", {}, {"a": np.zeros(3, np.complex64)}), ValueError),
        (("t", {}, {"a": np.array(["s"])}), ValueError),
    ],
)
def test_encode_rejects_misuse(args, error):
    with pytest.raises(error):
        encode_message(*args)


def test_encode_frame_rejects_bad_pixels_and_source():
    with pytest.raises(ValueError, match="shape"):
        encode_frame(_frame(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="source"):
        encode_frame(_frame(source="camera"))


# ---------------------------------------------------------------- malformed input
def test_wrong_frame_count():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match="at least 2"):
        decode_message(frames[:1])
    with pytest.raises(ProtocolError, match="buffer frame"):
        decode_frame(frames[:2])
    with pytest.raises(ProtocolError, match="buffer frame"):
        decode_frame([*frames, b"extra"])
    with pytest.raises(ProtocolError, match="list of frames"):
        decode_message(b"frame")


def test_truncated_buffer():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match=r"has 11 bytes.*needs 12"):
        decode_frame([frames[0], frames[1], bytes(frames[2])[:-1]])


def test_unknown_version():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match="version 2"):
        decode_frame(_with_header(frames, v=2))
    with pytest.raises(ProtocolError, match="version True"):
        decode_frame(_with_header(frames, v=True))
    with pytest.raises(ProtocolError, match="no protocol version"):
        decode_frame(_with_header(frames, v=_DELETE))


def test_non_json_and_non_object_header():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        decode_frame([frames[0], b"{not json", frames[2]])
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        decode_frame([frames[0], b"\xff\xfe", frames[2]])
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        decode_frame([frames[0], b'{"v": NaN}', frames[2]])
    with pytest.raises(ProtocolError, match="JSON list"):
        decode_frame([frames[0], b"[1, 2]", frames[2]])


def test_topic_problems():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match="differs"):
        decode_frame([b"start", *frames[1:]])
    with pytest.raises(ProtocolError, match="not ASCII"):
        decode_frame([b"\xe9", *frames[1:]])
    with pytest.raises(ProtocolError, match="expected a 'frame' message"):
        decode_frame(encode_eos(EosMessage("s", 1)))


@pytest.mark.parametrize(
    "field", ["seq", "frame_index", "daq_frame", "t_acq_ms", "t_send_ns", "session_id", "source"]
)
def test_missing_frame_field(field):
    with pytest.raises(ProtocolError, match=f"lacks the field '{field}'"):
        decode_frame(_with_header(encode_frame(_frame()), **{field: _DELETE}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", -1),
        ("seq", 1.5),
        ("seq", "1"),
        ("seq", True),
        ("frame_index", None),
        ("daq_frame", 2.0),
        ("t_acq_ms", "now"),
        ("t_send_ns", None),
        ("session_id", ""),
        ("source", "camera"),
        ("shape", [3]),
        ("shape", [3, 0]),
        ("dtype", "object"),
    ],
)
def test_mistyped_frame_field(field, value):
    with pytest.raises(ProtocolError, match=f"'{field}'"):
        decode_frame(_with_header(encode_frame(_frame()), **{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 2**63),
        ("seq", 2**53),
        ("frame_index", 2**63),
        ("frame_index", 10**400),
        ("daq_frame", -(2**63) - 1),
        ("t_send_ns", 2**63),
        ("t_send_ns", -(2**63) - 1),
    ],
)
def test_out_of_range_header_integers_are_malformed(field, value):
    # A crafted seq or frame_index of 2**63 used to overflow the store's int64 arrays and stop
    # the store thread; it must be refused here, naming the field and the allowed range.
    with pytest.raises(ProtocolError, match=rf"'{field}' is .*expected an integer in \["):
        decode_frame(_with_header(encode_frame(_frame()), **{field: value}))


def test_int64_clock_values_are_accepted():
    out = decode_frame(encode_frame(_frame(t_send_ns=2**63 - 1, seq=2**53 - 1)))
    assert out.t_send_ns == 2**63 - 1 and out.seq == 2**53 - 1


def test_pixels_disagree_with_header_shape_or_dtype():
    frames = encode_frame(_frame())  # 3x4 uint8
    with pytest.raises(ProtocolError, match="header says"):
        decode_frame(_with_header(frames, shape=[4, 3]))
    with pytest.raises(ProtocolError, match="header says"):
        decode_frame(_with_header(frames, dtype="uint16"))


@pytest.mark.parametrize(
    ("descriptor", "match"),
    [
        ({"name": "pixels", "dtype": "object", "shape": [3, 4]}, "dtype 'object'"),
        ({"name": "pixels", "dtype": "complex64", "shape": [3, 4]}, "dtype 'complex64'"),
        ({"name": "pixels", "dtype": "uint8", "shape": [3, -4]}, "non-negative"),
        ({"name": "pixels", "dtype": "uint8", "shape": [3.0, 4]}, "non-negative"),
        ({"name": "pixels", "dtype": "uint8", "shape": "3x4"}, "non-negative"),
        ({"name": "", "dtype": "uint8", "shape": [3, 4]}, "non-empty"),
        ({"name": "pixels", "dtype": "uint16", "shape": [3, 4]}, "needs 24"),
        ("pixels", "expected an object"),
    ],
)
def test_bad_array_descriptor(descriptor, match):
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match=match):
        decode_frame(_with_header(frames, arrays=[descriptor]))


def test_arrays_field_missing_or_duplicated():
    frames = encode_frame(_frame())
    with pytest.raises(ProtocolError, match="'arrays'"):
        decode_frame(_with_header(frames, arrays=_DELETE))
    desc = _header(frames)["arrays"][0]
    with pytest.raises(ProtocolError, match="two arrays"):
        decode_message(_with_header([*frames, frames[2]], arrays=[desc, desc]))


def test_frame_with_extra_array_is_rejected():
    frames = encode_message(
        "frame",
        {
            k: v
            for k, v in _header(encode_frame(_frame())).items()
            if k not in ("v", "topic", "arrays")
        },
        {"pixels": np.zeros((3, 4), np.uint8), "extra": np.zeros(2, np.uint8)},
    )
    with pytest.raises(ProtocolError, match="expected pixels"):
        decode_frame(frames)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("frame_rate_hz", 0),
        ("frame_rate_hz", "20FPS"),
        ("shape", [608]),
        ("n_frames", -1),
        ("metadata", []),
        ("source", "x"),
    ],
)
def test_bad_start_fields(field, value):
    start = StartMessage("s", "replay", 20.0, (4, 4), "uint8")
    with pytest.raises(ProtocolError, match=f"'{field}'"):
        decode_start(_with_header(encode_start(start), **{field: value}))


def test_bad_eos_fields():
    frames = encode_eos(EosMessage("s", 3))
    with pytest.raises(ProtocolError, match="'reason'"):
        decode_eos(_with_header(frames, reason="bored"))
    with pytest.raises(ProtocolError, match="'n_sent'"):
        decode_eos(_with_header(frames, n_sent=_DELETE))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_random_bytes_never_crash(parts):
    """Arbitrary garbage either decodes or raises ProtocolError, nothing else."""
    try:
        decode_any(parts)
    except ProtocolError:
        pass


def test_remembered_dtype_names_are_numpys():
    from acquisition.wire import _dtype_name

    for dt in ("<f4", ">f4", "uint16", "int64", "bool", "<f8"):
        dtype = np.dtype(dt)
        assert _dtype_name(dtype) == dtype.name
        assert _dtype_name(dtype) == dtype.name  # the second time from the table
