"""Ring background fit and subtraction against dense references."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels.ring import ring_offsets
from online_cnmfe.model.initialization.background import (
    fit_ring_background,
    residual_grid,
    ring_radius,
    solve_ring_weights,
    subtract_background,
)
from online_cnmfe.params import BackgroundParams
from tests.online_cnmfe.init_fixture import DIAMETER, tiny_movie
from tests.reference import (
    background_operator_dense,
    downsample_mean_ref,
    ring_solve_ref,
    ring_stats_ref,
)


def test_solve_ring_weights_matches_reference():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 9, 10)).astype(np.float32)
    X += rng.standard_normal((80, 1, 1)).astype(np.float32) * 2
    off = ring_offsets(2)
    W = solve_ring_weights(X, off, 1e-2)
    XXt, Xx = ring_stats_ref(X, off)
    np.testing.assert_allclose(W, ring_solve_ref(XXt, Xx, 1e-2), rtol=2e-3, atol=2e-4)


def test_residual_grid_and_subtract_match_dense():
    rng = np.random.default_rng(1)
    T, H, W = 5, 11, 13
    Y = rng.standard_normal((T, H, W)).astype(np.float32) + 10
    A = scipy.sparse.csc_array(rng.random((H * W, 2)) * (rng.random((H * W, 2)) < 0.2))
    C = rng.random((2, T)).astype(np.float32)
    b0 = rng.random(H * W).astype(np.float32)
    X = residual_grid(Y, A, C, b0, 2)
    for t in range(T):
        ref = downsample_mean_ref((Y[t].ravel() - A @ C[:, t] - b0).reshape(H, W), 2)
        np.testing.assert_allclose(X[t], ref, rtol=1e-4, atol=1e-4)
    params = BackgroundParams(downsample=2, ring_radius_factor=1.0)
    bg = fit_ring_background(Y, A, C, params, 4.0)
    out = subtract_background(Y, A, C, bg)
    M = np.eye(H * W) - background_operator_dense(bg.W, bg.offsets, (H, W), 2)  # U W D
    for t in range(T):
        resid = Y[t].ravel() - A @ C[:, t] - bg.b0
        ref = Y[t].ravel() - bg.b0 - M @ resid
        np.testing.assert_allclose(out[t].ravel(), ref, rtol=1e-3, atol=1e-3)


def test_ring_radius_from_params():
    assert ring_radius(BackgroundParams(ring_radius_factor=1.4, downsample=2), 13) == 9
    assert len(ring_offsets(9)) == 64


def test_fit_on_tiny_movie_removes_background_and_keeps_neurons():
    Y, A_true, C_true = tiny_movie(T=200)
    A = scipy.sparse.csc_array(A_true)
    bg = fit_ring_background(Y, A, C_true, BackgroundParams(), DIAMETER)
    assert bg.W.shape == (32 * 32, len(bg.offsets)) and bg.W.dtype == np.float32
    Yb = subtract_background(Y, A, C_true, bg)
    resid = Yb.reshape(200, -1) - (A_true @ C_true).T
    assert np.std(resid) < 1.6  # noise 1; the raw background varies by ~30
    # the neuron's signal is not taken by the background
    k = 0
    trace = Yb.reshape(200, -1) @ A_true[:, k] / (A_true[:, k] @ A_true[:, k])
    assert np.corrcoef(trace, C_true[k])[0, 1] > 0.95


def test_missing_neuron_leaks_less_with_outlier_clipping():
    Y, A_true, C_true = tiny_movie(T=300, seed=3)
    keep = [0, 1, 2, 4, 5, 6, 7]  # neuron 3 is missing from the model
    A = scipy.sparse.csc_array(A_true[:, keep])
    leak = {}
    for clip in (1e6, 2.0):
        bg = fit_ring_background(
            Y, A, C_true[keep], BackgroundParams(outlier_clip_sigma=clip), DIAMETER
        )
        B = Y - subtract_background(Y, A, C_true[keep], bg)  # the background itself
        a3 = A_true[:, 3]
        b_at_neuron = B.reshape(len(Y), -1) @ a3 / (a3 @ a3)
        c = C_true[3] - C_true[3].mean()
        leak[clip] = float((b_at_neuron - b_at_neuron.mean()) @ c / (c @ c))
    assert 0 <= leak[2.0] < leak[1e6], leak
