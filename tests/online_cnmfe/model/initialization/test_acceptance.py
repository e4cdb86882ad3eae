"""Acceptance tests of fitted components: transient significance and spatial consistency."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model.initialization.acceptance import (
    robust_zscore,
    spatial_consistency,
    transient_score,
)
from online_cnmfe.model.initialization.checks import looks_preprocessed


def _transient(T, t0, amp, g):
    c = np.zeros(T)
    c[t0:] = amp * g ** np.arange(T - t0)
    return c


def test_robust_zscore_ignores_transients():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(2000)
    z_plain = robust_zscore(noise[None])[0]
    with_events = noise + 20 * (_transient(2000, 100, 1, 0.9) + _transient(2000, 900, 1, 0.9))
    z = robust_zscore(with_events[None])[0]
    # the noise scale is unchanged by the transients (a plain std would grow ~2x)
    assert np.std(z_plain) == pytest.approx(1.0, rel=0.1)
    assert np.median(np.abs(z[1200:1800])) == pytest.approx(0.6745, rel=0.15)


def test_transient_score_separates_decays_from_single_frame_jumps():
    rng = np.random.default_rng(1)
    T = 300
    noise = rng.standard_normal((3, T))
    real = noise[0] + _transient(T, 50, 8.0, 0.85)  # a calcium transient, 8 sigma
    jump = noise[1].copy()
    jump[120] += 30.0  # one huge frame (motion, transmission glitch)
    s = transient_score(np.stack([real, jump, noise[2]]), 4)
    assert s[0] > 4.0
    assert s[1] < 2.0 and s[2] < 2.0


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    T=st.integers(10, 200),
    scale=st.floats(1e-3, 1e3),
)
def test_transient_score_matches_brute_force_and_is_scale_free(n, seed, T, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T)) + rng.uniform(-5, 5)
    z = robust_zscore(x)
    m = min(n, T)
    expect = [max(z[k, t : t + m].min() for t in range(T - m + 1)) for k in range(2)]
    s = transient_score(x, n)
    np.testing.assert_allclose(s, expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(transient_score(scale * x + 7, n), s, rtol=1e-3, atol=1e-3)


def test_transient_score_rejects_bad_window():
    with pytest.raises(ValueError, match="n_frames"):
        transient_score(np.zeros((1, 10)), 0)


def _blob(dims, r, c, sigma):
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    return np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2)).ravel()


def test_spatial_consistency_matches_footprint_not_texture():
    rng = np.random.default_rng(2)
    dims, T = (40, 40), 200
    a = _blob(dims, 20, 20, 2.5)
    c = _transient(T, 30, 5.0, 0.9) + _transient(T, 120, 4.0, 0.9)
    Yt = np.outer(a, c) + 0.2 * rng.standard_normal((dims[0] * dims[1], T))
    # a component with the right trace but a footprint elsewhere (texture, vessel edge)
    a_wrong = _blob(dims, 8, 30, 2.5)
    trace = c + 0.2 * rng.standard_normal(T)
    A = scipy.sparse.csc_array(np.stack([a * (a > 0.05), a_wrong * (a_wrong > 0.05)], axis=1))
    r = spatial_consistency(Yt.astype(np.float32), dims, A, np.stack([trace, trace]), 10)
    assert r[0] > 0.9
    assert r[1] < 0.2


def test_spatial_consistency_without_events_is_minus_one():
    dims = (20, 20)
    A = scipy.sparse.csc_array(_blob(dims, 10, 10, 2)[:, None] * np.ones((1, 1)))
    Yt = np.zeros((400, 50), np.float32)
    assert spatial_consistency(Yt, dims, A, np.zeros((1, 50)), 5)[0] == -1


def test_looks_preprocessed_flags_quantised_background_removed_data():
    rng = np.random.default_rng(3)
    raw = (900 + 80 * rng.standard_normal((20, 30, 30))).astype(np.float32)
    assert looks_preprocessed(raw) is None
    pre = np.clip(np.round(rng.exponential(1.0, (20, 30, 30)) - 0.5), 0, 24)
    info = looks_preprocessed(pre.astype(np.float32))
    assert info is not None and info["integer"] and info["levels"] < 30
    # raw 8-bit sensor data with a narrow range are not flagged
    raw8 = np.clip(np.round(40 + 6 * rng.standard_normal((20, 30, 30))), 0, 255).astype(np.uint8)
    assert looks_preprocessed(raw8.astype(np.float32)) is None
