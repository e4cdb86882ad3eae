"""Slow-path statistics kernels against dense references; footprint refresh behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model._kernels import ring as kring
from online_cnmfe.model._kernels import stats as kst
from online_cnmfe.model.slow_path import suffstats
from tests import reference as ref
from tests.online_cnmfe import slow_harness as h

DIMS = (20, 24)
NP = DIMS[0] * DIMS[1]


def _stats(rng, K=4, growth=2):
    centres = [(5, 6), (6, 10), (14, 8), (13, 18)][:K]
    A = np.stack([h.gaussian_footprint(DIMS, c, 1.5) for c in centres], axis=1)
    C = rng.uniform(0, 2, (K, 50)).astype(np.float32)
    YB = (A @ C).T + 0.1 * rng.standard_normal((50, NP)).astype(np.float32)
    fs = suffstats.stats_from_footprints(
        scipy.sparse.csc_array(A), C, YB, DIMS, growth, 400, np.full(K, 0.1), 49
    )
    return fs, A, C, YB


def _dense(fs):
    """Dense (K, n_pixels) CY with NaN outside the regions, and dense A."""
    K = fs.n_components
    CY = np.full((K, NP), np.nan)
    A = np.zeros((NP, K))
    for k in range(K):
        s = fs.slot_of[k]
        n = fs.sup_n[s]
        CY[k, fs.sup_idx[s, :n]] = fs.cy[s, :n]
        A[fs.sup_idx[s, :n], k] = fs.a_sup[s, :n]
    CC = fs.cc[np.ix_(fs.slot_of, fs.slot_of)]
    return CY, CC, A


def test_suffstat_update_matches_dense_forgetting(rng):
    fs, A, _, _ = _stats(rng)
    # shuffle slots so the slot mapping is exercised
    fs.slot_of = np.ascontiguousarray(fs.slot_of[::-1])
    CY0, CC0, Ad = _dense(fs)
    K = fs.n_components
    C = rng.uniform(0, 3, (K, 30)).astype(np.float32)
    C[1, ::3] = 0
    R = rng.standard_normal((30, NP)).astype(np.float32)
    lam = 0.95
    for t in range(30):
        kst.suffstat_update(
            C[:, t], R[t], fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cy, fs.cc, fs.cbar,
            lam, fs.scratch,
        )  # fmt: skip
    CY_ref, CC_ref = ref.suffstat_ref(C, R, Ad, lam, np.nan_to_num(CY0), CC0)
    CY, CC, _ = _dense(fs)
    mask = ~np.isnan(CY)
    np.testing.assert_allclose(CY[mask], CY_ref[mask], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(CC, CC_ref, rtol=1e-4, atol=1e-5)
    assert not fs.scratch.any()


def test_hals_neuron_matches_reference(rng):
    fs, *_ = _stats(rng)
    CY, CC, Ad = _dense(fs)
    for k in range(fs.n_components):
        s = fs.slot_of[k]
        n = fs.sup_n[s]
        region = fs.sup_idx[s, :n]
        out = np.zeros(fs.sup_idx.shape[1], np.float32)
        kst.hals_neuron(
            k, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cy, fs.cc,
            suffstats.neighbours(fs, k), fs.scratch, out,
        )  # fmt: skip
        expect = ref.hals_one_ref(Ad, np.nan_to_num(CY), CC, k, region)
        np.testing.assert_allclose(out[:n], expect, rtol=1e-4, atol=1e-5)
    assert not fs.scratch.any()


def test_predict_cy_is_the_hals_fixed_point(rng):
    fs, *_ = _stats(rng)
    _, CC, Ad = _dense(fs)
    for k in range(fs.n_components):
        s = fs.slot_of[k]
        pix = fs.sup_idx[s, : fs.sup_n[s]].copy()  # predictions are needed on k's region
        out = np.zeros(pix.size, np.float32)
        kst.predict_cy(
            k, pix, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cc,
            suffstats.neighbours(fs, k), fs.scratch, out,
        )  # fmt: skip
        np.testing.assert_allclose(out, (Ad @ CC[:, k])[pix], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("start,n", [(0, 5), (17, 9), (40, 8)])
def test_weighted_ring_gram_matches_reference(rng, start, n):
    X = rng.standard_normal((6, 8, 6)).astype(np.float32)
    off = kring.ring_offsets(2)
    w = np.array([1.0, 0.5, 0.0, 0.25, 2.0, 1.0], np.float32)
    XXt = np.empty((n, len(off), len(off)), np.float32)
    Xx = np.empty((n, len(off)), np.float32)
    kst.weighted_ring_gram(X, w, off, XXt, Xx, start)
    XXt_ref, Xx_ref = ref.weighted_ring_gram_ref(X, w, off)
    np.testing.assert_allclose(XXt, XXt_ref[start : start + n], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Xx, Xx_ref[start : start + n], rtol=1e-4, atol=1e-4)


def test_region_from_support_dilates_and_caps():
    pix = np.array([5 * 24 + 5], np.int64)
    reg = suffstats.region_from_support(pix, DIMS, 2, 1000)
    assert reg.size == 25 and np.all(np.diff(reg) > 0)
    assert suffstats.region_from_support(pix, DIMS, 2, 9).size == 9
    corner = suffstats.region_from_support(np.array([0]), DIMS, 1, 1000)
    assert sorted(corner.tolist()) == [0, 1, 24, 25]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_main_component_matches_scipy_label(seed):
    import scipy.ndimage

    rng = np.random.default_rng(seed)
    W = 17
    pix = np.sort(rng.choice(W * 15, 120, replace=False)).astype(np.int32)
    a = np.where(rng.random(120) < 0.6, rng.random(120), 0).astype(np.float32)
    keep = np.zeros(120, bool)
    kst.main_component(pix, a, W, keep)
    img = np.zeros((15, W), bool)
    vals = np.zeros((15, W))
    r, c = np.divmod(pix, W)
    img[r, c] = a > 0
    vals[r, c] = a
    lab, n = scipy.ndimage.label(img, np.ones((3, 3), bool))
    sums = scipy.ndimage.sum(vals, lab, range(1, n + 1))
    expect = lab[r, c] == 1 + int(np.argmax(sums))
    np.testing.assert_array_equal(keep, expect)


def test_buffer_regression_and_bbox_hits(rng):
    resid = rng.standard_normal((30, 200)).astype(np.float32)
    ck = rng.random(30).astype(np.float32)
    ok = rng.random(30) < 0.7
    pix = np.array([3, 50, 199, 7], np.int32)
    out = np.empty(4, np.float32)
    kst.buffer_regression(ck, resid, ok, pix, out)
    np.testing.assert_allclose(out, (ck[ok] @ resid[ok][:, pix]), rtol=1e-5, atol=1e-5)
    bbox = np.array([[0, 5, 0, 5], [4, 9, 4, 9], [10, 12, 0, 3]], np.int32)
    slot_of = np.array([2, 0, 1], np.int32)
    hits = np.empty(3, np.int64)
    n = kst.bbox_hits(bbox, slot_of, np.array([3, 6, 3, 6], np.int32), hits)
    assert hits[:n].tolist() == [1, 2]  # model 1 -> slot 0, model 2 -> slot 1


def test_ring_period_is_stretched_for_large_grids():
    from online_cnmfe.model.slow_path import ring_refresh as rr

    assert rr.effective_period(16384, 2000, 12) == 2000  # 256^2: 9 rows per frame
    p = rr.effective_period(92416, 2000, 12)  # 608^2 / 2: at most 12 rows per frame
    assert p == 7702
    assert max(rr.pixels_at(t, 92416, p) for t in range(p)) <= 13
    assert sum(rr.pixels_at(t, 92416, p) for t in range(p)) == 92416  # all rows once per period


def test_refresh_of_a_footprint_without_support_pixels_says_collapsed(rng):
    """A neuron whose region lost every pixel (fault injection: sup_n = 0) is reported
    collapsed (the caller removes it) instead of failing on an empty array."""
    fs, _, C, YB = _stats(rng)
    fs.sup_n[fs.slot_of[1]] = 0
    buffer = (YB.astype(np.float32), C, np.ones(C.shape[1], bool))
    assert suffstats.refresh_footprint(fs, 1, 2, buffer) is False
    assert suffstats.refresh_footprint(fs, 0, 2, buffer) is True  # the others refresh as usual


def test_region_from_support_keeps_every_support_pixel_when_capped():
    """The cap drops dilation pixels, never the footprint's own: an elongated support's ends
    are the pixels farthest from its centroid, and dropping them lost footprint weight (and,
    with the radius limit's union, overflowed the slot: the latent crash of the refresh)."""
    W = DIMS[1]
    line = np.array([10 * W + c for c in range(2, 22)], np.int64)  # 20 pixels in one row
    for cap in (20, 25, 40):
        reg = suffstats.region_from_support(line, DIMS, 2, cap)
        assert reg.size == cap and np.all(np.diff(reg) > 0)
        assert np.isin(line, reg).all()
    # a support larger than the cap keeps the support pixels nearest its centroid
    reg = suffstats.region_from_support(line, DIMS, 2, 10)
    assert reg.size == 10 and np.isin(reg, line).all()


def test_refresh_with_a_radius_limit_never_overflows_the_slot(rng):
    """Fault injection: an elongated footprint that fills its slot and grows beside its middle,
    refreshed with a radius limit. Before the fix the new region (capped by distance to the
    centroid, which dropped the line's ends, then joined with the support again) held more
    pixels than the slot: a broadcast error in ``set_region``."""
    W = DIMS[1]
    A = np.stack([h.gaussian_footprint(DIMS, c, 1.5) for c in [(4, 5), (16, 18)]], axis=1)
    C = rng.uniform(0, 2, (2, 50)).astype(np.float32)
    YB = (A @ C).T + 0.1 * rng.standard_normal((50, NP)).astype(np.float32)
    cap = 30
    fs = suffstats.stats_from_footprints(
        scipy.sparse.csc_array(A), C, YB, DIMS, 2, cap, np.full(2, 0.1), 49
    )
    s = int(fs.slot_of[0])
    line = [10 * W + c for c in range(2, 22)]
    side = [9 * W + c for c in range(10, 14)]
    filler = [19 * W + c for c in range(cap - len(line) - len(side))]  # a = 0, cy = 0
    pix = np.array(sorted(line + side + filler), np.int32)
    a = np.where(np.isin(pix, line), 1.0, 0.0).astype(np.float32)
    cy = (a * fs.cc[s, s]).astype(np.float32)
    cy[np.isin(pix, side)] = 0.8 * fs.cc[s, s]  # the statistics say the footprint extends there
    suffstats.set_region(fs, s, pix, a, cy)
    fs.max_radius = 30.0
    fs.pixel_noise[:] = 1e-6
    buffer = (YB.astype(np.float32), C, np.ones(C.shape[1], bool))
    assert suffstats.refresh_footprint(fs, 0, 2, buffer, young=True) is True
    n = int(fs.sup_n[s])
    assert n <= cap
    kept = fs.sup_idx[s, :n]
    assert np.all(np.diff(kept) > 0)
    assert np.isin(line, kept).all()  # the footprint's own pixels stay in its region
