"""Trigger kernels against slow, obvious per-sample references (seeded and hypothesis inputs).

The references live here rather than in tests/reference.py because that shared file had other
engineers' uncommitted edits when these were written.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.triggers._kernels import threshold_crossings, zscore_update


def zscore_reference(xs: np.ndarray, alpha: float, warmup: int, rise: bool) -> np.ndarray:
    """Per-sample z-scores of one trace, written as plainly as possible."""
    mu = mad = prev = 0.0
    n_seen = n_diff = 0
    out = []
    for x in map(float, xs):
        sigma = max(mad * math.sqrt(math.pi) / 2, 1e-12)
        ready = n_seen >= warmup and n_diff >= warmup
        if not ready:
            out.append(0.0)
        elif rise:
            out.append((x - prev) / (sigma * math.sqrt(2)))
        else:
            out.append((x - mu) / sigma)
        if n_seen >= 1 and x != prev:
            n_diff += 1
            ad = abs(x - prev)
            if n_diff > 3:
                ad = min(ad, 5 * mad)
            mad += max(1 / n_diff, alpha) * (ad - mad)
        step = x - mu
        if ready:
            step = min(max(step, -3 * sigma), 3 * sigma)
        n_seen += 1
        mu += max(1 / n_seen, alpha) * step
        prev = x
    return np.array(out)


def run_kernel(X: np.ndarray, alpha: float, warmup: int, rise: bool, idx=None) -> np.ndarray:
    T, K = X.shape
    idx = np.arange(K) if idx is None else idx
    n = len(idx)
    state = [np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n)]
    z = np.zeros((T, n), np.float32)
    for t in range(T):
        zscore_update(np.ascontiguousarray(X[t]), idx, *state, alpha, warmup, rise, z[t])
    return z


def test_zscore_kernel_matches_reference_on_seeded_traces(rng):
    X = rng.normal(2.0, 0.5, (400, 6)).astype(np.float32)
    X[:, 1] = np.maximum(X[:, 1] - 2.0, 0)  # clipped at 0 half of the time
    X[100:110, 2] += 20  # a transient
    idx = np.array([4, 1, 2], np.intp)  # gather order differs from column order
    for rise in (False, True):
        z = run_kernel(X, 1 / 300, 20, rise, idx)
        for j, col in enumerate(idx):
            ref = zscore_reference(X[:, col], 1 / 300, 20, rise)
            np.testing.assert_allclose(z[:, j], ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=80),
    st.floats(0.01, 1.0),
    st.integers(2, 10),
    st.booleans(),
)
def test_zscore_kernel_matches_reference_hypothesis(xs, alpha, warmup, rise):
    X = np.asarray(xs, np.float32)[:, None]
    z = run_kernel(X, alpha, warmup, rise)[:, 0]
    ref = zscore_reference(X[:, 0], alpha, warmup, rise)
    np.testing.assert_allclose(z, ref.astype(np.float32), rtol=1e-4, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.floats(-3, 3, width=32), min_size=3, max_size=3), min_size=1, max_size=40),
    st.floats(-1, 2, width=32),
    st.floats(0, 2, width=32),
)
def test_threshold_kernel_matches_reference(rows, thr, gap):
    X = np.asarray(rows, np.float32)
    thr32, rel32 = np.float32(thr), np.float32(thr - gap)
    armed, cross = np.zeros(3, bool), np.zeros(3, bool)
    ref_armed = [False] * 3
    for row in X:
        n = threshold_crossings(row, armed, thr32, rel32, cross)
        expected = []
        for i, v in enumerate(row):
            expected.append(ref_armed[i] and v >= thr32)
            if v >= thr32:
                ref_armed[i] = False
            if v < rel32:
                ref_armed[i] = True
        assert cross.tolist() == expected and n == sum(expected)
        assert armed.tolist() == ref_armed


def test_engine_construction_loads_the_kernels_its_rules_call():
    """A TriggerEngine warms both kernels with the types the rules pass (float32 traces,
    contiguous or strided): evaluating frames then adds no new specialisation, i.e. no
    compilation or cache load on the model thread's first frames (fresh interpreter)."""
    code = """
import numpy as np
from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.triggers import TriggerEngine, parse_rule
from online_cnmfe.triggers import _kernels as k
rules = [parse_rule({"name": "z", "signal": "zscore", "condition": "threshold",
                     "threshold": 3.0, "neurons": [0, 1]}),
         parse_rule({"name": "s", "signal": "spike", "condition": "threshold",
                     "threshold": 1.0, "neurons": [0, 1]})]
eng = TriggerEngine(rules, zscore_warmup_frames=2)
before = (len(k.zscore_update.signatures), len(k.threshold_crossings.signatures))
block = np.random.default_rng(0).random((3, 40)).astype(np.float32)
for t in range(20):
    c = block[:, 2 * t]  # a strided column, as a view into a trace buffer
    s = np.ascontiguousarray(block[:2, 2 * t + 1])
    res = FrameResult(t, np.arange(2, dtype=np.int64), c[:2], s, c[:2])
    eng.on_frame(res, {"frame_index": t, "t_acq_ms": 50.0 * t})
after = (len(k.zscore_update.signatures), len(k.threshold_crossings.signatures))
assert before[0] >= 1 and before[1] >= 1, before
assert after == before, (before, after)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
