"""Re-seeding over the residual buffer: its images and noise against slow references, the ring's
overwrites, and a cell that starts firing after the initialisation found by the pass alone."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from online_cnmfe.model._kernels import detection as kdet
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path import reseed
from tests.online_cnmfe import slow_harness as h

N_INIT = 200


def _geometry(smooth: float = 0.0) -> det_mod.Geometry:
    return det_mod.Geometry(
        diameter=8.0, ds=1, half_small=1, half_large=4, box_half=8, nms_radius=4.8, window=4,
        separation=10, alpha=0.01, alpha_noise=0.002, rho=0.97, expiry=600,
        calibration_period=200, smooth=smooth,
    )  # fmt: skip


def _buffer(rng, dims, L, frames):
    """A residual ring (L, n_pixels) holding ``frames`` (in time order) in shuffled slots."""
    H, W = dims
    residual = np.zeros((L, H * W), np.float32)
    residual_frame = np.full(L, -1, np.int64)
    slots = rng.permutation(L)[: len(frames)]
    data = rng.standard_normal((len(frames), H * W)).astype(np.float32)
    for k, (slot, f) in enumerate(zip(slots, frames, strict=True)):
        residual[slot] = data[k]
        residual_frame[slot] = f
    return SimpleNamespace(residual=residual, residual_frame=residual_frame), data


def _reference_images(data, dims, geo, nvar, k_sigma):
    """The pass's images by plain NumPy: band-pass (the kernel's), matched filter, equal-weight
    moments of the values thresholded at k sigma, max, and (1.4826 MAD)^2 of z per pixel."""
    H, W = dims
    tmp, small = np.empty((H, W), np.float32), np.empty((H, W), np.float32)
    zs, z_prev = [], None
    for row in data:
        z = np.empty((H, W), np.float32)
        kdet.band_pass(row.reshape(H, W), geo.half_small, geo.half_large, tmp, small, z)
        if geo.smooth > 0 and z_prev is not None:
            z = (geo.smooth * z_prev + (1 - geo.smooth) * z).astype(np.float32)
        z_prev = z
        zs.append(z.astype(np.float64))
    zs = np.stack(zs)
    out = {}
    for name, sgn in (("pos", 1.0), ("neg", -1.0)):
        v = sgn * zs
        vt = np.where((v > 0) & (v * v > k_sigma**2 * nvar), v, 0.0)
        out[name] = np.stack([
            vt.mean(0), (vt**2).mean(0),
            np.pad((vt[:, :, :-1] * vt[:, :, 1:]).mean(0), ((0, 0), (0, 1))),
            np.pad((vt[:, :-1, :] * vt[:, 1:, :]).mean(0), ((0, 1), (0, 0))),
            np.maximum(v.max(0), 0.0),  # the images start at 0
        ])  # fmt: skip
    med = np.median(zs, axis=0)
    out["noise_var"] = (1.4826 * np.median(np.abs(zs - med), axis=0)) ** 2
    return out


def _run_pass(rs, det, view, dims, geo, per_step):
    reseed.start(rs, det, view.residual_frame, t=1000)
    while rs.cursor < rs.slots.size:
        assert reseed.read_frames(rs, det, view, dims, geo, per_step) <= per_step
    steps = 0
    while not reseed.estimate_noise(rs, per_step * det.z.size):
        steps += 1
    return steps


def test_pass_images_and_noise_match_a_reference(rng):
    dims, L = (24, 30), 40
    frames = list(range(500, 537))  # 37 frames in a ring of 40, slots shuffled
    view, data = _buffer(rng, dims, L, frames)
    for smooth in (0.0, 0.8):
        geo = _geometry(smooth)
        det = det_mod.make_detection_state(dims, pool_size=4)
        det.nvar[:] = 0.5 + rng.random(dims).astype(np.float32)
        rs = reseed.make_reseed_state(det)
        steps = _run_pass(rs, det, view, dims, geo, per_step=4)
        assert rs.n_read == len(frames) and rs.zs is None and steps > 1  # noise in slices
        ref = _reference_images(data, dims, geo, det.nvar.astype(np.float64), det_mod.K_SIGMA)
        for name in ("pos", "neg"):
            np.testing.assert_allclose(getattr(rs, name), ref[name], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(rs.noise_var, ref["noise_var"], rtol=1e-4, atol=1e-6)


def test_a_slot_overwritten_during_the_pass_is_skipped_not_read_twice(rng):
    dims, L = (16, 16), 20
    view, data = _buffer(rng, dims, L, list(range(100, 120)))
    geo = _geometry()
    det = det_mod.make_detection_state(dims, pool_size=4)
    det.nvar[:] = 1.0
    rs = reseed.make_reseed_state(det)
    reseed.start(rs, det, view.residual_frame, t=119)
    reseed.read_frames(rs, det, view, dims, geo, 5)  # frames 100..104
    pending = int(rs.slots[rs.cursor])  # frame 105's slot is overwritten by frame 120
    view.residual_frame[pending] = 120
    while rs.cursor < rs.slots.size:
        reseed.read_frames(rs, det, view, dims, geo, 5)
    assert rs.n_read == 19
    kept = [k for k in range(20) if k != 5]
    ref = _reference_images(data[kept], dims, geo, det.nvar.astype(np.float64), det_mod.K_SIGMA)
    np.testing.assert_allclose(rs.pos[4], ref["pos"][4], rtol=1e-5, atol=1e-6)


def test_a_pass_is_due_once_per_period_and_never_while_one_runs():
    p = h.params_for(**{"detection.reseed_period_s": 2.0})  # 40 frames at 20 Hz
    det = det_mod.make_detection_state((16, 16), pool_size=4)
    rs = reseed.make_reseed_state(det)
    rs.started_at = 100
    assert not reseed.due(rs, 139, p) and reseed.due(rs, 140, p)
    rs.phase = reseed.IMAGES
    assert not reseed.due(rs, 500, p)
    assert not reseed.due(reseed.make_reseed_state(det), 10**6, p.replace(
        **{"detection.reseed_period_s": 0.0}))  # fmt: skip


def _late_cell_loop(reseed_period_s: float):
    """A movie whose fourth cell starts firing after the initialisation; the initial model has
    the other three, and the online search's own evaluations are off: only the re-seeding
    pass can find the newcomer."""
    m = h.make_movie(seed=4, T=520, first=[0, 0, 0, 260], amp=10.0)
    p = h.params_for(**{
        "online.slow_evaluations_per_step": 0, "detection.reseed_period_s": reseed_period_s,
        "online.reseed_evaluations_per_step": 2,
    })  # fmt: skip
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    return m, h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])


def test_the_pass_finds_a_cell_that_starts_firing_after_the_initialisation():
    m, loop = _late_cell_loop(reseed_period_s=1.0)
    assert loop.A.shape[1] == 4
    new = loop.A[:, 3]
    cos = [float(new @ a / (np.linalg.norm(new) * np.linalg.norm(a))) for a in m.A.T]
    assert int(np.argmax(cos)) == 3 and max(cos) > 0.75
    birth = min(u.frame_index for u in loop.updates if u.new_footprints.shape[1])
    first_spike = 260 + int(np.flatnonzero(np.diff(m.C[3, 260:]) > 0)[0])
    assert birth - first_spike < math.ceil(20.0 * 6.0)  # within 6 s of its first transient
    assert loop.slow.reseed.n_passes >= 2 and loop.slow.reseed.n_accepted >= 1
    # the control: without the pass (and without the search's evaluations) nobody is born
    _, off = _late_cell_loop(reseed_period_s=0.0)
    assert off.A.shape[1] == 3 and off.slow.reseed.n_passes == 0
