"""The sanity guard's kernels (``_kernels/shapes``) against the NumPy code they replace."""

from __future__ import annotations

import numpy as np
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels import shapes as ks


def ref_footprint_shapes(A, dims):
    """Slow reference: weighted centroid and centred second moments with NumPy."""
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    elong, area = np.ones(K), np.zeros(K)
    for k in range(K):
        sl = slice(A.indptr[k], A.indptr[k + 1])
        a = np.abs(A.data[sl].astype(np.float64))
        if a.size == 0:
            continue
        r, c = np.divmod(A.indices[sl].astype(np.int64), dims[1])
        w = max(a.sum(), 1e-30)
        mr, mc = (a * r).sum() / w, (a * c).sum() / w
        cov = (
            np.array(
                [
                    [(a * (r - mr) ** 2).sum(), (a * (r - mr) * (c - mc)).sum()],
                    [(a * (r - mr) * (c - mc)).sum(), (a * (c - mc) ** 2).sum()],
                ]
            )
            / w
        )
        lo, hi = np.linalg.eigvalsh(cov)
        elong[k] = np.sqrt(hi / max(lo, 1e-3))
        area[k] = a.sum() ** 2 / max((a * a).sum(), 1e-30)
    return elong, area


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    k=st.integers(0, 8),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_footprint_shapes_match_the_reference(h, w, k, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((h * w, k)) * (rng.random((h * w, k)) < density)
    dense[rng.random((h * w, k)) < 0.1] *= -1  # the guard weighs |a|
    A = scipy.sparse.csc_array(dense.astype(np.float32))
    A = A[:, rng.permutation(k)] if k else A  # unsorted index order is fine
    elong, area = np.ones(k), np.zeros(k)
    if k:
        ks.footprint_shapes_csc(A.indptr, A.indices, A.data, w, elong, area)
    e_ref, a_ref = ref_footprint_shapes(A, (h, w))
    np.testing.assert_allclose(area, a_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(elong, e_ref, rtol=1e-6, atol=1e-6)


def test_a_line_is_elongated_and_a_disk_is_not():
    dims = (40, 40)
    line = np.zeros(dims, np.float32)
    line[20, 5:35] = 1.0
    rr, cc = np.mgrid[:40, :40]
    disk = ((rr - 20) ** 2 + (cc - 20) ** 2 <= 36).astype(np.float32)
    A = scipy.sparse.csc_array(np.stack([line.ravel(), disk.ravel()], 1))
    elong, area = np.zeros(2), np.zeros(2)
    ks.footprint_shapes_csc(A.indptr, A.indices, A.data, 40, elong, area)
    assert elong[0] > 100 and abs(elong[1] - 1.0) < 1e-9
    assert area[0] == 30 and area[1] == disk.sum()


@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 6), t=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_peak_over_median_matches_numpy(k, t, seed):
    x = np.random.default_rng(seed).normal(size=(k, t)).astype(np.float32)
    out = np.empty(k)
    ks.peak_over_median(x, out)
    ref = x.astype(np.float64).max(axis=1) - np.median(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
