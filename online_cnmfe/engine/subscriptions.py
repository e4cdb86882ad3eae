"""The results socket's subscriptions: kept to one entry per peer, whatever peers ask for.

A plain PUB socket stores every subscription its peers send (a trie of prefixes) until they
unsubscribe: a local process sending 40 MB of long or 300,000 distinct subscriptions grew the
engine by gigabytes, never freed. The results socket is therefore an XPUB in manual mode
(``XPUB_MANUAL``): subscription messages come to the engine instead of into libzmq's trie,
and :class:`SubscriptionGate` answers each with one "everything" subscription for the peer
that sent it. Topic filtering then happens where SUB sockets always apply it too: on the
subscriber's side (a dashboard subscribed to ``status`` still receives only ``status``; on a
network link it costs bandwidth, not correctness). A subscription longer than
:data:`MAX_SUBSCRIPTION_BYTES` disconnects its peer (``MAXMSGSIZE``: our topics are short).

Binding the results socket off loopback is allowed (dashboards on another machine) but
warned about: anyone who can reach the port reads the session's results.
"""

from __future__ import annotations

import logging
import time

import zmq

from acquisition.publisher_config import is_local_endpoint
from online_cnmfe.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTION_BYTES = 256  # longer subscription messages disconnect the peer
SUBSCRIPTION_HWM = 100  # subscription messages queued per peer before its reads stall
DRAIN_BUDGET_S = 0.002  # longest time one drain spends on the model thread


def open_results_socket(endpoint: str, context: zmq.Context, sndhwm: int) -> zmq.Socket:
    """Bind the results XPUB (manual subscriptions, bounded inputs) to ``endpoint``.

    Raises
    ------
    ConfigError
        If the endpoint cannot be bound.
    """
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise ConfigError(
            f"cannot bind the results socket to {endpoint}: {exc}. Is another engine "
            "running? Choose another port with --results."
        ) from exc
    if not is_local_endpoint(endpoint):
        logger.warning(
            "the results socket is bound to %s, not loopback: any host that reaches it reads "
            "this session's traces, footprints and images",
            endpoint,
        )
    return sock


class SubscriptionGate:
    """Drain a manual XPUB's subscription messages (on the socket's own thread).

    Each subscribe message makes its peer subscribed to everything (one trie entry per peer,
    however many or long its subscriptions); unsubscribe messages are ignored (the peer's SUB
    socket filters). :attr:`n_messages` counts what was drained.
    """

    def __init__(self, socket: zmq.Socket, budget_s: float = DRAIN_BUDGET_S) -> None:
        self.socket = socket
        self.budget_s = budget_s
        self.n_messages = 0
        self.n_subscribed = 0

    def drain(self) -> int:
        """Handle the subscription messages waiting (for at most ``budget_s``)."""
        sock = self.socket
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return 0
        deadline = time.perf_counter() + self.budget_s
        n = 0
        while time.perf_counter() < deadline:
            try:
                msg = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            if msg.bytes[:1] == b"\x01":  # subscribe: this peer gets every topic
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                self.n_subscribed += 1
        self.n_messages += n
        return n
