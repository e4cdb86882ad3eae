"""What the frame publisher is asked to do (:class:`PublisherConfig`) and what it did
(:class:`PublishSummary`), with the parsing of ``--rate`` and the loopback check of endpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
PACED_WAIT_S = 2.0  # a paced stream waits this long for a subscriber by default
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def parse_rate(text: str | float) -> str | float:
    """Parse ``--rate``: ``"real"``, ``"max"`` or a positive number of Hz.

    Raises
    ------
    ValueError
        For anything else.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        lowered = str(text).strip().lower()
        if lowered in ("real", "max"):
            return lowered
        try:
            value = float(lowered.removesuffix("hz"))
        except ValueError:
            value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"rate {text!r} is invalid; expected 'real', 'max' or a positive Hz value")
    return value


TRANSPORTS = ("tcp", "ipc", "inproc")


def check_endpoint(endpoint: str, option: str = "endpoint") -> str:
    """Return ``endpoint`` when it is a ZeroMQ address (``transport://address``), else raise.

    Parameters
    ----------
    endpoint : str
    option : str
        How the user gave it (``--endpoint``, ``--frames``, …), named in the message.

    Raises
    ------
    ValueError
        Naming the value and, for a bare ``host:port`` or port, the address meant.

    Examples
    --------
    >>> check_endpoint("tcp://127.0.0.1:5555")
    'tcp://127.0.0.1:5555'
    >>> check_endpoint("127.0.0.1:5555", "--endpoint")
    Traceback (most recent call last):
    ...
    ValueError: --endpoint 127.0.0.1:5555 is not a ZeroMQ address; did you mean tcp://127.0.0.1:5555?
    """
    text = str(endpoint).strip()
    transport, sep, address = text.partition("://")
    if sep and transport in TRANSPORTS and address:
        return text
    if not sep:
        host, colon, port = text.rpartition(":")
        if text.isdigit():
            hint = f"did you mean tcp://127.0.0.1:{text}?"
        elif colon and port.isdigit():
            hint = f"did you mean tcp://{host or '127.0.0.1'}:{port}?"
        else:
            hint = "expected e.g. tcp://127.0.0.1:5555 or ipc:///tmp/frames"
        raise ValueError(f"{option} {text} is not a ZeroMQ address; {hint}")
    raise ValueError(
        f"{option} {text} has an unknown transport {transport!r}; expected one of "
        f"{', '.join(t + '://' for t in TRANSPORTS)} (e.g. tcp://127.0.0.1:5555)"
    )


def is_local_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` endpoints and tcp on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
        return host in _LOCAL_HOSTS
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class PublisherConfig:
    """How to publish.

    Parameters
    ----------
    endpoint : str
        Where to bind; loopback by default. A non-loopback address logs a warning.
    rate : {"real", "max"} or float
        Pacing (see the module docstring).
    sndhwm : int
        Send high-water mark in messages (per subscriber).
    loop : bool
        Replay the frame range again and again (``seq`` keeps counting; times keep growing).
    start, stop : int, optional
        Frame range ``[start, stop)`` of the source (0-based positions).
    wait_for_subscriber_s : float or None
        Hold the first frame until a subscriber has subscribed, at most this long (0: don't;
        ``math.inf``: as long as it takes). None (default): forever with ``rate="max"`` (a
        lossless replay has no reader to lose frames to; it also pauses when the last
        subscriber leaves), :data:`PACED_WAIT_S` for the paced rates (an engine started first
        needs up to ~0.1 s to connect to a new socket; with nobody there the stream starts).
    start_interval_s : float
        Period of the repeated ``start`` message.
    linger_ms : int
        How long closing may wait for queued messages (the ``eos`` included) to go out.
    eos_repeat_s : float
        The ``eos`` is re-sent every 0.1 s for this long (receivers whose queue was full
        when it was first sent get a later copy).
    """

    endpoint: str = DEFAULT_ENDPOINT
    rate: str | float = "real"
    sndhwm: int = 256
    loop: bool = False
    start: int = 0
    stop: int | None = None
    wait_for_subscriber_s: float | None = None
    start_interval_s: float = 1.0
    linger_ms: int = 2000
    eos_repeat_s: float = 0.5

    def __post_init__(self) -> None:
        check_endpoint(self.endpoint, "--endpoint")
        object.__setattr__(self, "rate", parse_rate(self.rate))
        if self.wait_for_subscriber_s is None:
            wait = math.inf if self.rate == "max" else PACED_WAIT_S
            object.__setattr__(self, "wait_for_subscriber_s", wait)
        if self.sndhwm < 1:
            raise ValueError(f"sndhwm is {self.sndhwm}; expected >= 1 message")
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise ValueError(f"frame range start={self.start}, stop={self.stop} is empty/invalid")
        if min(self.wait_for_subscriber_s, self.linger_ms, self.eos_repeat_s) < 0:
            raise ValueError("wait_for_subscriber_s, linger_ms, eos_repeat_s must be >= 0")
        if self.start_interval_s <= 0:
            raise ValueError(f"start_interval_s is {self.start_interval_s}; expected > 0")


@dataclass(frozen=True, slots=True)
class PublishSummary:
    """What a publishing run did.

    Attributes
    ----------
    session_id : str
    n_sent : int
        Frames handed to the socket.
    elapsed_s : float
        From the first to the last frame sent.
    rate_hz : float
        Achieved frame rate (``(n_sent - 1) / elapsed_s``; 0 for fewer than 2 frames).
    reason : str
        ``complete``, ``interrupted`` or ``error`` (as in the ``eos``).
    n_late : int
        Paced frames sent more than one frame period after their due time.
    lost_daq_frames : int
        Frames the recording itself lost before the software (DAQ counter gaps).
    n_subscribers : int
        Subscribers of ``frame`` connected at the end.
    n_read : int
        Frames read from the source.
    n_unsubscribed : int
        Frames sent while no subscriber of ``frame`` was connected: nobody received them.
    """

    session_id: str
    n_sent: int
    elapsed_s: float
    rate_hz: float
    reason: str
    n_late: int
    lost_daq_frames: int
    n_subscribers: int
    n_read: int = 0
    n_unsubscribed: int = 0

    @property
    def n_delivered(self) -> int:
        """Frames sent while a subscriber was connected (a paced stream may still drop some at
        the high-water mark: the receiver records those from the ``seq`` gaps)."""
        return self.n_sent - self.n_unsubscribed

    def describe(self) -> str:
        """One line for logs."""
        lost = (
            f", {self.n_unsubscribed} sent with no subscriber connected (lost)"
            if self.n_unsubscribed
            else ""
        )
        return (
            f"read {self.n_read} frames, delivered {self.n_delivered} to subscribers{lost}, "
            f"in {self.elapsed_s:.2f} s ({self.rate_hz:.1f} frames/s), {self.n_late} late, "
            f"{self.lost_daq_frames} lost in the recording, end: {self.reason}"
        )
