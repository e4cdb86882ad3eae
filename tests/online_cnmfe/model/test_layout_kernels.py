"""The tiled transpose kernels against NumPy's transpose and subtraction (bit-identical)."""

import numpy as np
import pytest

from online_cnmfe.model._kernels.layout import (
    residual_pair_into,
    transpose_centred_into,
    transpose_into,
)
from online_cnmfe.model.initialization.layout import (
    frame_major,
    pixel_major,
    pixel_major_centred,
    residual_pair,
    transposed,
)


@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (33, 31), (64, 64), (97, 300)])
def test_transpose_into_matches_numpy(shape):
    src = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.full(shape[::-1], np.nan, np.float32)
    transpose_into(src, out)
    np.testing.assert_array_equal(out, src.T)


def test_pixel_and_frame_major_round_trip():
    X = np.random.default_rng(1).standard_normal((7, 5, 6))
    P = pixel_major(X)
    assert P.shape == (5, 6, 7) and P.dtype == np.float32 and P.flags.c_contiguous
    np.testing.assert_array_equal(P, np.moveaxis(X.astype(np.float32), 0, -1))
    np.testing.assert_array_equal(frame_major(P, (5, 6)), X.astype(np.float32))
    np.testing.assert_array_equal(frame_major(P.reshape(30, 7), (5, 6)), X.astype(np.float32))


def test_transposed_rejects_other_dimensions():
    with pytest.raises(ValueError, match="2-D"):
        transposed(np.zeros((2, 3, 4)))


def _rand(shape, seed):
    # values of several magnitudes, so a subtraction done in float64 and rounded would differ
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (33, 31), (64, 64), (97, 300)])
def test_transpose_centred_into_matches_numpy(shape):
    src, center = _rand(shape, 2), _rand(shape[1], 3)
    out = np.full(shape[::-1], np.nan, np.float32)
    transpose_centred_into(src, center, out)
    np.testing.assert_array_equal(out, (src - center[None]).T)


@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (33, 31), (64, 64), (97, 300)])
def test_residual_pair_into_matches_numpy(shape):
    Y, Z, AC = _rand(shape, 4), _rand(shape, 5), _rand(shape, 6)
    first, second = (Y - AC).T, Z - AC
    src = (Y.copy(), Z.copy())
    out = np.full(shape[::-1], np.nan, np.float32)
    residual_pair_into(Y, Z, AC, out)
    np.testing.assert_array_equal(out, first)
    np.testing.assert_array_equal(AC, second)
    np.testing.assert_array_equal(Y, src[0])  # inputs other than AC left as they were
    np.testing.assert_array_equal(Z, src[1])


def test_pixel_major_centred_matches_the_two_steps():
    X, center = _rand((9, 5, 6), 7), _rand((5, 6), 8)
    P = pixel_major_centred(X, center)
    assert P.shape == (5, 6, 9) and P.flags.c_contiguous
    np.testing.assert_array_equal(P, pixel_major(X - center[None]))
    with pytest.raises(ValueError, match="float32"):
        pixel_major_centred(X.astype(np.float64), center)
    with pytest.raises(ValueError, match="centre"):
        pixel_major_centred(X, center[:4])


def test_residual_pair_matches_the_two_steps():
    Yt, Zt, AC = _rand((30, 7), 9), _rand((30, 7), 10), _rand((30, 7), 11)
    expected = frame_major(Yt - AC, (5, 6)), Zt - AC
    residual = residual_pair(Yt, Zt, AC, (5, 6))
    assert residual.shape == (7, 5, 6)
    np.testing.assert_array_equal(residual, expected[0])
    np.testing.assert_array_equal(AC, expected[1])
    with pytest.raises(ValueError, match="Zt must be"):
        residual_pair(Yt, Zt[:, :6].copy(), AC, (5, 6))
    with pytest.raises(ValueError, match="AC must be"):
        residual_pair(Yt, Zt, AC.astype(np.float64), (5, 6))
