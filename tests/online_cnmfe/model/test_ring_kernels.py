"""Ring background kernels against dense/numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels.ring import (
    downsample_mean,
    ring_apply,
    ring_gram_accumulate,
    ring_gram_accumulate_range,
    ring_gram_from_lags,
    ring_lag_products,
    ring_lag_table,
    ring_offsets,
    ring_solve,
    ring_solve_parallel,
    upsample_nearest,
)
from tests.reference import (
    downsample_mean_ref,
    ring_matrix_dense,
    ring_solve_ref,
    ring_stats_ref,
)


@pytest.mark.parametrize(("radius", "n"), [(5, 32), (9, 64), (11, 64), (18, 120)])
def test_ring_offsets_match_caiman_counts(radius, n):
    off = ring_offsets(radius)
    assert off.shape == (n, 2) and off.dtype == np.int32
    d2 = (off.astype(float) ** 2).sum(1)
    assert np.all(d2 > radius**2) and np.all(d2 <= (radius + 1) ** 2)
    assert len({tuple(o) for o in off}) == n


def test_ring_offsets_rejects_zero():
    with pytest.raises(ValueError, match="radius"):
        ring_offsets(0)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 13), w=st.integers(1, 13), factor=st.integers(1, 4), seed=st.integers(0, 99)
)
def test_downsample_upsample_match_reference(h, w, factor, seed):
    x = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    hb, wb = -(-h // factor), -(-w // factor)
    out = np.empty((hb, wb), np.float32)
    downsample_mean(x, factor, out)
    np.testing.assert_allclose(out, downsample_mean_ref(x, factor), rtol=1e-5, err_msg=f"{seed}")
    up = np.empty((h, w), np.float32)
    upsample_nearest(out, factor, up)
    for i in range(h):
        for j in range(w):
            assert up[i, j] == out[i // factor, j // factor]


@pytest.mark.parametrize(("hb", "wb", "radius"), [(9, 11, 2), (6, 5, 3), (1, 1, 1)])
def test_ring_apply_matches_dense_matrix(hb, wb, radius):
    rng = np.random.default_rng(hb * 100 + wb)
    off = ring_offsets(radius)
    W = rng.standard_normal((hb * wb, len(off))).astype(np.float32)
    x = rng.standard_normal((hb, wb)).astype(np.float32)
    out = np.empty_like(x)
    ring_apply(W, off, x, out)
    ref = ring_matrix_dense(W, off, hb, wb) @ x.ravel().astype(np.float64)
    np.testing.assert_allclose(out.ravel(), ref, rtol=1e-4, atol=1e-4)


def test_ring_gram_paths_match_reference():
    rng = np.random.default_rng(7)
    T, hb, wb = 17, 8, 9
    off = ring_offsets(2)
    R = len(off)
    X = rng.standard_normal((T, hb, wb)).astype(np.float32)
    XXt_ref, Xx_ref = ring_stats_ref(X, off)
    # direct accumulation, with decay and weight
    XXt = np.ones((hb * wb, R, R), np.float32)
    Xx = np.ones((hb * wb, R), np.float32)
    ring_gram_accumulate(X, off, XXt, Xx, 0.5, 2.0)
    np.testing.assert_allclose(XXt, 0.5 + 2.0 * XXt_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Xx, 0.5 + 2.0 * Xx_ref, rtol=1e-4, atol=1e-4)
    # a pixel range
    XXt2 = np.zeros((10, R, R), np.float32)
    Xx2 = np.zeros((10, R), np.float32)
    ring_gram_accumulate_range(X, off, XXt2, Xx2, 1.0, 1.0, 30)
    np.testing.assert_allclose(XXt2, XXt_ref[30:40], rtol=1e-4, atol=1e-4)
    # lagged products
    lags, pair_index = ring_lag_table(off)
    Xt = np.ascontiguousarray(X.reshape(T, -1).T)
    lagprod = np.empty((hb * wb, len(lags)), np.float32)
    ring_lag_products(Xt, hb, wb, lags, lagprod)
    XXt3 = np.empty((hb * wb, R, R), np.float32)
    Xx3 = np.empty((hb * wb, R), np.float32)
    ring_gram_from_lags(lagprod, hb, wb, off, pair_index, XXt3, Xx3, 0)
    np.testing.assert_allclose(XXt3, XXt_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Xx3, Xx_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 0.1])
def test_ring_solve_matches_lstsq(ridge):
    rng = np.random.default_rng(3)
    T, hb, wb = 120, 10, 9
    off = ring_offsets(2)
    X = rng.standard_normal((T, hb, wb)).astype(np.float32)
    X += X.mean(axis=(1, 2), keepdims=True) * 3  # shared background component
    XXt, Xx = ring_stats_ref(X, off)
    W = np.zeros((hb * wb, len(off)), np.float32)
    ring_solve(XXt.astype(np.float32), Xx.astype(np.float32), ridge, W, 0, hb * wb)
    ref = ring_solve_ref(XXt, Xx, ridge)
    np.testing.assert_allclose(W, ref, rtol=2e-3, atol=2e-4)
    # out-of-grid entries are exactly zero (corner pixel: most of its ring is outside)
    i, j = 0, 0
    outside = (off[:, 0] + i < 0) | (off[:, 1] + j < 0)
    assert np.all(W[0, outside] == 0)


def test_ring_solve_partial_range_local_stats():
    rng = np.random.default_rng(4)
    off = ring_offsets(1)
    X = rng.standard_normal((50, 5, 5)).astype(np.float32)
    XXt, Xx = ring_stats_ref(X, off)
    full = np.zeros((25, len(off)), np.float32)
    ring_solve(XXt.astype(np.float32), Xx.astype(np.float32), 1e-3, full, 0, 25)
    part = np.full((25, len(off)), -7.0, np.float32)
    ring_solve(XXt[5:9].astype(np.float32), Xx[5:9].astype(np.float32), 1e-3, part, 5, 9)
    np.testing.assert_allclose(part[5:9], full[5:9], rtol=1e-5)
    assert np.all(part[:5] == -7.0) and np.all(part[9:] == -7.0)


def test_ring_solve_parallel_matches_serial():
    rng = np.random.default_rng(9)
    off = ring_offsets(2)
    X = rng.standard_normal((60, 9, 8)).astype(np.float32)
    XXt, Xx = ring_stats_ref(X, off)
    XXt, Xx = XXt.astype(np.float32), Xx.astype(np.float32)
    serial = np.zeros((72, len(off)), np.float32)
    ring_solve(XXt, Xx, 1e-3, serial, 0, 72)
    par = np.zeros_like(serial)
    ring_solve_parallel(XXt, Xx, 1e-3, par, 0, 72)
    np.testing.assert_allclose(par, serial, rtol=1e-6)
    part = np.zeros_like(serial)
    ring_solve_parallel(XXt[10:50], Xx[10:50], 1e-3, part, 10, 50)
    np.testing.assert_allclose(part[10:50], serial[10:50], rtol=1e-6)
    assert np.all(part[:10] == 0) and np.all(part[50:] == 0)
