"""Trigger rules on synthetic traces: exact firing frames, hysteresis, refractory, k-of-n,
ensemble, z-score, regions, unknown neurons, frame age, config validation."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.errors import ConfigError
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.triggers import (
    TriggerEngine,
    load_trigger_config,
    parse_rule,
    parse_trigger_config,
)
from online_cnmfe.triggers.rules import parse_region, rule_to_dict
from online_cnmfe.triggers.zscore import RunningZScore


def rule(**kw):
    base = {"name": "r", "signal": "spike", "condition": "threshold", "threshold": 1.0}
    base.update(kw)
    return parse_rule(base)


def frame(t, ids, values, signal="spike", **kw):
    v = np.asarray(values, np.float32)
    z = np.zeros_like(v)
    arrays = {"S": z, "C": z, "C_raw": z}
    field = {"spike": "S", "calcium": "C"}.get(signal, "C_raw")
    arrays[field] = v
    return FrameResult(
        t, np.asarray(ids, np.int64), arrays["C"], arrays["S"], arrays["C_raw"], **kw
    )


def run(engine, traces, ids=None, signal="spike", meta=None):
    """Feed traces (T, K) and return the list of firing frames (one entry per firing)."""
    traces = np.asarray(traces, np.float32)
    if traces.ndim == 1:
        traces = traces[:, None]
    ids = np.arange(traces.shape[1]) if ids is None else ids
    fired = []
    for t, row in enumerate(traces):
        m = {"frame_index": t, "seq": t, "t_acq_ms": 50.0 * t, **(meta or {})}
        fired += [r.frame_index for r in engine.on_frame(frame(t, ids, row, signal), m)]
    return fired


# ---- threshold, hysteresis, refractory ----------------------------------------------------
def test_threshold_fires_on_upward_crossings_only():
    eng = TriggerEngine([rule(neurons=[0])])
    assert run(eng, [0, 0.2, 1.5, 1.2, 0.1, 2.0, 0.0, 1.0]) == [2, 5, 7]


def test_first_frame_above_threshold_does_not_fire_until_seen_below():
    eng = TriggerEngine([rule(neurons=[0])])
    assert run(eng, [5, 5, 0, 5]) == [3]


def test_hysteresis_needs_the_release_level_to_rearm():
    eng = TriggerEngine([rule(neurons=[0], release=0.5)])
    assert run(eng, [0, 1.2, 0.8, 1.2, 0.3, 1.2]) == [1, 5]
    eng = TriggerEngine([rule(neurons=[0])])  # release = threshold
    assert run(eng, [0, 1.2, 0.8, 1.2, 0.3, 1.2]) == [1, 3, 5]


def test_refractory_frames_block_the_following_frames():
    eng = TriggerEngine([rule(neurons=[0], refractory_frames=3)])
    spikes = [0, 2, 0, 2, 0, 2, 0, 2, 0, 0, 0, 2]
    # fired at 1 -> 2..4 blocked; 5 fires -> 6..8 blocked (7 blocked); 11 fires
    assert run(eng, spikes) == [1, 5, 11]
    assert eng.stats()["n_suppressed_refractory"] == 2


def test_refractory_ms_uses_acquisition_time():
    eng = TriggerEngine([rule(neurons=[0], refractory_ms=120.0)])  # frames every 50 ms
    assert run(eng, [0, 2, 0, 2, 0, 2, 0, 2]) == [1, 5]  # 3 is 100 ms after 1, 5 is 200 ms


def test_threshold_reports_all_crossing_neurons_and_max_value():
    eng = TriggerEngine([rule(neurons=[4, 9, 2])])
    ids = [2, 4, 9]
    eng.on_frame(frame(0, ids, [0, 0, 0]), {})
    (rec,) = eng.on_frame(frame(1, ids, [3.0, 0.5, 2.0]), {"seq": 11, "t_acq_ms": 5.0})
    assert set(rec.neuron_ids) == {2, 9} and rec.value == 3.0
    assert rec.seq == 11 and rec.t_acq_ms == 5.0 and rec.frame_index == 1
    assert math.isnan(rec.age_ms)  # no arrival time: age unknown, never suppressed


def test_signal_selection_reads_the_right_vector():
    ids = [0]
    for signal, field in (("spike", "S"), ("calcium", "C"), ("raw", "C_raw")):
        eng = TriggerEngine([rule(neurons=[0], signal=signal)])
        fired = []
        for t, v in enumerate([0, 2, 0]):
            vecs = {"S": [0.0], "C": [0.0], "C_raw": [0.0]}
            vecs[field] = [v]
            res = FrameResult(t, np.array(ids), *(np.float32(vecs[k]) for k in ("C", "S", "C_raw")))
            fired += [r.frame_index for r in eng.on_frame(res, {})]
        assert fired == [1], signal


def slow_threshold(x, thr, rel, refr):
    """Obvious per-sample reference of threshold + hysteresis + refractory frames."""
    armed, last, out = False, None, []
    for t, v in enumerate(x):
        crossing = armed and v >= thr
        if v >= thr:
            armed = False
        if v < rel:
            armed = True
        if crossing and not (refr and last is not None and t - last <= refr):
            out.append(t)
            last = t
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=60),
    st.floats(-1, 2),
    st.floats(0, 2),
    st.integers(0, 5),
)
def test_threshold_matches_slow_reference(x, thr, gap, refr):
    eng = TriggerEngine(
        [rule(neurons=[0], threshold=thr, release=thr - gap, refractory_frames=refr)]
    )
    x32 = np.asarray(x, np.float32)
    expected = slow_threshold([float(v) for v in x32], np.float32(thr), np.float32(thr - gap), refr)
    assert run(eng, x32) == expected


# ---- k of n, ensemble -----------------------------------------------------------------------
def test_k_of_n_within_window():
    eng = TriggerEngine([rule(neurons=[0, 1, 2, 3], condition="k_of_n", k=2, window_frames=3)])
    x = np.zeros((12, 4))
    x[2, 0] = 1  # one neuron: not enough
    x[5, 0] = 1
    x[7, 1] = 1  # 7 - 5 = 2 < 3: two distinct neurons in the window -> fires at 7
    x[8, 1] = 1  # still satisfied: no new firing (edge-triggered)
    x[11, 2] = 1
    x[11, 3] = 1  # two at once -> fires at 11 (re-armed in between)
    assert run(eng, x) == [7, 11]
    x2 = np.zeros((10, 4))
    x2[5, 0] = 1
    x2[8, 1] = 1  # 8 - 5 = 3: outside the window
    eng = TriggerEngine([rule(neurons=[0, 1, 2, 3], condition="k_of_n", k=2, window_frames=3)])
    assert run(eng, x2) == []


def test_k_of_n_reports_count_and_neurons():
    eng = TriggerEngine([rule(neurons=[5, 6, 7], condition="k_of_n", k=3, window_frames=4)])
    ids = [5, 6, 7]
    recs = []
    for t, row in enumerate([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]):
        recs += eng.on_frame(frame(t, ids, row), {})
    assert [(r.frame_index, r.value, r.neuron_ids) for r in recs] == [(3, 3.0, (5, 6, 7))]


def test_ensemble_weighted_sum_with_hysteresis():
    eng = TriggerEngine(
        [
            rule(
                neurons=[0, 1],
                condition="ensemble",
                weights=[1.0, -0.5],
                threshold=1.0,
                release=0.2,
            )
        ]
    )
    x = [[0, 0], [1.2, 0], [1.2, 1.0], [1.5, 0], [0.1, 0], [1.0, 0]]
    # sums: 0, 1.2 fire, 0.7 (above release: stays disarmed), 1.5 no, 0.1 re-arm, 1.0 fire
    assert run(eng, x) == [1, 5]
    assert eng.fired[0].value == pytest.approx(1.2)


# ---- z-score ------------------------------------------------------------------------------
def test_running_zscore_estimates_noise_and_is_causal(rng):
    sigma, base = 0.7, 3.0
    x = base + sigma * rng.standard_normal((4000, 5))
    zs = RunningZScore(5, alpha=1 / 600, warmup=20)
    z = np.zeros(5)
    zs_all = []
    for row in x:
        zs.update(row, z)
        zs_all.append(z.copy())
    assert np.allclose(zs.sigma(), sigma, rtol=0.1), zs.sigma()
    assert np.allclose(zs.mu, base, atol=0.2)
    zs_all = np.array(zs_all[100:])
    assert abs(zs_all.std() - 1) < 0.1
    # causal: z of a sample does not depend on the sample itself entering the statistics
    zs2 = RunningZScore(1, alpha=1 / 600, warmup=2)
    out = np.zeros(1)
    for v in (1.0, 1.1, 0.9, 1.0):
        zs2.update(np.array([v]), out)
    mu, sig = zs2.mu.copy(), zs2.sigma().copy()
    zs2.update(np.array([100.0]), out)
    assert out[0] == pytest.approx((100.0 - mu[0]) / sig[0])


def test_zscore_rule_fires_exactly_at_injected_events(rng):
    T, K = 3000, 3
    sigma = np.array([0.5, 2.0, 10.0])
    x = 5.0 + sigma * rng.standard_normal((T, K))
    events = [400, 900, 1500, 2200, 2800]
    for t in events:
        x[t, 1] += 12 * sigma[1]  # a 12-sigma single-frame event on neuron 1
    eng = TriggerEngine(
        [rule(neurons=[1], signal="zscore", threshold=6.0, release=2.0)], frame_rate_hz=20
    )
    assert run(eng, x, signal="zscore") == events
    # the same events on the neuron with 5x larger noise are invisible
    eng = TriggerEngine([rule(neurons=[2], signal="zscore", threshold=6.0)], frame_rate_hz=20)
    assert run(eng, x, signal="zscore") == []


def test_rise_rule_catches_spikes_riding_on_a_transient(rng):
    T, sigma, g = 1500, 1.0, 0.95
    spikes = np.zeros(T)
    events = [300, 304, 600, 603, 606, 1000]  # bursts: each spike lands on the last transient
    spikes[events] = 15.0
    calcium = np.zeros(T)
    for t in range(1, T):
        calcium[t] = g * calcium[t - 1] + spikes[t]
    x = calcium + sigma * rng.standard_normal(T)
    rise = TriggerEngine([rule(neurons=[0], signal="rise", threshold=6.0, release=2.0)])
    assert run(rise, x, signal="rise") == events
    level = TriggerEngine([rule(neurons=[0], signal="zscore", threshold=6.0, release=2.0)])
    assert run(level, x, signal="zscore") == [300, 600, 1000]  # the level stays high in a burst


def test_zscore_ignores_a_trace_clipped_at_zero(rng):
    # non-negative demixing: a silent neuron's trace sits at exactly 0, then noise appears
    x = np.zeros(600)
    x[100:] = np.maximum(0, 0.5 + rng.standard_normal(500))
    x[400] += 15.0
    for signal in ("zscore", "rise"):
        eng = TriggerEngine([rule(neurons=[0], signal=signal, threshold=6.0, release=1.0)])
        assert run(eng, x, signal=signal) == [400], signal


# ---- regions ------------------------------------------------------------------------------
def test_region_shapes_contain_the_right_points():
    pts = np.array([[5, 5], [0, 0], [9.9, 9.9], [10, 5], [5, 12], [2, 2]])
    rect = parse_region({"shape": "rectangle", "rows": [0, 10], "cols": [0, 10]})
    assert rect.contains(pts).tolist() == [True, True, True, False, False, True]
    circ = parse_region({"shape": "circle", "center": [5, 5], "radius": 4.5})
    assert circ.contains(pts).tolist() == [True, False, False, False, False, True]
    square = parse_region({"shape": "polygon", "vertices": [[0, 0], [0, 10], [10, 10], [10, 0]]})
    inner = np.array([[5, 5], [9.9, 9.9], [2, 2], [10.5, 5], [-1, 3], [5, 12]])
    assert square.contains(inner).tolist() == [True, True, True, False, False, False]
    tri = parse_region({"shape": "polygon", "vertices": [[0, 0], [10, 0], [0, 10]]})
    assert tri.contains(np.array([[2, 2], [6, 6], [4.9, 4.9], [5.1, 5.1]])).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_region_rule_resolves_against_centroids_and_follows_updates():
    r = rule(region={"shape": "circle", "center": [20, 20], "radius": 6})
    eng = TriggerEngine([r], centroid_refresh_frames=5)
    ids = [1, 2, 3]
    eng.update_centroids(ids, [[18, 21], [60, 60], [23, 17]])  # 1 and 3 inside
    seq = [[0, 0, 0], [0, 2, 0], [0, 0, 0], [0, 0, 2], [0, 0, 0]]
    recs = [r for t, row in enumerate(seq) for r in eng.on_frame(frame(t, ids, row), {})]
    assert [(r.frame_index, r.neuron_ids) for r in recs] == [(3, (3,))]
    # neuron 2 moves into the region (footprint refresh): it counts from the next frame on
    eng.update_centroids(ids, [[18, 21], [20, 20], [23, 17]])
    recs = [r for t, row in enumerate(seq, 5) for r in eng.on_frame(frame(t, ids, row), {})]
    assert [(r.frame_index, r.neuron_ids) for r in recs] == [(6, (2,)), (8, (3,))]


def test_centroid_updates_are_throttled_unless_a_neuron_is_new():
    eng = TriggerEngine(
        [rule(region={"shape": "rectangle", "rows": [0, 10], "cols": [0, 10]})],
        centroid_refresh_frames=10,
    )
    eng.update_centroids([1], [[5, 5]])
    for t in range(3):
        eng.on_frame(frame(t, [1], [0]), {})
    eng.update_centroids([1], [[50, 50]])  # a refresh moved neuron 1 out: applied at frame 10
    assert len(eng.on_frame(frame(3, [1], [2]), {})) == 1
    for t in range(4, 10):
        eng.on_frame(frame(t, [1], [0]), {})
    assert eng.on_frame(frame(10, [1], [2]), {}) == []
    eng.on_frame(frame(11, [1, 2], [0, 0]), {})
    eng.update_centroids([1, 2], [[50, 50], [3, 3]])  # neuron 2 is new: applied at once
    assert [r.neuron_ids for r in eng.on_frame(frame(12, [1, 2], [0, 2]), {})] == []
    assert [r.neuron_ids for r in eng.on_frame(frame(13, [1, 2], [0, 0]), {})] == []
    assert [r.neuron_ids for r in eng.on_frame(frame(14, [1, 2], [0, 2]), {})] == [(2,)]


def test_region_rule_uses_centroid_source_when_neurons_are_born():
    cents = {1: [5.0, 5.0], 2: [50.0, 50.0]}

    def source():
        ids = np.array(sorted(cents))
        return ids, np.array([cents[i] for i in ids])

    eng = TriggerEngine(
        [rule(region={"shape": "rectangle", "rows": [0, 20], "cols": [0, 20]})],
        centroid_source=source,
    )
    eng.on_frame(frame(0, [1, 2], [0, 0]), {})
    assert eng.on_frame(frame(1, [1, 2], [0, 3]), {}) == []  # neuron 2 is outside
    cents[7] = [10.0, 10.0]  # a neuron is born inside the region
    eng.on_frame(frame(2, [1, 2, 7], [0, 0, 0]), {})
    eng.on_frame(frame(3, [1, 2, 7], [0, 0, 0]), {})
    (rec,) = eng.on_frame(frame(4, [1, 2, 7], [0, 0, 5]), {})
    assert rec.neuron_ids == (7,)


# ---- ids that change, unknown neurons ------------------------------------------------------
def test_unknown_neuron_warns_once_and_activates_when_born(caplog):
    eng = TriggerEngine([rule(neurons=[9])])
    with caplog.at_level(logging.WARNING, logger="online_cnmfe.triggers.evaluator"):
        for t in range(20):
            assert eng.on_frame(frame(t, [1, 2], [5, 5]), {}) == []
    warnings = [r for r in caplog.records if "do not exist" in r.getMessage()]
    assert len(warnings) == 1 and "[9]" in warnings[0].getMessage()
    ids = [1, 9, 2]  # neuron 9 is born (inserted in the middle)
    eng.on_frame(frame(20, ids, [0, 0, 0]), {})
    assert [r.neuron_ids for r in eng.on_frame(frame(21, ids, [0, 3, 0]), {})] == [(9,)]


def test_state_follows_neuron_ids_when_columns_move():
    eng = TriggerEngine([rule(neurons=[4], release=0.5)])
    eng.on_frame(frame(0, [4, 5], [0, 0]), {})
    assert len(eng.on_frame(frame(1, [4, 5], [2, 0]), {})) == 1
    # a neuron is inserted before 4: 4 is still high, so no new crossing (state was kept)
    assert eng.on_frame(frame(2, [3, 4, 5], [9, 2, 0]), {}) == []
    eng.on_frame(frame(3, [3, 4, 5], [0, 0.1, 0]), {})
    assert [r.neuron_ids for r in eng.on_frame(frame(4, [3, 4, 5], [0, 2, 0]), {})] == [(4,)]


def test_skipped_frames_are_not_evaluated():
    eng = TriggerEngine([rule(neurons=[0])])
    eng.on_frame(frame(0, [0], [0]), {})
    assert eng.on_frame(frame(1, [0], [5], skipped=True, skip_reason="nan"), {}) == []
    assert len(eng.on_frame(frame(2, [0], [5]), {})) == 1
    assert eng.stats()["n_skipped_frames"] == 1


# ---- frame age budget ---------------------------------------------------------------------
def test_stale_frame_does_not_fire_and_is_counted(caplog):
    eng = TriggerEngine([rule(neurons=[0])], max_frame_age_ms=20.0)
    eng.on_frame(frame(0, [0], [0]), {})
    old = time.monotonic_ns() - 100_000_000  # arrived 100 ms ago
    with caplog.at_level(logging.WARNING, logger="online_cnmfe.triggers.evaluator"):
        assert eng.on_frame(frame(1, [0], [5]), {"t_recv_ns": old}) == []
    assert eng.stats()["n_suppressed_stale"] == 1
    assert any("budget 20.0 ms" in r.getMessage() for r in caplog.records)
    eng.on_frame(frame(2, [0], [0]), {})
    (rec,) = eng.on_frame(frame(3, [0], [5]), {"t_recv_ns": time.monotonic_ns()})
    assert 0 <= rec.age_ms < 20.0 and rec.t_recv_ns > 0


# ---- run-time rule changes and callbacks ----------------------------------------------------
def test_add_remove_enable_disable_and_callbacks():
    eng = TriggerEngine([])
    got = []
    eng.dispatcher.add_callback(got.append)
    eng.dispatcher.add_callback(lambda rec: 1 / 0)  # a failing user callback
    eng.add_rule(rule(name="a", neurons=[0]))
    with pytest.raises(ConfigError, match="already exists"):
        eng.add_rule(rule(name="a", neurons=[1]))
    assert run(eng, [0, 2, 0, 2]) == [1, 3]
    assert [r.rule for r in got] == ["a", "a"] and eng.stats()["n_callback_errors"] == 2
    eng.set_enabled("a", False)
    assert run(eng, [0, 2, 0, 2]) == []
    eng.set_enabled("a", True)
    assert run(eng, [0, 2, 0, 2]) == [1, 3]
    eng.remove_rule("a")
    with pytest.raises(ConfigError, match="no rule named"):
        eng.remove_rule("a")
    assert run(eng, [0, 2]) == []
    commands = [c for _, c, _ in eng.rule_log]
    assert commands == ["add", "disable", "enable", "remove"]


def test_drained_firings_are_not_kept_forever(monkeypatch):
    from online_cnmfe.triggers import evaluator

    monkeypatch.setattr(evaluator, "KEEP_DRAINED", 3)
    eng = TriggerEngine([rule(neurons=[0])])
    run(eng, [0, 2] * 10)  # 10 firings
    assert [r.count for r in eng.drain_new()] == list(range(1, 11))
    assert [r.count for r in eng.fired] == [8, 9, 10]  # the last 3 drained ones only
    for t in range(20, 24):
        eng.on_frame(frame(t, [0], [2.0 if t % 2 else 0.0]), {})
    assert [r.count for r in eng.drain_new()] == [11, 12]
    assert eng.stats()["n_fired"] == 12 and len(eng.fired) == 3


def test_a_failing_listener_or_bad_input_never_raises(caplog):
    eng = TriggerEngine([rule(neurons=[0])])
    eng.fire_listeners.append(lambda rec: 1 / 0)
    assert run(eng, [0, 2]) == [1]  # fired, the listener error is counted
    bad = FrameResult(2, np.array([0]), None, None, None)  # a broken result object
    with caplog.at_level(logging.ERROR):
        assert eng.on_frame(bad, {}) == []
    assert eng.stats()["n_errors"] == 2
    assert len(eng.on_frame(frame(3, [0], [0.0]), {})) == 0
    assert len(eng.on_frame(frame(4, [0], [3.0]), {})) == 1  # and it keeps working


def test_serial_action_without_a_port_is_a_config_error():
    with pytest.raises(ConfigError, match="serial"):
        TriggerEngine([rule(neurons=[0], actions=["serial"])])


# ---- config parsing -------------------------------------------------------------------------
GOOD = {"name": "g", "neurons": [1], "signal": "spike", "condition": "threshold", "threshold": 1}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"name": "bad name!"}, "name"),
        ({"signal": "dff"}, "signal"),
        ({"condition": "above"}, "condition"),
        ({"threshold": "high"}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"neurons": []}, "neurons"),
        ({"neurons": [1, 1]}, "twice"),
        ({"neurons": [-1]}, "neurons"),
        ({"neurons": None}, "exactly one"),
        ({"region": {"shape": "circle", "center": [1, 1], "radius": 2}}, "exactly one"),
        ({"release": 2}, "release"),
        ({"k": 2}, "k_of_n"),
        ({"condition": "k_of_n"}, "needs 'k'"),
        ({"condition": "k_of_n", "k": 3}, "only 1 neurons"),
        ({"weights": [1]}, "ensemble"),
        ({"condition": "ensemble", "weights": [1, 2]}, "one number per neuron"),
        ({"refractory_frames": -1}, "refractory_frames"),
        ({"refractory_frames": 2, "refractory_ms": 5}, "not both"),
        ({"actions": ["beep"]}, "actions"),
        ({"actions": []}, "actions"),
        ({"serial_payload": ""}, "serial_payload"),
        ({"treshold": 1}, "did you mean 'threshold'"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_malformed_rules_raise_config_error(change, match):
    bad = {**GOOD, **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        parse_rule(bad)


@pytest.mark.parametrize(
    "region",
    [
        {"shape": "blob"},
        {"shape": "circle", "center": [1, 1], "radius": 0},
        {"shape": "rectangle", "rows": [5, 1], "cols": [0, 3]},
        {"shape": "polygon", "vertices": [[0, 0], [1, 1]]},
        {"shape": "circle", "center": [1], "radius": 3},
        "everywhere",
    ],
)
def test_malformed_regions_raise_config_error(region):
    bad = {k: v for k, v in GOOD.items() if k != "neurons"}
    with pytest.raises(ConfigError, match="region"):
        parse_rule({**bad, "region": region})


def test_rule_dict_round_trip():
    for spec in (
        GOOD,
        {**GOOD, "neurons": [1, 2], "condition": "ensemble", "weights": [1, 2], "release": 0},
        {**GOOD, "neurons": [1, 2, 3], "condition": "k_of_n", "k": 2, "window_frames": 4},
        {
            **{k: v for k, v in GOOD.items() if k != "neurons"},
            "region": {"shape": "polygon", "vertices": [[0, 0], [0, 9], [9, 0]]},
            "signal": "zscore",
            "refractory_ms": 250.0,
        },
    ):
        r = parse_rule(spec)
        assert parse_rule(rule_to_dict(r)) == r


def test_toml_config_in_the_engine_file_and_in_a_separate_file(tmp_path):
    engine_toml = tmp_path / "engine.toml"
    engine_toml.write_text(
        """
[engine]
max_frame_age_ms = 30.0

[triggers]
endpoint = "tcp://127.0.0.1:6001"
socket_type = "push"
serial_port = "/dev/ttyACM0"

[[triggers.rules]]
name = "cell12"
neurons = [12]
signal = "zscore"
condition = "threshold"
threshold = 4.0
release = 1.5
refractory_ms = 500
actions = ["publish", "serial"]
serial_payload = "A"

[[triggers.rules]]
name = "ca1_ensemble"
region = { shape = "rectangle", rows = [0, 128], cols = [0, 64] }
signal = "spike"
condition = "k_of_n"
threshold = 0.5
k = 3
window_frames = 5
"""
    )
    cfg = load_trigger_config(engine_toml)
    assert cfg.endpoint == "tcp://127.0.0.1:6001" and cfg.socket_type == "push"
    assert [r.name for r in cfg.rules] == ["cell12", "ca1_ensemble"]
    assert (
        cfg.rules[0].actions == ("publish", "serial") and cfg.rules[1].region.shape == "rectangle"
    )
    rules_toml = tmp_path / "rules.toml"
    rules_toml.write_text('[[rules]]\nname = "x"\nneurons = [1]\nsignal = "raw"\n'
                          'condition = "threshold"\nthreshold = 2\n')  # fmt: skip
    assert load_trigger_config(rules_toml).rules[0].signal == "raw"
    assert parse_trigger_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"endpoint": "tcp://0.0.0.0:5557"}, "not loopback"),
        ({"endpoint": "http://x"}, "expected tcp"),
        ({"socket_type": "router"}, "socket_type"),
        ({"rules": [GOOD, GOOD]}, "unique"),
        ({"rules": [{**GOOD, "actions": ["serial"]}]}, "no serial_port"),
        ({"rules": {"name": "x"}}, "triggers.rules"),
        ({"endpont": "tcp://127.0.0.1:1"}, "did you mean 'endpoint'"),
        ({"rules": [{**GOOD, "threshold": None}]}, r"triggers.rules\[0\]"),
    ],
)
def test_malformed_trigger_tables_raise_config_error(table, match):
    with pytest.raises(ConfigError, match=match):
        parse_trigger_config(table)


def test_remote_endpoint_is_allowed_only_explicitly():
    cfg = parse_trigger_config({"endpoint": "tcp://0.0.0.0:5557", "allow_remote": True})
    assert cfg.endpoint == "tcp://0.0.0.0:5557"


def test_unparsable_config_file_is_a_config_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[triggers\nrules = 3")
    with pytest.raises(ConfigError, match="not valid"):
        load_trigger_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trigger_config(tmp_path / "missing.toml")


def test_firings_carry_the_stream_frame_index_not_the_model_count():
    """After frames dropped before the engine (the stream starts at frame 97), the model
    counts from 0; the firing must name the stream's frame, whose time the file stores."""
    eng = TriggerEngine([rule(neurons=[0])])
    fired = []
    for t, v in enumerate([0.0, 0.0, 2.0, 0.0]):
        m = {"frame_index": 97 + t, "seq": 97 + t, "t_acq_ms": 50.0 * (97 + t)}
        fired += eng.on_frame(frame(t, [0], [v]), m)
    assert [(r.frame_index, r.t_acq_ms) for r in fired] == [(99, 50.0 * 99)]
