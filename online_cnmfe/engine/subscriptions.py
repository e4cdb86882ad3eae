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

The gate also counts the subscriptions it applied, so the engine can skip work whose only
product is a message nobody receives (:meth:`SubscriptionGate.wants`: the display images,
BENCHMARKS.md "Engine CPU per frame (issue 17, second pass)"). In manual mode libzmq reports
a disconnecting peer's subscriptions as unsubscriptions, one per prefix it held (also when
other peers hold the same prefix; the tests check it), so the counts fall back when a
dashboard goes away. A count can only err upwards (a peer that
subscribed twice to one prefix, which a SUB socket forwards twice but a disconnect reports
once): work done for nobody, never a message withheld from a subscriber. Only a peer
unsubscribing from what it never subscribed to (which a SUB socket does not do) could lower
another's count.

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
    everything drained. :meth:`wants` says whether any applied subscription matches a topic.
    """

    def __init__(self, socket: zmq.Socket, budget_s: float = DRAIN_BUDGET_S) -> None:
        self.socket = socket
        self.budget_s = budget_s
        self.n_messages = 0
        self.n_ignored = 0
        self._counts: dict[bytes, int] = {}  # applied subscriptions per prefix

    def wants(self, topic: str) -> bool:
        """Whether a peer may be subscribed to ``topic`` (see the module docstring: never
        False while a SUB socket is subscribed to it or to one of its prefixes)."""
        self.drain()
        name = topic.encode("ascii")
        counts = self._counts
        return any(counts.get(name[:i], 0) > 0 for i in range(len(name) + 1))

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
            subscribe = data[:1] == b"\x01"
            sock.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)  # its peer's
            count = self._counts.get(topic, 0) + (1 if subscribe else -1)
            self._counts[topic] = max(count, 0)
        self.n_messages += n
        return n
