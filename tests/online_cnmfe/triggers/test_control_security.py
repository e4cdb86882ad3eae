"""The control socket locked down: a token from a private file, bounded rules and requests.

Real sockets on loopback; the token file is a real file whose mode and owner are checked.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest
import zmq

from online_cnmfe.errors import ConfigError
from online_cnmfe.triggers import TriggerEngine
from online_cnmfe.triggers.auth import load_or_create_token, read_token
from online_cnmfe.triggers.client import TriggerControl
from online_cnmfe.triggers.control import ControlServer
from online_cnmfe.triggers.limits import (
    MAX_CHANGE_BURST,
    MAX_REQUEST_BYTES,
    MAX_RULE_NEURONS,
    MAX_RULES,
    MAX_TOTAL_NEURONS,
)
from online_cnmfe.triggers.rules import parse_rule

TOKEN = "f" * 64


def _rule(name: str, neurons=(0,)) -> dict:
    return {"name": name, "neurons": list(neurons), "signal": "spike",
            "condition": "threshold", "threshold": 1.0}  # fmt: skip


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def server(ctx):
    srv = ControlServer(TriggerEngine([]), "tcp://127.0.0.1:*", context=ctx, token=TOKEN).start()
    yield srv
    srv.close()


def _raw(ctx, endpoint: str, request: dict, timeout_ms: int = 5000) -> dict | None:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(json.dumps({"v": 1, **request}).encode())
    reply = json.loads(sock.recv()) if sock.poll(timeout_ms) else None
    sock.close()
    return reply


# ---------------------------------------------------------------- the token file
def test_token_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "cfg" / "online-cnmfe" / "control-token"
    token = load_or_create_token(path)
    assert len(token) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token == read_token(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_default_token_file_follows_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    token = load_or_create_token()
    assert (tmp_path / "online-cnmfe" / "control-token").read_text().strip() == token


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("a" * 64)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        load_or_create_token(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no control token file"):
        read_token(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file another owner")
def test_a_token_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("a" * 64)
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to another user"):
        read_token(path)


# ---------------------------------------------------------------- authentication
@pytest.mark.parametrize("token", [None, "", "f" * 63, "g" * 64, 12345])
def test_requests_without_the_token_change_nothing(ctx, server, token):
    request = {"cmd": "add", "rule": _rule("intruder")}
    if token is not None:
        request["token"] = token
    reply = _raw(ctx, server.endpoint, request)
    assert reply["ok"] is False and "not authorised" in reply["error"]
    assert server.engine.rule_names() == [] and server.n_unauthorised == 1
    reply = _raw(ctx, server.endpoint, {"cmd": "list", "token": token})
    assert reply["ok"] is False  # reading the rules needs the token too


def test_the_client_with_the_token_file_is_served(ctx, server, tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    with TriggerControl(server.endpoint, timeout_s=5, context=ctx, token_file=path) as ctl:
        ctl.add(_rule("ok"))
        assert [r["name"] for r in ctl.list()] == ["ok"]
    assert server.n_unauthorised == 0


# ---------------------------------------------------------------- limits
def test_rule_size_count_and_total_are_bounded():
    with pytest.raises(ConfigError, match=f"1 to {MAX_RULE_NEURONS}") as info:
        parse_rule(_rule("big", range(MAX_RULE_NEURONS + 1)))
    assert len(str(info.value)) < 300  # a rejected rule does not flood the log
    engine = TriggerEngine([])
    per_rule = MAX_TOTAL_NEURONS // 10
    for i in range(10):
        engine.add_rule(parse_rule(_rule(f"r{i}", range(i * per_rule, (i + 1) * per_rule))))
    with pytest.raises(ConfigError, match=f"exceeds {MAX_TOTAL_NEURONS}"):
        engine.add_rule(parse_rule(_rule("one_more", [10**6])))
    small = TriggerEngine([])
    for i in range(MAX_RULES):
        small.add_rule(parse_rule(_rule(f"s{i}")))
    with pytest.raises(ConfigError, match=f"already {MAX_RULES} rules"):
        small.add_rule(parse_rule(_rule("s_last")))


def test_rule_changes_are_rate_limited(ctx, server):
    with TriggerControl(server.endpoint, timeout_s=5, context=ctx, token=TOKEN) as ctl:
        refused = 0
        for i in range(MAX_CHANGE_BURST + 20):
            try:
                ctl.add(_rule(f"r{i}"))
            except ConfigError as exc:
                assert "too many rule changes" in str(exc)
                refused += 1
        assert refused >= 15
        time.sleep(0.5)  # the allowance refills
        ctl.add(_rule("later"))
        assert ctl.list()  # reading is not rate limited


def test_an_oversized_request_is_dropped_and_the_server_goes_on(ctx, server, caplog):
    bomb = {"cmd": "add", "token": TOKEN, "rule": _rule("bomb", range(100_000))}
    assert len(json.dumps(bomb)) > MAX_REQUEST_BYTES
    with caplog.at_level(logging.WARNING):
        assert _raw(ctx, server.endpoint, bomb, timeout_ms=1000) is None  # disconnected
    assert _raw(ctx, server.endpoint, {"cmd": "list", "token": TOKEN})["ok"] is True
    assert server.engine.rule_names() == []


def test_rejections_are_logged_at_a_bounded_rate(ctx, server, caplog):
    with caplog.at_level(logging.WARNING):
        for _ in range(200):
            _raw(ctx, server.endpoint, {"cmd": "list", "token": "nope"})
    rejected = [r for r in caplog.records if "control request rejected" in r.getMessage()]
    assert server.n_bad == 200 and len(rejected) <= 25
