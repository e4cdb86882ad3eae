"""Batch OASIS, kinetics and noise estimation against exact references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels.oasis_batch import bcd_deconvolve, oasis_ar1
from online_cnmfe.model.initialization.deconvolution import (
    deconvolve_batch,
    estimate_ar,
    trace_noise,
)
from online_cnmfe.params import DeconvParams
from tests.reference import ar1_qp_ref, oasis_ar1_ref


def _ar1_trace(rng, T, g, rate=0.05, sigma=0.3):
    s = (rng.random(T) < rate) * rng.uniform(1, 3, T)
    c = np.zeros(T)
    for t in range(T):
        c[t] = (g * c[t - 1] if t else 0) + s[t]
    return c, c + sigma * rng.standard_normal(T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oasis_ar1_matches_exact_nnls(seed):
    rng = np.random.default_rng(seed)
    _, y = _ar1_trace(rng, 150, 0.9)
    c = np.empty(150, np.float32)
    s = np.empty(150, np.float32)
    oasis_ar1(y.astype(np.float32), 0.9, 0.0, 0.0, c, s)
    np.testing.assert_allclose(c, ar1_qp_ref(y, 0.9), atol=2e-4, err_msg=f"seed {seed}")
    np.testing.assert_allclose(s[1:], c[1:] - 0.9 * c[:-1], atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), s_min=st.floats(0, 1))
def test_oasis_ar1_matches_pool_reference_with_min_spike(seed, s_min):
    rng = np.random.default_rng(seed)
    _, y = _ar1_trace(rng, 80, 0.85)
    c = np.empty(80, np.float32)
    s = np.empty(80, np.float32)
    oasis_ar1(y.astype(np.float32), 0.85, 0.0, s_min, c, s)
    c_ref, _ = oasis_ar1_ref(y.astype(np.float64), 0.85, 0.0, s_min)
    np.testing.assert_allclose(c, c_ref, atol=1e-3, err_msg=f"seed {seed}")
    assert np.all(c >= 0) and np.all(s >= 0)


def test_oasis_ar1_sparsity_penalty_shrinks_activity():
    rng = np.random.default_rng(11)
    _, y = _ar1_trace(rng, 300, 0.9)
    totals = []
    for lam in (0.0, 0.5, 2.0):
        c = np.empty(300, np.float32)
        s = np.empty(300, np.float32)
        oasis_ar1(y.astype(np.float32), 0.9, lam, 0.0, c, s)
        totals.append(float(s.sum()))
    assert totals[0] > totals[1] > totals[2]


def test_noise_and_kinetics_are_recovered():
    rng = np.random.default_rng(5)
    truth_g = np.array([0.8, 0.9, 0.95])
    traces = np.stack([_ar1_trace(rng, 3000, g, rate=0.02, sigma=0.5)[1] for g in truth_g])
    sn = trace_noise(traces)
    np.testing.assert_allclose(sn, 0.5, rtol=0.15)
    g = estimate_ar(traces, 1, sn)
    np.testing.assert_allclose(g[:, 0], truth_g, atol=0.06)
    g2 = estimate_ar(traces, 2, sn)
    assert g2.shape == (3, 2) and np.all(np.isfinite(g2))


def test_estimate_ar_flags_white_noise_as_unstable_or_small():
    rng = np.random.default_rng(6)
    g = estimate_ar(rng.standard_normal((2, 2000)), 1)
    assert np.all(np.isnan(g) | (np.abs(g) < 0.2))


def test_deconvolve_batch_removes_baseline_and_denoises():
    rng = np.random.default_rng(7)
    c_true, y = _ar1_trace(rng, 1000, 0.9, sigma=0.2)
    y = y + 5.0
    C, S, b = deconvolve_batch(y[None], np.array([[0.9]]), np.array([0.2]), DeconvParams())
    assert b[0] == pytest.approx(5.0, abs=0.15)
    assert np.corrcoef(C[0], c_true)[0, 1] > 0.95
    assert np.corrcoef(y, c_true)[0, 1] < np.corrcoef(C[0], c_true)[0, 1]
    assert C.dtype == np.float32 and np.all(S >= 0)


def test_deconvolve_batch_empty_and_flat():
    p = DeconvParams()
    C, S, b = deconvolve_batch(np.zeros((0, 50)), np.zeros((0, 1)), np.zeros(0), p)
    assert C.shape == (0, 50) and b.shape == (0,)
    C, S, b = deconvolve_batch(np.full((1, 50), 3.0), np.array([[0.9]]), np.array([0.1]), p)
    assert np.all(C == 0) and b[0] == pytest.approx(3.0, abs=0.2)


def test_bcd_deconvolve_demixes_two_overlapping_neurons():
    rng = np.random.default_rng(8)
    T = 400
    c1, _ = _ar1_trace(rng, T, 0.9, sigma=0)
    c2, _ = _ar1_trace(rng, T, 0.9, sigma=0)
    a = np.zeros((30, 2))
    a[0:20, 0] = 1
    a[10:30, 1] = 1
    a /= np.linalg.norm(a, axis=0)
    Y = a @ np.stack([c1, c2]) + 0.05 * rng.standard_normal((30, T))
    AtY = (a.T @ Y).astype(np.float32)
    AtA = (a.T @ a).astype(np.float32)
    C = np.zeros((2, T), np.float32)
    b = np.zeros(2, np.float32)
    C_raw = np.empty_like(C)
    S = np.empty_like(C)
    g = np.full(2, 0.9, np.float32)
    zero = np.zeros(2, np.float32)
    bcd_deconvolve(AtY, AtA, C, b, g, zero, zero, C_raw, S, 10)
    assert np.corrcoef(C[0], c1)[0, 1] > 0.97 and np.corrcoef(C[1], c2)[0, 1] > 0.97
