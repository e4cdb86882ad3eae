"""Real-time scheduling of the engine's critical threads: raised when allowed, threads they start
stay normal, a refusal is a warning."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import zmq

from online_cnmfe.engine import priority

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_FIFO"), reason="no SCHED_FIFO here")


def _in_thread(fn):
    out = {}

    def body():
        out["value"] = fn()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return out["value"]


def test_zero_leaves_the_thread_alone():
    assert _in_thread(lambda: (priority.raise_to_realtime(0, "test"), os.sched_getscheduler(0))) \
        == (False, os.sched_getscheduler(0))  # fmt: skip


@linux_only
def test_a_raised_thread_is_fifo_and_the_threads_it_starts_are_not():
    def raised():
        ok = priority.raise_to_realtime(1, "test")
        if not ok:  # not allowed here (no CAP_SYS_NICE): the refusal path is tested below
            return ok, None, None
        child = _in_thread(lambda: os.sched_getscheduler(0))
        return ok, os.sched_getscheduler(0), child

    ok, mine, child = _in_thread(raised)
    if not ok:
        pytest.skip("this user may not use real-time scheduling")
    assert mine == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert child == os.SCHED_OTHER  # SCHED_RESET_ON_FORK: the slow path's thread stays normal
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the calling thread was raised


def test_a_refusal_is_a_warning_and_normal_scheduling(monkeypatch, caplog):
    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse, raising=False)
    monkeypatch.setattr(os, "SCHED_FIFO", 1, raising=False)
    monkeypatch.setattr(os, "SCHED_RESET_ON_FORK", 0x40000000, raising=False)
    with caplog.at_level(logging.WARNING, logger="online_cnmfe.engine.priority"):
        assert priority.raise_to_realtime(10, "model") is False
    assert "real-time priority 10 refused" in caplog.text and "CAP_SYS_NICE" in caplog.text


def _zmq_threads() -> dict[int, str]:
    names = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
    return {tid: name for tid, name in names.items() if "ZMQbg" in name}


def _zmq_io_policies(ctx) -> list[int]:
    """Policies of the I/O threads ``ctx`` starts (other tests' contexts may still live)."""
    before = _zmq_threads()
    sock = ctx.socket(zmq.PUB)  # the I/O threads start with the first socket
    sock.bind("inproc://priority-test")
    time.sleep(0.2)
    policies = [os.sched_getscheduler(tid) for tid in _zmq_threads().keys() - before.keys()]
    sock.close()
    ctx.term()
    return policies


@linux_only
def test_the_zmq_io_threads_are_raised_with_the_model_thread():
    out = _in_thread(
        lambda: (priority.ModelThreadPriority(2).zmq_context(), os.sched_getscheduler(0))
    )
    ctx, mine = out
    policies = _zmq_io_policies(ctx)
    if mine == os.SCHED_OTHER:
        pytest.skip("this user may not use real-time scheduling")
    assert policies and all(p == os.SCHED_FIFO for p in policies)


def test_a_refused_raise_leaves_zmq_alone(monkeypatch):
    # libzmq aborts the process when it may not set its threads' priority: never ask it then
    monkeypatch.setattr(priority, "raise_to_realtime", lambda p, thread: False)
    ctx = priority.ModelThreadPriority(5).zmq_context()
    assert ctx.get(zmq.THREAD_PRIORITY) != 5
    policies = _zmq_io_policies(ctx)
    assert policies and all(p == os.SCHED_OTHER for p in policies)


@linux_only
def test_the_scheduling_is_restored_after_the_run():
    def run():
        with priority.restored_scheduling():
            raised = priority.raise_to_realtime(3, "test")
            during = os.sched_getscheduler(0)
        return raised, during, os.sched_getscheduler(0)

    raised, during, after = _in_thread(run)
    if not raised:
        pytest.skip("this user may not use real-time scheduling")
    assert during & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO and after == os.SCHED_OTHER


def _policies(pid: int) -> dict[str, set[int]]:
    """Scheduling policies of a process's threads, by thread name."""
    out: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out.setdefault(name, set()).add(os.sched_getscheduler(int(task.name)))
        except OSError:  # the thread ended meanwhile
            continue
    return out


@linux_only
def test_an_engine_with_realtime_priority_raises_its_frame_path_only(tmp_path):
    from tests.online_cnmfe.engine_harness import engine_log, start_engine, stop

    engine = start_engine(tmp_path, "--set", "engine.realtime_priority=7")
    try:
        deadline = time.monotonic() + 60
        while "receive thread:" not in engine_log(tmp_path) and time.monotonic() < deadline:
            assert engine.poll() is None, engine_log(tmp_path)
            time.sleep(0.1)
        log = engine_log(tmp_path)
        if "refused" in log:
            pytest.skip("this user may not use real-time scheduling")
        assert "model thread: real-time priority 7" in log
        assert "receive thread: real-time priority 7" in log
        policies = _policies(engine.pid)
        fifo = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        raised = {n for n, p in policies.items() if p & {fifo, os.SCHED_FIFO}}
        assert {p & ~os.SCHED_RESET_ON_FORK for p in policies["python"]} >= {os.SCHED_FIFO}
        assert any(n.startswith("ZMQbg/IO") for n in raised)
        assert os.SCHED_OTHER in policies["python"]  # the store thread (started after) is not
    finally:
        stop(engine, signal.SIGTERM)


@linux_only
def test_the_slow_path_thread_runs_one_step_below_the_model_thread():
    if not _in_thread(lambda: priority.raise_to_realtime(1, "probe")):
        pytest.skip("this user may not use real-time scheduling")
    for model_priority, policy, level in ((5, os.SCHED_FIFO, 4), (1, os.SCHED_OTHER, 0)):
        pool = priority.slow_path_pool(model_priority)
        try:
            got = pool.submit(lambda: (os.sched_getscheduler(0), os.sched_getparam(0))).result()
        finally:
            pool.shutdown()
        assert (got[0] & ~os.SCHED_RESET_ON_FORK, got[1].sched_priority) == (policy, level)


@linux_only
def test_the_model_thread_is_real_time_only_until_the_traces_are_out():
    def frames():
        prio = priority.ModelThreadPriority(3)
        if not prio.enabled:
            return None
        seen = [os.sched_getscheduler(0)]  # waiting for the first frame
        prio.relaxed()  # its traces are out
        seen.append(os.sched_getscheduler(0))
        prio.relaxed()  # (a second call changes nothing)
        prio.critical()  # waiting for the next frame
        seen.append(os.sched_getscheduler(0))
        child = _in_thread(lambda: os.sched_getscheduler(0))
        prio.relaxed()
        return [p & ~os.SCHED_RESET_ON_FORK for p in seen], child

    out = _in_thread(frames)
    if out is None:
        pytest.skip("this user may not use real-time scheduling")
    assert out == ([os.SCHED_FIFO, os.SCHED_OTHER, os.SCHED_FIFO], os.SCHED_OTHER)


def test_without_real_time_the_switches_do_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *a: calls.append(a), raising=False)
    prio = priority.ModelThreadPriority(0)
    prio.relaxed()
    prio.critical()
    assert not prio.enabled and calls == []
