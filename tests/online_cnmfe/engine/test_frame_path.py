"""The engine's frame path (engine/frame_path.py) on stubs: what a closed-loop callback
publishes on the results stream while a frame is processed goes out after its traces."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from acquisition.protocol import decode_message
from online_cnmfe.engine.frame_path import FramePathMixin
from online_cnmfe.model.frame_result import FrameResult


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, frames: list) -> None:
        self.sent.append(decode_message(frames).topic)

    def wants(self, topic: str) -> bool:
        return False


class _Model:
    """Calls ``on_traces`` as the real model does, or raises before the traces."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.after_traces: list[str] = []

    def process_frame(self, pixels, on_traces=None) -> FrameResult:
        if self.fail:
            raise RuntimeError("boom")
        v = np.ones(2, np.float32)
        result = FrameResult(7, np.array([1, 2], np.int64), v, v, v)
        on_traces(result)
        self.after_traces.append("slow path")
        return result


class _Engine(FramePathMixin):
    def __init__(self, model) -> None:
        self._holding, self._held = False, []
        self.publisher = _Publisher()
        self.runner = SimpleNamespace(model=model)
        self.ids = SimpleNamespace(cover=lambda ids: None)
        self.ep = SimpleNamespace(max_frame_age_ms=1000.0, max_model_errors=10)
        self.counts = {"stale": 0, "rejected": 0, "flagged": 0, "model_errors": 0}
        self.model_priority = SimpleNamespace(relaxed=lambda: None)
        self.status = SimpleNamespace(record=lambda ms: None)
        self.store = SimpleNamespace(submit=lambda *a: None)
        self.projections, self.images, self._fp_version = None, None, 0
        self._consecutive_errors = 0
        self.rejected: list[int] = []
        self.frame_result_callbacks = [self._closed_loop]

    def _closed_loop(self, result, meta) -> None:  # as the trigger listener of `run` does
        self.publish_after_traces([b"trigger", b'{"v": 1, "topic": "trigger", "arrays": []}'])
        self.publisher.sent.append("trigger socket")  # the rule's own socket: at once

    def _on_frame_result(self, result, meta) -> None:
        for callback in self.frame_result_callbacks:
            callback(result, meta)

    def _reject(self, frame_index: int, reason: str) -> None:
        self.rejected.append(frame_index)


def _frame():
    return SimpleNamespace(frame_index=7, seq=7, daq_frame=None, t_acq_ms=0.0, t_send_ns=0,
                           pixels=np.zeros((4, 4), np.uint16))  # fmt: skip


def test_results_messages_of_a_callback_follow_the_traces():
    engine = _Engine(_Model())
    engine._process(_frame(), {"frame_index": 7, "seq": 7, "t_acq_ms": 0.0, "t_send_ns": 0,
                               "t_recv_ns": 0}, 0, image_due=False)  # fmt: skip
    assert engine.publisher.sent == ["trigger socket", "traces", "trigger"]
    assert not engine._holding and engine._held == []


def test_between_frames_a_message_goes_out_at_once():
    engine = _Engine(_Model())
    engine.publish_after_traces([b"trigger", b'{"v": 1, "topic": "trigger", "arrays": []}'])
    assert engine.publisher.sent == ["trigger"]


def test_a_model_error_releases_what_was_held():
    engine = _Engine(_Model(fail=True))
    engine._holding = True  # as if a callback held a message before the model failed
    engine._held.append([b"trigger", b'{"v": 1, "topic": "trigger", "arrays": []}'])
    engine._process(_frame(), {"frame_index": 7, "seq": 7, "t_acq_ms": 0.0, "t_send_ns": 0,
                               "t_recv_ns": 0}, 0, image_due=False)  # fmt: skip
    assert engine.rejected == [7]
    assert engine.publisher.sent == ["trigger"] and not engine._holding
