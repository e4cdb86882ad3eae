"""Frames refused before they reach the model: NaN/inf, and values far outside the range the
model was initialised on (1e30 in a float frame used to ruin the traces for good)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from online_cnmfe import OnlineCNMFE
from online_cnmfe.model._kernels.frame_check import finite_range
from online_cnmfe.params import CNMFEParams
from tests.online_cnmfe.model_fixtures import make_movie, truth_init


def _reference(y: np.ndarray) -> tuple[float, float, int]:
    finite = y[np.isfinite(y)]
    if not finite.size:
        return math.inf, -math.inf, int(y.size)
    return float(finite.min()), float(finite.max()), int(y.size - finite.size)


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.integers(0, 300),
        elements=st.one_of(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
    )
)  # fmt: skip
def test_finite_range_matches_the_obvious_version(y):
    out = np.zeros(3)
    finite_range(y, out)
    assert tuple(out) == pytest.approx(_reference(y))


@pytest.fixture(scope="module")
def movie():
    return make_movie(n_frames=260, seed=7)


def _model(movie, **online) -> OnlineCNMFE:
    params = CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 8.0}, "detection": {"enabled": False}, "online": online}
    )
    m = OnlineCNMFE(params)
    m.initialize_from(truth_init(movie, 150), movie.frames[:150])
    return m


def test_limits_come_from_the_initialisation_frames(movie):
    m = _model(movie)
    lo, hi = float(movie.frames[:150].min()), float(movie.frames[:150].max())
    assert m.state.pixel_limits == pytest.approx((lo - 10 * (hi - lo), hi + 10 * (hi - lo)))
    assert _model(movie, max_pixel_excursion_ranges=0).state.pixel_limits == (-math.inf, math.inf)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(1e30, "outside the accepted"), (-1e12, "outside the accepted"), (np.inf, "NaN or inf")],
)
def test_a_huge_pixel_skips_the_frame_and_never_poisons_the_model(movie, value, reason):
    poisoned, clean = _model(movie), _model(movie)
    for frame in movie.frames[150:180]:
        poisoned.process_frame(frame)
        clean.process_frame(frame)
    bad = movie.frames[180].copy()
    bad[5, 7] = value
    result = poisoned.process_frame(bad)
    assert result.skipped and reason in result.skip_reason
    for frame in movie.frames[181:]:
        a, b = poisoned.process_frame(frame), clean.process_frame(frame)
        assert np.isfinite(a.C).all() and np.isfinite(a.C_raw).all()
        np.testing.assert_allclose(a.C_raw, b.C_raw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(poisoned.b0, clean.b0, rtol=1e-5)


def test_integer_frames_whose_type_fits_the_limits_skip_the_pass(movie):
    m = _model(movie, max_pixel_excursion_ranges=20.0)
    lo, hi = m.state.pixel_limits
    assert lo < 0 and hi > 255  # every uint8 value is accepted: no per-frame pass
    frame = np.clip(movie.frames[150], 0, 255).astype(np.uint8)
    m._ops.frame_stats[:] = -7.0
    assert not m.process_frame(frame).skipped
    assert (m._ops.frame_stats == -7.0).all()
    big = np.full(movie.frames[150].shape, 65535, np.uint16)  # a saturated 16-bit frame
    assert 65535 > hi and m.process_frame(big).skipped  # uint16 does not fit: checked


def test_screen_frames_leaves_out_nan_and_wild_frames(movie):
    from online_cnmfe.model.frame_screen import screen_frames

    frames = list(movie.frames[:40].copy())
    frames[3][0, 0] = np.nan
    frames[9] = frames[9] * 1e6
    frames[17][4, 4] = -1e30
    bad = screen_frames(frames, 10.0)
    assert sorted(bad) == [3, 9, 17]
    assert "NaN" in bad[3] and "outside" in bad[9] and "outside" in bad[17]
    assert sorted(screen_frames(frames, 0.0)) == [3]  # 0: only NaN/inf
