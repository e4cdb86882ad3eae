"""Parameters of the streaming service (``online-cnmfe run``): queues, publication, storage."""

from __future__ import annotations

from dataclasses import dataclass

from online_cnmfe.params._checks import check, int_at_least, positive


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineParams:
    """The streaming service: queues, publication rates, storage."""

    queue_frames: int = 256
    status_period_s: float = 1.0
    flush_period_s: float = 2.0
    image_rate_hz: float = 10.0
    max_frame_age_ms: float = 50.0  # older frames do not fire closed-loop triggers
    on_restart: str = "continue"  # "continue" | "reinitialise" | "stop"
    republish_period_s: float = 2.0  # footprints + summary images re-sent for late joiners
    checkpoint_period_s: float = 300.0  # model state saved for --resume (0: only at shutdown)
    rcvhwm_frames: int = 64  # frames buffered in the SUB socket before ZeroMQ drops
    max_model_errors: int = 20  # consecutive model exceptions before the engine stops
    queue_full: str = "drop"  # "drop" (live: drop and record) | "wait" (replay at max rate)
    # run each frame's slow-path step on its own thread, overlapping the next frame's traces
    # (results are identical; false: inline, e.g. one core per session in a batch)
    slow_path_thread: bool = True

    def __post_init__(self) -> None:
        check(
            "slow_path_thread",
            self.slow_path_thread,
            isinstance(self.slow_path_thread, bool),
            "true or false",
        )
        int_at_least("queue_frames", self.queue_frames, 1)
        positive("republish_period_s", self.republish_period_s)
        check(
            "checkpoint_period_s", self.checkpoint_period_s, self.checkpoint_period_s >= 0, ">= 0"
        )
        int_at_least("rcvhwm_frames", self.rcvhwm_frames, 1)
        int_at_least("max_model_errors", self.max_model_errors, 1)
        check(
            "queue_full", self.queue_full, self.queue_full in ("drop", "wait"), "'drop' or 'wait'"
        )
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
