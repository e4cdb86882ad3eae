"""Results-stream messages: encode/decode round trips, validation, centroids."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from acquisition.protocol import encode_message
from online_cnmfe.errors import ProtocolError
from online_cnmfe.results import stream as rs


def _wire(frames):  # what a socket delivers: bytes
    return [bytes(f) for f in frames]


def test_traces_round_trip():
    ids = np.array([3, 9, 12], np.int64)
    c = np.array([1.0, 2.0, 3.0], np.float32)
    meta = {"frame_index": 7, "seq": 70, "t_acq_ms": 350.0, "t_send_ns": 123, "process_ms": 0.5}
    msg = rs.decode_result(_wire(rs.encode_traces(meta, ids, c, c * 2, c * 3, 4, 1.5)))
    assert msg.topic == "traces"
    assert msg.header["frame_index"] == 7 and msg.header["t_send_ns"] == 123
    assert msg.header["footprints_version"] == 4 and msg.header["age_ms"] == 1.5
    np.testing.assert_array_equal(msg.arrays["neuron_ids"], ids)
    np.testing.assert_array_equal(msg.arrays["S"], c * 2)
    assert msg.header["flag"] is None  # an ordinary frame
    flagged = rs.encode_traces(meta, ids, c, c, c, 4, 1.5, flag="motion: shift 23.1 px > max 20")
    assert rs.decode_result(_wire(flagged)).header["flag"] == "motion: shift 23.1 px > max 20"
    assert msg.header["motion_shift_px"] is None and msg.header["motion_quality"] is None
    moved = rs.encode_traces(meta, ids, c, c, c, 4, 1.5, motion_shift_px=(1.5, -2.25),
                             motion_quality=np.float32(0.75))  # fmt: skip
    header = rs.decode_result(_wire(moved)).header
    assert header["motion_shift_px"] == [1.5, -2.25] and header["motion_quality"] == 0.75


def test_footprints_round_trip_and_centroids(rng):
    dims = (9, 13)
    dense = np.zeros((dims[0] * dims[1], 4), np.float32)
    dense[2 * 13 + 5, 0] = 1.0  # a single pixel at (2, 5)
    dense[[0, 13 * 8 + 12], 1] = [1.0, 3.0]  # (0, 0) and (8, 12): weighted centre (6, 9)
    dense[rng.integers(0, dense.shape[0], 10), 3] = rng.random(10).astype(np.float32)
    A = scipy.sparse.csc_array(dense)  # column 2 is empty
    msg = rs.decode_result(_wire(rs.encode_footprints(A, [5, 6, 7, 8], 2, dims)))
    A2, ids = rs.footprints_from_message(msg)
    assert (A2 != A).nnz == 0
    np.testing.assert_array_equal(ids, [5, 6, 7, 8])
    cents = msg.arrays["centroids"]
    np.testing.assert_allclose(cents[0], [2, 5])
    np.testing.assert_allclose(cents[1], [6, 9])
    np.testing.assert_array_equal(cents[2], [0, 0])
    r, c = np.divmod(np.arange(dense.shape[0]), dims[1])
    w = dense[:, 3]
    np.testing.assert_allclose(cents[3], [(w * r).sum() / w.sum(), (w * c).sum() / w.sum()], 1e-5)
    with pytest.raises(ValueError, match="expected"):
        rs.encode_footprints(A, [1, 2], 0, dims)


def test_other_topics_round_trip():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = rs.decode_result(_wire(rs.encode_image(5, "residual", img, 2)))
    np.testing.assert_array_equal(msg.arrays["image"], img)
    msg = rs.decode_result(_wire(rs.encode_event("born", 5, [1, 2], "two new")))
    assert msg.header["neuron_ids"] == [1, 2]
    msg = rs.decode_result(_wire(rs.encode_trigger("r1", 5, 250.0, 3.5, 1.2, [4])))
    assert msg.header["rule"] == "r1"
    assert rs.decode_result(_wire(rs.encode_eos(10, "SIGINT"))).header["reason"] == "SIGINT"
    assert rs.decode_result(_wire(rs.encode_ready("abc", 42))).header["engine_pid"] == 42
    with pytest.raises(ValueError, match="layer"):
        rs.encode_image(0, "nope", img, 1)
    with pytest.raises(ValueError, match="kind"):
        rs.encode_event("exploded", 0)
    with pytest.raises(ValueError, match="lacks"):
        rs.encode_status({"frame_index": 0})


def test_decode_rejects_incomplete_messages():
    with pytest.raises(ProtocolError, match="header fields"):
        rs.decode_result(_wire(encode_message("traces", {"frame_index": 1})))
    arrays = {n: np.zeros(2, np.float32) for n in ("C", "S", "C_raw")}
    arrays["neuron_ids"] = np.zeros(3, np.int64)
    header = dict.fromkeys(rs.RESULT_TOPICS["traces"][0], 0)
    with pytest.raises(ProtocolError, match="differ in length"):
        rs.decode_result(_wire(encode_message("traces", header, arrays)))
    unknown = rs.decode_result(_wire(encode_message("future_topic", {"x": 1})))
    assert unknown.header["x"] == 1


def _status(**extra):
    fields = dict.fromkeys(rs.RESULT_TOPICS["status"][0], 0)
    fields.update(phase="initialising", store_ok=True, store_error=None, dims=None, **extra)
    return _wire(rs.encode_status(fields))


def test_status_init_progress_fields_are_validated():
    msg = rs.decode_result(_status(init_stage="seeding", init_fit_progress=0.25))
    assert msg.header["init_stage"] == "seeding" and msg.header["init_fit_progress"] == 0.25
    assert "init_stage" not in rs.decode_result(_status()).header  # older engines: optional
    rs.decode_result(_status(init_stage=None, init_fit_progress=1))
    for bad in (
        {"init_fit_progress": 1.5},
        {"init_fit_progress": -0.1},
        {"init_fit_progress": "half"},
        {"init_fit_progress": True},
        {"init_stage": 3},
        {"init_progress": 2.0},
    ):
        with pytest.raises(ProtocolError, match="init_"):
            rs.decode_result(_status(**bad))
