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


def test_pixel_major_local_corr_matches_frame_major():
    """The seeding's pixel-major moments equal the frame-major kernel's (same sums, same
    order), so the local images it recomputes are unchanged."""
    from online_cnmfe.model._kernels.summary import (
        local_corr_accumulate,
        local_corr_accumulate_pixel_major,
    )

    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 7, 9)).astype(np.float32)
    thr = (0.3 * rng.random((7, 9))).astype(np.float32)
    ref = [np.zeros((7, 9)), np.zeros((7, 9)), np.zeros((7, 9, 4))]
    local_corr_accumulate(X, np.zeros((7, 9), np.float32), thr, *ref)
    got = [np.zeros((7, 9)), np.zeros((7, 9)), np.zeros((7, 9, 4))]
    local_corr_accumulate_pixel_major(np.ascontiguousarray(X.transpose(1, 2, 0)), thr, *got)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


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
