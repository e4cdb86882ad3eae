"""Summary images (filter, noise, PNR, local correlation) against straightforward numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from online_cnmfe.model.initialization.summary_images import (
    center_psf_kernel,
    corr_pnr_images,
    correlation_image,
    filter_frames,
    noise_psd,
    remove_global_fluctuation,
    summary_images,
)
from tests.reference import local_correlation_ref, noise_psd_ref


@pytest.mark.parametrize("sigma", [1.0, 2.5, 3.25])
def test_center_psf_kernel_is_zero_mean_and_symmetric(sigma):
    k = center_psf_kernel(sigma)
    assert k.shape == (2 * int(2 * sigma) + 1,) * 2 and k.dtype == np.float32
    assert abs(float(k.sum())) < 1e-5
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)
    assert k[k.shape[0] // 2, k.shape[1] // 2] == k.max() > 0
    assert k[0, 0] == 0  # zero outside the support disk


def test_center_psf_kernel_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        center_psf_kernel(0.0)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 5), h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 99))
def test_filter_frames_matches_scipy_correlate_with_edge_borders(t, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, h, w)).astype(np.float32)
    k = center_psf_kernel(1.5)
    out = filter_frames(x, k)
    ref = np.stack([scipy.ndimage.correlate(f.astype(np.float64), k, mode="nearest") for f in x])
    np.testing.assert_allclose(out, ref, atol=1e-4, err_msg=f"seed {seed}")


def test_noise_psd_matches_reference_and_recovers_white_noise():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((400, 6)).astype(np.float32) * np.array([1, 2, 3, 4, 5, 6])
    sn = noise_psd(y)
    for j in range(6):
        assert sn[j] == pytest.approx(noise_psd_ref(y[:, j]), rel=1e-4)
    np.testing.assert_allclose(sn, [1, 2, 3, 4, 5, 6], rtol=0.15)


def test_correlation_image_matches_reference():
    rng = np.random.default_rng(1)
    T, H, W = 60, 7, 9
    X = rng.standard_normal((T, H, W)).astype(np.float32)
    X[:, 2:5, 3:6] += rng.standard_normal((T, 1, 1)).astype(np.float32) * 3  # a correlated patch
    X[:, 0, 0] = 1.0  # a constant pixel
    center = X.mean(axis=0)
    thr = np.full((H, W), -0.3, np.float32)
    out = correlation_image(X, center, thr)
    np.testing.assert_allclose(out, local_correlation_ref(X, thr), atol=1e-5)
    assert out[3, 4] > 0.8 and abs(out[6, 0]) < 0.3


def test_pnr_and_corr_find_a_transient_and_stay_finite_on_constant_input():
    rng = np.random.default_rng(2)
    T, H, W = 200, 24, 24
    frames = rng.standard_normal((T, H, W)).astype(np.float32) + 100
    yy, xx = np.mgrid[:H, :W]
    cell = np.exp(-((yy - 12) ** 2 + (xx - 12) ** 2) / (2 * 2.0**2)).astype(np.float32)
    trace = np.zeros(T, np.float32)
    trace[50:70] = 20 * 0.8 ** np.arange(20)
    trace[130:150] = 15 * 0.8 ** np.arange(20)
    frames += trace[:, None, None] * cell
    filtered, im = summary_images(frames, 2.0)
    assert filtered.shape == frames.shape and filtered.dtype == np.float32
    assert np.unravel_index(np.argmax(im.pnr * im.corr), (H, W)) == (12, 12)
    assert im.pnr[12, 12] > 5 * np.median(im.pnr)
    for name, img in im.display().items():
        assert img.shape == (H, W) and np.isfinite(img).all(), name
    flat = np.full((30, 8, 8), 5.0, np.float32)
    _, sn, pnr, corr = corr_pnr_images(flat)
    assert np.isfinite(pnr).all() and np.isfinite(corr).all() and np.all(corr == 0)


def test_remove_global_fluctuation_leaves_no_trace_of_the_gain():
    rng = np.random.default_rng(3)
    T, H, W = 200, 30, 30
    texture = 100 + 100 * rng.random((H, W)).astype(np.float32)
    gain = 1 + 0.2 * np.sin(np.arange(T) / 7.0)
    frames = (texture[None] * gain[:, None, None]).astype(np.float32)
    frames += rng.standard_normal((T, H, W)).astype(np.float32)
    filt = filter_frames(frames, center_psf_kernel(1.5))
    g = gain - gain.mean()

    def max_abs_corr(f):
        fc = (f - f.mean(axis=0)).reshape(T, -1)
        return np.max(np.abs(g @ fc) / (np.linalg.norm(g) * np.linalg.norm(fc, axis=0)))

    assert max_abs_corr(filt) > 0.9
    remove_global_fluctuation(filt, frames)
    assert max_abs_corr(filt) < 0.05


def test_edge_pad_into_matches_np_pad_and_filter_is_unchanged():
    from online_cnmfe.model.initialization.summary_images import (
        _edge_pad_into,
        center_psf_kernel,
        filter_frames,
    )

    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 9, 14)).astype(np.float32)
    for r in (0, 1, 4):
        out = np.zeros((3, 9 + 2 * r + 3, 14 + 2 * r + 5), np.float32)
        _edge_pad_into(x, r, out)
        ref = np.zeros_like(out)
        ref[:, : 9 + 2 * r, : 14 + 2 * r] = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge")
        np.testing.assert_array_equal(out, ref)
    # the filter against a direct edge-replicated correlation (uint16 frames: cast per chunk)
    frames = (rng.random((70, 20, 23)) * 1000).astype(np.uint16)
    k = center_psf_kernel(1.5)
    got = filter_frames(frames, k)
    kr = k.shape[0] // 2
    pad = np.pad(frames.astype(np.float64), ((0, 0), (kr, kr), (kr, kr)), mode="edge")
    ref = np.zeros((70, 20, 23))
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            ref += k[i, j] * pad[:, i : i + 20, j : j + 23]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-2)
