"""Online OASIS AR(1) against batch OASIS and the exact QP."""

from __future__ import annotations

import numpy as np
import pytest

from online_cnmfe.model import deconvolution_online as dec
from online_cnmfe.model._kernels import oasis_online as ko
from tests import reference as ref


def _traces(seed, K=4, T=300, noise=0.3):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.8, 0.95, K)
    s = (rng.random((K, T)) < 0.05) * rng.uniform(1, 4, (K, T))
    c = np.zeros((K, T))
    for t in range(T):
        c[:, t] = (g * c[:, t - 1] if t else 0) + s[:, t]
    y = c + rng.normal(0, noise, (K, T))
    return y.astype(np.float32), g.astype(np.float32), c


def _run(y, g, lam, s_min, capacity):
    K, T = y.shape
    pools = dec.empty_pools(K, capacity)
    c_causal, s_causal = np.zeros((K, T), np.float32), np.zeros((K, T), np.float32)
    c = np.zeros(K, np.float32)
    s = np.zeros(K, np.float32)
    for t in range(T):
        ko.oasis_ar1_step(
            np.ascontiguousarray(y[:, t]), t, g, lam, s_min, pools["pool_v"], pools["pool_w"],
            pools["pool_t"], pools["pool_l"], pools["pool_first"], pools["pool_count"], c, s,
        )  # fmt: skip
        c_causal[:, t], s_causal[:, t] = c, s
    final = np.zeros((K, T), np.float32)
    ko.oasis_ar1_reconstruct(
        g, pools["pool_v"], pools["pool_t"], pools["pool_l"], pools["pool_first"],
        pools["pool_count"], 0, final,
    )  # fmt: skip
    return c_causal, s_causal, final, pools


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam_sigma,smin_sigma", [(0.0, 0.0), (0.0, 1.0), (0.5, 0.5)])
def test_online_final_equals_batch_oasis(seed, lam_sigma, smin_sigma):
    y, g, _ = _traces(seed)
    K, T = y.shape
    lam = np.full(K, lam_sigma * 0.3, np.float32)
    s_min = np.full(K, smin_sigma * 0.3, np.float32)
    _, _, final, _ = _run(y, g, lam, s_min, capacity=T)
    for k in range(K):
        c_ref, _ = ref.oasis_ar1_ref(y[k].astype(np.float64), float(g[k]), float(lam[k]),
                                     float(s_min[k]))  # fmt: skip
        np.testing.assert_allclose(final[k], c_ref, rtol=1e-4, atol=1e-4, err_msg=f"seed {seed}")


@pytest.mark.parametrize("seed", range(3))
def test_online_final_equals_exact_qp(seed):
    y, g, _ = _traces(seed, K=2, T=120)
    zeros = np.zeros(2, np.float32)
    _, _, final, _ = _run(y, g, zeros, zeros, capacity=120)
    for k in range(2):
        np.testing.assert_allclose(final[k], ref.ar1_qp_ref(y[k], float(g[k])), atol=2e-3)


def test_causal_outputs_are_the_values_known_at_t():
    y, g, _ = _traces(5, K=3, T=80)
    K, T = y.shape
    s_min = np.full(K, 0.3, np.float32)
    lam = np.zeros(K, np.float32)
    c_causal, s_causal, _, _ = _run(y, g, lam, s_min, capacity=T)
    for t in (1, 10, 40, 79):
        for k in range(K):
            c_ref, _ = ref.oasis_ar1_ref(y[k, : t + 1].astype(np.float64), float(g[k]), 0.0, 0.3)
            assert c_causal[k, t] == pytest.approx(c_ref[-1], rel=1e-4, abs=1e-4)
            if s_causal[k, t] > 0:  # a spike reported at t is a pool that starts at t
                assert c_ref[-1] - g[k] * c_ref[-2] == pytest.approx(s_causal[k, t], abs=1e-3)
    assert (s_causal >= 0).all()


def test_denoised_trace_tracks_truth_and_capacity_bounds_memory():
    y, g, c_true = _traces(11, K=3, T=2000)
    K = 3
    noise = np.full(K, 0.3, np.float32)
    from online_cnmfe.params import DeconvParams

    s_min, lam = dec.spike_thresholds(g, noise, DeconvParams())
    c_causal, s_causal, _, pools = _run(y, g, lam, s_min, capacity=8)
    assert pools["pool_count"].max() <= 8
    for k in range(K):
        r = np.corrcoef(c_causal[k], c_true[k])[0, 1]
        assert r > 0.9, f"neuron {k}: corr {r:.3f}"
    assert np.isfinite(c_causal).all() and (c_causal >= 0).all()


def test_ar2_coefficients_are_reduced_to_their_decay():
    tau_d, tau_r = 8.0, 1.0  # frames
    d, r = np.exp(-1 / tau_d), np.exp(-1 / tau_r)
    g = np.array([[d + r, -d * r], [0.9, 0.0]])
    np.testing.assert_allclose(dec.ar1_coefficients(g), [d, 0.9], rtol=1e-6)
    np.testing.assert_allclose(dec.ar1_coefficients(np.array([[0.95]])), [0.95], rtol=1e-6)
    assert dec.ar1_coefficients(np.zeros((0, 2))).shape == (0,)
    assert dec.ar1_coefficients(np.array([[1.2, 0.0]]))[0] < 1.0
