"""The pixels of a corrected frame that saw the lens's dark margin (``motion.lens_gaps``,
``_kernels/lens_gaps``): which they are, and what they are filled with."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels import lens_gaps as kg
from online_cnmfe.model.motion import lens_gaps, register
from online_cnmfe.model.motion.state import MotionInit, geometry
from online_cnmfe.params import CNMFEParams


def ref_fill(y, gap, level, b0, ac):
    """Slow: every pixel over the level takes the baseline plus the neurons' prediction."""
    out = y.copy()
    for p in range(y.shape[0]):
        if gap[p] > level:
            out[p] = b0[p] + ac[p]
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), seed=st.integers(0, 2**16))
def test_fill_gaps_is_the_model_prediction_where_the_gap_is(n, seed):
    rng = np.random.default_rng(seed)
    y, gap, b0, ac = (rng.random(n).astype(np.float32) for _ in range(4))
    expect = ref_fill(y, gap, lens_gaps.GAP_LEVEL, b0, ac)
    got = y.copy()
    n_filled = kg.fill_gaps(got, gap, lens_gaps.GAP_LEVEL, b0, ac)
    np.testing.assert_array_equal(got, expect)
    assert n_filled == int((gap > lens_gaps.GAP_LEVEL).sum())


def _rigid_state(dims):
    params = CNMFEParams().replace(**{"data.neuron_diameter_px": 8.0, "motion.mode": "rigid"})
    geom = geometry(dims, params.motion, 8.0)
    return register.make_state(geom, params, np.zeros(geom.grid, np.float32), 0.0)


def _init(shifts, outside, still=0.0):
    T = len(shifts)
    return MotionInit(
        template=np.zeros((1, 1), np.float32), min_quality=0.0,
        shifts=np.asarray(shifts, np.float32), quality=np.ones(T, np.float32), fields=None,
        flags=("",) * T, lens_outside=outside, still_limit_px=still,
    )  # fmt: skip


def test_initial_gaps_are_filled_with_the_pixels_mean_inside_the_lens():
    """A lens edge at column 20 on the sensor; frames shifted by dx = 0, 4, 8: corrected
    column c sampled c + dx, so columns 12-19 saw the margin in some frames only. Their gaps
    take the mean of the frames where they saw the lens; the rest is untouched."""
    dims = (32, 40)
    ms = _rigid_state(dims)
    outside = np.zeros(dims, bool)
    outside[:, 20:] = True
    init = _init([(0, 0), (0, 4), (0, 8)], outside)
    rng = np.random.default_rng(3)
    Y = rng.uniform(100, 200, (3, *dims)).astype(np.float32)
    Y[:, :, 20:] = 0.0  # the margin as the corrected frames see it (dark)
    for t, dx in enumerate((0, 4, 8)):  # registered frame t saw the margin from column 20 - dx
        Y[t, :, 20 - dx :] = 0.0
    before = Y.copy()
    gaps = lens_gaps.InitialGaps(init, 3, Y[0].size)
    for t, dx in enumerate((0, 4, 8)):
        gaps.record(t, ms, 0.0, float(dx), None, Y[t].reshape(-1), flagged=False)
    gaps.fill(Y)
    assert init.lens_seen[0, 11] == 1 and init.lens_seen[0, 14] == 2 / 3
    np.testing.assert_allclose(init.lens_seen[0, 16:20], 1 / 3)
    assert (init.lens_seen[:, 20:] == 0).all() and np.isnan(init.gap_fill[:, 20:]).all()
    np.testing.assert_array_equal(Y[:, :, :12], before[:, :, :12])  # never in a gap
    np.testing.assert_array_equal(Y[:, :, 20:], before[:, :, 20:])  # never saw the lens
    np.testing.assert_allclose(Y[2, :, 12:16], (before[0, :, 12:16] + before[1, :, 12:16]) / 2,
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(Y[1:, :, 16:20], np.broadcast_to(before[0, :, 16:20], (2, 32, 4)))
    assert (Y[:, :, :20] > 50).all()  # no dark sample left inside the lens's reach


def test_no_gaps_while_the_tissue_stands_still_or_without_a_lens():
    assert not lens_gaps.InitialGaps.wanted(_init([(0, 0)], np.zeros((4, 4), bool), still=0.4))
    assert not lens_gaps.InitialGaps.wanted(_init([(0, 0)], None))
    ms = _rigid_state((32, 40))
    assert lens_gaps.frame_gap(ms) is None  # no lens attached
    lens_gaps.attach(ms, np.zeros((32, 40), bool))
    ms.still_limit_px = 0.5
    assert lens_gaps.frame_gap(ms) is None


def test_frame_gap_follows_the_frames_correction():
    ms = _rigid_state((32, 40))
    outside = np.zeros((32, 40), bool)
    outside[:, 20:] = True
    lens_gaps.attach(ms, outside)
    ms.last[:] = (0.0, 5.0, 1.0)  # the frame was sampled 5 px to the right
    gap = lens_gaps.frame_gap(ms).reshape(32, 40) > lens_gaps.GAP_LEVEL
    expect = np.zeros((32, 40), bool)
    expect[:, 15:] = True
    np.testing.assert_array_equal(gap, expect)
