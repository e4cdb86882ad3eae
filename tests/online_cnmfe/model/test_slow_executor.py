"""The slow path on an executor: a thread gives exactly the results of inline execution, and a
step in flight or pending survives a save/load."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe import OnlineCNMFE
from online_cnmfe.model.executors import InlineExecutor
from online_cnmfe.params import CNMFEParams
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

PARAMS = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})


def _fresh(movie, executor=None, params=PARAMS, drop=()) -> OnlineCNMFE:
    """A model initialised from the truth on 150 frames, without the neurons in ``drop``."""
    init = truth_init(movie, 150)
    keep = [k for k in range(init.A.shape[1]) if k not in drop]
    init = dataclasses.replace(
        init, A=scipy.sparse.csc_array(init.A[:, keep]), C=init.C[keep], S=init.S[keep],
        C_raw=init.C_raw[keep], g=init.g[keep], trace_noise=init.trace_noise[keep],
    )  # fmt: skip
    model = OnlineCNMFE(params, slow_executor=executor)
    model.initialize_from(init, movie.frames[:150])
    return model


def _same(a, b) -> None:
    assert a.frame_index == b.frame_index
    for name in ("C", "S", "C_raw", "neuron_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.footprints_version == b.footprints_version
    assert [(e.kind, tuple(e.neuron_ids)) for e in a.events] == [
        (e.kind, tuple(e.neuron_ids)) for e in b.events
    ]


def test_inline_executor_returns_a_completed_future_or_the_exception():
    ex = InlineExecutor()
    assert ex.submit(lambda x: x + 1, 1).result() == 2
    with pytest.raises(ZeroDivisionError):
        ex.submit(lambda: 1 / 0).result()


def test_a_thread_gives_the_results_of_inline_execution():
    late = (3, 7)
    movie = make_movie(n_frames=500, seed=3, n_neurons=12, late=[(k, 200) for k in late])
    params = CNMFEParams.from_dict({
        "data": {"neuron_diameter_px": 8.0},
        "online": {"residual_buffer_frames": 60, "slow_ring_refresh_period_frames": 300},
    })  # fmt: skip
    inline = _fresh(movie, params=params, drop=late)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-path") as pool:
        threaded = _fresh(movie, pool, params=params, drop=late)
        n_events = 0
        for f in movie.frames[150:]:
            a, b = inline.process_frame(f), threaded.process_frame(f)
            _same(a, b)
            n_events += len(a.events)
        threaded.settle_slow_path()
    assert n_events > 0, "no birth: the test would not compare the threaded hand-over"
    np.testing.assert_array_equal(inline.b0, threaded.b0)


def test_a_step_in_flight_is_kept_by_save_and_load(tmp_path):
    movie = make_movie(n_frames=260, seed=6, late=((1, 175),))
    with ThreadPoolExecutor(max_workers=1) as pool:
        model = _fresh(movie, pool)
        for f in movie.frames[150:200]:
            model.process_frame(f)
        model.save(tmp_path / "model.h5")  # a step was in flight: settled into the state
        loaded = OnlineCNMFE.load(tmp_path / "model.h5")
        for f in movie.frames[200:]:
            _same(model.process_frame(f), loaded.process_frame(f))


def test_an_error_in_a_threaded_step_reaches_the_next_frame():
    movie = make_movie(n_frames=170, seed=7)
    with ThreadPoolExecutor(max_workers=1) as pool:
        model = _fresh(movie, pool)
        model.process_frame(movie.frames[150])

        def broken(*_args):
            raise RuntimeError("slow step failed")

        model.settle_slow_path()
        model._inflight = pool.submit(broken)  # the next frame collects it
        with pytest.raises(RuntimeError, match="slow step failed"):
            model.process_frame(movie.frames[151])
