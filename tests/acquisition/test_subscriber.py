"""FrameSubscriber on real sockets: drops, restarts, malformed and rejected messages, eos."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from acquisition.protocol import (
    EosMessage,
    FrameMessage,
    StartMessage,
    encode_eos,
    encode_frame,
    encode_start,
)
from acquisition.subscriber import FrameSubscriber, poll_recv_multipart

TIMEOUT_MS = 5000


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def pub(ctx):
    """An XPUB bound on a random loopback port (it reports subscriptions: our handshake)."""
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock
    sock.close(linger=0)


def subscribe(pub, ctx, endpoint=None, **kw) -> FrameSubscriber:
    endpoint = endpoint or pub.getsockopt_string(zmq.LAST_ENDPOINT)
    sub = FrameSubscriber(endpoint, context=ctx, **kw)
    for _ in range(3):  # frame, start, eos subscriptions reached the publisher
        assert poll_recv_multipart(pub, TIMEOUT_MS) is not None
    return sub


def frame(seq, session="s1", shape=(4, 5), dtype=np.uint8, daq=None, index=None):
    pixels = np.full(shape, seq % 200, dtype=dtype)
    return FrameMessage(
        seq=seq,
        frame_index=seq if index is None else index,
        daq_frame=daq,
        t_acq_ms=seq * 50.0,
        t_send_ns=0,
        session_id=session,
        source="replay",
        pixels=pixels,
    )


def start(session="s1", shape=(4, 5), dtype="uint8"):
    return StartMessage(session, "replay", 20.0, shape, dtype, "test", None, {})


def recv_all(sub, n):
    out = []
    for _ in range(n):
        msg = sub.recv(TIMEOUT_MS)
        assert msg is not None, f"timed out after {len(out)} frames; stats {sub.stats}"
        out.append(msg)
    return out


def test_in_order_stream_pixel_exact(pub, ctx):
    with subscribe(pub, ctx) as sub:
        pub.send_multipart(encode_start(start()))
        for seq in range(5):
            pub.send_multipart(encode_frame(frame(seq)), copy=False)
        got = recv_all(sub, 5)
        assert [f.seq for f in got] == list(range(5))
        np.testing.assert_array_equal(got[3].pixels, np.full((4, 5), 3, np.uint8))
        assert sub.session == start()
        assert sub.stats.n_frames == 5 and sub.stats.n_dropped == 0
        assert [e.kind for e in sub.pop_events()] == ["start"]


def test_seq_gaps_are_drops_with_ranges(pub, ctx):
    with subscribe(pub, ctx) as sub:
        for seq in (0, 1, 4, 5, 9):
            pub.send_multipart(encode_frame(frame(seq)))
        got = recv_all(sub, 5)
        assert [f.seq for f in got] == [0, 1, 4, 5, 9]
        assert sub.stats.n_dropped == 5
        assert sub.stats.drop_ranges == [(2, 3), (6, 8)]
        drops = [e for e in sub.pop_events() if e.kind == "drop"]
        assert [(e.first, e.last) for e in drops] == [(2, 3), (6, 8)]


def test_a_new_session_is_a_restart_and_a_seq_going_back_is_out_of_order(pub, ctx):
    with subscribe(pub, ctx) as sub:
        for msg in (frame(0), frame(1), frame(0), frame(1), frame(0, session="s2")):
            pub.send_multipart(encode_frame(msg))
        recv_all(sub, 5)
        assert sub.stats.n_restarts == 1
        assert sub.stats.n_out_of_order == 1
        assert sub.stats.n_dropped == 0
        assert sub.session_id == "s2"
        events = sub.pop_events()
        assert [e.kind for e in events] == ["out_of_order", "restart"]
        assert events[0].frame_index == 0 and "went back from 1 to 0" in events[0].detail


def test_a_repeated_or_backward_seq_is_never_a_drop(pub, ctx):
    # the case: a frame whose seq goes back must not make the next one look like a gap
    with subscribe(pub, ctx) as sub:
        for seq in (0, 1, 2, 3, 2, 4, 5, 5, 6):
            pub.send_multipart(encode_frame(frame(seq)))
        recv_all(sub, 9)
        assert sub.stats.n_dropped == 0 and sub.stats.drop_ranges == []
        assert sub.stats.n_out_of_order == 2 and sub.stats.n_restarts == 0
        pub.send_multipart(encode_frame(frame(9)))  # a real gap is still measured
        recv_all(sub, 1)
        assert sub.stats.drop_ranges == [(7, 8)]


def test_frames_sent_before_the_first_one_received_are_drops(pub, ctx):
    with subscribe(pub, ctx) as sub:
        pub.send_multipart(encode_frame(frame(8, index=108)))
        pub.send_multipart(encode_frame(frame(9, index=109)))
        recv_all(sub, 2)
        assert sub.stats.drop_ranges == [(0, 7)] and sub.stats.n_dropped == 8
        (drop,) = [e for e in sub.pop_events() if e.kind == "drop"]
        assert drop.frame_index == 108 and "before the first frame received" in drop.detail


def test_malformed_messages_are_counted_and_skipped(pub, ctx):
    with subscribe(pub, ctx) as sub:
        good = encode_frame(frame(0))
        pub.send_multipart([b"frame", b"{not json", bytes(good[2])])
        pub.send_multipart([good[0], good[1], bytes(good[2])[:-3]])  # truncated pixels
        pub.send_multipart([b"frame"])  # no header
        pub.send_multipart(good)
        got = sub.recv(TIMEOUT_MS)
        assert got is not None and got.seq == 0
        assert sub.stats.n_malformed == 3
        assert "at least 2" in sub.stats.last_malformed
        kinds = [e.kind for e in sub.pop_events()]
        assert kinds == ["malformed"] * 3


def test_wrong_shape_or_dtype_is_rejected(pub, ctx):
    with subscribe(pub, ctx) as sub:
        pub.send_multipart(encode_start(start(shape=(4, 5))))
        pub.send_multipart(encode_frame(frame(0, shape=(5, 4))))
        pub.send_multipart(encode_frame(frame(1, dtype=np.uint16)))
        pub.send_multipart(encode_frame(frame(2)))
        got = sub.recv(TIMEOUT_MS)
        assert got is not None and got.seq == 2
        assert sub.stats.n_rejected == 2
        assert "(4, 5) uint16" in sub.stats.last_rejected
        assert sub.stats.n_dropped == 0  # rejected frames are not drops


def test_expected_shape_from_constructor(pub, ctx):
    with subscribe(pub, ctx, expected_shape=(8, 8), expected_dtype="uint8") as sub:
        pub.send_multipart(encode_frame(frame(0, shape=(4, 5))))
        pub.send_multipart(encode_frame(frame(1, shape=(8, 8))))
        assert sub.recv(TIMEOUT_MS).seq == 1
        assert sub.stats.n_rejected == 1


def test_daq_counter_gap_with_contiguous_seq(pub, ctx):
    with subscribe(pub, ctx) as sub:
        for seq, daq in ((0, 100), (1, 101), (2, 104), (3, None), (4, 105)):
            pub.send_multipart(encode_frame(frame(seq, daq=daq)))
        recv_all(sub, 5)
        assert sub.stats.n_daq_lost == 2
        loss = [e for e in sub.pop_events() if e.kind == "daq_loss"]
        assert [(e.first, e.last) for e in loss] == [(102, 103)]


def test_eos_ends_recv_and_is_kept(pub, ctx):
    with subscribe(pub, ctx) as sub:
        pub.send_multipart(encode_frame(frame(0)))
        pub.send_multipart(encode_eos(EosMessage("s1", 1, "complete")))
        assert sub.recv(TIMEOUT_MS).seq == 0
        assert sub.recv(TIMEOUT_MS) is None
        assert sub.ended and sub.eos == EosMessage("s1", 1, "complete")
        assert sub.stats.n_dropped == 0
        pub.send_multipart(encode_start(start(session="s2")))
        pub.send_multipart(encode_frame(frame(0, session="s2")))
        assert sub.recv(TIMEOUT_MS).session_id == "s2"
        assert not sub.ended and sub.stats.n_restarts == 1


def test_frames_missing_before_eos_are_drops_and_eos_repeats_ignored(pub, ctx):
    with subscribe(pub, ctx) as sub:
        pub.send_multipart(encode_frame(frame(0)))
        pub.send_multipart(encode_eos(EosMessage("s1", 4, "complete")))
        pub.send_multipart(encode_eos(EosMessage("s1", 4, "complete")))
        assert sub.recv(TIMEOUT_MS).seq == 0
        assert sub.recv(TIMEOUT_MS) is None and sub.ended
        assert sub.stats.drop_ranges == [(1, 3)] and sub.stats.n_dropped == 3
        assert sub.recv_any(200) is None  # the repeated eos is not reported again
        assert sub.stats.n_eos == 1


def test_recv_times_out(pub, ctx):
    with subscribe(pub, ctx) as sub:
        assert sub.recv(50) is None
        assert sub.recv_any(0) is None


def test_conflate_returns_newest_frame(ctx):
    # inproc: a sent message is in the receiver's pipe when send returns, so the queue is known
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    sock.bind("inproc://conflate")
    try:
        with subscribe(sock, ctx, endpoint="inproc://conflate", conflate=True) as sub:
            for seq in range(6):
                sock.send_multipart(encode_frame(frame(seq)))
            sock.send_multipart(encode_start(start()))  # a control message after the frames
            got = sub.recv(TIMEOUT_MS)
            assert got.seq == 5
            assert sub.stats.n_superseded == 5
            assert sub.stats.n_frames == 6 and sub.stats.n_dropped == 0
            assert sub.session is not None  # the start after the frames was handled
            assert sub.recv(20) is None
    finally:
        sock.close(linger=0)


def test_ipc_transport(ctx, tmp_path):
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    endpoint = f"ipc://{tmp_path}/frames"
    sock.bind(endpoint)
    try:
        with subscribe(sock, ctx, endpoint=endpoint) as sub:
            sock.send_multipart(encode_frame(frame(0, shape=(300, 400))), copy=False)
            got = sub.recv(TIMEOUT_MS)
            assert got.shape == (300, 400)
    finally:
        sock.close(linger=0)


def test_invalid_construction():
    with pytest.raises(ValueError, match="rcvhwm"):
        FrameSubscriber("tcp://127.0.0.1:1", rcvhwm=0)
