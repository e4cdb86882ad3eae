"""Diagnostic spans of the engine's stages (``bench_e2e.py --stage-trace``; never imported by
the library).

Python imports ``sitecustomize`` at start-up when it is on the path: with
``STAGE_TRACE_DIR`` set, this one wraps the engine's per-frame stages, the store thread's
operations, the slow-path job and the garbage collector's passes, recording for each call
(label, thread, start and end ``monotonic_ns``, the thread's CPU ns, the frame being processed,
a detail), and writes them to ``STAGE_TRACE_DIR/spans-<pid>.json`` at exit. A few µs per call.
"""

from __future__ import annotations

import atexit
import builtins
import functools
import gc
import json
import os
import sys
import threading
import time

_OUT = os.environ.get("STAGE_TRACE_DIR")
_spans: list = []
_now, _cpu = time.monotonic_ns, time.thread_time_ns
_current = {"frame": -1}
_real_import = builtins.__import__


def _record(label, t0, c0, detail=None) -> None:
    thread = threading.current_thread().name
    _spans.append((label, thread, t0, _now(), _cpu() - c0, _current["frame"], detail))


def _wrap(owner, name, label=None, detail=None) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0, c0, out = _now(), _cpu(), None
        try:
            out = fn(*args, **kwargs)
            return out
        finally:
            _record(label or name, t0, c0, detail(args, out, t0) if detail else None)

    setattr(owner, name, wrapper)


def _gc_pass(phase, info, _open={}) -> None:  # noqa: B006 - per-thread start times
    tid = threading.get_ident()
    if phase == "start":
        _open[tid] = (_now(), _cpu())
    elif tid in _open:
        t0, c0 = _open.pop(tid)
        _record(f"gc{info.get('generation')}", t0, c0, info.get("collected"))


_MODEL_CPU = bool(os.environ.get("STAGE_TRACE_MODEL_CPU"))


def _timings(args, result, t0):  # a slow frame's model stages (every frame's: _MODEL_CPU)
    if result is None or (_now() - t0 < 15e6 and not _MODEL_CPU):
        return None
    return {k: round(v, 2) for k, v in result.timings_ms.items()}


def _slow_work(args, out, t0):
    """What a slow step did (``SlowWork``), for steps over 15 ms."""
    if _now() - t0 < 15e6:
        return None
    work = args[1].work
    names = ("hals", "ring_pixels", "candidates", "merge_checks", "births", "merges", "removals")
    ms = ("ms_ring", "ms_footprints", "ms_merge", "ms_detect", "ms_finish")
    done = {k: getattr(work, k) for k in names if getattr(work, k)}
    return {**done, **{k: round(getattr(work, k), 1) for k in ms}, "update": out[0] is not None}


def _numba_compiles() -> None:
    """A span per numba compilation (``numba:compile``: a kernel's first call with new
    argument types, or one whose cache is stale), named by the function: a compilation during
    frames costs tens to hundreds of ms of the thread that makes it. (A load from numba's
    cache fires no event: it is not recorded.)"""
    from numba.core import event

    class _Compiles(event.Listener):
        def on_start(self, ev) -> None:
            _open_compile[threading.get_ident()] = (_now(), _cpu())

        def on_end(self, ev) -> None:
            t0, c0 = _open_compile.pop(threading.get_ident(), (_now(), _cpu()))
            fn = getattr(ev.data.get("dispatcher"), "py_func", None)
            _record("numba_compile", t0, c0, getattr(fn, "__qualname__", "?"))

    event.register("numba:compile", _Compiles())


_open_compile: dict = {}


def _install() -> None:
    import h5py

    from online_cnmfe.engine import frame_queue, publish, service, store_worker
    from online_cnmfe.model import online as model_online
    from online_cnmfe.model import update_prepare, updates
    from online_cnmfe.model.preprocessing import online as pre_online
    from online_cnmfe.results import extras, summary, writer
    from online_cnmfe.triggers import evaluator

    engine = service.Engine
    process = engine._process

    def _process(self, f, meta, t_recv_ns, image_due):
        _current["frame"] = f.frame_index
        _spans.append(("recv", "recv", f.t_send_ns, t_recv_ns, 0, f.frame_index, None))
        t0, c0 = _now(), _cpu()
        try:
            return process(self, f, meta, t_recv_ns, image_due)
        finally:
            _record("_process", t0, c0)

    engine._process = _process
    for name in (
        "_send_traces",
        "_on_frame_result",
        "_send_status",
        "_republish",
        "_checkpoint",
        "_store_summary",
        "_publish_images",
        "_send_footprints",
        "_write_sanity",
    ):
        _wrap(engine, name)  # fmt: skip
    _wrap(frame_queue.FrameQueue, "get", "queue_get")
    _wrap(store_worker.StoreWorker, "_apply", "store_apply", lambda a, o, t: a[1])
    if _MODEL_CPU:  # the model's stage clock → the thread's CPU time (as bench_perframe.py)
        import types

        model_online.time = types.SimpleNamespace(perf_counter=time.thread_time)
    _wrap(model_online.OnlineCNMFE, "process_frame", detail=_timings)
    _wrap(model_online.OnlineCNMFE, "settle_slow_path")
    _wrap(update_prepare, "slow_job", detail=_slow_work)  # the step and its update's arithmetic
    _wrap(updates, "apply_update")
    _wrap(updates, "slow_inputs")
    _wrap(pre_online, "sanity_tick")
    _wrap(pre_online, "preprocess_frame")
    _wrap(service.rs, "encode_traces")
    _wrap(evaluator.TriggerEngine, "on_frame", "trigger_eval")
    _wrap(evaluator.TriggerEngine, "_fire", "trigger_fire")
    _wrap(publish.ResultsPublisher, "send", "pub_send")
    _wrap(summary.SessionSummary, "add", "summary_add")
    _wrap(writer.ResultsWriter, "_write_block", "w_block")
    _wrap(writer.ResultsWriter, "_write_footprints", "w_footprints")
    _wrap(extras.PendingExtras, "write", "w_extras")
    _wrap(h5py.File, "flush", "h5_flush")
    _numba_compiles()


def _import(name, *args, **kwargs):
    module = _real_import(name, *args, **kwargs)
    svc = sys.modules.get("online_cnmfe.engine.service")
    if svc is not None and hasattr(svc, "Engine"):  # the engine is loaded: wrap it once
        builtins.__import__ = _real_import
        _install()
    return module


def _dump() -> None:
    with open(os.path.join(_OUT, f"spans-{os.getpid()}.json"), "w") as fh:
        json.dump(_spans, fh)


if _OUT:
    gc.callbacks.append(_gc_pass)
    builtins.__import__ = _import
    atexit.register(_dump)
