"""The disk spool and the frame queue: order kept across memory and disk, chunks deleted as
they are read, refusal (recorded by the caller) only at the disk reserve or the size limit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.protocol import FrameMessage
from online_cnmfe.engine.frame_queue import Control, FrameQueue, QueuedFrame
from online_cnmfe.engine.spool import DiskSpool, SpoolFull


def message(i: int, shape=(6, 7), dtype=np.uint16) -> FrameMessage:
    pixels = (np.arange(shape[0] * shape[1]).reshape(shape) + 1000 * i).astype(dtype)
    return FrameMessage(i, i, None, 50.0 * i, 0, "s", "synthetic", pixels)


def test_spool_reads_frames_back_in_order_and_deletes_read_chunks(tmp_path):
    frame_bytes = 6 * 7 * 2
    spool = DiskSpool(tmp_path / "s.spool", reserve_bytes=0, chunk_bytes=3 * frame_bytes)
    assert spool.folder is None  # created on the first frame only
    refs = [spool.append(message(i).pixels) for i in range(10)]
    assert spool.n_frames == 10 and len(list((tmp_path / "s.spool").iterdir())) == 4
    for i in range(7):
        np.testing.assert_array_equal(spool.read(refs[i]), message(i).pixels)
    assert len(list((tmp_path / "s.spool").iterdir())) == 2  # two full chunks read: deleted
    assert spool.n_frames == 3 and spool.nbytes == 4 * frame_bytes
    spool.close()
    assert not (tmp_path / "s.spool").exists()


def test_spool_refuses_at_the_reserve_and_the_limit_and_says_which(tmp_path):
    huge = DiskSpool(tmp_path / "a", reserve_bytes=2**62)
    with pytest.raises(SpoolFull, match="engine.spool_reserve_mb"):
        huge.append(message(0).pixels)
    small = DiskSpool(tmp_path / "b", reserve_bytes=0, max_bytes=200, chunk_bytes=100)
    small.append(message(0).pixels)  # 84 bytes: first chunk
    with pytest.raises(SpoolFull, match="engine.spool_max_mb"):
        for i in range(5):
            small.append(message(i).pixels)
    small.close()


def test_spool_without_a_folder_uses_a_temporary_one_and_removes_it(tmp_path):
    spool = DiskSpool(None, reserve_bytes=0)
    ref = spool.append(message(3).pixels)
    folder = spool.folder
    assert folder is not None and folder.is_dir()
    np.testing.assert_array_equal(spool.read(ref), message(3).pixels)
    spool.close()
    assert not folder.exists()


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(st.sampled_from(["frame", "control", "get"]), min_size=1, max_size=60),
    memory=st.integers(1, 5),
)
def test_queue_keeps_the_order_of_frames_and_controls_across_memory_and_disk(
    tmp_path_factory, ops, memory
):
    spool = DiskSpool(tmp_path_factory.mktemp("q") / "spool", reserve_bytes=0, chunk_bytes=500)
    q = FrameQueue(memory, "spool", spool)
    sent, got, i = [], [], 0
    for op in ops:
        if op == "frame":
            assert q.put_frame(QueuedFrame(message(i), i))
            sent.append(("f", i))
            i += 1
        elif op == "control":
            q.put_control(Control("drop", "x", i, i))
            sent.append(("c", i))
        else:
            item = q.get(0)
            if item is not None:
                got.append(item)
    while (item := q.get(0)) is not None:
        got.append(item)
    seen = []
    for item in got:
        if isinstance(item, QueuedFrame):
            np.testing.assert_array_equal(item.frame.pixels, message(item.frame.seq).pixels)
            seen.append(("f", item.frame.seq))
        else:
            seen.append(("c", item.first))
    assert seen == sent
    assert len(q) == 0 and q.n_spooled == 0
    spool.close()


def test_queue_policies_drop_and_wait(tmp_path):
    q = FrameQueue(2, "drop")
    assert q.put_frame(QueuedFrame(message(0), 0)) and q.put_frame(QueuedFrame(message(1), 1))
    assert not q.put_frame(QueuedFrame(message(2), 2))
    waiting = FrameQueue(1, "wait")
    stop = threading.Event()
    assert waiting.put_frame_wait(QueuedFrame(message(0), 0), stop)
    done = []
    t = threading.Thread(target=lambda: done.append(waiting.put_frame_wait(
        QueuedFrame(message(1), 1), stop)))  # fmt: skip
    t.start()
    t.join(0.2)
    assert not done  # waits for room
    assert waiting.get(1).frame.seq == 0
    t.join(5)
    assert done == [True] and len(waiting) == 1
    with pytest.raises(ValueError, match="needs a DiskSpool"):
        FrameQueue(2, "spool")


def test_a_spool_that_refuses_keeps_that_frame_and_then_drops_with_the_reason(tmp_path):
    spool = DiskSpool(tmp_path / "s", reserve_bytes=2**62)
    q = FrameQueue(1, "spool", spool)
    assert q.put_frame(QueuedFrame(message(0), 0))
    assert q.put_frame(QueuedFrame(message(1), 1))  # handed over; the writer cannot spool it
    assert spool.wait_written()
    assert not q.put_frame(QueuedFrame(message(2), 2))  # refused: the caller records a drop
    assert "engine.spool_reserve_mb" in q.spool_error
    first, second = q.get(0), q.get(0)
    assert [first.frame.seq, second.frame.seq] == [0, 1] and q.get(0) is None
    np.testing.assert_array_equal(second.frame.pixels, message(1).pixels)  # kept in memory
    spool.close()


def test_the_model_can_take_a_frame_the_writer_has_not_reached(tmp_path):
    spool = DiskSpool(tmp_path / "s", reserve_bytes=0)
    ticket = spool.submit(message(5).pixels)
    np.testing.assert_array_equal(spool.fetch(ticket), message(5).pixels)
    assert spool.wait_written() and spool.n_frames == 0  # skipped, or written and released
    spool.close()


def test_an_unreadable_spooled_frame_becomes_a_control_not_a_crash(tmp_path):
    spool = DiskSpool(tmp_path / "s", reserve_bytes=0)
    q = FrameQueue(1, "spool", spool)
    q.put_frame(QueuedFrame(message(0), 0))
    q.put_frame(QueuedFrame(message(1), 1))  # on disk
    assert spool.wait_written()
    for path in (tmp_path / "s").iterdir():
        path.write_bytes(b"")  # the disk lost it
    assert q.get(0).frame.seq == 0
    item = q.get(0)
    assert isinstance(item, Control) and item.kind == "unreadable" and item.first == 1
    spool.close()


def test_oldest_arrival_time_is_the_oldest_frame_waiting(tmp_path):
    q = FrameQueue(4, "drop")
    assert q.oldest_t_recv_ns() is None
    q.put_control(Control("drop"))
    q.put_frame(QueuedFrame(message(0), 111))
    q.put_frame(QueuedFrame(message(1), 222))
    assert q.oldest_t_recv_ns() == 111
