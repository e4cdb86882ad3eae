"""Trigger actions over real sockets, the control socket, a serial pty, HDF5 storage, the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zmq

from online_cnmfe.errors import ConfigError, ProtocolError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.results.triggers_table import (
    create_trigger_datasets,
    read_triggers,
    store_rule_log,
    store_triggers,
)
from online_cnmfe.triggers import TriggerEngine, parse_rule, parse_trigger_config
from online_cnmfe.triggers.actions import SerialOutput
from online_cnmfe.triggers.client import TriggerControl, TriggerListener
from online_cnmfe.triggers.control import ControlServer
from online_cnmfe.triggers.records import TriggerRecord
from online_cnmfe.triggers.wire import decode_trigger, encode_trigger

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[3]
RULE = {"name": "c0", "neurons": [0], "signal": "spike", "condition": "threshold", "threshold": 1}

TOKEN = "0123456789abcdef-test-token"


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def spike_frames(engine, n, start=0, meta_extra=None):
    """Alternate 0/2 on neuron 0: every odd frame fires."""
    recs = []
    for t in range(start, start + n):
        v = np.array([2.0 if t % 2 else 0.0, 0.0], np.float32)
        res = FrameResult(t, np.array([0, 1]), v, v, v)
        meta = {"frame_index": t, "seq": t, "t_acq_ms": 50.0 * t, "t_recv_ns": time.monotonic_ns()}
        recs += engine.on_frame(res, {**meta, **(meta_extra or {})})
    return recs


def connect(engine, listener):
    """Send probe triggers until the listener gets one (PUSH drops while no peer is connected)."""
    probe = TriggerRecord("probe", 0, -1, 0.0, 0.0, 0.0, (), -1, -1, 1)
    for _ in range(500):
        engine.dispatcher.publisher.send(probe)
        if listener.receive(timeout_s=0.01) is not None:
            while listener.receive(timeout_s=0.05) is not None:
                pass
            return
    raise AssertionError("the trigger listener never connected")


def make_engine(ctx, socket_type="pub", rules=(RULE,), **extra):
    cfg = parse_trigger_config(
        {"endpoint": "tcp://127.0.0.1:*", "socket_type": socket_type, "rules": list(rules), **extra}
    )
    return TriggerEngine.from_config(cfg, max_frame_age_ms=1000.0, frame_rate_hz=20, context=ctx)


# ---- trigger socket -------------------------------------------------------------------------
def test_push_socket_delivers_every_trigger_with_valid_fields(ctx):
    eng = make_engine(ctx, "push")
    try:
        with TriggerListener(eng.dispatcher.publisher.endpoint, "pull", context=ctx) as lis:
            connect(eng, lis)
            sent = spike_frames(eng, 20)
            got = [lis.receive(timeout_s=5) for _ in sent]
        assert (
            [g.frame_index for g in got] == [r.frame_index for r in sent] == list(range(1, 20, 2))
        )
        for g, r in zip(got, sent):
            assert g == r  # every field survives encode -> socket -> decode
            assert g.age_ms >= 0 and g.t_fire_ns >= g.t_recv_ns > 0
    finally:
        eng.close()


def test_a_firing_is_encoded_once_for_the_socket_and_the_results_stream(ctx):
    # The results stream's copy of a firing (a fire listener, as `online-cnmfe run` attaches)
    # is the very message the trigger socket sent; each record gets its own frames.
    eng = make_engine(ctx, "push", rules=(RULE, {**RULE, "name": "c1"}))
    copies = []
    eng.fire_listeners.append(lambda rec: copies.append((rec, encode_trigger(rec))))
    try:
        with TriggerListener(eng.dispatcher.publisher.endpoint, "pull", context=ctx) as lis:
            connect(eng, lis)
            sent = spike_frames(eng, 6)
            raw = [lis.socket.recv_multipart() for _ in sent]
    finally:
        eng.close()
    assert [r.rule for r in sent] == ["c0", "c1"] * 3
    assert [rec for rec, _ in copies] == sent
    for (rec, frames), got in zip(copies, raw):
        assert [bytes(f) for f in frames] == got
        assert decode_trigger(got) == rec
        assert all(type(i) is int for i in rec.neuron_ids) and rec.neuron_ids == (0,)
    again = copies[0][0]  # an older record than the last encoded: encoded afresh, same bytes
    assert [bytes(f) for f in encode_trigger(again)] == raw[0]
    twin = TriggerRecord(**{f: getattr(again, f) for f in again.__slots__})
    assert [bytes(f) for f in encode_trigger(twin)] == raw[0]


def test_two_rules_firing_at_one_frame_are_each_encoded_once(ctx, monkeypatch):
    # The trigger socket sends every firing of a frame before the listeners copy them to the
    # results stream: the first firing's frames must still be cached then (it was re-encoded
    # when the cache kept only the last record).
    from online_cnmfe.triggers import wire

    calls = []
    real = wire.encode_message
    monkeypatch.setattr(wire, "encode_message", lambda *a: calls.append(a[1]["rule"]) or real(*a))
    eng = make_engine(ctx, "push", rules=(RULE, {**RULE, "name": "c1"}))
    eng.fire_listeners.append(encode_trigger)
    try:
        sent = spike_frames(eng, 6)
    finally:
        eng.close()
    assert [r.rule for r in sent] == ["c0", "c1"] * 3
    assert calls == ["c0", "c1"] * 3  # once per firing, not once more for the copy


def test_pub_socket_reaches_late_subscribers(ctx):
    eng = make_engine(ctx, "pub")
    try:
        lis = TriggerListener(eng.dispatcher.publisher.endpoint, "sub", context=ctx)
        first, t = None, 0
        while first is None and t < 2000:  # slow joiner: fire until the subscription is live
            spike_frames(eng, 2, start=t)
            t += 2
            first = lis.receive(timeout_s=0.02)
        assert first is not None and first.rule == "c0"
        sent = spike_frames(eng, 10, start=t)
        got = [lis.receive(timeout_s=5) for _ in sent]
        assert [g.frame_index for g in got] == [r.frame_index for r in sent]
        lis.close()
    finally:
        eng.close()


def test_malformed_trigger_messages_are_rejected(ctx):
    rec = spike_frames(TriggerEngine([parse_rule(RULE)]), 2)[0]
    frames = [bytes(f) for f in encode_trigger(rec)]
    assert decode_trigger(frames) == rec
    header = json.loads(frames[1])
    for bad in ({"frame_index": -1}, {"rule": ""}, {"neuron_ids": "0"}, {"age_ms": "soon"}):
        with pytest.raises(ProtocolError):
            decode_trigger([frames[0], json.dumps({**header, **bad}).encode()])
    with pytest.raises(ProtocolError):
        decode_trigger([b"frame", frames[1]])
    # a listener skips a malformed message and keeps going
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    with TriggerListener(f"tcp://127.0.0.1:{port}", "pull", context=ctx) as lis:
        push.send_multipart([b"trigger", b"{not json"])
        push.send_multipart(frames)
        assert lis.receive(timeout_s=5) == rec and lis.n_malformed == 1
    push.close(linger=0)


def test_push_without_a_consumer_drops_and_never_blocks(ctx):
    eng = make_engine(ctx, "push", send_hwm=1)
    try:
        recs = spike_frames(eng, 40)
        assert len(recs) == 20  # all fired; none blocked the caller
        st = eng.stats()
        assert st["n_send_dropped"] > 0 and st["n_sent"] + st["n_send_dropped"] == 20
    finally:
        eng.close()


def test_trigger_endpoint_in_use_is_a_config_error(ctx):
    s = ctx.socket(zmq.PUB)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    cfg = parse_trigger_config({"endpoint": f"tcp://127.0.0.1:{port}"})
    with pytest.raises(ConfigError, match="cannot bind"):
        TriggerEngine.from_config(cfg, max_frame_age_ms=50, frame_rate_hz=20, context=ctx)
    s.close(linger=0)


# ---- control socket ---------------------------------------------------------------------------
def test_control_socket_adds_and_removes_rules_while_frames_run(ctx):
    eng = make_engine(ctx, "push", rules=())
    server = ControlServer(eng, "tcp://127.0.0.1:*", context=ctx, token=TOKEN).start()
    stop = threading.Event()
    fired: list = []

    def model_thread():
        t = 0
        while not stop.is_set():
            fired.extend(spike_frames(eng, 2, start=t))
            t += 2
            time.sleep(0.001)

    th = threading.Thread(target=model_thread)
    th.start()
    try:
        with TriggerControl(server.endpoint, timeout_s=5, context=ctx, token=TOKEN) as ctl:
            assert ctl.list() == []
            added = ctl.add({**RULE, "name": "live", "refractory_frames": 4})
            assert added["refractory_frames"] == 4
            with pytest.raises(ConfigError, match="already exists"):
                ctl.add({**RULE, "name": "live"})
            with pytest.raises(ConfigError, match="threshold"):
                ctl.add({**RULE, "name": "bad", "threshold": "x"})
            deadline = time.monotonic() + 10
            while not fired and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fired and {r.rule for r in fired} == {"live"}
            (listed,) = ctl.list()
            assert listed["name"] == "live" and listed["state"]["active"]
            assert listed["state"]["bound_neurons"] == [0]
            ctl.disable("live")
            n = len(fired)
            time.sleep(0.05)
            assert len(fired) <= n + 1  # at most one frame in flight when disabled
            ctl.remove("live")
            with pytest.raises(ConfigError, match="no rule named"):
                ctl.enable("live")
            assert ctl.stats()["n_fired"] == len(eng.fired)
    finally:
        stop.set()
        th.join()
        server.close()
        eng.close()
    # rule changes are logged for storage
    assert [c for _, c, _ in eng.rule_log] == ["add", "disable", "remove"]


def test_control_socket_survives_garbage(ctx):
    eng = TriggerEngine([])
    server = ControlServer(eng, "tcp://127.0.0.1:*", context=ctx, token=TOKEN).start()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        garbage_list = (
            b"\x80\x03pickle",
            b"[1, 2]",
            b'{"v": 2, "cmd": "list"}',
            b'{"v": 1, "cmd": "format_disk"}',
            b'{"v": 1, "cmd": "remove"}',
        )
        for garbage in garbage_list:
            req.send(garbage)
            assert req.poll(5000)
            reply = json.loads(req.recv())
            assert reply["ok"] is False and reply["error"]
        req.close()
        with TriggerControl(server.endpoint, timeout_s=5, context=ctx, token=TOKEN) as ctl:
            assert ctl.list() == []  # still serving
        assert server.n_bad == 5
    finally:
        server.close()


def test_control_client_times_out_cleanly(ctx):
    sock = ctx.socket(zmq.ROUTER)  # accepts the connection but never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    with TriggerControl(f"tcp://127.0.0.1:{port}", timeout_s=0.2, context=ctx, token=TOKEN) as ctl:
        with pytest.raises(TimeoutError, match="no reply"):
            ctl.list()
        with pytest.raises(TimeoutError):
            ctl.list()  # the REQ socket was reset, not stuck in the wrong state
    sock.close(linger=0)


# ---- serial -----------------------------------------------------------------------------------
def _read_all(fd, n, timeout_s=5.0):
    out = b""
    deadline = time.monotonic() + timeout_s
    os.set_blocking(fd, False)
    while len(out) < n and time.monotonic() < deadline:
        try:
            out += os.read(fd, 1024)
        except BlockingIOError:
            time.sleep(0.005)
    return out


def test_serial_device_that_disappears_is_logged_and_the_engine_keeps_running(ctx, caplog):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    eng = make_engine(
        ctx,
        "push",
        rules=({**RULE, "actions": ["serial", "publish"], "serial_payload": "T1\n"},),
        serial_port=port,
        serial_reconnect_s=0.01,
    )
    try:
        with TriggerListener(eng.dispatcher.publisher.endpoint, "pull", context=ctx) as lis:
            connect(eng, lis)
            before = spike_frames(eng, 6)
            assert _read_all(master, 9) == b"T1\n" * 3
            os.close(master)  # the device goes away mid-run
            os.close(slave)
            with caplog.at_level(logging.ERROR, logger="online_cnmfe.triggers.actions"):
                after = spike_frames(eng, 40, start=6)
                time.sleep(0.02)
                after += spike_frames(eng, 4, start=46)  # reconnect attempts fail too
            assert len(after) == 22  # every trigger still fired and was published
            got = [lis.receive(timeout_s=5) for _ in before + after]
            assert [g.frame_index for g in got] == [r.frame_index for r in before + after]
        st = eng.stats()
        assert st["n_serial_written"] == 3 and st["n_serial_errors"] >= 1
        assert st["serial_error"]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert 1 <= len(errors) <= 3  # logged per new problem, not per trigger
    finally:
        eng.close()


def test_serial_buffer_full_drops_without_closing_the_port():
    master, slave = os.openpty()
    out = SerialOutput(os.ttyname(slave))
    try:
        assert out.open()
        results = [out.write(b"x" * 64) for _ in range(2000)]  # nobody reads the device
        assert not all(results) and out.is_open and out.n_errors == results.count(False)
        assert "buffer full" in out.last_error
        _read_all(master, 10**6, timeout_s=0.5)  # the device drains
        assert out.write(b"T") and out.last_error is None
    finally:
        out.close()
        os.close(master)
        os.close(slave)


def test_serial_port_missing_at_start_is_not_fatal(tmp_path, caplog):
    out = SerialOutput(str(tmp_path / "ttyNOPE"), reconnect_s=1000)
    with caplog.at_level(logging.ERROR):
        assert out.open() is False
        assert out.write(b"T") is False  # no retry before reconnect_s
    assert out.n_errors == 1 and "cannot open" in out.last_error


# ---- HDF5 storage -----------------------------------------------------------------------------
def test_store_triggers_round_trip_in_swmr_mode(tmp_path):
    eng = TriggerEngine([parse_rule(RULE), parse_rule({**RULE, "name": "pair", "neurons": [0, 1],
                                                       "condition": "ensemble"})])  # fmt: skip
    recs = spike_frames(eng, 10)
    path = tmp_path / "results.h5"
    with h5py.File(path, "w", libver="latest") as f:
        g = create_trigger_datasets(f)
        f.swmr_mode = True
        new = eng.drain_new()
        assert new == recs and eng.drain_new() == []
        assert store_triggers(g, new[:3]) == 3
        store_rule_log(g, eng.drain_new_rule_log())
        assert store_triggers(g, new[3:]) == len(recs)
        assert store_triggers(g, []) == len(recs)
        f.flush()
    with h5py.File(path, "r") as f:
        back = read_triggers(f["triggers"])
    assert back["rule"] == [r.rule for r in recs]
    assert back["neuron_ids"] == [list(r.neuron_ids) for r in recs]
    np.testing.assert_array_equal(back["fired"]["frame_index"], [r.frame_index for r in recs])
    np.testing.assert_allclose(back["fired"]["age_ms"], [r.age_ms for r in recs])
    assert [(c, d["name"]) for _, c, d in back["rule_log"]] == [
        ("config", "c0"),
        ("config", "pair"),
    ]


# ---- CLI --------------------------------------------------------------------------------------
def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "online_cnmfe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_cli_listen_prints_triggers_and_control_commands_work(ctx, tmp_path):
    eng = make_engine(ctx, "push", rules=())
    server = ControlServer(eng, "tcp://127.0.0.1:*", context=ctx, token=TOKEN).start()
    try:
        rule_file = tmp_path / "rule.json"
        rule_file.write_text(json.dumps(RULE))
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        auth = ("--token-file", str(token_file))
        add = _cli("triggers", "--control", server.endpoint, "--add", str(rule_file), *auth)
        out, err = add.communicate(timeout=30)
        assert add.returncode == 0, err
        assert "added" in out and eng.rule_names() == ["c0"]
        listen = _cli(
            "triggers", "--listen", eng.dispatcher.publisher.endpoint, "--pull", "--json",
            "--count", "3", "--timeout", "20",
        )  # fmt: skip
        sent = []
        deadline = time.monotonic() + 30
        while listen.poll() is None and time.monotonic() < deadline:
            sent += spike_frames(eng, 2, start=2 * len(sent))
            time.sleep(0.01)
        out, err = listen.communicate(timeout=30)
        assert listen.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert len(lines) == 3 and all(x["rule"] == "c0" for x in lines)
        # PUSH drops (and counts) what it cannot hand to a peer before the listener connects;
        # from then on nothing is lost
        frames = [r.frame_index for r in sent]
        k = frames.index(lines[0]["frame_index"])
        assert [x["frame_index"] for x in lines] == frames[k : k + 3]
        assert eng.stats()["n_send_dropped"] >= k
        bad = _cli("triggers", "--control", server.endpoint, "--remove", "nope", *auth)
        out, err = bad.communicate(timeout=30)
        assert bad.returncode == 2 and "no rule named 'nope'" in err
    finally:
        server.close()
        eng.close()


def test_cli_check_validates_a_config_file(tmp_path):
    good = tmp_path / "engine.toml"
    good.write_text('[[triggers.rules]]\nname = "a"\nneurons = [3]\nsignal = "spike"\n'
                    'condition = "threshold"\nthreshold = 0.5\n')  # fmt: skip
    p = _cli("triggers", "--check", str(good))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "1 valid rule" in out, err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[triggers.rules]]\nname = "a"\nneurons = [3]\nsignal = "spike"\n')
    p = _cli("triggers", "--check", str(bad))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "condition" in err and "Traceback" not in err


@pytest.mark.parametrize("tool", ["cli", "example"])
def test_forwarding_triggers_to_a_serial_device(ctx, tool):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    eng = make_engine(ctx, "push")
    endpoint = eng.dispatcher.publisher.endpoint
    if tool == "cli":
        args = ["-m", "online_cnmfe", "triggers", "--listen", endpoint, "--pull",
                "--forward-serial", port, "--payload", "{rule}\\n", "--count", "2"]  # fmt: skip
        expected = b"c0\nc0\n"
    else:
        args = [str(REPO / "examples" / "ttl_serial.py"), "--listen", endpoint, "--pull",
                "--port", port, "--map", "c0=B", "--count", "2"]  # fmt: skip
        expected = b"BB"
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))  # fmt: skip
    try:
        got, t = b"", 0
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            spike_frames(eng, 2, start=t)  # PUSH drops until the forwarder has connected
            t += 2
            time.sleep(0.02)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        got = _read_all(master, len(expected))
        assert got == expected
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
        eng.close()
