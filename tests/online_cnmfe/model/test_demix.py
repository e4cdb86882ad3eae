"""Demixing and residual kernels against dense NumPy/SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from online_cnmfe.model import traces
from online_cnmfe.model._kernels import demix as kd
from online_cnmfe.model._kernels import residual as kr
from online_cnmfe.model._kernels.ring import ring_offsets
from tests import reference as ref


def _problem(seed, dims=(15, 13), ssub=2, K=6, radius=2):
    rng = np.random.default_rng(seed)
    H, Wd = dims
    hb, wb = traces.grid_shape(dims, ssub)
    offsets = ring_offsets(radius)
    W = (rng.random((hb * wb, len(offsets))) / len(offsets)).astype(np.float32)
    rows, cols = np.mgrid[0:H, 0:Wd]
    cols_A = []
    for _ in range(K):
        r, c = rng.uniform(0, [H, Wd])
        a = np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 4.0).ravel()
        a[a < 0.1] = 0
        cols_A.append(a)
    A = scipy.sparse.csc_array(np.stack(cols_A, 1).astype(np.float32))
    b0 = rng.uniform(5, 10, H * Wd).astype(np.float32)
    c_true = rng.uniform(0, 3, K) * (rng.random(K) < 0.7)
    y = (b0 + A @ c_true + rng.normal(0, 0.3, H * Wd)).astype(np.float32)
    return dict(dims=dims, ssub=ssub, offsets=offsets, W=W, A=A, b0=b0, y=y, hb=hb, wb=wb)


def _slots(M):
    """Slotted-CSC kernel arguments (start, stop, indices, data) of a CSC matrix."""
    ip, ix, d = traces.csc_parts(M)
    return ip[:-1].copy(), ip[1:].copy(), ix, d


def _system(p):
    D, U = traces.grid_operators(p["dims"], p["ssub"])
    ring_idx = kd.ring_gather_index(p["offsets"], p["hb"], p["wb"])
    Wsp = traces.ring_matrix(p["W"], ring_idx)
    G, At = traces.background_columns(p["A"], Wsp, D, U)
    gram = traces.dense_gram(At)
    return ring_idx, G, At, gram


def _ytilde(p, ring_idx=None):
    n_bg = p["hb"] * p["wb"]
    flat, pad, size = kd.ring_layout(p["offsets"], p["hb"], p["wb"])
    out = [np.full(size, np.nan, np.float32), np.zeros(n_bg, np.float32)]  # xd: zeroed by it
    ytilde = np.zeros_like(p["y"])
    zsum = np.zeros(n_bg, np.float32)
    Wt = np.ascontiguousarray(p["W"].T)
    kd.background_subtract(
        p["y"], p["b0"], Wt, flat, pad, p["dims"][0], p["dims"][1], p["ssub"], *out, ytilde,
        zsum,
    )  # fmt: skip
    return ytilde, zsum


@njit
def _background_subtract_per_pixel(y, b0, W, ring_idx, height, width, ssub, ytilde, zsum):
    """The plain per-pixel loops (the kernel before its row-wise ring product): float32 sums
    in pixel order, each ring read through ``ring_idx`` (index n_bg: a zero pad)."""
    n_bg = zsum.shape[0]
    wb = (width + ssub - 1) // ssub
    xd = np.zeros(n_bg + 1, np.float32)
    for i in range(height):
        for j in range(width):
            xd[(i // ssub) * wb + j // ssub] += y[i * width + j] - b0[i * width + j]
    for p in range(n_bg):
        nr = min(ssub, height - (p // wb) * ssub)
        nc = min(ssub, width - (p % wb) * ssub)
        xd[p] /= nr * nc
    bg = np.zeros(n_bg, np.float32)
    for p in range(n_bg):
        acc = np.float32(0.0)
        for k in range(W.shape[1]):
            acc += W[p, k] * xd[ring_idx[p, k]]
        bg[p] = acc
        zsum[p] = 0.0
    for i in range(height):
        for j in range(width):
            q = (i // ssub) * wb + j // ssub
            v = y[i * width + j] - b0[i * width + j] - bg[q]
            ytilde[i * width + j] = v
            zsum[q] += v


@pytest.mark.parametrize(
    "dims,ssub,radius",
    [((64, 64), 2, 5), ((15, 13), 2, 2), ((12, 12), 3, 2), ((9, 10), 1, 3), ((17, 11), 3, 4),
     ((17, 11), 2, 4), ((5, 7), 2, 6), ((3, 3), 2, 9), ((40, 33), 4, 3)],
)  # fmt: skip
def test_background_subtract_is_bit_identical_to_per_pixel_loops(dims, ssub, radius):
    """Odd sizes, partial blocks, rings reaching past the grid (or larger than it), signed
    values: the same float32 operations in the same order, so the same bits."""
    p = _problem(3, dims=dims, ssub=ssub, radius=radius)
    p["W"] = np.random.default_rng(4).standard_normal(p["W"].shape).astype(np.float32)
    ytilde, zsum = _ytilde(p)
    ring_idx = kd.ring_gather_index(p["offsets"], p["hb"], p["wb"])
    yt_ref, zs_ref = np.zeros_like(ytilde), np.zeros_like(zsum)
    _background_subtract_per_pixel(
        p["y"], p["b0"], p["W"], ring_idx, dims[0], dims[1], ssub, yt_ref, zs_ref
    )
    np.testing.assert_array_equal(ytilde, yt_ref)
    np.testing.assert_array_equal(zsum, zs_ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dims,ssub", [((15, 13), 2), ((12, 12), 3), ((9, 10), 1)])
def test_background_subtract_matches_dense_operator(seed, dims, ssub):
    p = _problem(seed, dims=dims, ssub=ssub)
    ring_idx, *_ = _system(p)
    ytilde, zsum = _ytilde(p, ring_idx)
    M = ref.background_operator_dense(p["W"], p["offsets"], dims, ssub)
    expected = M @ (p["y"].astype(np.float64) - p["b0"])
    np.testing.assert_allclose(ytilde, expected, rtol=1e-4, atol=1e-4, err_msg=f"seed {seed}")
    _, U = traces.grid_operators(dims, ssub)
    np.testing.assert_allclose(zsum, U.T @ expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_nnls_cd_matches_scipy_nnls(seed):
    p = _problem(seed)
    ring_idx, G, At, gram = _system(p)
    M = ref.background_operator_dense(p["W"], p["offsets"], p["dims"], p["ssub"])
    np.testing.assert_allclose(At.toarray(), M @ p["A"].toarray(), atol=1e-5)
    ytilde, zsum = _ytilde(p, ring_idx)
    rhs = np.zeros(p["A"].shape[1], np.float32)
    kd.demix_rhs(*_slots(p["A"]), *_slots(G), ytilde, zsum, rhs)
    np.testing.assert_allclose(rhs, At.T @ ytilde, rtol=1e-4, atol=1e-3)
    indptr, indices, data, diag, order = traces.gram_from_dense(gram)
    c = np.zeros_like(rhs)
    kd.nnls_cd(indptr, indices, data, diag, rhs, order, 500, c)
    expected = ref.demix_nnls_ref(p["A"].toarray(), p["W"], p["offsets"], p["dims"], 2, p["y"],
                                  p["b0"])  # fmt: skip
    np.testing.assert_allclose(c, expected, rtol=2e-3, atol=2e-3, err_msg=f"seed {seed}")


def test_nnls_cd_warm_start_few_sweeps_is_close():
    p = _problem(7)
    ring_idx, G, At, gram = _system(p)
    ytilde, zsum = _ytilde(p, ring_idx)
    rhs = np.zeros(p["A"].shape[1], np.float32)
    kd.demix_rhs(*_slots(p["A"]), *_slots(G), ytilde, zsum, rhs)
    indptr, indices, data, diag, order = traces.gram_from_dense(gram)
    exact = np.zeros_like(rhs)
    kd.nnls_cd(indptr, indices, data, diag, rhs, order, 500, exact)
    warm = (exact * 1.05).astype(np.float32)  # the previous frame's traces, slightly off
    kd.nnls_cd(indptr, indices, data, diag, rhs, order, 3, warm)
    assert np.abs(warm - exact).max() < 0.05 * max(exact.max(), 1e-3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_groups_hold_non_interacting_neurons(seed, K):
    rng = np.random.default_rng(seed)
    Q = rng.random((K, K)) * (rng.random((K, K)) < 0.2)
    Q = (Q + Q.T).astype(np.float32)
    np.fill_diagonal(Q, 1.0)
    indptr, indices, _, _, order = traces.gram_from_dense(Q)
    labels = np.empty(K, np.int64)
    kd.greedy_groups(indptr, indices, labels, np.empty(K + 1, np.int64))
    assert sorted(order.tolist()) == list(range(K))
    for i in range(K):
        for j in range(K):
            if i != j and labels[i] == labels[j]:
                assert Q[i, j] == 0, f"seed {seed}: neurons {i},{j} share group {labels[i]}"


@pytest.mark.parametrize("seed", range(3))
def test_residual_and_baseline_update_match_dense(seed):
    p = _problem(seed)
    ring_idx, G, At, gram = _system(p)
    ytilde, _ = _ytilde(p, ring_idx)
    K = p["A"].shape[1]
    c = np.random.default_rng(seed).uniform(0, 2, K).astype(np.float32)
    n = p["y"].size
    n_bg = p["hb"] * p["wb"]
    b0 = p["b0"].copy()
    res = np.zeros(n, np.float32)
    dims3 = np.array([p["dims"][0], p["dims"][1], p["ssub"]], np.int64)
    kr.residual_update(
        *_slots(p["A"]), *_slots(G), c, ytilde, p["y"], 0.1, dims3,
        np.zeros(n, np.float32), np.zeros(n_bg, np.float32), b0, res,
    )  # fmt: skip
    A_dense = p["A"].toarray()
    expected = ref.residual_ref(A_dense, p["W"], p["offsets"], p["dims"], 2, p["y"], p["b0"], c)
    np.testing.assert_allclose(res, expected, rtol=1e-4, atol=1e-4)
    b0_expected = p["b0"] + 0.1 * (p["y"] - A_dense @ c - p["b0"])
    np.testing.assert_allclose(b0, b0_expected, rtol=1e-5, atol=1e-5)


def _g_columns(p, ring_idx, DA):
    """``g_column`` of every column of DA (index, value pairs), and the kernel's scratch."""
    from online_cnmfe.model._kernels import model_update as ku

    n_bg = p["hb"] * p["wb"]
    scratch = np.zeros(n_bg + 1, np.float32)
    mark = np.full(n_bg, -1, np.int64)
    cols = []
    for k in range(DA.shape[1]):
        lo, hi = DA.indptr[k], DA.indptr[k + 1]
        cols.append(ku.g_column(
            DA.indices[lo:hi].astype(np.int64), DA.data[lo:hi].astype(np.float32), p["W"],
            ring_idx, p["offsets"], p["hb"], p["wb"], scratch, mark, k,
        ))  # fmt: skip
    return cols, scratch


def _gram_case(seed):
    """The two kernel tests' problem: its system (G, the gram), U, D A and G's columns."""
    p = _problem(seed, dims=(24, 22), radius=3, K=7)
    ring_idx, G, _, gram = _system(p)
    D, U = traces.grid_operators(p["dims"], p["ssub"])
    DA = scipy.sparse.csc_array(D @ p["A"])
    cols, scratch = _g_columns(p, ring_idx, DA)
    return p, ring_idx, G, gram, U, DA, cols, scratch


@pytest.mark.parametrize("seed", range(3))
def test_g_column_and_gram_column_match_scipy(seed):
    from online_cnmfe.model._kernels import model_update as ku

    p, ring_idx, G, gram, U, DA, cols, scratch = _gram_case(seed)
    n_bg = p["hb"] * p["wb"]
    for k, (idx, val) in enumerate(cols):
        dense = np.zeros(n_bg)
        dense[idx] = val
        np.testing.assert_allclose(dense, G[:, [k]].toarray().ravel(), rtol=1e-5, atol=1e-6)
    assert not scratch.any()
    Gs = _slots(scipy.sparse.csc_array(G))
    nblk = np.asarray(U.sum(axis=0)).ravel().astype(np.float32)
    sa, sg, ss = (
        np.zeros(p["y"].size, np.float32),
        np.zeros(n_bg, np.float32),
        np.zeros(n_bg, np.float32),
    )
    cand = np.arange(DA.shape[1], dtype=np.int64)
    for k in range(DA.shape[1]):
        out = np.zeros(len(cand), np.float32)
        ku.gram_column(k, cand, *_slots(p["A"]), *_slots(DA), *Gs, nblk, sa, sg, ss, out)
        np.testing.assert_allclose(out, gram[:, k], rtol=1e-4, atol=1e-4, err_msg=f"col {k}")
    assert not (sa.any() or sg.any() or ss.any())


@pytest.mark.parametrize("seed", range(3))
def test_w_rows_update_matches_a_rebuild_with_the_new_rows(seed):
    """G and Q after ``w_rows_update`` (the new rows passed alone) equal G = W' D A and
    Q = ÃᵀÃ rebuilt with W' (scipy), on G's structural support."""
    from online_cnmfe.model._kernels import model_update as ku

    p, ring_idx, _, gram, _, DA, cols, scratch = _gram_case(seed)
    n_bg = p["hb"] * p["wb"]
    lengths = np.array([len(i) for i, _ in cols], np.int64)
    g_e = np.cumsum(lengths)
    g_s = g_e - lengths
    g_ix = np.concatenate([i for i, _ in cols]).astype(np.int32)
    g_d = np.concatenate([v for _, v in cols]).astype(np.float32)
    rng = np.random.default_rng(seed)
    start, stop = n_bg // 4, 3 * n_bg // 4
    W2 = p["W"].copy()
    W2[start:stop] *= rng.uniform(1.5, 3.0, (stop - start, 1)).astype(np.float32)
    nblk = np.asarray(traces.grid_operators(p["dims"], p["ssub"])[1].sum(axis=0)).ravel()
    q = np.array(gram, np.float32)  # a copy: gram stays the old Q
    ku.w_rows_update(
        start, stop, np.ascontiguousarray(W2[start:stop]), ring_idx,
        np.arange(DA.shape[1], dtype=np.int64), *_slots(DA), g_s, g_e, g_ix, g_d,
        nblk.astype(np.float32), q, scratch,
    )  # fmt: skip
    assert not scratch.any()
    _, G2, _, gram2 = _system(dict(p, W=W2))
    for k in range(DA.shape[1]):
        dense = np.zeros(n_bg)
        dense[g_ix[g_s[k] : g_e[k]]] = g_d[g_s[k] : g_e[k]]
        np.testing.assert_allclose(dense, G2[:, [k]].toarray().ravel(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q, gram2, rtol=1e-4, atol=1e-4, err_msg=f"seed {seed}")
    assert np.abs(gram - gram2).max() > 1e-2, "the rows changed nothing"
