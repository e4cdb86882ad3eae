"""The receive thread's ledger of frame indices, on real sockets: every missing index becomes
a ``drop`` control with its reason, a repeated or backward frame never does."""

from __future__ import annotations

import threading
import time

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
from online_cnmfe.engine.frame_queue import Control, FrameQueue, QueuedFrame
from online_cnmfe.engine.receive import Receiver

pytestmark = pytest.mark.timeout(60)


class Stream:
    """An XPUB in the test and a Receiver thread subscribed to it."""

    def __init__(self, tmp_path) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{tmp_path}/frames"
        self.pub.bind(endpoint)
        self.queue = FrameQueue(1000, "drop")
        self.stop = threading.Event()
        self.receiver = Receiver(endpoint, self.queue, self.stop, context=self.ctx)
        self.receiver.start()
        for _ in range(3):  # frame, start and eos subscriptions
            assert self.pub.poll(5000)
            self.pub.recv()

    def frame(self, seq: int, index: int, session: str = "s1", shape=(4, 5)) -> None:
        pixels = np.full(shape, seq % 250, np.uint8)
        msg = FrameMessage(seq, index, None, 50.0 * index, 0, session, "replay", pixels)
        self.pub.send_multipart(encode_frame(msg))

    def items(self, until_frames: int, timeout_s: float = 10.0) -> list:
        """Queue items until ``until_frames`` frames arrived (and a little more)."""
        out, n, deadline = [], 0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            item = self.queue.get(0.05)
            if item is None:
                if n >= until_frames:
                    break
                continue
            out.append(item)
            n += isinstance(item, QueuedFrame)
        assert n >= until_frames, f"only {n} frames received; items {out}"
        return out

    def close(self) -> None:
        self.stop.set()
        self.receiver.join(5)
        self.pub.close(linger=0)
        self.ctx.term()


@pytest.fixture
def stream(tmp_path):
    s = Stream(tmp_path)
    yield s
    s.close()


def controls(items, kind=None) -> list[Control]:
    return [i for i in items if isinstance(i, Control) and (kind is None or i.kind == kind)]


def test_frames_sent_before_the_first_one_received_are_dropped_at_their_indices(stream):
    stream.frame(8, 108)  # the engine connected late: seq 0-7 (indices 100-107) never arrived
    stream.frame(9, 109)
    items = stream.items(2)
    (drop,) = controls(items, "drop")
    assert (drop.first, drop.last, drop.count) == (100, 107, 8)
    assert "sent before the first frame the engine received" in drop.detail
    assert [c.kind for c in controls(items)][0] == "session"


def test_seq_gap_index_jump_and_backward_frame(stream):
    for seq, index in ((0, 0), (1, 1), (4, 4), (5, 10), (6, 11), (7, 9), (8, 12)):
        stream.frame(seq, index)
    items = stream.items(7)
    drops = [(c.first, c.last, c.detail) for c in controls(items, "drop")]
    assert [(a, b) for a, b, _ in drops] == [(2, 3), (5, 9)]
    assert "lost in transit (seq 2-3 missing)" in drops[0][2]
    assert "missing from the source (frame_index jumps from 4 to 10)" in drops[1][2]
    (ooo,) = controls(items, "out_of_order")
    assert ooo.first == 9  # index 9 arrived after 11: counted, never a drop


def test_a_repeated_seq_is_not_a_drop(stream):
    for seq, index in ((0, 0), (1, 1), (2, 2), (1, 1), (3, 3), (4, 4)):
        stream.frame(seq, index)
    items = stream.items(6)
    assert controls(items, "drop") == []
    assert len(controls(items, "out_of_order")) == 1


def test_frames_missing_before_the_eos_follow_the_last_index(stream):
    stream.pub.send_multipart(encode_start(StartMessage("s1", "replay", 30.0, (4, 5), "uint8")))
    stream.frame(0, 50)
    stream.frame(1, 51)
    stream.pub.send_multipart(encode_eos(EosMessage("s1", 5, "complete")))
    items = stream.items(2)
    deadline = time.monotonic() + 5
    while not controls(items, "eos") and time.monotonic() < deadline:
        if (item := stream.queue.get(0.05)) is not None:
            items.append(item)
    (drop,) = controls(items, "drop")
    assert (drop.first, drop.last) == (52, 54) and "before the end of stream" in drop.detail
    sessions = controls(items, "session")
    assert sessions[0].session_id == "s1" and sessions[0].frame_rate_hz == 30.0
    assert controls(items)[-1].kind == "eos"


def test_a_new_session_restarts_the_ledger(stream):
    stream.frame(0, 0)
    stream.frame(1, 1)
    stream.frame(0, 0, session="s2")  # the publisher restarted: indices repeat, no drop
    stream.frame(1, 1, session="s2")
    items = stream.items(4)
    kinds = [c.kind for c in controls(items)]
    assert kinds == ["session", "restart", "session"]
    assert controls(items, "session")[1].session_id == "s2"
    assert controls(items, "drop") == [] and controls(items, "out_of_order") == []


def test_a_rejected_frame_takes_its_index_and_reveals_gaps(stream):
    stream.frame(0, 0)
    stream.frame(3, 3, shape=(5, 4))  # wrong shape, after a seq gap
    stream.frame(4, 4)
    items = stream.items(2)
    assert [(c.kind, c.first, c.last) for c in controls(items) if c.kind != "session"] == [
        ("drop", 1, 2),
        ("reject", 3, 3),
    ]
