"""The per-frame motion stage and its initialisation on movies with known shifts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from online_cnmfe.model import motion
from online_cnmfe.model.motion import register, still
from online_cnmfe.params import CNMFEParams
from tests.online_cnmfe.model.motion.moving import moving_movie, walk

N_INIT = 60


def _params(**motion_values) -> CNMFEParams:
    return CNMFEParams.from_dict(
        {"data": {"neuron_diameter_px": 10.0}, "motion": {"max_shift_px": 12.0, **motion_values}}
    )


def _run(frames, params):
    """register_initial on the first N_INIT frames, then correct_frame on the rest."""
    init_frames = frames[:N_INIT].copy()
    minit = motion.register_initial(init_frames, params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    shifts, flags = [], []
    for y in frames[N_INIT:]:
        flags.append(motion.correct_frame(ms, np.ascontiguousarray(y.ravel())))
        shifts.append(ms.last[:2].copy())
    est = np.concatenate([minit.shifts, np.array(shifts)])
    return est, minit, ms, flags


def _rms(a):
    return float(np.sqrt((a**2).sum(1).mean()))


@pytest.mark.parametrize("mode", ["rigid", "piecewise"])
def test_shifts_follow_a_walk_with_jumps(mode):
    """Sub-pixel accuracy on a textured movie: the walk and 8-10 px jumps, sign +d."""
    rng = np.random.default_rng(1)
    truth = walk(rng, 160, 1.5, jumps=[(90, 110, 6.0, -4.0), (130, 140, -6.0, 3.0)])
    assert np.abs(truth - np.median(truth[:N_INIT], axis=0)).max() < 10  # within max_shift_px
    frames, _ = moving_movie(truth, seed=1)
    est, minit, ms, flags = _run(frames, _params(mode=mode))
    offset = np.median(est - truth, axis=0)  # the template sits at the median position
    err = est - truth - offset
    assert _rms(err) < 0.15, f"rms {_rms(err):.3f}"
    assert np.abs(err).max() < 0.6
    assert not any(flags)
    assert np.abs(offset + np.median(truth[:N_INIT], axis=0)).max() < 0.3  # anchor: median
    assert minit.quality.min() > minit.min_quality
    assert minit.still_limit_px == 0.0  # the walk is movement, not noise


def test_a_frame_beyond_max_shift_is_flagged_and_corrected_by_the_last_good_shift():
    truth = np.zeros((N_INIT + 6, 2))
    truth[N_INIT + 3] = (11.0, 9.0)  # 14.2 px > max_shift_px 12
    frames, _ = moving_movie(truth, seed=2)
    est, minit, ms, flags = _run(frames, _params())
    assert flags[3] is not None and flags[3].startswith("motion: shift 14.")
    assert "> max 12" in flags[3]
    assert np.abs(est[N_INIT + 3]).max() < 0.3  # held, not the failed measurement
    assert [f for i, f in enumerate(flags) if i != 3] == [None] * 5
    assert ms.n_flagged == 1


def test_a_frame_without_the_tissue_is_flagged_by_its_quality():
    truth = np.zeros((N_INIT + 4, 2))
    frames, _ = moving_movie(truth, seed=3)
    rng = np.random.default_rng(3)
    frames[N_INIT + 2] = frames[N_INIT + 2].mean() + rng.normal(0, 30, frames.shape[1:])  # glitch
    est, minit, ms, flags = _run(frames, _params())
    assert flags[2] is not None and flags[2].startswith("motion: registration quality")
    quality = float(flags[2].split()[3])
    assert quality < minit.min_quality < 0.9 * np.median(minit.quality)
    assert flags[:2] == [None, None] and flags[3] is None


def test_a_flagged_frame_does_not_update_the_template():
    frames, _ = moving_movie(np.zeros((N_INIT + 2, 2)), seed=4)
    params = _params(min_quality=0.999)  # every frame fails
    init_frames = frames[:N_INIT].copy()
    with pytest.raises(Exception, match="all 60 initialisation frames failed"):
        motion.register_initial(init_frames, params)
    params = _params()
    minit = motion.register_initial(frames[:N_INIT].copy(), params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    ms.min_quality = 0.999
    before = ms.template.copy()
    assert motion.correct_frame(ms, frames[N_INIT].ravel().copy()) is not None
    np.testing.assert_array_equal(ms.template, before)
    ms.min_quality = -1.0
    for _ in range(register.TEMPLATE_EVERY):  # every TEMPLATE_EVERY-th good frame updates it
        assert motion.correct_frame(ms, frames[N_INIT].ravel().copy()) is None
    assert not np.array_equal(ms.template, before)


def test_pixels_shifted_in_replicate_the_edge_and_are_masked():
    truth = np.zeros((N_INIT + 1, 2))
    truth[-1] = (4.0, -3.0)
    frames, _ = moving_movie(truth, seed=5)
    params = _params()
    minit = motion.register_initial(frames[:N_INIT].copy(), params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    motion.correct_frame(ms, frames[-1].ravel().copy())
    H, W = frames.shape[1:]
    reg, valid = ms.registered.reshape(H, W), ms.valid.reshape(H, W).astype(bool)
    # content moved down 4, left 3: the bottom 4 rows and the left 3 columns have no data
    assert not valid[-3:].any() and not valid[:, :2].any() and valid[:-5, 4:].all()
    # replicated edge: the rows shifted in repeat the frame's last row (same columns)
    np.testing.assert_array_equal(reg[-3, 4:], reg[-1, 4:])
    np.testing.assert_array_equal(reg[:-5, 0], reg[:-5, 1])
    ring = np.ones((3, H * W), np.float32)  # the residual buffer: the band is masked in all
    motion.mask_residual(ms, ring, 1)
    top, bottom, left, right = ms.band
    assert bottom >= 4 and left >= 3 and max(top, right) <= 1  # (init shifts ~0)
    zero = ring.reshape(3, H, W) == 0
    assert zero[:, ~valid].all()  # every pixel shifted in, in every slot
    expect = np.zeros((H, W), bool)
    expect[:top], expect[H - bottom :], expect[:, :left], expect[:, W - right :] = 1, 1, 1, 1
    np.testing.assert_array_equal(zero, np.broadcast_to(expect, zero.shape))

    # the registered interior matches the still frame (but for noise and the static vignetting)
    def fine(x):  # the texture (vessels, cells) without the smooth background
        return (x - ndi.gaussian_filter(x, 4))[10:-10, 10:-10].ravel()

    moved = np.corrcoef(fine(frames[-1]), fine(frames[0]))[0, 1]
    corrected = np.corrcoef(fine(reg), fine(frames[0]))[0, 1]
    assert corrected > 0.7 and moved < 0.3, (corrected, moved)  # noise sigma 5 in both


def test_piecewise_recovers_two_halves_moving_apart():
    """Left half of the field of view moves by +2 columns, the right half by -2: the patch
    field separates them (rigid would average them to 0)."""
    frames, _ = moving_movie(np.zeros((N_INIT + 1, 2)), dims=(96, 128), seed=6)
    left, _ = moving_movie(np.array([[0.0, 2.0]]), dims=(96, 128), seed=6)
    right, _ = moving_movie(np.array([[0.0, -2.0]]), dims=(96, 128), seed=6)
    bent = np.concatenate([left[0][:, :64], right[0][:, 64:]], axis=1)
    params = _params(mode="piecewise", patch_size_px=48, patch_overlap_px=24, max_deviation_px=4.0)
    minit = motion.register_initial(frames[:N_INIT].copy(), params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    motion.correct_frame(ms, np.ascontiguousarray(bent.ravel()))
    fx = ms.patches.field_x
    assert fx[:, 0].mean() > 1.2 and fx[:, -1].mean() < -1.2, fx
    assert ms.patches.n_own == fx.size


def test_frames_too_small_to_register_leave_motion_correction_off(caplog):
    with caplog.at_level("WARNING"):
        minit = motion.register_initial(np.ones((30, 12, 12), np.float32), _params(downsample=2))
    assert not minit.active and "too small to register" in caplog.text


def test_init_frame_fields_and_state_outputs():
    assert motion.init_frame_fields(None, 0) == {"flag": None}
    assert motion.init_frame_fields(None, 0, "corrupt: x") == {"flag": "corrupt: x"}
    assert motion.outputs(None) == (None, None)
    frames, _ = moving_movie(np.zeros((N_INIT, 2)), seed=7)
    minit = motion.register_initial(frames.copy(), _params())
    fields = motion.init_frame_fields(minit, 5)
    assert set(fields) == {"motion_shift_px", "motion_quality", "flag"}
    assert fields["flag"] is None and abs(fields["motion_shift_px"][0]) < 0.5
    assert motion.init_frame_fields(minit, 5, "corrupt: x")["flag"] == "corrupt: x"  # first


def test_warm_up_compiles_without_a_model():
    register.warm_up()
    register.warm_up()  # once per process


def test_a_failed_initialisation_frame_is_replaced_by_a_registered_neighbour():
    truth = np.zeros((N_INIT, 2))
    truth[20:] = (3.0, -2.0)
    frames, _ = moving_movie(truth, seed=8)
    frames[21] = frames[21].mean() + np.random.default_rng(8).normal(0, 30, frames.shape[1:])
    Y = frames.copy()
    minit = motion.register_initial(Y, _params())
    assert minit.flags[21].startswith("motion: ")  # a chance peak or a low quality
    assert sum(1 for f in minit.flags if f) == 1
    assert np.isfinite(Y).all()
    np.testing.assert_array_equal(Y[21], Y[20])  # the nearest registered frame stands in
    assert minit.active and minit.reliability > 0.9


def test_weak_first_frames_are_used_as_themselves_at_the_nearest_trusted_shift():
    """Frames without the tissue's texture but nothing else in its place (cells not yet
    active: a smooth background and the usual noise) are weak, not failed: unflagged, not
    replaced by a neighbour, and not moved by their chance peaks (fault injection for the
    still-movie penalty: they were flagged and replaced by copies of frame 3)."""
    frames, _ = moving_movie(np.zeros((N_INIT, 2)), seed=10)
    rng = np.random.default_rng(10)
    for t in range(3):
        smooth = ndi.gaussian_filter(frames[3].astype(np.float64), 12)
        frames[t] = smooth + rng.normal(0, 5.0, smooth.shape)
    Y = frames.copy()
    minit = motion.register_initial(Y, _params())
    assert minit.quality[:3].max() < minit.min_quality  # the old rule flagged them
    assert not any(minit.flags), minit.flags
    assert np.abs(minit.shifts[:3]).max() < 0.5, minit.shifts[:3]  # no chance shift applied
    for t in range(3):  # each is itself, not a copy of frame 3
        assert np.abs(Y[t] - Y[3]).mean() > 3.0
        assert np.abs(Y[t] - frames[t]).mean() < 3.0


def test_weak_frames_where_the_tissue_moved_are_flagged_and_replaced():
    """The same weak frames while the tissue slides 4 px: their position is unknown, so
    they are replaced by the nearest registered frame (as a failed registration)."""
    truth = np.zeros((N_INIT, 2))
    truth[:12, 1] = np.linspace(-4.0, 0.0, 12)
    frames, _ = moving_movie(truth, seed=10)
    rng = np.random.default_rng(10)
    for t in range(3):
        smooth = ndi.gaussian_filter(frames[t].astype(np.float64), 12)
        frames[t] = smooth + rng.normal(0, 5.0, smooth.shape)
    Y = frames.copy()
    minit = motion.register_initial(Y, _params())
    assert all(f.startswith("motion: ") for f in minit.flags[:3]), minit.flags[:4]
    assert not any(minit.flags[3:])
    for t in range(3):
        np.testing.assert_array_equal(Y[t], Y[3])


def test_frames_of_noise_leave_motion_correction_off(caplog):
    """No stable structure: registering noise only fits the noise, so nothing is corrected."""
    rng = np.random.default_rng(9)
    Y = (100 + rng.standard_normal((80, 128, 128))).astype(np.float32)
    before = Y.copy()
    with caplog.at_level("WARNING"):
        minit = motion.register_initial(Y, CNMFEParams())
    assert not minit.active and minit.reliability < 0.3
    np.testing.assert_array_equal(Y, before)
    assert "motion correction is off for this recording" in caplog.text
    assert motion.init_frame_fields(minit, 0) == {"flag": None}


@pytest.mark.parametrize("mode", ["rigid", "piecewise"])
def test_still_tissue_is_not_resampled_until_it_moves(mode, monkeypatch):
    """Fault injection for the still-movie penalty (held-out lens_margin: -0.014 F1 with
    motion on): on tissue that stands still the measured shifts are the registration's noise,
    and correcting by them resampled every frame by a random sub-pixel shift. Still tissue is
    now detected at initialisation: shifts exactly 0, frames untouched; a glitch frame does
    not end it; the first real movement does, and that frame and the later ones are
    corrected."""
    truth = np.zeros((N_INIT + 8, 2))
    truth[N_INIT + 4 :] = (3.0, -2.5)
    frames, _ = moving_movie(truth, seed=11, noise=20.0)
    rng = np.random.default_rng(11)
    frames[N_INIT + 1] = frames[N_INIT + 1].mean() + rng.normal(0, 30, frames.shape[1:])
    params = _params(mode=mode, patch_size_px=48, patch_overlap_px=24)
    with monkeypatch.context() as m:  # the detector off: the frames are resampled (jitter)
        m.setattr(still, "STILL_RMS_PX", 0.0)
        jitter = motion.register_initial(frames[:N_INIT].copy(), params)
    assert jitter.still_limit_px == 0.0
    assert 0.02 < np.abs(jitter.shifts).max() < 1.0, np.abs(jitter.shifts).max()
    Y = frames[:N_INIT].copy()
    minit = motion.register_initial(Y, params)
    assert minit.still_limit_px >= still.STILL_EXIT_PX
    assert not any(minit.flags)
    np.testing.assert_array_equal(minit.shifts, 0.0)
    np.testing.assert_array_equal(Y, frames[:N_INIT])  # a zero shift copies the frame
    if mode == "piecewise":
        np.testing.assert_array_equal(minit.fields, 0.0)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    flags = []
    for t in range(N_INIT, N_INIT + 4):  # still (frame N_INIT + 1 a glitch)
        flags.append(motion.correct_frame(ms, np.ascontiguousarray(frames[t].ravel())))
        np.testing.assert_array_equal(ms.last[:2], 0.0)
        np.testing.assert_array_equal(ms.registered, frames[t].ravel())
        assert ms.valid.all() and ms.n_filled == 0 and ms.band_grew == 0
    assert flags[1] is not None and [flags[0], *flags[2:]] == [None] * 3
    assert ms.still_limit_px == minit.still_limit_px
    for t in range(N_INIT + 4, N_INIT + 8):  # moved: corrected from the first moved frame on
        assert motion.correct_frame(ms, np.ascontiguousarray(frames[t].ravel())) is None
        np.testing.assert_allclose(ms.last[:2], truth[t], atol=0.3)
    assert ms.still_limit_px == 0.0


def test_still_limit_separates_noise_from_movement():
    rng = np.random.default_rng(12)
    noise = rng.normal(0, 0.1, (100, 2)) + (0.4, -0.2)  # about its median: 0.14 px rms
    good = np.ones(100, bool)
    assert still.still_limit(noise, good) == still.STILL_EXIT_PX
    big = noise * 3.0  # 0.42 px rms: the limit grows with the noise
    limit = still.still_limit(big, good)
    rms = np.sqrt(((big - np.median(big, axis=0)) ** 2).sum(1).mean())
    if np.hypot(*(big - np.median(big, axis=0)).T).max() < still.STILL_MAX_PX:
        assert limit == pytest.approx(still.STILL_EXIT_RMS * rms)
    else:
        assert limit == 0.0
    jumped = noise.copy()
    jumped[50] += (2.0, 0.0)  # one frame 2 px away: a movement
    assert still.still_limit(jumped, good) == 0.0
    flagged = good.copy()
    flagged[50] = False  # ... unless that frame is flagged
    assert still.still_limit(jumped, flagged) == still.STILL_EXIT_PX
    assert still.still_limit(walk(rng, 100, 1.0), good) == 0.0
    few = np.zeros(100, bool)
    few[: still.STILL_MIN_FRAMES - 1] = True
    assert still.still_limit(noise, few) == 0.0
    fields = np.broadcast_to(noise[:, :, None, None], (100, 2, 2, 3)).copy()
    assert still.still_limit(noise, good, fields) == still.STILL_EXIT_PX
    fields[:, 1, 0, 2] += np.linspace(-1.0, 1.0, 100)  # one patch slides 2 px
    assert still.still_limit(noise, good, fields) == 0.0


def test_the_spectra_cache_changes_no_result(monkeypatch):
    """register_initial reuses each frame's spectrum across its passes: the same shifts,
    qualities, fields, flags and registered frames as computing every spectrum afresh."""
    rng = np.random.default_rng(3)
    truth = walk(rng, N_INIT, 1.5, jumps=[(20, 30, 5.0, -4.0)])
    frames, _ = moving_movie(truth, seed=3)
    params = _params(mode="piecewise")
    cached_Y = frames[:N_INIT].copy()
    cached = motion.register_initial(cached_Y, params)
    measure = register.measure
    monkeypatch.setattr(register, "measure", lambda ms, spectra=None, frame=-1: measure(ms))
    fresh_Y = frames[:N_INIT].copy()
    fresh = motion.register_initial(fresh_Y, params)
    np.testing.assert_array_equal(cached.shifts, fresh.shifts)
    np.testing.assert_array_equal(cached.quality, fresh.quality)
    np.testing.assert_array_equal(cached.fields, fresh.fields)
    np.testing.assert_array_equal(cached.template, fresh.template)
    assert cached.flags == fresh.flags and cached.reliability == fresh.reliability
    np.testing.assert_array_equal(cached_Y, fresh_Y)


def test_the_spectra_cache_keeps_a_bounded_number_of_taper_positions_per_frame():
    frames, _ = moving_movie(np.zeros((2, 2)), seed=4)
    params = _params()
    minit = motion.register_initial(frames.copy(), params)
    ms = motion.state_from_init(minit, frames.shape[1:], params)
    ms.scratch_xin[:] = np.random.default_rng(4).standard_normal(ms.scratch_xin.shape)
    spectra: dict = {}
    fresh = register._correlate(ms).copy()
    for oy in range(register.SPECTRA_PER_FRAME + 2):
        np.testing.assert_array_equal(register._correlate(ms, spectra, (7, oy, 0)), fresh)
    assert list(spectra) == [7]
    assert len(spectra[7]) == register.SPECTRA_PER_FRAME  # the latest positions
    assert (oy, 0) in spectra[7] and (oy - 1, 0) in spectra[7]
    ms.scratch_xin[:] = 0.0  # a hit uses the stored spectrum, not scratch_xin
    np.testing.assert_array_equal(register._correlate(ms, spectra, (7, oy, 0)), fresh)


@pytest.mark.parametrize("dims", [(37, 53), (1, 5), (6, 1)])
def test_a_zero_shift_warp_is_the_frame(dims):
    """Still tissue copies the frame instead of warping it by (0, 0) (``correct_frame``):
    the same bits, because the bilinear warp at a zero shift weighs the pixel by 1 and its
    neighbours by 0."""
    from online_cnmfe.model._kernels import warp as kw

    rng = np.random.default_rng(5)
    y = (rng.standard_normal(dims[0] * dims[1]) * 1e3).astype(np.float32)
    y[::7] = 0.0
    out = np.full_like(y, np.nan)
    valid = np.zeros(y.size, np.uint8)
    assert kw.warp_rigid(y, dims[0], dims[1], 0.0, 0.0, out, valid) == 0
    np.testing.assert_array_equal(out, y)
    assert valid.all()
