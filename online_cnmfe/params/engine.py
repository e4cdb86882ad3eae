"""Parameters of the streaming service (``online-cnmfe run``): queues, publication, storage."""

from __future__ import annotations

from dataclasses import dataclass

from online_cnmfe.params._checks import check, int_at_least, positive


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineParams:
    """The streaming service: queues, publication rates, storage."""

    queue_frames: int = 256  # frames waiting for the model kept in memory (then: queue_full)
    status_period_s: float = 1.0
    flush_period_s: float = 2.0
    image_rate_hz: float = 10.0
    max_frame_age_ms: float = 50.0  # older frames do not fire closed-loop triggers
    on_restart: str = "continue"  # "continue" | "reinitialise" | "stop"
    republish_period_s: float = 2.0  # footprints + summary images re-sent for late joiners
    # footprints whose shapes changed (the slow path refreshes some every few frames) are
    # published and stored at most this often; a change of the neuron set goes out at once
    # (0: every change, as before)
    footprints_period_s: float = 0.5
    checkpoint_period_s: float = 30.0  # model state saved for --resume (0: only at shutdown)
    rcvhwm_frames: int = 64  # frames buffered in the SUB socket before ZeroMQ drops
    max_model_errors: int = 20  # consecutive model exceptions before the engine stops
    # beyond queue_frames: "spool" (to disk, never dropped while the disk has room),
    # "drop" (drop and record), "wait" (stop reading: a --rate max sender slows down)
    queue_full: str = "spool"
    spool_reserve_mb: float = 1024.0  # free disk space the spool leaves (then frames drop)
    spool_max_mb: float = 0.0  # largest spool on disk (0: limited only by the reserve)
    drain_timeout_s: float = 30.0  # after Ctrl-C/SIGTERM: time to process what is queued
    record_raw: bool = False  # record every frame received to <out stem>.raw.h5
    # run each frame's slow-path step on its own thread, overlapping the next frame's traces
    # (results are identical; false: inline, e.g. one core per session in a batch)
    slow_path_thread: bool = True
    # CPython hands the GIL to a waiting thread only every switch interval (its default 5 ms):
    # the model thread, woken by a frame while the slow path's, the store's or the receiver's
    # thread runs Python code, would wait that long before its traces. A shorter interval
    # bounds that wait; each hand-over costs a few µs (BENCHMARKS.md "GIL switch interval").
    gil_switch_interval_ms: float = 0.5
    # SCHED_FIFO priority (1-99) of the receive, ZeroMQ I/O and model threads (the model thread
    # until the frame's traces are out; the slow path's one below), so a frame's critical path
    # takes a core at once on a busy machine (engine/priority.py; needs CAP_SYS_NICE or an
    # rtprio limit, else a warning); 0: normal scheduling
    realtime_priority: int = 0

    def __post_init__(self) -> None:
        check(
            "slow_path_thread",
            self.slow_path_thread,
            isinstance(self.slow_path_thread, bool),
            "true or false",
        )
        int_at_least("queue_frames", self.queue_frames, 1)
        positive("gil_switch_interval_ms", self.gil_switch_interval_ms)
        check(
            "realtime_priority", self.realtime_priority,
            isinstance(self.realtime_priority, int) and 0 <= self.realtime_priority <= 99,
            "an integer in [0, 99] (0: normal scheduling)",
        )  # fmt: skip
        positive("republish_period_s", self.republish_period_s)
        check(
            "footprints_period_s", self.footprints_period_s, self.footprints_period_s >= 0, ">= 0"
        )
        check(
            "checkpoint_period_s", self.checkpoint_period_s, self.checkpoint_period_s >= 0, ">= 0"
        )
        int_at_least("rcvhwm_frames", self.rcvhwm_frames, 1)
        int_at_least("max_model_errors", self.max_model_errors, 1)
        check(
            "queue_full",
            self.queue_full,
            self.queue_full in ("spool", "drop", "wait"),
            "'spool', 'drop' or 'wait'",
        )
        check("spool_reserve_mb", self.spool_reserve_mb, self.spool_reserve_mb >= 0, ">= 0")
        check("spool_max_mb", self.spool_max_mb, self.spool_max_mb >= 0, ">= 0 (0: no limit)")
        check("drain_timeout_s", self.drain_timeout_s, self.drain_timeout_s >= 0, ">= 0")
        check("record_raw", self.record_raw, isinstance(self.record_raw, bool), "true or false")
        positive("status_period_s", self.status_period_s)
        positive("flush_period_s", self.flush_period_s)
        positive("image_rate_hz", self.image_rate_hz)
        positive("max_frame_age_ms", self.max_frame_age_ms)
        check(
            "on_restart",
            self.on_restart,
            self.on_restart in ("continue", "reinitialise", "stop"),
            "'continue', 'reinitialise' or 'stop'",
        )
