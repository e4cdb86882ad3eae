"""HALS footprints on sufficient statistics, supports, cleaning and merging."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.initialization.footprints import (
    clean_footprints,
    compute_cy,
    hals_footprints,
    search_regions,
)
from online_cnmfe.model.initialization.merging import merge_components
from tests.reference import hals_footprints_ref


def _problem(seed, n_pix=40, K=4, T=120):
    rng = np.random.default_rng(seed)
    A_true = np.zeros((n_pix, K))
    for k in range(K):
        lo = rng.integers(0, n_pix - 12)
        A_true[lo : lo + 12, k] = rng.uniform(0.2, 1, 12)
    C = rng.gamma(0.5, 1, (K, T)).astype(np.float32)
    Y = A_true @ C + 0.01 * rng.standard_normal((n_pix, T))
    allowed = np.zeros((n_pix, K), bool)
    for k in range(K):
        nz = np.flatnonzero(A_true[:, k])
        allowed[max(0, nz[0] - 3) : nz[-1] + 4, k] = True
    return rng, A_true, C, Y.astype(np.float32), allowed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hals_matches_dense_reference(seed):
    rng, A_true, C, Y, allowed = _problem(seed)
    A0 = np.where(allowed, rng.uniform(0, 1, allowed.shape), 0).astype(np.float32)
    CY = compute_cy(scipy.sparse.csc_array(allowed), C, Y)
    CC = C @ C.T
    comps = [0, 2, 3]
    out = hals_footprints(scipy.sparse.csc_array(A0), CY, CC, components=comps, n_sweeps=3)
    ref = hals_footprints_ref(A0, (Y @ C.T) * allowed, CC, allowed, comps, 3)
    np.testing.assert_allclose(out.toarray(), ref, rtol=1e-3, atol=1e-4, err_msg=f"{seed}")
    assert out.dtype == np.float32


def test_hals_recovers_footprints_and_respects_supports():
    rng, A_true, C, Y, allowed = _problem(4)
    A0 = scipy.sparse.csc_array(np.where(allowed, 0.5, 0).astype(np.float32))
    CY = compute_cy(scipy.sparse.csc_array(allowed), C, Y)
    out = hals_footprints(A0, CY, C @ C.T, n_sweeps=100).toarray()
    np.testing.assert_allclose(out, A_true, atol=0.02)
    assert np.all(out[~allowed] == 0)


def test_compute_cy_keeps_pattern_with_explicit_zeros():
    allowed = np.zeros((6, 2), bool)
    allowed[1:4, 0] = True
    allowed[2:6, 1] = True
    C = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    Y = np.zeros((6, 3), np.float32)
    Y[1, 0] = 2.0
    CY = compute_cy(scipy.sparse.csc_array(allowed), C, Y)
    assert CY.nnz == allowed.sum()
    np.testing.assert_allclose(CY.toarray(), (Y @ C.T) * allowed)


def test_hals_with_zero_components_and_errors():
    A = scipy.sparse.csc_array((10, 0), dtype=np.float32)
    CY = scipy.sparse.csc_array((10, 0), dtype=np.float32)
    assert hals_footprints(A, CY, np.zeros((0, 0))).shape == (10, 0)
    with pytest.raises(ValueError, match="CC"):
        hals_footprints(scipy.sparse.csc_array(np.ones((10, 2))), CY, np.zeros((2, 2)))


def test_search_regions_grow_and_are_bounded():
    dims = (20, 20)
    img = np.zeros(dims)
    img[10, 10] = 1
    A = scipy.sparse.csc_array(img.reshape(-1, 1))
    reg = search_regions(A, dims, 2).toarray()[:, 0].reshape(dims)
    assert reg.sum() == 13 and reg[10, 12] and not reg[11, 12]
    img2 = np.zeros(dims)
    img2[5:16, 5:16] = 1
    reg2 = search_regions(scipy.sparse.csc_array(img2.reshape(-1, 1)), dims, 3, max_radius_px=4)
    rr, cc = np.divmod(reg2.indices, dims[1])
    assert np.all((rr - 10) ** 2 + (cc - 10) ** 2 <= 16)


def test_clean_footprints_keeps_main_component():
    dims = (10, 10)
    img = np.zeros(dims, np.float32)
    img[2:5, 2:5] = 1.0
    img[8, 8] = 0.9  # detached blob
    img[4, 5] = 0.01  # below threshold
    out = clean_footprints(scipy.sparse.csc_array(img.reshape(-1, 1)), dims, 0.05)
    o = out.toarray().reshape(dims)
    assert o[8, 8] == 0 and o[4, 5] == 0 and o[3, 3] == 1.0 and out.nnz == 9


def test_merge_components_merges_duplicates_only():
    rng = np.random.default_rng(3)
    T = 200
    a = np.zeros((30, 3), np.float32)
    a[0:10, 0] = 1
    a[2:12, 1] = 1  # duplicate of 0
    a[20:30, 2] = 1  # separate
    c = rng.gamma(0.3, 1, (3, T)).astype(np.float32)
    c[1] = c[0] * 0.8 + 0.01 * rng.standard_normal(T)
    out = merge_components(scipy.sparse.csc_array(a), c, c, 0.7, 0.5)
    assert out is not None
    A_new, C_new, keep, n_merged = out
    assert n_merged == 1 and A_new.shape == (30, 2) and C_new.shape == (2, T)
    merged = A_new.toarray()[:, 0]
    assert merged[0:12].min() > 0 and merged[20:].max() == 0
    assert np.corrcoef(C_new[0], c[0])[0, 1] > 0.99
    assert (
        merge_components(scipy.sparse.csc_array(a[:, [0, 2]]), c[[0, 2]], c[[0, 2]], 0.7, 0.5)
        is None
    )
