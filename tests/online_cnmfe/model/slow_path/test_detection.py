"""Detection kernels against references, and detection on synthetic residuals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from online_cnmfe.model._kernels import detection as kdet
from tests import reference as ref


def test_box_mean_matches_scipy_uniform_filter_inside(rng):
    x = rng.standard_normal((30, 40)).astype(np.float32)
    out, tmp = np.empty_like(x), np.empty_like(x)
    kdet.box_mean(x, 3, tmp, out)
    expect = scipy.ndimage.uniform_filter(x.astype(np.float64), 7, mode="constant")
    np.testing.assert_allclose(out[3:-3, 3:-3], expect[3:-3, 3:-3], rtol=1e-4, atol=1e-5)
    # edges: the mean over the pixels that exist
    np.testing.assert_allclose(out[0, 0], x[:4, :4].mean(), rtol=1e-5)


def test_rank1_nmf_matches_reference_loop(rng):
    a_true = np.abs(rng.standard_normal(30))
    c_true = np.abs(rng.standard_normal(50))
    Y = (np.outer(c_true, a_true) + 0.1 * rng.standard_normal((50, 30))).astype(np.float32)
    a0 = np.abs(rng.standard_normal(30)).astype(np.float32)
    a, c = a0.copy(), np.zeros(50, np.float32)
    kdet.rank1_nmf(Y, a, c, 12)
    a_ref, c_ref = ref.rank1_nmf_ref(Y.astype(np.float64), a0, 12)
    np.testing.assert_allclose(a, a_ref, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(c, c_ref, rtol=1e-3, atol=1e-4)
    assert np.corrcoef(a, a_true)[0, 1] > 0.99


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 30, (60, 2))
    scores = rng.random(60)
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros(10, np.int64)
    n = kdet.nms_greedy(pts[:, 0].copy(), pts[:, 1].copy(), order, 5.0, 10, keep)
    assert keep[:n].tolist() == ref.nms_ref(pts, scores, 5.0, 10)


def test_detection_images_decaying_max_and_noise(rng):
    H = W = 12
    pos, neg = np.zeros((5, H, W), np.float32), np.zeros((5, H, W), np.float32)
    nvar = np.zeros((H, W), np.float32)
    z = rng.standard_normal((400, H, W)).astype(np.float32)
    for f in z:
        kdet.detection_images_update(f, pos, neg, nvar, 0.01, 0.01, 0.9, 2.0)
    assert abs(float(np.sqrt(nvar).mean()) - 1.0) < 0.1  # E[z^2 | z<0] = 1
    np.testing.assert_allclose(pos[4], np.maximum(z[-1], 0.9 * mx_prev(z[:-1])), rtol=1e-5)
    np.testing.assert_allclose(neg[4], np.maximum(-z[-1], 0.9 * mx_prev(-z[:-1])), rtol=1e-5)
    assert float(pos[4].max()) < z.max()  # the cumulative max has decayed


def test_detection_moments_match_a_reference_on_thresholded_values(rng):
    """m1, m2, mr, md are exponential moments of z zeroed below 2 sigma (and of -z likewise)."""
    H, W, a = 6, 7, 0.05
    z = rng.standard_normal((60, H, W)).astype(np.float32)
    pos, neg = np.zeros((5, H, W), np.float32), np.zeros((5, H, W), np.float32)
    nvar = np.ones((H, W), np.float32)
    ref_p, ref_n = np.zeros((4, H, W)), np.zeros((4, H, W))
    for f in z:
        for sgn, ref_st in ((1.0, ref_p), (-1.0, ref_n)):
            v = sgn * f.astype(np.float64)
            vt = np.where(v * v > 4.0 * nvar, np.maximum(v, 0), 0.0)
            ref_st[0] = (1 - a) * ref_st[0] + a * vt
            ref_st[1] = (1 - a) * ref_st[1] + a * vt * vt
            ref_st[2, :, :-1] = (1 - a) * ref_st[2, :, :-1] + a * vt[:, :-1] * vt[:, 1:]
            ref_st[3, :-1] = (1 - a) * ref_st[3, :-1] + a * vt[:-1] * vt[1:]
        kdet.detection_images_update(f, pos, neg, nvar, a, 0.0, 0.9, 2.0)
    np.testing.assert_allclose(pos[:4], ref_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(neg[:4], ref_n, rtol=1e-4, atol=1e-6)


def test_corr_pnr_image_matches_local_corr_times_pnr(rng):
    H, W = 8, 9
    st = np.abs(rng.standard_normal((5, H, W))).astype(np.float32)
    st[1] += st[0] ** 2 + 0.5  # a valid second moment
    nvar = (0.5 + rng.random((H, W))).astype(np.float32)
    out = np.empty((H, W), np.float32)
    kdet.corr_pnr_image(st, nvar, out)
    for i, j in ((0, 0), (3, 4), (7, 8)):
        corr = max(kdet.local_corr(st[0], st[1], st[2], st[3], i, j), 0.0)
        assert out[i, j] == pytest.approx(corr * st[4, i, j] / np.sqrt(nvar[i, j]), rel=1e-5)


def _candidates_reference(z, st, nvar, blocked, t, thr, cap):
    """Slow reference: v of every eligible pixel, 3 x 3 local maxima >= thr, best ``cap``."""
    H, W = z.shape
    v = np.full((H, W), -np.inf)
    for i in range(H):
        for j in range(W):
            mx, nv = st[4, i, j], nvar[i, j]
            if mx <= 0 or nv <= 0 or blocked[i, j] > t or z[i, j] > 0.7 * mx:
                continue
            v[i, j] = kdet.local_corr(st[0], st[1], st[2], st[3], i, j) * mx / np.sqrt(nv)
    found = []
    for i in range(H):
        for j in range(W):
            box = v[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            if v[i, j] >= thr and v[i, j] >= box.max():
                found.append((float(v[i, j]), i * W + j))
    found.sort(reverse=True)
    return found[:cap]


@pytest.mark.parametrize("cap", [4096, 5])
def test_detection_candidates_are_the_best_local_maxima_anywhere(rng, cap):
    """Local maxima of corr x PNR among eligible pixels; with more than the capacity, the
    best ones, also in the bottom rows (a raster-order cut kept the top rows only)."""
    H, W = 40, 30
    st = np.abs(rng.standard_normal((5, H, W))).astype(np.float32)
    st[1] += st[0] ** 2 + 0.5
    st[2:4] = np.abs(st[2:4])  # positive products: correlated neighbours, v often high
    st[4] *= 3.0
    st[4, 30:, :] *= 3.0  # the strongest blobs in the bottom rows
    nvar = (0.5 + rng.random((H, W))).astype(np.float32)
    z = (st[4] * rng.random((H, W)) * 0.9).astype(np.float32)  # some still rising
    blocked = np.where(rng.random((H, W)) < 0.1, 100, 0).astype(np.int64)
    thr = 0.5
    idx, score = np.zeros(cap, np.int64), np.zeros(cap, np.float32)
    v = np.empty((H, W), np.float32)
    n = kdet.detection_candidates(z, st, nvar, blocked, 50, thr, v, idx, score)
    want = _candidates_reference(z, st, nvar, blocked, 50, thr, cap)
    assert n == len(want) > 3
    order = np.argsort(-score[:n], kind="stable")
    np.testing.assert_array_equal(idx[:n][order], [k for _, k in want])
    np.testing.assert_allclose(score[:n][order], [s for s, _ in want], rtol=1e-5)
    if cap == 5:
        assert (idx[:n] // W >= 30).all()  # the best lie in the bottom rows


def mx_prev(z):
    mx = np.zeros(z.shape[1:], np.float32)
    for f in z:
        mx = np.maximum(f, np.float32(0.9) * mx)
    return mx


# ---- detection on synthetic residuals (slow path driven by the reference loop) --------------

from tests.online_cnmfe import slow_harness as h  # noqa: E402

N_INIT = 200


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _run_late(confirm_events, seed=1, T=700, promote=10.0, amp=6.0):
    m = h.make_movie(seed=seed, T=T, first=[0, 0, 0, 250], rate_hz=1.0, amp=amp)
    p = h.params_for(
        **{"detection.confirm_events": confirm_events, "detection.promote_event_snr": promote}
    )
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    return m, h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])


def _births(loop):
    return [(u.frame_index, u.new_footprints.toarray()) for u in loop.updates
            if u.new_footprints.shape[1]]  # fmt: skip


@pytest.mark.parametrize("confirm", [2, 3])
def test_late_neuron_is_promoted_once_after_confirmation(confirm):
    m, loop = _run_late(confirm, promote=1e9)
    births = _births(loop)
    assert len(births) == 1, [b[0] for b in births]
    frame, fp = births[0]
    assert fp.shape[1] == 1 and _cos(fp[:, 0], m.A[:, 3]) > 0.7
    spikes = np.flatnonzero(np.diff(m.C[3]) > 2) + 1
    # at least `confirm` separate transients happened before promotion
    sep = int(np.ceil(20 * 0.5))
    distinct = [s for i, s in enumerate(spikes) if i == 0 or s - spikes[i - 1] >= sep]
    assert sum(s <= frame for s in distinct) >= confirm
    # tracked afterwards: final footprints match the 4 truths one-to-one
    sim = np.array([[_cos(a, b) for b in m.A.T] for a in loop.A.T])
    assert loop.A.shape[1] == 4 and sorted(sim.argmax(1).tolist()) == [0, 1, 2, 3]
    assert sim.max(1).min() > 0.8


def test_confirmation_delays_promotion():
    f2 = _births(_run_late(2, promote=1e9)[1])[0][0]
    f3 = _births(_run_late(3, promote=1e9)[1])[0][0]
    assert f3 > f2


def test_one_strong_transient_promotes_at_once():
    # 3 events needed, unless one reaches promote_event_snr (10); amplitude 10 makes the first
    # transient clear (at the harness's default 6 the first ones are ~1.8 sigma per pixel and
    # it takes several to be seen at all)
    m, loop = _run_late(3, amp=10.0)
    frame = _births(loop)[0][0]
    spikes = np.flatnonzero(np.diff(m.C[3]) > 2) + 1
    assert frame - spikes[0] <= 20  # within 1 s of its first transient
    m, loop = _run_late(3, promote=1e9, amp=10.0)
    assert _births(loop)[0][0] - spikes[0] > 20


def _blob_background(dims, sigma, seed):
    rng = np.random.default_rng(seed)
    H, W = dims
    rr, cc = np.mgrid[0:H, 0:W]

    def bg(T):
        amp = 3 + np.cumsum(rng.normal(0, 0.3, T))
        burst = np.zeros(T)
        for t0 in rng.integers(0, T - 20, T // 40):  # neuropil-like transients
            burst[t0 : t0 + 20] += 4 * np.exp(-np.arange(20) / 8)
        img = np.exp(-((rr - H / 2) ** 2 + (cc - W / 2) ** 2) / (2 * sigma**2)).ravel()
        return np.outer(amp + burst, img)

    return bg


@pytest.mark.parametrize("sigma", [None, 7.0, 4.0])
def test_noise_and_out_of_focus_blobs_promote_nothing(sigma):
    dims = (48, 48)
    bg = None if sigma is None else _blob_background(dims, sigma, 5)
    m = h.make_movie(seed=2, T=700, centres=((10, 10), (38, 38)), background=bg)
    p = h.params_for()
    init = h.init_result(m, N_INIT)
    loop = h.MiniLoop(init, m.Y[:N_INIT], p)
    loop.apply_w = False  # keep the blob in the residual: the worst case for detection
    loop.run(m.Y[N_INIT:])
    assert _births(loop) == []
    assert loop.slow.work.total_births == 0


@pytest.mark.parametrize("average_s", [0.0, 0.1])
def test_detection_on_a_downsampled_grid_for_larger_neurons(average_s):
    # diameter 12 -> detection images on a 2x coarser grid; candidates map back to pixels.
    # With the search's time average (detection.search_average_s) more noise candidates of
    # this 64 x 64 movie reach the evaluation, and one (two z 5.8 noise events before the cell
    # fires) is born and later removed: the final model is checked, the births only without it
    m = h.make_movie(
        seed=1, dims=(64, 64), T=600, centres=((14, 14), (14, 48), (48, 14), (48, 48)),
        sigma=3.0, first=[0, 0, 0, 250], rate_hz=1.0, amp=8.0,
    )  # fmt: skip
    # footprints refreshed every 10 s (the newborn is refined ~6 times in the 300 frames left)
    p = h.params_for(
        **{
            "data.neuron_diameter_px": 12.0,
            "online.footprint_update_period_frames": 200,
            "detection.search_average_s": average_s,
        }
    )
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT], radius=4)
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    assert loop.slow.det.ds == 2
    births = [b for b in _births(loop) if _cos(b[1][:, 0], m.A[:, 3]) > 0.7]
    assert len(births) == 1
    if average_s == 0:
        assert len(_births(loop)) == 1
    assert loop.A.shape[1] == 4 and _cos(loop.A[:, 3], m.A[:, 3]) > 0.9  # refined by HALS
    first_spike = int(np.flatnonzero(m.C[3] > 0)[0])
    assert births[0][0] - first_spike <= 3 * 20  # within 3 s of its first activity


@pytest.mark.parametrize("shape,f", [((30, 40), 2), ((31, 37), 2), ((20, 22), 3)])
def test_block_mean_matches_reference(rng, shape, f):
    x = rng.standard_normal(shape).astype(np.float32)
    out = np.empty((-(-shape[0] // f), -(-shape[1] // f)), np.float32)
    kdet.block_mean(x, f, out)
    np.testing.assert_allclose(out, ref.downsample_mean_ref(x, f), rtol=1e-5, atol=1e-6)


# ---- the search's time average (detection.search_average_s) ----------------------------------

from online_cnmfe.model.null_threshold import peak_values  # noqa: E402
from online_cnmfe.model.slow_path import detection as det_mod  # noqa: E402
from online_cnmfe.params import DetectionParams  # noqa: E402


def test_search_average_is_the_exponential_mean_of_block_means(rng):
    p = h.params_for(**{"data.neuron_diameter_px": 12.0, "detection.search_average_s": 0.1})
    geo = det_mod.geometry(p)
    assert geo.ds == 2 and geo.average == pytest.approx(np.exp(-0.5))
    det = det_mod.make_detection_state((30, 41), 4, ds=geo.ds)
    frames = rng.standard_normal((6, 30, 41)).astype(np.float32)
    want = None
    for f in frames:
        det_mod.accumulate_residual(det, f, geo)
        small = ref.downsample_mean_ref(f, 2)
        want = small if want is None else geo.average * want + (1 - geo.average) * small
    np.testing.assert_allclose(det.r_avg, want, rtol=1e-5, atol=1e-6)
    assert det.n_avg == 6


def test_search_average_off_with_the_matched_filter_or_zero():
    assert det_mod.geometry(h.params_for(**{"detection.search_average_s": 0.0})).average == 0
    on = det_mod.geometry(h.params_for(**{"detection.matched_filter": "on"}))
    assert on.average == 0 and on.smooth > 0
    with pytest.raises(ValueError, match="search_average_s"):
        DetectionParams(search_average_s=-0.1)


def _false_peaks_on_noise(average_s, seed=3, T=400, dims=(128, 128)):
    """Feed white noise as the residual; after calibrating on the null, count the positive
    image's peaks above the threshold (each one a false candidate), per 256 x 256 snapshot."""
    rng = np.random.default_rng(seed)
    p = h.params_for(**{"detection.search_average_s": average_s})
    geo = det_mod.geometry(p)
    det = det_mod.make_detection_state(dims, 4, ds=geo.ds)
    counts, thresholds = [], []
    for t in range(T):
        r = rng.standard_normal(dims).astype(np.float32)
        if geo.average > 0:
            det_mod.accumulate_residual(det, r, geo)
        if t % 2:
            det_mod.observe_residual(det, r, geo)
        if t >= 100 and t % 20 == 0:
            det_mod.calibrate(det, geo, p, t)
            if np.isfinite(det.threshold):
                kdet.corr_pnr_image(det.pos, det.nvar, det.vimg)
                peaks = peak_values(det.vimg, det_mod.peak_window(geo, det.ds))
                counts.append((peaks >= det.threshold).sum())
                thresholds.append(det.threshold)
    scale = 256 * 256 / (dims[0] * dims[1])
    return float(np.mean(counts)) * scale, float(np.median(thresholds))


def test_search_average_threshold_is_calibrated_on_the_averaged_null():
    # the averaged statistic gets its threshold from its own null (the averaged sign-flipped
    # residual): on pure noise its false peaks stay as rare as the single frames' (the
    # calibration's own bias, ~4x its target on this small frame, is the same for both)
    single = [_false_peaks_on_noise(0.0, seed=s) for s in (3, 5)]
    avg = [_false_peaks_on_noise(0.1, seed=s) for s in (3, 5)]
    n_single, n_avg = np.mean([c for c, _ in single]), np.mean([c for c, _ in avg])
    assert n_single < 20 and n_avg < 2 * n_single, (n_single, n_avg)
    # both calibrate, on the same scale (PNR is relative to the averaged z's own noise)
    th_single, th_avg = np.mean([t for _, t in single]), np.mean([t for _, t in avg])
    assert 1.0 < th_single < 10 and abs(th_avg - th_single) < 0.25 * th_single


def _transient_margin(average_s, seed=7, dims=(96, 96), T=400, amp=0.7):
    """corr x PNR at a weak transient's centre over the calibrated threshold (its best frame),
    on white noise plus a cell (Gaussian, sigma d / 4) that fires once at frame 300 and
    decays with data.decay_time_s."""
    rng = np.random.default_rng(seed)
    p = h.params_for(**{"data.neuron_diameter_px": 12.0, "detection.search_average_s": average_s})
    geo = det_mod.geometry(p)
    det = det_mod.make_detection_state(dims, 4, ds=geo.ds)
    cell = h.gaussian_footprint(dims, (48, 48), 3.0, truncate=3.0).reshape(dims)
    cell /= cell.max()
    g = np.exp(-1 / (20.0 * 0.4))
    best = 0.0
    for t in range(T):
        r = rng.standard_normal(dims).astype(np.float32)
        if t >= 300:
            r += np.float32(amp * g ** (t - 300)) * cell.astype(np.float32)
        if geo.average > 0:
            det_mod.accumulate_residual(det, r, geo)
        if t % 2:
            det_mod.observe_residual(det, r, geo)
        if t == 290:
            det_mod.calibrate(det, geo, p, t)
        if t > 300 and t % 2:
            kdet.corr_pnr_image(det.pos, det.nvar, det.vimg)
            c = 48 // geo.ds
            best = max(best, float(det.vimg[c - 1 : c + 2, c - 1 : c + 2].max()))
    return best / det.threshold


def test_search_average_lifts_a_weak_transient_above_the_noise():
    # a transient of 0.7 sigma per pixel at its peak sits at the threshold on single frames
    # (0.9-1.2x over seeds); the time average over its rise lifts it ~2x above the threshold
    # calibrated on the averaged null
    single, averaged = _transient_margin(0.0), _transient_margin(0.1)
    assert averaged > 1.5 * single and averaged > 1.5, (single, averaged)
