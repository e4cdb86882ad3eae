"""Triggers inside the real engine: acquisition and engine subprocesses, trigger and control
sockets, the results stream and the results file."""

from __future__ import annotations

import h5py
import pytest

from online_cnmfe.results.triggers_table import read_triggers
from online_cnmfe.triggers.client import TriggerControl, TriggerListener
from tests.online_cnmfe.engine_harness import (
    SIZE,
    ResultsClient,
    endpoints,
    engine_log,
    start_acquire,
    start_engine,
    stop,
)

pytestmark = pytest.mark.timeout(180)

CONFIG = """
[engine]
max_frame_age_ms = 1000000.0  # frames queue up during initialisation

[triggers]
endpoint = "{trig}"
control_endpoint = "{ctl}"
control_token_file = "{token}"

[[triggers.rules]]
name = "any_cell"
region = {{ shape = "rectangle", rows = [0, {h}], cols = [0, {w}] }}
signal = "zscore"
condition = "threshold"
threshold = 4.0
release = 1.0
refractory_frames = 2

[[triggers.rules]]
name = "ghost"
neurons = [99999]
signal = "spike"
condition = "threshold"
threshold = 0.0
"""


def test_engine_fires_publishes_stores_and_takes_rules_at_run_time(tmp_path):
    trig, ctl = f"ipc://{tmp_path}/trig", f"ipc://{tmp_path}/ctl"
    cfg = tmp_path / "engine.toml"
    token = tmp_path / "secrets" / "control-token"  # created by the engine
    cfg.write_text(CONFIG.format(trig=trig, ctl=ctl, h=SIZE[0], w=SIZE[1], token=token))
    client = ResultsClient(endpoints(tmp_path)[1])
    listener = TriggerListener(trig)
    engine = start_engine(tmp_path, "--config", str(cfg), "--set", "engine.queue_full=wait")
    acquire = None
    got = []
    try:
        client.wait_for(lambda c: c.messages["ready"], 60, "the ready handshake", engine)
        assert token.stat().st_mode & 0o777 == 0o600
        with TriggerControl(ctl, timeout_s=10, token_file=token) as control:
            assert [r["name"] for r in control.list()] == ["any_cell", "ghost"]
            control.add({"name": "late", "region": {"shape": "circle", "center": [32, 32],
                         "radius": 40}, "signal": "spike", "condition": "k_of_n",
                         "threshold": 1e-6, "k": 1, "window_frames": 1})  # fmt: skip
        acquire = start_acquire(tmp_path, n_frames=300)
        while engine.poll() is None:
            trig_rec = listener.receive(timeout_s=0.2)
            if trig_rec is not None:
                got.append(trig_rec)
            client.poll(0.01)
        assert engine.returncode == 0, engine_log(tmp_path)
        while (trig_rec := listener.receive(timeout_s=0.5)) is not None:
            got.append(trig_rec)
        client.poll(1.0)
    finally:
        stop(engine)
        if acquire is not None:
            stop(acquire)
        listener.close()
        client.close()
    with h5py.File(tmp_path / "session.h5", "r") as f:
        stored = read_triggers(f["triggers"])
    fired = {(r, int(fi)) for r, fi in zip(stored["rule"], stored["fired"]["frame_index"])}
    assert fired, engine_log(tmp_path)
    assert {"any_cell", "late"} <= {r for r, _ in fired}
    assert "ghost" not in {r for r, _ in fired}
    # everything the trigger socket delivered, and the results stream carried, was stored
    assert got and {(g.rule, g.frame_index) for g in got} <= fired
    streamed = {(m.header["rule"], m.header["frame_index"]) for m in client.messages["trigger"]}
    assert streamed and streamed <= fired
    # a firing's copy on the results stream follows its frame's traces (it must not delay them)
    traces_seen = set()
    for topic, frame_index in client.order:
        if topic == "traces":
            traces_seen.add(frame_index)
        elif topic == "trigger":
            assert frame_index in traces_seen, f"trigger of frame {frame_index} before its traces"
    assert all(60 <= fi < 300 for _, fi in fired)  # only frames processed online
    assert all(0 <= g.age_ms < 1e6 for g in got)
    assert [(c, d["name"]) for _, c, d in stored["rule_log"]] == [
        ("config", "any_cell"),
        ("config", "ghost"),
        ("add", "late"),
    ]
    log = engine_log(tmp_path)
    assert log.count("names neuron(s) [99999] that do not exist") == 1
    stats = client.last_status()["triggers"]
    assert stats["n_fired"] == len(stored["rule"]) and stats["n_rules"] == 3
