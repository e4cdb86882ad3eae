"""The sanity guard: implausible results (stripes, tiling, silent components) warn loudly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.preprocessing.sanity import (
    check_components,
    footprint_shapes,
    silent_fraction,
)
from online_cnmfe.params import PreprocessParams

DIMS = (120, 120)
D = 10.0


def _gaussians(centres, sigma=D / 4) -> scipy.sparse.csc_array:
    rr, cc = np.mgrid[: DIMS[0], : DIMS[1]]
    cols = []
    for r, c in centres:
        img = np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
        img[img < 0.05] = 0
        cols.append(img.ravel())
    return scipy.sparse.csc_array(np.stack(cols, 1).astype(np.float32))


def _stripes(n: int) -> scipy.sparse.csc_array:
    cols = []
    for k in range(n):
        img = np.zeros(DIMS, np.float32)
        r, c0 = (7 * k) % DIMS[0], (13 * k) % 60
        img[r, c0 : c0 + 50] = 1.0
        img[min(r + 1, DIMS[0] - 1), c0 : c0 + 50] = 0.5
        cols.append(img.ravel())
    return scipy.sparse.csc_array(np.stack(cols, 1))


def _active_traces(n, T=200, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(0, 1, (n, T)).astype(np.float32)
    C[:, 50:55] += 12.0  # one transient each
    return C, np.ones(n, np.float32)


def test_plausible_cells_raise_no_warning():
    centres = [(15 + 18 * i, 15 + 18 * j) for i in range(6) for j in range(6)]
    A = _gaussians(centres)
    C, noise = _active_traces(len(centres))
    rep = check_components(A, DIMS, D, PreprocessParams(), traces=C, noise=noise)
    assert rep.ok and rep.message is None, rep.warnings
    assert 0.5 < rep.size_ratio < 2.0
    assert rep.elongated_fraction == 0.0 and rep.silent_fraction == 0.0


def test_stripes_tiling_the_frame_are_called_out():
    A = _stripes(400)
    C = np.random.default_rng(1).normal(0, 1, (400, 200)).astype(np.float32)
    rep = check_components(A, DIMS, D, PreprocessParams(), traces=C, noise=np.ones(400))
    assert not rep.ok
    text = rep.message
    assert text.startswith("Result implausible:")
    assert "cover" in text and "data.neuron_diameter_px" in text  # coverage 400 disks
    assert "stripe-like" in text and "line noise" in text
    assert "no calcium transient" in text and "data.frame_rate_hz" in text
    assert rep.coverage > 2 and rep.elongated_fraction == 1.0 and rep.silent_fraction > 0.95


def test_coverage_counts_the_field_of_view_only():
    centres = [(60 + 3 * i, 60) for i in range(12)]
    A = _gaussians(centres)
    fov = np.zeros(DIMS, bool)
    fov[50:70, 50:70] = True  # 400 px: 12 disks of 78 px cover > 2x it
    p = PreprocessParams()
    assert check_components(A, DIMS, D, p).coverage < p.sanity_max_coverage
    rep = check_components(A, DIMS, D, p, fov=fov)
    assert rep.coverage > 2 and not rep.ok


def test_wrong_diameter_is_called_out():
    centres = [(15 + 18 * i, 15 + 18 * j) for i in range(6) for j in range(6)]
    rep = check_components(_gaussians(centres, sigma=6.0), DIMS, 5.0, PreprocessParams())
    assert any("much larger" in w for w in rep.warnings), rep.warnings


def test_footprint_shapes_of_a_disk_and_a_line():
    A = scipy.sparse.hstack([_gaussians([(60, 60)]), _stripes(1)]).tocsc()
    elong, area = footprint_shapes(A, DIMS)
    assert elong[0] < 1.2 and elong[1] > 10
    assert area[0] == np.float64(area[0]) and 0.7 < area[0] / (math.pi * D * D / 4) < 1.3


def test_silent_fraction_edge_cases():
    assert math.isnan(silent_fraction(np.zeros((3, 2)), np.ones(3)))
    C, noise = _active_traces(4)
    C[0] = 0.0
    assert silent_fraction(C, noise) == 0.25


def test_no_components_no_crash():
    A = scipy.sparse.csc_array((DIMS[0] * DIMS[1], 0), dtype=np.float32)
    rep = check_components(A, DIMS, D, PreprocessParams())
    assert rep.ok and rep.n_components == 0 and rep.coverage == 0.0


def _shapes_numpy(A, dims):
    """The figures as plain numpy computed them (np.bincount over the entries)."""
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    a = np.abs(A.data.astype(np.float64))
    col = np.repeat(np.arange(K), np.diff(A.indptr))
    r, c = np.divmod(A.indices.astype(np.int64), dims[1])

    def per_col(v):
        return np.bincount(col, weights=v, minlength=K)

    w = per_col(a)
    ws = np.maximum(w, 1e-30)
    mr, mc = per_col(a * r) / ws, per_col(a * c) / ws
    dr, dc = r - mr[col], c - mc[col]
    srr, scc, src = per_col(a * dr * dr) / ws, per_col(a * dc * dc) / ws, per_col(a * dr * dc) / ws
    half_tr, det = (srr + scc) / 2, srr * scc - src * src
    disc = np.sqrt(np.maximum(half_tr * half_tr - det, 0))
    lam1, lam2 = half_tr + disc, np.maximum(half_tr - disc, 1e-3)
    return np.sqrt(lam1 / lam2), w * w / np.maximum(per_col(a * a), 1e-30)


@pytest.mark.parametrize("seed", range(3))
def test_footprint_shapes_kernel_matches_numpy_bit_for_bit(seed):
    """The compiled moments (one pass per column instead of seven bincounts over float64
    temporaries: ~4 ms → ~0.3 ms at 300 footprints of 256², on the model thread every
    sanity period) sum in the same order as np.bincount: the same figures, bit for bit.
    Signed values, empty columns, int32 and int64 indices, unsorted entries."""
    rng = np.random.default_rng(seed)
    dims = (61, 47)
    A = scipy.sparse.random(dims[0] * dims[1], 40, density=0.05, random_state=seed,
                            dtype=np.float32, format="csc")  # fmt: skip
    A.data = (A.data - 0.3).astype(np.float32)
    keep = np.ones(40, np.float32)
    keep[[3, 17]] = 0.0  # two empty columns
    A = scipy.sparse.csc_array(A @ scipy.sparse.diags_array(keep))
    A.eliminate_zeros()
    for idx_dtype in (np.int32, np.int64):
        B = scipy.sparse.csc_array(
            (A.data, A.indices.astype(idx_dtype), A.indptr.astype(idx_dtype)), shape=A.shape
        )
        for M in (B, _shuffled_entries(B, rng)):
            elong, area = footprint_shapes(M, dims)
            ref_elong, ref_area = _shapes_numpy(M, dims)
            np.testing.assert_array_equal(elong, ref_elong)
            np.testing.assert_array_equal(area, ref_area)


def _shuffled_entries(A, rng):
    data, indices = A.data.copy(), A.indices.copy()
    for k in range(A.shape[1]):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        perm = lo + rng.permutation(hi - lo)
        data[lo:hi], indices[lo:hi] = data[perm], indices[perm]
    out = scipy.sparse.csc_array((data, indices, A.indptr.copy()), shape=A.shape)
    out.has_sorted_indices = False
    return out
