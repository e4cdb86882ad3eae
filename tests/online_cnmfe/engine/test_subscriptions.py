"""The results socket under a subscription flood: memory flat, honest subscribers served.

Real processes: ``flood_target`` publishes with the engine's ResultsPublisher (or, to show the
failure it fixes, a plain PUB socket) and reports its RSS; this process floods it with 300,000
distinct subscriptions and with 40 MB of long ones while a dashboard-like subscriber listens.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
import zmq

from online_cnmfe.engine.publish import ResultsPublisher
from online_cnmfe.engine.subscriptions import open_results_socket
from tests.online_cnmfe.engine_harness import REPO, env

pytestmark = pytest.mark.timeout(180)


def _target(endpoint: str, *extra: str) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.online_cnmfe.engine.flood_target", endpoint, *extra],
        stdout=subprocess.PIPE, text=True, env=env(), cwd=REPO,
    )  # fmt: skip
    return proc, float(proc.stdout.readline().split()[1])


def _rss_after(proc: subprocess.Popen, seconds: float) -> float:
    last, deadline = None, time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = proc.stdout.readline()
    return float(last.split()[1])


def _flood(endpoint: str, kind: str) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    if kind == "many":
        for i in range(300_000):
            sock.setsockopt(zmq.SUBSCRIBE, b"topic-%08d" % i)
    else:  # 4,000 subscriptions of 10 kB: 40 MB
        for i in range(4000):
            sock.setsockopt(zmq.SUBSCRIBE, b"x%05d" % i + b"y" * 10_000)
    time.sleep(2.0)  # let them all arrive
    sock.close()


def _listen_status(endpoint: str, seconds: float) -> list[bytes]:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"status")
    sock.connect(endpoint)
    topics, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            topics.append(sock.recv_multipart()[0])
    sock.close()
    return topics


def test_a_subscription_flood_leaves_memory_flat(tmp_path):
    endpoint = f"ipc://{tmp_path}/results"
    proc, before = _target(endpoint)
    try:
        _flood(endpoint, "many")
        _flood(endpoint, "long")
        topics = _listen_status(endpoint, 2.0)  # served during and after the flood
        after = _rss_after(proc, 1.0)
    finally:
        proc.kill()
        proc.wait()
    assert after - before < 20, (before, after)
    assert topics and set(topics) == {b"status"}


def test_the_plain_pub_socket_it_replaces_grows(tmp_path):
    # The failure this fixes, measured the same way: 40 MB of long subscriptions grow a PUB
    # socket's process by hundreds of MB.
    endpoint = f"ipc://{tmp_path}/results"
    proc, before = _target(endpoint, "--plain-pub")
    try:
        _flood(endpoint, "long")
        after = _rss_after(proc, 1.0)
    finally:
        proc.kill()
        proc.wait()
    assert after - before > 100, (before, after)


def test_a_non_loopback_bind_is_warned_about(caplog):
    ctx = zmq.Context.instance()
    with caplog.at_level(logging.WARNING):
        sock = open_results_socket("tcp://0.0.0.0:*", ctx, 100)
    sock.close(linger=0)
    assert "not loopback" in caplog.text
    caplog.clear()
    sock = open_results_socket("tcp://127.0.0.1:*", ctx, 100)
    sock.close(linger=0)
    assert "not loopback" not in caplog.text


def test_only_subscriptions_that_can_match_a_topic_are_applied(tmp_path):
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/r"
    pub = ResultsPublisher(endpoint, ctx)
    subs = {}
    for name, topics in {"all": [b""], "status": [b"status"], "t": [b"t"],
                         "junk": [b"topic-1", b"statusX", b"\xff"]}.items():  # fmt: skip
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        subs[name] = sock
    got = {name: set() for name in subs}
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for topic in (b"status", b"traces", b"trigger", b"image"):
            pub.send([topic, b"{}"])
        for name, sock in subs.items():
            while sock.poll(0):
                got[name].add(sock.recv_multipart()[0])
        time.sleep(0.01)
    assert got["all"] == {b"status", b"traces", b"trigger", b"image"}
    assert got["status"] == {b"status"}
    assert got["t"] == {b"traces", b"trigger"}
    assert got["junk"] == set()  # nothing queued for a peer that asked for junk
    assert pub.subscriptions.n_ignored == 3
    subs["status"].setsockopt(zmq.UNSUBSCRIBE, b"status")
    for _ in range(50):
        pub.send([b"status", b"{}"])
        time.sleep(0.01)
    while subs["status"].poll(100):
        subs["status"].recv_multipart()  # what was queued before the unsubscription arrived
    pub.send([b"status", b"{}"])
    assert not subs["status"].poll(300)
    for sock in subs.values():
        sock.close()
    pub.close(linger_ms=0)
    ctx.term()


def _wait_until(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_wants_follows_subscribers_as_they_come_and_go(tmp_path):
    # The engine builds display images only while someone can receive them: a peer
    # subscribed to "image" (or a prefix, or everything) turns them on, its unsubscription
    # or disconnection turns them off again; other topics' subscribers do not count.
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/r"
    pub = ResultsPublisher(endpoint, ctx)

    def sub(*topics: bytes) -> zmq.Socket:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        return sock

    try:
        assert not pub.wants("image")
        traces = sub(b"traces", b"status", b"imagery-of-nothing")  # last one: not applied
        assert _wait_until(lambda: pub.wants("traces"))
        assert not pub.wants("image") and not pub.wants("footprints")
        display, second = sub(b"image"), sub(b"image")
        assert _wait_until(lambda: pub.wants("image"))
        everything, prefix = sub(b""), sub(b"im")
        time.sleep(0.3)
        display.close()
        everything.close()
        prefix.setsockopt(zmq.UNSUBSCRIBE, b"im")
        time.sleep(0.3)
        assert pub.wants("image")  # the second display still gets images
        second.close()  # each display's disconnection reports its "image"
        assert _wait_until(lambda: not pub.wants("image"))
        assert pub.wants("traces")
        traces.close()
        assert _wait_until(lambda: not pub.wants("traces") and not pub.wants("status"))
        prefix.close()
    finally:
        pub.close(linger_ms=0)
        ctx.term()
