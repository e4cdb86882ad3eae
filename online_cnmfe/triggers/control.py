"""The trigger control socket: list, add, remove, enable and disable rules at run time.

A REP socket (default ``tcp://127.0.0.1:5558``) served by its own thread. Requests and replies are
single-frame UTF-8 JSON objects with ``"v": 1``; nothing is ever unpickled. Every request carries
``"token"``, the secret of the engine's token file (:mod:`.auth`): without it nothing is done.
Requests are at most :data:`~.limits.MAX_REQUEST_BYTES` (a larger one disconnects the client),
rule changes at most :data:`~.limits.MAX_CHANGES_PER_S` per second, and the rule set is bounded
(:mod:`.limits`). Requests:

| ``cmd`` | other fields | reply (besides ``"ok": true``) |
|---|---|---|
| ``list`` | | ``rules``: each rule with ``enabled`` and ``state`` (neurons, counters) |
| ``add`` | ``rule``: a rule object (docs/closed-loop.md) | ``rule``: the validated rule |
| ``remove`` | ``name`` | |
| ``enable`` / ``disable`` | ``name`` | |
| ``stats`` | | ``stats``: engine counters |

A rejected request gets ``{"v": 1, "ok": false, "error": "<what was wrong and what to do>"}``;
a malformed request never stops the server (it is counted in :attr:`ControlServer.n_bad`).
Validation (:func:`~online_cnmfe.triggers.rules.parse_rule`) runs on this thread; the engine
swaps its rule tuple under a lock, so the model thread never waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from online_cnmfe.errors import ConfigError, ProtocolError
from online_cnmfe.triggers.auth import token_matches
from online_cnmfe.triggers.evaluator import TriggerEngine
from online_cnmfe.triggers.limits import MAX_CHANGE_BURST, MAX_CHANGES_PER_S, MAX_REQUEST_BYTES
from online_cnmfe.triggers.rules import parse_rule, rule_to_dict
from online_cnmfe.triggers.wire import decode_json, encode_json

__all__ = ["COMMANDS", "ControlServer", "handle_request"]

logger = logging.getLogger(__name__)

COMMANDS = ("list", "add", "remove", "enable", "disable", "stats")
CHANGES = ("add", "remove", "enable", "disable")
LOGGED_REJECTIONS = 20  # rejected requests logged one by one; then one line per 1000


def _name(request: dict[str, Any]) -> str:
    name = request.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"'{request['cmd']}' needs 'name' (a rule name), got {name!r}")
    return name


def handle_request(engine: TriggerEngine, request: dict[str, Any]) -> dict[str, Any]:
    """Apply one decoded control request to ``engine`` and build the reply (without ``v``).

    Raises
    ------
    ProtocolError
        Unknown command or missing field.
    ConfigError
        Invalid rule, duplicate name, unknown rule.
    """
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; expected one of {COMMANDS}")
    if cmd == "list":
        return {"ok": True, "rules": engine.list_rules()}
    if cmd == "stats":
        return {"ok": True, "stats": engine.stats()}
    if cmd == "add":
        rule = parse_rule(request.get("rule"), "control 'add'")
        engine.add_rule(rule)
        logger.info("trigger rule %r added over the control socket", rule.name)
        return {"ok": True, "rule": rule_to_dict(rule)}
    name = _name(request)
    if cmd == "remove":
        engine.remove_rule(name)
    else:
        engine.set_enabled(name, cmd == "enable")
    logger.info("trigger rule %r: %s (control socket)", name, cmd)
    return {"ok": True}


class ControlServer:
    """Serve control requests for a :class:`TriggerEngine` on a REP socket, in a thread.

    Parameters
    ----------
    engine : TriggerEngine
    endpoint : str
        Where to bind (``tcp://127.0.0.1:*`` picks a free port; see :attr:`endpoint`).
    context : zmq.Context, optional
    token : str
        The secret every request must carry (:func:`~.auth.load_or_create_token`).

    Examples
    --------
    ::

        token = load_or_create_token()
        server = ControlServer(engine, "tcp://127.0.0.1:5558", token=token).start()
        ...
        server.close()
    """

    def __init__(
        self,
        engine: TriggerEngine,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        token: str,
    ) -> None:
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError("the control socket needs a token of at least 16 characters")
        self.engine = engine
        self._token = token
        self._ctx = context or zmq.Context.instance()
        self._socket = self._ctx.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise ConfigError(
                f"cannot bind the trigger control socket to {endpoint}: {exc}. "
                'Choose another triggers.control_endpoint or set it to "" to disable it.'
            ) from exc
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_requests = 0
        self.n_bad = 0
        self.n_unauthorised = 0
        self._allowance = float(MAX_CHANGE_BURST)  # token bucket of rule changes
        self._allowance_t = time.monotonic()

    def start(self) -> ControlServer:
        self._thread = threading.Thread(target=self._serve, name="trigger-control", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                frames = self._socket.recv_multipart()
                self._socket.send(encode_json(self._reply(frames)))
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                logger.error(
                    "trigger control socket failed: %s; run-time rule changes are off", exc
                )
        finally:
            self._socket.close(linger=0)

    def _reply(self, frames: list[bytes]) -> dict[str, Any]:
        self.n_requests += 1
        try:
            if len(frames) != 1:
                raise ProtocolError(f"a control request is 1 JSON frame, got {len(frames)}")
            request = decode_json(frames[0], "control request")
            if not token_matches(self._token, request.pop("token", None)):
                self.n_unauthorised += 1
                raise PermissionError(
                    "not authorised: give the token of the engine's control token file "
                    "(triggers.control_token_file)"
                )
            if request.get("cmd") in CHANGES and not self._allow_change():
                raise ConfigError(
                    f"too many rule changes (more than {MAX_CHANGES_PER_S:g} per second); "
                    "retry in a moment"
                )
            return handle_request(self.engine, request)
        except (ProtocolError, ConfigError, PermissionError) as exc:
            self.n_bad += 1
            if self.n_bad <= LOGGED_REJECTIONS or self.n_bad % 1000 == 0:
                logger.warning("trigger control request rejected (%d so far): %s", self.n_bad, exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug here must not kill the control thread
            self.n_bad += 1
            logger.exception("trigger control request failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    def _allow_change(self) -> bool:
        now = time.monotonic()
        self._allowance = min(
            float(MAX_CHANGE_BURST),
            self._allowance + (now - self._allowance_t) * MAX_CHANGES_PER_S,
        )
        self._allowance_t = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and close the socket (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        else:
            self._socket.close(linger=0)
