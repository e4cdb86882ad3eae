"""Greedy corr x PNR seeding on a tiny movie with known neurons."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.initialization.seeding import SeedResult, extract_ac, seed_neurons
from online_cnmfe.model.initialization.summary_images import center_psf_kernel, summary_images
from tests.online_cnmfe.init_fixture import CENTRES, DIAMETER, tiny_movie


def _seed(frames, **kw):
    sigma = DIAMETER / 4
    filtered, im = summary_images(frames, sigma)
    filtered -= im.filtered_mean[None]
    args = dict(
        gsiz=int(DIAMETER),
        threshold=6.4,
        kernel=center_psf_kernel(sigma),
        max_neurons=100,
    )
    args.update(kw)
    return seed_neurons(filtered, frames.copy(), im.noise, im.corr.copy(), im.pnr.copy(), **args)


def test_seeds_land_on_every_neuron_once():
    frames, A, C = tiny_movie(T=300, pnr=(10, 15))
    res = _seed(frames)
    assert res.traces.shape == (res.n_components, 300)
    d = np.hypot(*(res.centers[:, None, :] - np.array(CENTRES)[None]).transpose(2, 0, 1))
    assert np.all(d.min(axis=0) <= 2.5), d.min(axis=0)  # every neuron found
    assert res.n_components <= len(CENTRES) + 2
    dense = res.dense_footprints((64, 64))
    assert dense.shape == (4096, res.n_components) and np.all(dense >= 0)
    for k in range(res.n_components):
        j = int(np.argmin(d[k]))
        if d[k, j] <= 2.5:
            assert np.corrcoef(res.traces[k], C[j])[0, 1] > 0.8


def test_no_seeds_in_pure_noise_and_max_neurons_respected():
    rng = np.random.default_rng(0)
    noise = (100 + rng.standard_normal((200, 40, 40))).astype(np.float32)
    assert _seed(noise).n_components == 0
    frames, _, _ = tiny_movie(T=300, pnr=(10, 15))
    assert _seed(frames, max_neurons=3).n_components == 3


def test_extract_ac_rejects_broad_out_of_focus_source():
    rng = np.random.default_rng(1)
    T, h = 300, 21
    yy, xx = np.mgrid[:h, :h]
    trace = np.maximum(rng.standard_normal(T), 0) * 5
    kernel = center_psf_kernel(2.5)
    out = {}
    for name, sigma in (("neuron", 2.5), ("blob", 9.0)):
        prof = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / (2 * sigma**2))
        raw = trace[:, None, None] * prof + 0.2 * rng.standard_normal((T, h, h))
        from online_cnmfe.model.initialization.summary_images import filter_frames

        filt = filter_frames(raw.astype(np.float32), kernel)
        filt -= filt.mean(axis=0)
        fbox = filt.reshape(T, -1).T.copy()
        rbox = raw.reshape(T, -1).T.astype(np.float32).copy()
        r = (kernel * np.exp(-((np.mgrid[-5:6, -5:6] ** 2).sum(0)) / (2 * 2.5**2))).sum()
        ai, _ = extract_ac(fbox, rbox, 10 * h + 10, (h, h), 3, np.inf, 2.0 / r)
        out[name] = ai
    assert out["neuron"] is not None and out["blob"] is None
    a = out["neuron"].reshape(h, h)
    assert np.unravel_index(np.argmax(a), a.shape) == (10, 10)


def test_sparse_footprints_equal_the_dense_ones():
    """The boxes go straight into a csc matrix: the same matrix as via the dense array,
    including boxes cut by the frame border and a zero inside a box."""
    rng = np.random.default_rng(3)
    dims = (20, 30)
    boxes = []
    for r, c in [(0, 0), (10, 12), (19, 29), (5, 27)]:
        rs, cs = (
            slice(max(0, r - 3), min(dims[0], r + 4)),
            slice(max(0, c - 3), min(dims[1], c + 4)),
        )
        a = rng.random((rs.stop - rs.start, cs.stop - cs.start)).astype(np.float32)
        a[a < 0.3] = 0
        boxes.append((rs, cs, a))
    res = SeedResult(
        footprints=boxes, traces=np.zeros((4, 5), np.float32), centers=np.zeros((4, 2))
    )
    sp = res.sparse_footprints(dims)
    dense = res.dense_footprints(dims)
    assert sp.dtype == np.float32 and sp.has_sorted_indices
    np.testing.assert_array_equal(sp.toarray(), dense)
    ref = scipy.sparse.csc_array(dense)
    np.testing.assert_array_equal(sp.indices, ref.indices)
    np.testing.assert_array_equal(sp.indptr, ref.indptr)
    empty = SeedResult(footprints=[], traces=np.zeros((0, 5), np.float32), centers=np.zeros((0, 2)))
    assert empty.sparse_footprints(dims).shape == (600, 0)


@pytest.mark.parametrize("shape", [(7, 9), (1, 5), (4, 1), (1, 1)])
def test_pixel_major_local_corr_matches_frame_major(shape):
    """The seeding's pixel-major moments equal the frame-major kernel's to float64 rounding
    (the same sums, added in another order), box edges and one-pixel boxes included."""
    from online_cnmfe.model._kernels.summary import (
        local_corr_accumulate,
        local_corr_accumulate_pixel_major,
    )

    rng = np.random.default_rng(4)
    h, w = shape
    X = rng.standard_normal((50, h, w)).astype(np.float32)
    thr = (0.3 * rng.random((h, w))).astype(np.float32)
    ref = [np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w, 4))]
    local_corr_accumulate(X, np.zeros((h, w), np.float32), thr, *ref)
    got = [np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w, 4))]
    pm = np.ascontiguousarray(X.transpose(1, 2, 0))
    local_corr_accumulate_pixel_major(pm, thr, *got)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
        assert np.array_equal(a == 0, b == 0)  # no sum for a neighbour outside the box
    # a strided view (the seeding passes a sub-box of the movie) gives the same sums
    big = np.zeros((h + 2, w + 3, 50), np.float32)
    big[1 : h + 1, 2 : w + 2] = pm
    again = [np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w, 4))]
    local_corr_accumulate_pixel_major(big[1 : h + 1, 2 : w + 2], thr, *again)
    for a, b in zip(ref, again):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_seeding_leaves_its_frame_major_inputs_alone():
    frames, _, _ = tiny_movie(T=120, pnr=(10, 15))
    sigma = DIAMETER / 4
    filtered, im = summary_images(frames, sigma)
    filtered -= im.filtered_mean[None]
    f0, r0 = filtered.copy(), frames.copy()
    res = seed_neurons(
        filtered, frames, im.noise, im.corr.copy(), im.pnr.copy(), gsiz=int(DIAMETER),
        threshold=6.4, kernel=center_psf_kernel(sigma), max_neurons=100,
    )  # fmt: skip
    assert res.n_components > 0
    np.testing.assert_array_equal(filtered, f0)
    np.testing.assert_array_equal(frames, r0)


def test_column_median_equals_numpy():
    from online_cnmfe.model.initialization.seeding import _column_median

    rng = np.random.default_rng(8)
    for m in (1, 2, 11, 64, 65):
        x = rng.standard_normal((m, 37)).astype(np.float32)
        x[:, 3] = 1.5  # ties
        np.testing.assert_array_equal(_column_median(x), np.median(x, axis=0), err_msg=str(m))
        assert _column_median(x).dtype == np.float32


@pytest.mark.parametrize("H", [1, 15, 16, 17, 40])
def test_banded_local_corr_matches_serial_kernel(H):
    """The parallel banded moments (band edges, a last partial band, one row) equal the
    serial kernel's bit for bit, accumulated over two chunks of frames as correlation_image
    does."""
    from online_cnmfe.model._kernels.summary import (
        local_corr_accumulate,
        local_corr_accumulate_bands,
    )

    rng = np.random.default_rng(H)
    X = rng.standard_normal((30, H, 11)).astype(np.float32)
    center = (0.1 * rng.standard_normal((H, 11))).astype(np.float32)
    thr = (0.3 * rng.random((H, 11))).astype(np.float32)
    ref = [np.zeros((H, 11)), np.zeros((H, 11)), np.zeros((H, 11, 4))]
    got = [np.zeros((H, 11)), np.zeros((H, 11)), np.zeros((H, 11, 4))]
    for s in (slice(0, 17), slice(17, 30)):
        local_corr_accumulate(X[s], center, thr, *ref)
        local_corr_accumulate_bands(X[s], center, thr, *got)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(ref[2]) > 0 or H == 1


def _movie_boxes(seed=0):
    """The tiny movie's filtered (mean-centred) and raw movies, pixel-major, and its images."""
    from online_cnmfe.model.initialization.layout import pixel_major, pixel_major_centred

    frames, _, _ = tiny_movie(T=200, pnr=(6, 15), seed=seed)
    filtered, im = summary_images(frames, DIAMETER / 4)
    return pixel_major_centred(filtered, im.filtered_mean), pixel_major(frames), im


@pytest.mark.parametrize("max_kappa", [np.inf, 8.0])
def test_compiled_extract_matches_extract_ac(max_kappa):
    """The compiled extraction accepts and rejects the same seeds as the NumPy one (at every
    neuron, on every 3rd pixel, at the frame's corners) with the same footprint and trace.
    Both are compared with the NumPy version in float64: the compiled one sums in float64,
    the NumPy one in float32 products (the raw regression's cancellation costs it up to 1 %
    of the peak, and a pixel at the 10 % cut may fall either side)."""
    from online_cnmfe.model._kernels.seeding import extract_footprint

    fpm, rpm, _ = _movie_boxes()
    H, W, T = fpm.shape
    g = int(DIAMETER)
    points = list(CENTRES) + [(r, c) for r in range(0, H, 3) for c in range(1, W, 3)]
    points += [(0, 0), (H - 1, W - 1), (0, W - 1)]
    n_accepted = 0
    for r, c in points:
        r0, r1, c0, c1 = max(0, r - g), min(H, r + g + 1), max(0, c - g), min(W, c + g + 1)
        h, w = r1 - r0, c1 - c0
        ctr = (r - r0) * w + (c - c0)
        fbox, rbox = fpm[r0:r1, c0:c1].reshape(-1, T), rpm[r0:r1, c0:c1].reshape(-1, T)
        ref32, _ = extract_ac(fbox, rbox, ctr, (h, w), 3, 40.0, max_kappa)
        ref_a, ref_c = extract_ac(
            fbox.astype(np.float64), rbox.astype(np.float64), ctr, (h, w), 3, 40.0, max_kappa
        )
        ai, ci = np.empty((2 * g + 1) ** 2), np.empty(T, np.float32)
        ok = extract_footprint(fpm, rpm, r0, r1, c0, c1, ctr, 3, 40.0, max_kappa, ai, ci)
        assert ok == (ref_a is not None) == (ref32 is not None), (r, c)
        if ok:
            n_accepted += 1
            np.testing.assert_allclose(ci, ref_c, rtol=1e-5, atol=1e-6 * np.abs(ref_c).max())
            scale = float(ref_a.max())
            np.testing.assert_allclose(ai[: h * w], ref_a, rtol=0, atol=1e-4 * scale)
            assert np.array_equal(ai[: h * w] > 0, ref_a > 0), (r, c)
    assert n_accepted >= len(CENTRES)


def test_compiled_extract_rejects_broad_out_of_focus_source():
    from online_cnmfe.model._kernels.seeding import extract_footprint
    from online_cnmfe.model.initialization.summary_images import filter_frames

    rng = np.random.default_rng(1)
    T, h = 300, 21
    yy, xx = np.mgrid[:h, :h]
    trace = np.maximum(rng.standard_normal(T), 0) * 5
    kernel = center_psf_kernel(2.5)
    r = (kernel * np.exp(-((np.mgrid[-5:6, -5:6] ** 2).sum(0)) / (2 * 2.5**2))).sum()
    out = {}
    for name, sigma in (("neuron", 2.5), ("blob", 9.0)):
        prof = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / (2 * sigma**2))
        raw = (trace[:, None, None] * prof + 0.2 * rng.standard_normal((T, h, h))).astype(
            np.float32
        )
        filt = filter_frames(raw, kernel)
        filt -= filt.mean(axis=0)
        fpm = np.ascontiguousarray(filt.transpose(1, 2, 0))
        rpm = np.ascontiguousarray(raw.transpose(1, 2, 0))
        ai, ci = np.empty(h * h), np.empty(T, np.float32)
        ok = extract_footprint(fpm, rpm, 0, h, 0, h, 10 * h + 10, 3, np.inf, 2.0 / r, ai, ci)
        out[name] = ai.reshape(h, h) if ok else None
    assert out["neuron"] is not None and out["blob"] is None
    assert np.unravel_index(np.argmax(out["neuron"]), (h, h)) == (10, 10)


@pytest.mark.parametrize("k", [11, 12, 64, 65, 127])
def test_background_median_equals_numpy(k):
    """The rank-based median of the background pixels equals np.median of the same rows
    (every ``n // 64``-th of the pixels correlated under 0.3), ties included; 10 or fewer
    such pixels give no background column."""
    from online_cnmfe.model._kernels.seeding import MAX_CORR_BG, _background_median

    rng = np.random.default_rng(k)
    h, w, T = 12, 13, 40
    raw = rng.standard_normal((h, w, T)).astype(np.float32).round(1)  # many ties
    corr = rng.uniform(-1, 1, h * w)
    bg = np.flatnonzero(corr < MAX_CORR_BG)
    corr[bg[k:]] = 0.5  # exactly k background pixels
    out = np.full(T, np.nan, np.float32)
    ok = _background_median(raw, 0, 0, w, corr, h * w, out)
    idx = np.flatnonzero(corr < MAX_CORR_BG)
    assert ok == (idx.size > 10)
    idx = idx[:: max(1, idx.size // 64)]
    ref = np.median(raw.reshape(-1, T)[idx], axis=0)
    np.testing.assert_array_equal(out, ref)
    corr[:] = 0.5
    corr[:10] = 0.0
    assert not _background_median(raw, 0, 0, w, corr, h * w, out)


FLOAT32_ORDER_TOL = 1e-2  # of the peak: see test_compiled_search_matches_numpy_search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_search_matches_numpy_search(seed):
    """The compiled greedy search finds the same seeds in the same order as the NumPy search
    it replaced (tests/reference.py), with the same boxes, and footprints, traces, movies and
    PNR left behind within 1e-2 of their peaks: float32 products and sums whose order is the
    libraries' (it changes between NumPy/BLAS releases and CPUs), each neuron's difference
    carried into the data of the next ones (up to 3.9e-3 of a footprint's peak with NumPy
    2.4.6 and numba 0.68.1; the test had 1e-3 and passed with earlier releases)."""
    from online_cnmfe.model.initialization.seeding import seed_neurons_pixel_major
    from tests.reference import seed_search_ref

    fpm, rpm, im = _movie_boxes(seed)
    kw = dict(
        gsiz=int(DIAMETER), threshold=5.0, kernel=center_psf_kernel(DIAMETER / 4),
        max_neurons=100, max_halfmax_area=60.0, max_kappa=12.0,
    )  # fmt: skip
    ins_ref = [fpm.copy(), rpm.copy(), im.noise, im.corr.copy(), im.pnr.copy()]
    ins_new = [fpm.copy(), rpm.copy(), im.noise, im.corr.copy(), im.pnr.copy()]
    foot, traces, centers = seed_search_ref(*ins_ref, **kw)
    calls = []
    res = seed_neurons_pixel_major(*ins_new, progress=calls.append, **kw)
    assert len(foot) >= 4
    np.testing.assert_array_equal(res.centers, centers)
    assert calls and calls[-1] == res.n_components
    for (rs, cs, a), (rs2, cs2, a2) in zip(foot, res.footprints):
        assert (rs, cs) == (rs2, cs2)
        np.testing.assert_allclose(a2, a, rtol=0, atol=FLOAT32_ORDER_TOL * float(a.max()))
    tol = FLOAT32_ORDER_TOL
    np.testing.assert_allclose(res.traces, traces, rtol=0, atol=tol * np.abs(traces).max())
    for name, a, b in zip(("filtered", "raw"), ins_ref[:2], ins_new[:2]):
        np.testing.assert_allclose(b, a, rtol=0, atol=tol * np.abs(a).max(), err_msg=name)
    pnr_peak = float(ins_ref[4].max())
    np.testing.assert_allclose(ins_new[4], ins_ref[4], rtol=0, atol=tol * pnr_peak)


def test_compiled_search_rejects_wrong_inputs():
    from online_cnmfe.model.initialization.seeding import seed_neurons_pixel_major

    fpm, rpm, im = _movie_boxes()
    kw = dict(gsiz=int(DIAMETER), threshold=5.0, kernel=center_psf_kernel(2.5), max_neurons=5)
    with pytest.raises(ValueError, match="raw must be a C-contiguous float32"):
        seed_neurons_pixel_major(
            fpm, rpm.astype(np.float64), im.noise, im.corr.copy(), im.pnr.copy(), **kw
        )
    with pytest.raises(ValueError, match="filtered must be a C-contiguous float32"):
        seed_neurons_pixel_major(
            np.asfortranarray(fpm), rpm, im.noise, im.corr.copy(), im.pnr.copy(), **kw
        )
