"""Preprocessing kernels against the slow references in tests/reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from online_cnmfe.model._kernels import preprocess as kp
from tests import reference as ref


def _frame(rng, H=37, W=53):
    tpl = rng.uniform(50, 150, (H, W)).astype(np.float32)
    y = (1.1 * tpl + rng.normal(0, 3, (H, W)) + rng.normal(0, 8, (H, 1))).astype(np.float32)
    return y, tpl


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 200), elements=st.floats(-1e3, 1e3, width=32)))
def test_select_median_is_the_upper_median(x):
    work = x.copy()
    got = kp.select_median(work, work.size)
    assert got == np.sort(x)[x.size // 2]
    assert sorted(work.tolist()) == sorted(x.tolist())  # reordered, nothing lost


def test_select_median_of_nothing_is_zero():
    assert kp.select_median(np.zeros(3, np.float32), 0) == 0.0


@pytest.mark.parametrize("step", [1, 3, 4])
def test_frame_gain_matches_reference(step):
    rng = np.random.default_rng(1)
    y, tpl = _frame(rng)
    mask = (rng.random(y.shape) > 0.2).astype(np.uint8)
    s, mean = kp.frame_gain(y, tpl, mask, 10.0, step)
    s_ref, mean_ref = ref.frame_gain_ref(y, tpl, mask, 10.0, step)
    assert s == pytest.approx(s_ref, rel=1e-6) and mean == pytest.approx(mean_ref, rel=1e-6)


def test_frame_gain_without_signal_is_one():
    z = np.zeros((8, 8), np.float32)
    assert kp.frame_gain(z, z, np.ones((8, 8), np.uint8), 0.0, 2)[0] == 1.0


@pytest.mark.parametrize("scale", [0.0, 2.5])
@pytest.mark.parametrize("col_step", [1, 2, 5, 53])
def test_row_offsets_match_reference(col_step, scale):
    rng = np.random.default_rng(2)
    y, tpl = _frame(rng)
    H, W = y.shape
    off, rough = np.zeros(H, np.float32), np.zeros(H, np.float32)
    kp.row_offsets(y, tpl, 5.0, 1.1, col_step, scale, np.zeros(W + 2, np.float32), off, rough)
    off_ref, rough_ref = ref.row_offsets_ref(y, tpl, 5.0, 1.1, col_step, scale)
    np.testing.assert_allclose(off, off_ref, atol=1e-3)
    np.testing.assert_allclose(rough, rough_ref, rtol=1e-4)


@pytest.mark.parametrize("shape", [(64, 80), (7, 2), (256, 256)])
def test_row_roughness_alone_is_bit_identical_to_row_offsets(shape):
    # frames without row offsets to remove take the roughness alone: the same float32 values
    rng = np.random.default_rng(4)
    y = rng.normal(100, 20, shape).astype(np.float32)
    y[1] = 7.0  # a flat (missing) line
    tpl = rng.normal(100, 5, shape).astype(np.float32)
    H, W = shape
    off, rough = np.zeros(H, np.float32), np.zeros(H, np.float32)
    kp.row_offsets(y, tpl, 5.0, 1.1, 2, 2.5, np.zeros(W + 2, np.float32), off, rough)
    alone = np.full(H, np.nan, np.float32)
    kp.row_roughness(y, alone)
    np.testing.assert_array_equal(alone, rough)


@pytest.mark.parametrize("scale", [0.0, 2.5])
@pytest.mark.parametrize("row_step", [1, 4])
def test_column_offsets_match_reference(row_step, scale):
    rng = np.random.default_rng(3)
    y, tpl = _frame(rng)
    H, W = y.shape
    row_off = rng.normal(0, 5, H).astype(np.float32)
    col_off = np.zeros(W, np.float32)
    kp.column_offsets(
        y, tpl, 5.0, 1.1, row_off, row_step, scale, np.zeros(H + 2, np.float32), col_off
    )
    expected = ref.column_offsets_ref(y, tpl, 5.0, 1.1, row_off, row_step, scale)
    np.testing.assert_allclose(col_off, expected, atol=1e-3)


def test_huber_location_is_not_quantised_on_integer_data():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(0.3, 0.7, 96)).astype(np.float32)  # uint8-like samples
    median = kp.robust_location(x.copy(), x.size, 0.0)
    huber = kp.robust_location(x.copy(), x.size, 0.7)
    assert median == round(median)  # the median of integers is an integer
    assert huber != round(huber) and abs(huber - 0.3) < 0.25


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_apply_corrections_matches_reference(alpha):
    rng = np.random.default_rng(4)
    y, tpl = _frame(rng)
    H, W = y.shape
    ro, co = rng.normal(0, 5, H).astype(np.float32), rng.normal(0, 2, W).astype(np.float32)
    mask = (rng.random((H, W)) > 0.3).astype(np.uint8)
    y_ref, tpl_ref, mean_ref = ref.apply_corrections_ref(y, ro, co, 7.0, 0.8, tpl, alpha, mask)
    y2, tpl2 = y.copy(), tpl.copy()
    mean = kp.apply_corrections(y2, ro, co, 7.0, 0.8, tpl2, alpha, mask)
    np.testing.assert_allclose(y2, y_ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(tpl2, tpl_ref, rtol=1e-5, atol=1e-3)
    assert mean == pytest.approx(mean_ref, rel=1e-5)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.05, 1.0, 1.1, 9.0]), min_size=1, max_size=40),
    st.integers(0, 6),
)
def test_count_broken_rows_matches_reference(levels, max_padding):
    rough = np.asarray(levels, np.float32)
    base = np.ones_like(rough)
    base[::7] = 0.01  # rows too smooth to call flat
    got = kp.count_broken_rows(rough, base, 4.0, 0.1, max_padding)
    assert got == ref.count_broken_rows_ref(rough, base, 4.0, 0.1, max_padding)


def test_ema_update_in_place():
    s = np.zeros(4, np.float32)
    kp.ema_update(s, np.full(4, 2.0, np.float32), 0.25)
    np.testing.assert_allclose(s, 0.5)
