"""The results socket's subscriptions: only the topics the engine publishes, bounded per peer.

A plain PUB socket stores every subscription its peers send (a trie of prefixes) until they
unsubscribe: a local process sending 40 MB of long or 300,000 distinct subscriptions grew the
engine by gigabytes, never freed. The results socket is therefore an XPUB in manual mode
(``XPUB_MANUAL``): subscription messages come to the engine instead of into libzmq's trie,
and :class:`SubscriptionGate` applies only those that can match something the engine sends
— ``""`` (everything) or a prefix of a topic of
:data:`~online_cnmfe.results.stream.RESULT_TOPICS` — and drops the rest. Each peer thus holds
at most a few dozen entries, and a peer that asked only for junk is sent nothing (no queue
builds up for it). A subscription longer than :data:`MAX_SUBSCRIPTION_BYTES` disconnects its
peer (``MAXMSGSIZE``: our topics are short). A new topic must be added to ``RESULT_TOPICS``
for subscribers that ask for it by name (``""`` subscribers get every topic anyway).

Binding the results socket off loopback is allowed (dashboards on another machine) but
warned about: anyone who can reach the port reads the session's results.
"""

from __future__ import annotations

import logging
import time

import zmq

from acquisition.publisher_config import is_local_endpoint
from online_cnmfe.errors import ConfigError
from online_cnmfe.results.stream import RESULT_TOPICS

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTION_BYTES = 256  # longer subscription messages disconnect the peer
SUBSCRIPTION_HWM = 100  # subscription messages queued per peer before its reads stall
DRAIN_BUDGET_S = 0.002  # longest time one drain spends on the model thread
# Subscriptions that can match a published topic: "" and every prefix of a known topic.
ALLOWED_SUBSCRIPTIONS = frozenset(
    topic.encode("ascii")[:i] for topic in RESULT_TOPICS for i in range(len(topic) + 1)
)


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

    A (un)subscription to ``""`` or a prefix of a published topic is applied for the peer that
    sent it; any other is counted in :attr:`n_ignored` and dropped. :attr:`n_messages` counts
    everything drained.
    """

    def __init__(self, socket: zmq.Socket, budget_s: float = DRAIN_BUDGET_S) -> None:
        self.socket = socket
        self.budget_s = budget_s
        self.n_messages = 0
        self.n_ignored = 0

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
            data = msg.bytes
            topic = data[1:]
            if data[:1] not in (b"\x00", b"\x01") or topic not in ALLOWED_SUBSCRIPTIONS:
                self.n_ignored += 1
                continue
            option = zmq.SUBSCRIBE if data[:1] == b"\x01" else zmq.UNSUBSCRIBE
            sock.setsockopt(option, topic)  # for the peer that sent it (manual mode)
        self.n_messages += n
        return n
