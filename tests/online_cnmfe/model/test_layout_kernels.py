"""The tiled transpose kernel against NumPy's transpose (bit-identical copies)."""

import numpy as np
import pytest

from online_cnmfe.model._kernels.layout import transpose_into
from online_cnmfe.model.initialization.layout import frame_major, pixel_major, transposed


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
