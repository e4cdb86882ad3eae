"""Registration and warp kernels against slow, obvious numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model._kernels import registration as kr
from online_cnmfe.model._kernels import warp as kw
from online_cnmfe.model.motion import piecewise
from online_cnmfe.model.motion.state import box_radii, cosine_taper, inverse_envelope

NO_CORRECTION = np.ones((1, 1), np.float32)


def ref_box_point_symmetric(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Moving mean of width 2r+1 with x[-k] = 2 x[0] - x[k] beyond each end (numpy)."""
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    n = x.shape[-1]
    idx = np.arange(-r, n + r)
    inside = np.clip(idx, 0, n - 1)
    beyond = np.where(idx >= n, np.maximum(2 * n - 2 - idx, 0), idx)
    mirror = np.where(idx < 0, np.minimum(-idx, n - 1), beyond)
    ext = x[..., mirror]
    edge = x[..., inside]
    ext = np.where((idx < 0) | (idx >= n), 2 * edge - ext, ext)
    out = np.stack([ext[..., i : i + 2 * r + 1].mean(-1) for i in range(n)], -1)
    return np.moveaxis(out, -1, axis)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 17),
    w=st.integers(1, 17),
    radii=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_gauss_blur_is_repeated_point_symmetric_boxes(h, w, radii, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((h, w)) * 10 + np.arange(w) * 3.0).astype(np.float32)
    ref = x.astype(np.float64)
    for r in radii:
        ref = ref_box_point_symmetric(ref, r, 1)
    for r in radii:
        ref = ref_box_point_symmetric(ref, r, 0)
    out = np.full((h, w), np.nan, np.float32)
    x_in = x.copy()
    kr.gauss_blur(x, np.array(radii, np.int64), np.zeros_like(x), np.zeros(w), out)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(x, x_in)  # input untouched


def test_linear_gradient_has_no_edge_response():
    """A smooth background's gradient is continued past the edge, so the band-pass is 0."""
    rows, cols = np.mgrid[0:20, 0:30]
    x = (100 + 3.0 * rows - 2.0 * cols).astype(np.float32)
    out = np.zeros_like(x)
    kr.gauss_blur(x, np.array([4, 4, 5], np.int64), np.zeros_like(x), np.zeros(30), out)
    np.testing.assert_allclose(out, x, atol=1e-3)


def test_box_radii_approximate_the_gaussian_variance():
    for sigma in (0.8, 1.6, 3.0, 7.5):
        r = box_radii(sigma)
        variance = sum(((2 * k + 1) ** 2 - 1) / 12 for k in r)
        assert abs(np.sqrt(variance) - sigma) < 0.35 * sigma + 0.3, (sigma, r)
    assert not box_radii(0.2).any()


def test_bin_frame_is_the_block_mean(rng):
    y = rng.random((13, 11)).astype(np.float32)
    for ds in (1, 2, 3):
        out = np.zeros((13 // ds, 11 // ds), np.float32)
        kr.bin_frame(y.ravel(), 13, 11, ds, out)
        h, w = out.shape
        ref = y[: h * ds, : w * ds].reshape(h, ds, w, ds).mean((1, 3))
        np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_bandpass_taper_and_taper_shifted(rng):
    small, large = rng.random((6, 7)).astype(np.float32), rng.random((6, 7)).astype(np.float32)
    taper = rng.random((6, 7)).astype(np.float32)
    bp, xin = np.zeros((6, 7), np.float32), np.full((8, 9), 7.0, np.float32)
    n2 = kr.bandpass_taper(small, large, taper, bp, xin)
    np.testing.assert_allclose(bp, small - large, rtol=1e-6)
    np.testing.assert_allclose(xin[:6, :7], bp * taper, rtol=1e-6)
    assert (xin[6:] == 7).all() and (xin[:, 7:] == 7).all()  # padding left alone
    assert n2 == pytest.approx(float(((bp * taper) ** 2).sum()), rel=1e-5)
    n2 = kr.taper_shifted(bp, taper, 2, -1, xin)
    ref = np.zeros((6, 7), np.float32)
    ref[2:, :6] = bp[2:, :6] * taper[:4, 1:]  # taper[i - 2, j + 1]
    np.testing.assert_allclose(xin[:6, :7], ref, rtol=1e-6)
    assert n2 == pytest.approx(float((ref**2).sum()), rel=1e-5)


@pytest.mark.parametrize("centre", [(0.0, 0.0), (3.3, -2.7), (-5.45, 6.49), (7.0, 0.5)])
def test_peak_subpixel_finds_a_gaussian_peak(centre):
    """A Gaussian peak is fitted exactly by the log-parabola (circular indices)."""
    fh, fw = 40, 36
    r = np.fft.fftfreq(fh, 1 / fh)[:, None]
    c = np.fft.fftfreq(fw, 1 / fw)[None, :]
    cc = np.exp(-((r - centre[0]) ** 2 + (c - centre[1]) ** 2) / (2 * 1.7**2)).astype(np.float32)
    out = np.zeros(4)
    kr.peak_subpixel(cc, NO_CORRECTION, 0, 0, 9, 9, 0, 0, out)
    np.testing.assert_allclose(out[:2], centre, atol=2e-3)
    assert out[3] == 0.0
    kr.peak_subpixel(cc, NO_CORRECTION, 0, 0, 2, 2, 0, 0, out)  # window too small: on its edge
    assert out[3] == 1.0 or np.abs(centre).max() < 2


def test_inverse_envelope_undoes_the_taper_overlap():
    taper = np.outer(cosine_taper(20, 5), cosine_taper(24, 6)).astype(np.float32)
    inv = inverse_envelope(taper, (32, 36))
    pad = np.zeros((32, 36))
    pad[:20, :24] = taper
    for k in [(0, 0), (3, -2), (-4, 5)]:
        env = (np.roll(pad, (-k[0], -k[1]), (0, 1)) * pad).sum()
        assert inv[k] == pytest.approx((pad**2).sum() / env, rel=1e-4)


@pytest.mark.parametrize(
    "shift", [(0.0, 0.0), (2.25, -1.5), (-3.7, 4.1), (0.4, 0.0), (0.0, -30.5), (25.0, 40.2)]
)
def test_warp_rigid_matches_scipy_and_replicates_the_edge_outside(shift, rng):
    H, W = 17, 23
    src = rng.random((H, W)).astype(np.float32)
    out, valid = np.zeros(H * W, np.float32), np.zeros(H * W, np.uint8)
    n = kw.warp_rigid(src.ravel(), H, W, shift[0], shift[1], out, valid)
    # reference: sample at (r + dy, c + dx) = scipy's shift by -d, the edge replicated
    # ("nearest"); inside = the sample lies in the frame
    ref = ndi.shift(src.astype(np.float64), (-shift[0], -shift[1]), order=1, mode="nearest")
    rows, cols = np.mgrid[0:H, 0:W]
    inside = (
        (rows + shift[0] >= -0.5) & (rows + shift[0] <= H - 0.5)
        & (cols + shift[1] >= -0.5) & (cols + shift[1] <= W - 0.5)
    )  # fmt: skip
    out, valid = out.reshape(H, W), valid.reshape(H, W).astype(bool)
    np.testing.assert_array_equal(valid, inside)
    assert n == (~inside).sum()
    np.testing.assert_allclose(out, ref, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    dy=st.floats(-12, 12),
    dx=st.floats(-12, 12),
    seed=st.integers(0, 2**16),
)
def test_warp_rigid_on_any_shape_and_shift(h, w, dy, dx, seed):
    """The sliced fast path against scipy on tiny frames, shifts past every edge."""
    src = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    out, valid = np.full(h * w, np.nan, np.float32), np.full(h * w, 7, np.uint8)
    n = kw.warp_rigid(src.ravel(), h, w, dy, dx, out, valid)
    ref = ndi.shift(src.astype(np.float64), (-dy, -dx), order=1, mode="nearest")
    rows, cols = np.mgrid[0:h, 0:w]
    inside = (np.abs(rows + dy - (h - 1) / 2) <= h / 2) & (np.abs(cols + dx - (w - 1) / 2) <= w / 2)
    np.testing.assert_allclose(out.reshape(h, w), ref, atol=1e-5, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(valid.reshape(h, w), inside)
    assert n == (~inside).sum()


def test_warp_field_with_a_constant_field_is_the_rigid_warp(rng):
    H, W = 19, 21
    src = rng.random(H * W).astype(np.float32)
    rigid, v1 = np.zeros(H * W, np.float32), np.zeros(H * W, np.uint8)
    field, v2 = np.zeros(H * W, np.float32), np.zeros(H * W, np.uint8)
    n1 = kw.warp_rigid(src, H, W, 1.3, -2.6, rigid, v1)
    row_i, row_w = np.minimum(np.arange(H) // 8, 2).astype(np.int64), np.full(H, 0.3, np.float32)
    col_i, col_w = np.minimum(np.arange(W) // 8, 2).astype(np.int64), np.full(W, 0.6, np.float32)
    fy, fx = np.full((3, 3), 1.3, np.float32), np.full((3, 3), -2.6, np.float32)
    line = np.zeros(3, np.float32), np.zeros(3, np.float32)
    n2 = kw.warp_field(src, H, W, row_i, row_w, col_i, col_w, fy, fx, field, v2, *line)
    assert n1 == n2
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_allclose(field, rigid, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 14),
    w=st.integers(2, 14),
    ny=st.integers(1, 3),
    nx=st.integers(1, 3),
    scale=st.floats(0.0, 6.0),
    seed=st.integers(0, 2**16),
)
def test_warp_field_matches_scipy_on_any_field(h, w, ny, nx, scale, seed):
    """The interior fast path and the clamped edges against map_coordinates (order 1,
    nearest) at the positions the interpolated field gives (fields up to ~3 x scale px)."""
    rng = np.random.default_rng(seed)
    src = rng.random((h, w)).astype(np.float32)
    fy = (rng.standard_normal((ny, nx)) * scale).astype(np.float32)
    fx = (rng.standard_normal((ny, nx)) * scale).astype(np.float32)
    row_i = np.minimum(np.arange(h) * ny // h, max(ny - 2, 0)).astype(np.int64)
    col_i = np.minimum(np.arange(w) * nx // w, max(nx - 2, 0)).astype(np.int64)
    row_w = rng.random(h).astype(np.float32)
    col_w = rng.random(w).astype(np.float32)
    for j in range(nx):  # the maps come from ascending centres: weights ascend per run
        col_w[col_i == j] = np.sort(col_w[col_i == j])
    out, valid = np.full(h * w, np.nan, np.float32), np.full(h * w, 7, np.uint8)
    line = np.zeros(nx, np.float32), np.zeros(nx, np.float32)
    n = kw.warp_field(src.ravel(), h, w, row_i, row_w, col_i, col_w, fy, fx, out, valid, *line)
    i1, j1 = np.minimum(row_i + 1, ny - 1), np.minimum(col_i + 1, nx - 1)
    rows, cols = np.mgrid[0:h, 0:w]

    def field(f):  # rows first (per patch column), then columns, as the kernel does
        f = f.astype(np.float64)
        line = f[row_i] + row_w[:, None] * (f[i1] - f[row_i])  # (h, nx)
        return line[:, col_i] + col_w[None, :] * (line[:, j1] - line[:, col_i])

    py, px = rows + field(fy), cols + field(fx)
    ref = ndi.map_coordinates(src.astype(np.float64), [np.clip(py, 0, h - 1),
                              np.clip(px, 0, w - 1)], order=1, mode="nearest")  # fmt: skip
    inside = (py >= -0.5) & (py <= h - 0.5) & (px >= -0.5) & (px <= w - 0.5)
    np.testing.assert_allclose(out.reshape(h, w), ref, atol=1e-4, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(valid.reshape(h, w).astype(bool), inside)
    assert n == (~inside).sum()


def test_warp_field_interpolates_the_patch_centres():
    """Row r between centres 0 and 1 (weight w) moves by (1 - w) f0 + w f1."""
    H, W = 10, 4
    src = np.tile(np.arange(W, dtype=np.float32), H)  # value = column
    fy = np.zeros((2, 1), np.float32)
    fx = np.array([[0.0], [1.0]], np.float32)  # top centre still, bottom centre 1 px right
    row_i = np.zeros(H, np.int64)
    row_w = np.linspace(0, 1, H).astype(np.float32)
    out, valid = np.zeros(H * W, np.float32), np.zeros(H * W, np.uint8)
    kw.warp_field(src, H, W, row_i, row_w, np.zeros(W, np.int64), np.zeros(W, np.float32), fy,
                  fx, out, valid, np.zeros(1, np.float32),
                  np.zeros(1, np.float32))  # fmt: skip
    out = out.reshape(H, W)
    np.testing.assert_allclose(out[:, 1], 1 + row_w, atol=1e-6)  # column 1 samples 1 + shift


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), size=st.integers(4, 9), seed=st.integers(0, 2**16))
def test_extract_patches_and_offsets(n, size, seed):
    rng = np.random.default_rng(seed)
    h = w = size * n
    bp = rng.random((h, w)).astype(np.float32)
    starts = np.arange(0, h - size + 1, size, dtype=np.int64)
    taper = rng.random((size, size)).astype(np.float32)
    P = len(starts) ** 2
    out = np.zeros((P, size + 2, size + 2), np.float32)
    norms = np.zeros(P)
    off_r, off_c = np.zeros(len(starts), np.int64), np.zeros(len(starts), np.int64)
    kr.extract_patches(bp, starts, starts, 1, -1, taper, out, norms, off_r, off_c)
    for i, r0 in enumerate(starts):
        for j, c0 in enumerate(starts):
            a = min(max(r0 + 1, 0), h - size)
            b = min(max(c0 - 1, 0), w - size)
            assert (off_r[i], off_c[j]) == (a - r0, b - c0)
            ref = bp[a : a + size, b : b + size] * taper
            np.testing.assert_allclose(out[i * len(starts) + j, :size, :size], ref, rtol=1e-6)
            assert norms[i * len(starts) + j] == pytest.approx(float((ref**2).sum()), rel=1e-5)


def test_cross_power_blend_and_mask(rng):
    X = (rng.random(9) + 1j * rng.random(9)).astype(np.complex64)
    T = (rng.random(9) + 1j * rng.random(9)).astype(np.complex64)
    out = np.zeros(9, np.complex64)
    kr.cross_power(X, T, out)
    np.testing.assert_allclose(out, X * T, rtol=1e-6)
    tpl, x = np.ones(5, np.float32), np.full(5, 3.0, np.float32)
    kw.blend(tpl, x, np.array([1, 1, 0, 1, 1], np.uint8), 0.25)
    np.testing.assert_allclose(tpl, [1.5, 1.5, 1.0, 1.5, 1.5])  # not where shifted in


@pytest.mark.parametrize("band", [(0, 0, 0, 0), (2, 0, 0, 3), (0, 1, 4, 0), (9, 9, 9, 9)])
def test_zero_band_matches_slicing(rng, band):
    H, W = 7, 6
    values = rng.random(H * W).astype(np.float32)
    expect = values.reshape(H, W).copy()
    top, bottom, left, right = band
    expect[:top], expect[H - bottom :], expect[:, :left], expect[:, W - right :] = 0, 0, 0, 0
    kw.zero_band(values, H, W, *band)
    np.testing.assert_array_equal(values.reshape(H, W), expect)


def test_correlation_peak_is_the_content_displacement(rng):
    """irfft2(rfft2(x) conj(rfft2(T))) peaks at +d when x[n] = T[n - d] (the documented sign)."""
    T = np.zeros((32, 32), np.float32)
    T[10:13, 7:9] = rng.random((3, 2)) + 1
    x = np.roll(T, (3, -5), (0, 1))
    cc = scipy.fft.irfft2(scipy.fft.rfft2(x) * np.conj(scipy.fft.rfft2(T)), s=T.shape)
    out = np.zeros(4)
    kr.peak_subpixel(cc.astype(np.float32), NO_CORRECTION, 0, 0, 8, 8, 0, 0, out)
    assert (round(out[0]), round(out[1])) == (3, -5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warp_field_runs_match_the_pixelwise_path_on_a_frame_sized_field(seed):
    """On a frame wide enough for the vectorised runs (``warp.RUN`` columns sharing one
    integer sample offset, halved where the field crosses a pixel boundary), with the maps of
    ascending patch centres the motion stage builds, the result is what map_coordinates gives
    at the interpolated positions; the fields cross integer offsets inside many runs."""
    rng = np.random.default_rng(seed)
    H, W, ny, nx = 90, 260, 3, 4
    src = rng.random((H, W)).astype(np.float32)
    row_i, row_w = piecewise._interp_map(np.linspace(15.0, H - 16.0, ny), H)
    col_i, col_w = piecewise._interp_map(np.linspace(30.0, W - 31.0, nx), W)
    fy = (rng.normal(0, 2.0) + rng.normal(0, 0.8, (ny, nx))).astype(np.float32)
    fx = (rng.normal(0, 2.0) + rng.normal(0, 0.8, (ny, nx))).astype(np.float32)
    out, valid = np.full(H * W, np.nan, np.float32), np.full(H * W, 7, np.uint8)
    line = np.zeros(nx, np.float32), np.zeros(nx, np.float32)
    n = kw.warp_field(src.ravel(), H, W, row_i, row_w, col_i, col_w, fy, fx, out, valid, *line)
    i1, j1 = np.minimum(row_i + 1, ny - 1), np.minimum(col_i + 1, nx - 1)

    def field(f):
        f = f.astype(np.float64)
        line = f[row_i] + row_w[:, None] * (f[i1] - f[row_i])
        return line[:, col_i] + col_w[None, :] * (line[:, j1] - line[:, col_i])

    rows, cols = np.mgrid[0:H, 0:W]
    py, px = rows + field(fy), cols + field(fx)
    ref = ndi.map_coordinates(src.astype(np.float64), [np.clip(py, 0, H - 1),
                              np.clip(px, 0, W - 1)], order=1, mode="nearest")  # fmt: skip
    inside = (py >= -0.5) & (py <= H - 0.5) & (px >= -0.5) & (px <= W - 0.5)
    np.testing.assert_allclose(out.reshape(H, W), ref, atol=1e-5)
    np.testing.assert_array_equal(valid.reshape(H, W).astype(bool), inside)
    assert n == (~inside).sum()
    # the interior crosses pixel boundaries within runs (both paths are exercised)
    interior = (py > 1) & (py < H - 2) & (px > 1) & (px < W - 2)
    changes = np.diff(np.floor(px - cols), axis=1)[interior[:, 1:]] != 0
    assert 0 < changes.sum() < changes.size
