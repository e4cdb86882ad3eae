"""Slotted CSC: writes, selections and the compact CSC copy agree column by column."""

from __future__ import annotations

import numpy as np
import pytest

from online_cnmfe.model.slotted import SlottedColumns


@pytest.mark.parametrize("seed", range(3))
def test_to_csc_matches_the_columns_after_writes_and_selections(seed):
    rng = np.random.default_rng(seed)
    n_rows = 500

    def col(n):
        idx = np.sort(rng.choice(n_rows, n, replace=False))
        return idx, rng.random(n).astype(np.float32)

    M = SlottedColumns.from_columns([col(int(rng.integers(0, 40))) for _ in range(30)], n_rows)
    expected = [tuple(np.array(x) for x in M.column(k)) for k in range(M.n_columns)]
    for k, n in ((3, 5), (7, 120), (0, 0)):  # in place, relocated to the tail, emptied
        expected[k] = col(n)
        M.write(k, *expected[k])
    keep = np.array([k for k in range(30) if k not in (4, 11)])
    M.select(keep, 2)
    expected = [expected[k] for k in keep] + [col(0), col(9)]
    M.write(M.n_columns - 1, *expected[-1])
    A = M.to_csc()
    assert A.shape == (n_rows, len(expected))
    for k, (idx, val) in enumerate(expected):
        lo, hi = A.indptr[k], A.indptr[k + 1]
        np.testing.assert_array_equal(A.indices[lo:hi], idx, err_msg=f"seed {seed} col {k}")
        np.testing.assert_array_equal(A.data[lo:hi], val, err_msg=f"seed {seed} col {k}")


@pytest.mark.parametrize("seed", range(3))
def test_gather_columns_copies_the_chosen_columns_into_their_new_places(seed):
    """``gather_columns`` (the hand-over's overlay) against plain slicing."""
    from online_cnmfe.model._kernels import model_update as ku

    rng = np.random.default_rng(seed)
    cols = []
    for _ in range(20):
        n = int(rng.integers(0, 30))
        cols.append((np.sort(rng.choice(200, n, replace=False)), rng.random(n).astype(np.float32)))
    M = SlottedColumns.from_columns(cols, 200)
    M.write(2, *cols[5])  # a column away from its first slot
    K_out = 25
    dest = rng.choice(K_out, 8, replace=False).astype(np.int64)
    src = rng.choice(20, 8, replace=False).astype(np.int64)
    n = int((M.stop[src] - M.start[src]).sum())
    start, stop = np.zeros(K_out, np.int64), np.zeros(K_out, np.int64)
    idx, val = np.full(n + 3, -1, np.int32), np.full(n + 3, np.nan, np.float32)
    end = ku.gather_columns(dest, src, M.start, M.stop, M.indices, M.data, 3, start, stop, idx, val)
    assert end == n + 3
    for k, j in zip(dest, src):
        np.testing.assert_array_equal(idx[start[k] : stop[k]], M.column(j)[0], f"seed {seed}")
        np.testing.assert_array_equal(val[start[k] : stop[k]], M.column(j)[1], f"seed {seed}")
    others = np.setdiff1d(np.arange(K_out), dest)
    assert not (stop[others] - start[others]).any()
