"""Wiring of the live dashboard: ZeroMQ results stream → model → views, from one QTimer.

The dashboard is its own process and never slows the engine: the engine's PUB socket drops
messages for a slow subscriber instead of blocking. Two non-blocking SUB sockets connect to
the results address:

- *data* (``ready``, ``status``, ``traces``, ``footprints``, ``event``, ``trigger``, ``eos``)
  with a large receive HWM, drained completely each tick (within a time budget) so every
  frame's traces reach the ring buffer;
- *images* (``image``), drained completely each tick, keeping only the newest image of each
  layer and discarding the rest (conflation of display data). Its receive HWM (64, about a
  second of all six layers at 10 Hz) is large on purpose: a tiny HWM would not drop old
  images, it would only make ZeroMQ leave them queued upstream (TCP back-pressure into the
  engine's send queue), so the display would lag behind by that queue.

A QTimer (every ``interval_ms``) drains both, ages the connection state, and calls
``refresh(model, dirty)`` on the window, which redraws only the views whose data changed.
ZeroMQ reconnects by itself, so the dashboard may start before the engine and survives an
engine restart (the model clears itself on a new session).
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np
import zmq
from PySide6 import QtCore, QtWidgets

from dashboard.model import DashboardModel, ModelConfig
from dashboard.views import apply_dark_theme
from dashboard.views.window import DashboardWindow
from online_cnmfe.errors import ProtocolError
from online_cnmfe.results.stream import decode_result

logger = logging.getLogger(__name__)

DATA_TOPICS = ("ready", "status", "traces", "footprints", "event", "trigger", "eos")
DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"


class ResultsSubscriber:
    """The two SUB sockets on the results stream (see the module docstring).

    Parameters
    ----------
    address : str
        The engine's results address, e.g. ``tcp://127.0.0.1:5556``.
    context : zmq.Context, optional
    """

    def __init__(self, address: str, context: zmq.Context | None = None) -> None:
        self.address = address
        self._ctx = context or zmq.Context.instance()
        self.data = self._socket(DATA_TOPICS, hwm=10_000)  # ~5 min of traces at 30 Hz
        self.images = self._socket(("image",), hwm=64)
        self.n_images_dropped = 0

    def _socket(self, topics: tuple[str, ...], hwm: int) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
        sock.connect(self.address)
        return sock

    def drain(self, model: DashboardModel, now: float, budget_s: float = 0.025) -> int:
        """Feed every waiting message to ``model`` (images: newest per layer only).

        Returns the number of messages received. Undecodable messages are counted in the
        model's ``n_malformed``.
        """
        deadline = time.monotonic() + budget_s
        n = 0
        while time.monotonic() < deadline:
            try:
                frames = self.data.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            try:
                model.handle(decode_result(frames), now)
            except ProtocolError as exc:
                model.note_malformed(str(exc))
        newest = {}
        while True:
            try:
                frames = self.images.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            try:
                msg = decode_result(frames)
            except ProtocolError as exc:
                model.note_malformed(str(exc))
                continue
            layer = msg.header.get("layer")
            self.n_images_dropped += layer in newest
            newest[layer] = msg
        for msg in newest.values():
            model.handle(msg, now)
        return n

    def close(self) -> None:
        """Close both sockets (linger 0)."""
        self.data.close(linger=0)
        self.images.close(linger=0)


class PaintCounter(QtCore.QObject):
    """Counts paint events of a widget: the display updates that really reached the screen."""

    def __init__(self, widget: QtWidgets.QWidget) -> None:
        super().__init__(widget)
        self.times: deque[float] = deque(maxlen=4096)
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QtCore.QEvent.Type.Paint:
            self.times.append(time.monotonic())
        return False

    def rate(self, now: float, span_s: float = 2.0) -> float:
        """Paints per second over the last ``span_s`` seconds."""
        recent = [t for t in self.times if now - t <= span_s]
        return len(recent) / span_s


class DashboardApp:
    """The live dashboard: a window, a model and a subscriber driven by a QTimer.

    Parameters
    ----------
    address : str
    config : ModelConfig, optional
    window_s : float
        Initial trace window in seconds.
    interval_ms : int
        Period of the drain timer (20 ms).
    max_fps : float
        At most this many display refreshes per second (the changes in between are drawn
        together at the next refresh); lower it to spare the CPU on a weak machine.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        config: ModelConfig | None = None,
        window_s: float = 30.0,
        interval_ms: int = 20,
        max_fps: float = 30.0,
    ) -> None:
        if not max_fps > 0:
            raise ValueError(f"max_fps={max_fps!r} is out of range; allowed: > 0")
        self.min_refresh_s = 1.0 / max_fps
        self._next_refresh = 0.0
        self.qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        apply_dark_theme(self.qapp)
        self.started = time.monotonic()
        self.model = DashboardModel(config, address=address, now=self.started)
        self.window = DashboardWindow(
            title=f"online-cnmfe dashboard — {address}", window_s=window_s
        )
        self.subscriber = ResultsSubscriber(address)
        self.paints = PaintCounter(self.window.image.glw.viewport())
        self.refresh_ms: deque[float] = deque(maxlen=10_000)
        self.n_updates = 0  # refreshes since the first message
        self.first_message_s: float | None = None
        self._cpu_at_first: float | None = None
        self._last_state = self.model.connection
        self._last_second = 0.0
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self.timer.start(interval_ms)

    def tick(self) -> None:
        """Drain the sockets, age the state, redraw what changed."""
        now = time.monotonic()
        if self.subscriber.drain(self.model, now) and self.first_message_s is None:
            self.first_message_s = now
            self._cpu_at_first = time.process_time()
        state = self.model.tick(now)
        if state != self._last_state:
            banner = self.model.banner
            logger.info("connection: %s%s", state, f" ({banner.text})" if banner else "")
            self._last_state = state
        if now - self._last_second >= 1.0:  # age the 'ago' columns and the display rate
            self.model.display_fps = self.paints.rate(now)
            self.model.mark_dirty("status")
            self._last_second = now
        dirty = self.model.take_dirty()
        if self.window.status.pause.isChecked():  # frozen: only the banner and status move
            self.model.mark_dirty(*(dirty - {"status"}))  # the rest is drawn when resumed
            dirty &= {"status"}
        if dirty and now + 0.002 < self._next_refresh:
            self.model.mark_dirty(*dirty)  # too soon after the last refresh: draw them next time
            dirty = set()
        if dirty:
            # keep the schedule (so 30/s works with 20 ms ticks), but bank at most one period
            due = self._next_refresh
            self._next_refresh = (due if now - due < self.min_refresh_s else now) + (
                self.min_refresh_s
            )
            t0 = time.perf_counter()
            self.window.refresh(self.model, dirty)
            if self.first_message_s is not None:
                self.refresh_ms.append(1000 * (time.perf_counter() - t0))
                self.n_updates += 1

    def stats(self) -> dict[str, float]:
        """Display figures since the first message: updates/s, paints/s, refresh p50/p99 (ms)."""
        now = time.monotonic()
        since = self.first_message_s if self.first_message_s is not None else now
        elapsed = max(now - since, 1e-9)
        ms = np.asarray(self.refresh_ms) if self.refresh_ms else np.zeros(1)
        paints = sum(1 for t in self.paints.times if t >= since)
        if self._cpu_at_first is None:  # nothing arrived: no rate to report
            cpu = float("nan")
        else:
            cpu = 100.0 * (time.process_time() - self._cpu_at_first) / elapsed
        return {
            "elapsed_s": elapsed,
            "cpu_percent": cpu,
            "updates_per_s": self.n_updates / elapsed,
            "paints_per_s": paints / elapsed,
            "refresh_ms_p50": float(np.percentile(ms, 50)),
            "refresh_ms_p99": float(np.percentile(ms, 99)),
            "messages": self.model.n_messages,
            "malformed": self.model.n_malformed,
            "images_dropped": self.subscriber.n_images_dropped,
        }

    def screenshot(self, path: str | Path) -> Path:
        """Save the window as a PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(path)):
            raise OSError(f"could not write the screenshot {path}")
        logger.info("screenshot written to %s", path)
        return path

    def run(self, screenshot: str | Path | None = None, quit_after_s: float | None = None) -> int:
        """Show the window and run the Qt loop until it is closed, ``quit_after_s`` passed, or
        SIGINT/SIGTERM arrived; the screenshot (if asked) is taken just before quitting."""
        self.window.show()
        done = []

        def finish(*_: object) -> None:
            if done:
                return
            done.append(True)
            self.tick()
            if screenshot is not None:
                self.screenshot(screenshot)
            self.qapp.quit()

        if quit_after_s is not None:
            QtCore.QTimer.singleShot(int(quit_after_s * 1000), finish)
        # Python runs signal handlers between bytecodes: the 20 ms timer gives it the chance.
        previous = {
            sig: signal.signal(sig, lambda *_: QtCore.QTimer.singleShot(0, finish))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.qapp.exec()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return 0

    def close(self) -> None:
        """Stop the timer, log the display figures, close the sockets."""
        self.timer.stop()
        s = self.stats()
        if self.first_message_s is None:
            logger.info("display: no message received from %s", self.model.address)
            self.subscriber.close()
            return
        logger.info(
            "display: %.1f updates/s, %.1f paints/s, refresh p50 %.1f ms p99 %.1f ms, CPU %.0f %%; "
            "%d messages (%d malformed, %d stale images skipped)",
            s["updates_per_s"],
            s["paints_per_s"],
            s["refresh_ms_p50"],
            s["refresh_ms_p99"],
            s["cpu_percent"],
            s["messages"],
            s["malformed"],
            s["images_dropped"],
        )
        self.subscriber.close()
