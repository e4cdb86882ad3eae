"""Ring background fit and subtraction against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model._kernels.ring import ring_offsets
from online_cnmfe.model.initialization.background import (
    RingFitter,
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


def _ring_fit_inputs(seed, T, H, W, K=6):
    rng = np.random.default_rng(seed)
    Y = (rng.standard_normal((T, H, W)) + 50).astype(np.float32)
    Y += rng.standard_normal((T, 1, 1)).astype(np.float32) * 3  # a shared fluctuation
    A = scipy.sparse.csc_array(
        rng.random((H * W, K)) * (rng.random((H * W, K)) < 0.05), dtype=np.float32
    )
    C = rng.random((K, T)).astype(np.float32) * 5
    return Y, A, C


def test_ring_fitter_matches_frame_by_frame_fit():
    """The pixel-major fit (odd sizes: partial grid blocks, several row bands) gives the same
    b0, W and background-subtracted movie as fit_ring_background + subtract_background."""
    for seed, (T, H, W), clip in [(0, (40, 37, 45), 2.0), (1, (30, 70, 21), 1e9)]:
        Y, A, C = _ring_fit_inputs(seed, T, H, W)
        Y0 = Y.copy()
        params = BackgroundParams(downsample=2, ring_radius_factor=1.0, outlier_clip_sigma=clip)
        fitter = RingFitter(Y, params, 4.0)
        bg, Yb = fitter.fit(A, C)
        ref = fit_ring_background(Y, A, C, params, 4.0)
        np.testing.assert_array_equal(bg.b0, ref.b0)
        np.testing.assert_allclose(bg.W, ref.W, rtol=1e-4, atol=1e-5, err_msg=f"seed {seed}")
        out = subtract_background(Y, A, C, ref).reshape(T, -1).T
        np.testing.assert_allclose(Yb, out, rtol=1e-5, atol=1e-4, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(Y, Y0)  # input left alone
        bg2, Yb2 = fitter.fit(A, C)  # the cached tables do not drift between fits
        np.testing.assert_array_equal(bg2.W, bg.W)
        np.testing.assert_array_equal(Yb2, Yb)


def test_ring_fitter_rejects_mismatched_shapes():
    Y, A, C = _ring_fit_inputs(2, 10, 12, 12)
    fitter = RingFitter(Y, BackgroundParams(), 4.0)
    with pytest.raises(ValueError, match="do not match"):
        fitter.fit(A, C[:, :5])


def test_ring_batch_kernels_match_frame_kernels():
    """Grid residual, ring apply and subtraction in pixel-major layout against the frame
    kernels (same arithmetic: identical except the ring sum, to rounding)."""
    from online_cnmfe.model._kernels.ring import (
        downsample_mean,
        ring_apply,
        ring_gram_from_lags,
        ring_lag_products,
        ring_lag_table,
        ring_solve,
        upsample_nearest,
    )
    from online_cnmfe.model._kernels.ring_batch import (
        grid_residual_pixel_major,
        ring_apply_pixel_major,
        ring_gram_solve,
        subtract_background_pixel_major,
    )

    rng = np.random.default_rng(5)
    T, H, W, s = 7, 9, 11, 2
    hb, wb = 5, 6
    Y = rng.standard_normal((T, H, W)).astype(np.float32)
    AC = rng.standard_normal((T, H, W)).astype(np.float32)
    b0 = rng.standard_normal(H * W).astype(np.float32)
    X = np.zeros((hb * wb, T), np.float32)
    Yt = np.ascontiguousarray(Y.reshape(T, -1).T)
    ACt = np.ascontiguousarray(AC.reshape(T, -1).T)
    for r0 in (0, 4, 8):  # bands of 4 rows, the last one partial
        r1 = min(H, r0 + 4)
        grid_residual_pixel_major(Yt[r0 * W : r1 * W], ACt[r0 * W : r1 * W], b0, r0, W, s, X)
    g = np.empty((hb, wb), np.float32)
    for t in range(T):
        downsample_mean((Y[t] - AC[t]) - b0.reshape(H, W), s, g)
        np.testing.assert_array_equal(X[:, t], g.ravel())
    off = ring_offsets(1)
    Wr = rng.standard_normal((hb * wb, len(off))).astype(np.float32)
    P = np.empty_like(X)
    ring_apply_pixel_major(Wr, off, X, hb, wb, P)
    Xf = np.ascontiguousarray(X.T).reshape(T, hb, wb)
    up = np.empty((H, W), np.float32)
    out = np.empty_like(Yt)
    subtract_background_pixel_major(Yt, b0, P, s, W, out)
    for t in range(T):
        ref = np.empty((hb, wb), np.float32)
        ring_apply(Wr, off, Xf[t], ref)
        np.testing.assert_allclose(P[:, t], ref.ravel(), rtol=1e-5, atol=1e-5)
        upsample_nearest(np.ascontiguousarray(P[:, t].reshape(hb, wb)), s, up)
        np.testing.assert_array_equal(out[:, t], ((Y[t] - b0.reshape(H, W)) - up).ravel())
    lags, pair_index = ring_lag_table(off)
    lagprod = np.empty((hb * wb, len(lags)), np.float32)
    ring_lag_products(X, hb, wb, lags, lagprod)
    W1 = np.zeros_like(Wr)
    ring_gram_solve(lagprod, hb, wb, off, pair_index, 1e-3, W1)
    XXt = np.empty((hb * wb, len(off), len(off)), np.float32)
    Xx = np.empty((hb * wb, len(off)), np.float32)
    ring_gram_from_lags(lagprod, hb, wb, off, pair_index, XXt, Xx, 0)
    W2 = np.zeros_like(Wr)
    ring_solve(XXt, Xx, 1e-3, W2, 0, hb * wb)
    np.testing.assert_array_equal(W1, W2)


def test_ring_gram_solve_many_pixels_per_thread_matches_ring_solve():
    """Grids large enough that each thread solves several lanes of pixels (full and partial
    lane groups): W equal to the pixel-by-pixel Cholesky's, bit for bit."""
    from online_cnmfe.model._kernels.ring import (
        ring_gram_from_lags,
        ring_lag_products,
        ring_lag_table,
        ring_solve,
    )
    from online_cnmfe.model._kernels.ring_batch import ring_gram_solve

    rng = np.random.default_rng(11)
    hb, wb, T = 53, 47, 40
    X = rng.standard_normal((hb * wb, T)).astype(np.float32)
    X += rng.standard_normal(T).astype(np.float32)  # correlated pixels, as a background is
    X[7] = 0.0  # a pixel without variance: its ring weights towards it are 0
    off = ring_offsets(3)
    lags, pair_index = ring_lag_table(off)
    lagprod = np.empty((hb * wb, len(lags)), np.float32)
    ring_lag_products(X, hb, wb, lags, lagprod)
    W1 = np.zeros((hb * wb, len(off)), np.float32)
    ring_gram_solve(lagprod, hb, wb, off, pair_index, 1e-3, W1)
    XXt = np.empty((hb * wb, len(off), len(off)), np.float32)
    Xx = np.empty((hb * wb, len(off)), np.float32)
    ring_gram_from_lags(lagprod, hb, wb, off, pair_index, XXt, Xx, 0)
    W2 = np.zeros_like(W1)
    ring_solve(XXt, Xx, 1e-3, W2, 0, hb * wb)
    np.testing.assert_array_equal(W1, W2)
    assert np.count_nonzero(W1) > 0.9 * W1.size


def test_ring_fitter_writes_into_out_and_rejects_a_wrong_one():
    rng = np.random.default_rng(3)
    T, H, W = 30, 16, 18
    Y = (rng.standard_normal((T, H, W)) + 5).astype(np.float32)
    A = scipy.sparse.random(H * W, 3, density=0.05, random_state=0, dtype=np.float32)
    C = rng.random((3, T)).astype(np.float32)
    fitter = RingFitter(Y, BackgroundParams(), 6.0)
    bg1, Yb1 = fitter.fit(A, C)
    out = np.full((H * W, T), np.nan, np.float32)
    bg2, Yb2 = fitter.fit(A, C, out=out)
    assert Yb2 is out
    np.testing.assert_array_equal(Yb1, Yb2)
    np.testing.assert_array_equal(bg1.W, bg2.W)
    for bad in (np.empty((H * W, T + 1), np.float32), np.empty((H * W, T), np.float64)):
        with pytest.raises(ValueError, match="out must be"):
            fitter.fit(A, C, out=bad)


@pytest.mark.parametrize("T, step", [(30, 1), (31, 2), (300, 2), (257, 2)])
def test_clip_above_prediction_matches_numpy(T, step):
    """The fused clipping kernel against the NumPy expressions it replaces (bit for bit)."""
    from online_cnmfe.model._kernels.ring_batch import clip_above_prediction

    rng = np.random.default_rng(T)
    X = rng.standard_normal((40, T)).astype(np.float32)
    X[:, ::7] += 5.0  # activity above the prediction
    P = (0.5 * X + 0.1 * rng.standard_normal((40, T))).astype(np.float32)
    E = X - P
    sub = E[:, ::step]
    med = np.median(sub, axis=1, keepdims=True)
    sigma = 1.4826 * np.median(np.abs(sub - med), axis=1, keepdims=True) + 1e-12
    clip = E > 2.0 * sigma
    out = np.full_like(X, np.nan)
    n = clip_above_prediction(X, P, 2.0, step, out)
    np.testing.assert_array_equal(out, np.where(clip, P, X))
    assert n == clip.sum() > 0
