"""Slow path: footprint refresh (recovery, growth), ring-W refresh, bounded work per step,
the ModelUpdate contract, state round trip, and end to end with the online model."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.slow_path import schedule as slow_path
from online_cnmfe.results.state_file import load_model, save_model
from tests.online_cnmfe import slow_harness as h

N_INIT = 200


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_refresh_recovers_a_perturbed_footprint():
    m = h.make_movie(seed=7, T=500, rate_hz=1.5)
    A = m.A.copy()
    rng = np.random.default_rng(0)
    A[:, 1] = np.roll(A[:, 1], 1) * (1 + 0.4 * rng.random(A.shape[0])) * (A[:, 1] > 0)
    assert _cos(A[:, 1], m.A[:, 1]) < 0.95
    p = h.params_for(**{"online.footprint_update_period_frames": 20, "detection.enabled": False})
    loop = h.MiniLoop(h.init_result(m, N_INIT, A=A), m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    assert _cos(loop.A[:, 1], m.A[:, 1]) > 0.97
    for k in (0, 2, 3):  # the others stay right
        assert _cos(loop.A[:, k], m.A[:, k]) > 0.97


def test_refresh_grows_a_truncated_footprint():
    m = h.make_movie(seed=8, T=600, rate_hz=1.5, sigma=2.5)
    A = m.A.copy()
    H, W = m.dims
    cols = np.arange(H * W) % W
    A[cols > 12, 0] = 0  # neuron 0 (centre column 12) cut just right of its centre
    cos0 = _cos(A[:, 0], m.A[:, 0])
    p = h.params_for(**{"online.footprint_update_period_frames": 20, "detection.enabled": False})
    loop = h.MiniLoop(h.init_result(m, N_INIT, A=A), m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    a = loop.A[:, 0]
    assert (a[cols > 14] > 0).sum() > 5  # grew past the cut + growth margin
    assert _cos(a, m.A[:, 0]) > max(cos0 + 0.05, 0.95)
    # (it grows in its first three refresh periods only, and the refresh also drops the faint
    # tails, so its pixel count is not compared with the truncated one's)


def test_an_established_footprint_refines_but_does_not_grow():
    """Growth is for young footprints only: an established one keeps (a subset of) its support.

    Re-seeding the margin at every refresh ratchets footprints outwards over long runs (12,000
    frames of the 256² simulation: 25 of 270 footprints spread to ``max_support``)."""
    m = h.make_movie(seed=8, T=600, rate_hz=1.5, sigma=2.5)
    A = m.A.copy()
    H, W = m.dims
    cols = np.arange(H * W) % W
    A[cols > 12, 0] = 0  # truncated, so growth would have somewhere to go
    P = 20  # young for 3 * P frames after the init
    p = h.params_for(**{"online.footprint_update_period_frames": P, "detection.enabled": False})
    loop = h.MiniLoop(h.init_result(m, N_INIT, A=A), m.Y[:N_INIT], p)
    loop.run(m.Y[N_INIT : N_INIT + 4 * P])
    young_support = loop.A[:, 0] > 0
    assert young_support.sum() > (A[:, 0] > 0).sum() or (loop.A[cols > 12, 0] > 0).any()
    loop.run(m.Y[N_INIT + 4 * P :])
    a = loop.A[:, 0]
    assert not (a[~young_support] > 0).any()  # no pixel joined after the young window
    assert _cos(a, m.A[:, 0]) > 0.9
    assert slow_path._growth(p, young=True) == p.online.footprint_growth_px > 0
    assert slow_path._growth(p, young=False) == 0


def _blob_movie(seed=9, T=700):
    rng = np.random.default_rng(seed)
    H = W = 48
    rr, cc = np.mgrid[0:H, 0:W]
    blobs = np.stack([
        np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 12.0**2)).ravel()
        for r, c in ((10, 15), (35, 30))
    ])  # fmt: skip
    amp = 3 + np.cumsum(rng.normal(0, 0.3, (2, T)), axis=1)

    def bg(n):
        return amp[:, :n].T @ blobs

    return h.make_movie(seed=seed, T=T, background=bg, centres=((12, 12), (34, 34)))


def test_ring_refresh_learns_the_background():
    m = _blob_movie()
    p = h.params_for(**{
        "online.slow_ring_refresh_period_frames": 50, "online.slow_ring_samples": 25,
        "detection.enabled": False,
    })  # fmt: skip
    init = h.init_result(m, N_INIT)
    init.b0[:] = m.Y[:N_INIT].reshape(N_INIT, -1).mean(0) - (m.A @ m.C[:, :N_INIT]).mean(1)
    on = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    off = h.MiniLoop(init, m.Y[:N_INIT], p)
    off.apply_w = False
    off.run(m.Y[N_INIT:])
    assert np.abs(on.W).max() > 0 and not off.W.any()
    late = slice(-50, None)
    e_on = float((on.residual[late] ** 2).mean())
    e_off = float((off.residual[late] ** 2).mean())
    # residual power above the noise floor (sigma = 1): the learnt W removes most of it
    assert e_on - 1.0 < 0.4 * (e_off - 1.0), (e_on, e_off)
    w_updates = [u for u in on.updates if u.w_stop > u.w_start]
    assert w_updates and all(u.w_rows.shape == (u.w_stop - u.w_start, on.W.shape[1])
                             for u in w_updates)  # fmt: skip


def test_each_step_stays_within_its_work_slice():
    m = h.make_movie(seed=1, T=500, first=[0, 0, 0, 250])
    p = h.params_for(**{
        "online.footprint_update_period_frames": 3, "online.slow_ring_refresh_period_frames": 40,
        "detection.max_candidates_per_frame": 1, "online.slow_merge_checks_per_frame": 1,
    })  # fmt: skip
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    for w in loop.work_log:
        lim = slow_path.work_limits(loop.slow, p, w["K"])
        for key, val in w.items():
            if key != "K":
                assert val <= lim[key], (key, val, lim[key])
    # and the slices do cover the work: every neuron refreshed, W rows visited
    assert sum(w["hals"] for w in loop.work_log) >= 3 * len(loop.work_log) // 3
    assert sum(w["ring_pixels"] for w in loop.work_log) >= loop.W.shape[0]
    assert sum(w["candidates"] for w in loop.work_log) >= 1


def test_schedule_never_stacks_heavy_work_on_one_frame():
    # counts per step, not wall-clock: evaluations only on the detection phase and alone, births
    # on the step after, merges on their own phase, deferred refreshes all paid back (a clear
    # late cell: at amplitude 6 its 3 s-buffer footprint is too noisy for the size test)
    m = h.make_movie(seed=1, T=700, first=[0, 0, 0, 250], amp=10.0)
    p = h.params_for(**{
        "online.footprint_update_period_frames": 6, "online.slow_ring_refresh_period_frames": 40,
    })  # fmt: skip
    o = p.online
    Pd, E = o.slow_detect_period_frames, o.slow_emit_period_frames
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    t0 = loop.t - len(loop.work_log)
    births = {u.frame_index for u in loop.updates if u.new_footprints.shape[1]}
    assert births and sum(w["candidates"] for w in loop.work_log) >= 2
    quota = 0
    for i, w in enumerate(loop.work_log):
        t, K = t0 + i, w["K"]
        quota += min(K, (t + 1) * K // o.footprint_update_period_frames
                     - t * K // o.footprint_update_period_frames)  # fmt: skip
        if w["candidates"]:
            lim = slow_path.work_limits(loop.slow, p, K)["candidates"]
            assert t % Pd == Pd // 2 and w["candidates"] <= lim
            assert w["hals"] == 0 and w["merge_checks"] == 0 and t not in births
        if t in births:
            assert (t - 1) % Pd == Pd // 2  # confirmed on the previous step
            assert w["hals"] == w["candidates"] == w["merge_checks"] == 0
        if w["merge_checks"]:
            assert t % E == 1
        assert w["hals"] <= slow_path.work_limits(loop.slow, p, K)["hals"]
    assert sum(w["hals"] for w in loop.work_log) + loop.slow.hals_debt == quota


def _col(v):
    return scipy.sparse.csc_array(np.asarray(v, np.float32).reshape(-1, 1))


def test_model_update_apply_footprints_order():
    A = np.arange(1, 13, dtype=np.float32).reshape(3, 4)  # 3 pixels, 4 neurons
    e = scipy.sparse.csc_array((3, 0), dtype=np.float32)
    u = slow_path.ModelUpdate(
        frame_index=0, replaced=np.array([1]), replaced_footprints=_col([9, 9, 9]),
        merged_kept=np.array([0]), merged_absorbed=np.array([2]),
        merged_footprints=_col([7, 7, 7]), removed=np.array([3]),
        new_footprints=_col([1, 0, 1]), new_traces=np.zeros((1, 2), np.float32),
        new_trace_frames=np.arange(2), new_g=np.full(1, 0.9, np.float32),
        new_noise=np.ones(1, np.float32),
    )  # fmt: skip
    got = u.apply_footprints(scipy.sparse.csc_array(A)).toarray()
    np.testing.assert_array_equal(got, [[7, 9, 1], [7, 9, 0], [7, 9, 1]])
    assert u.survivors(4).tolist() == [0, 1]
    assert e.shape == (3, 0)


def test_state_round_trips_and_continues_identically(tmp_path):
    m = h.make_movie(seed=1, T=420, first=[0, 0, 0, 250])
    p = h.params_for()
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:300])
    save_model(tmp_path / "slow.h5", p, loop.slow)
    p2, slow2 = load_model(tmp_path / "slow.h5")
    assert p2 == p and isinstance(slow2, slow_path.SlowPathState)
    twin = copy.deepcopy(loop)
    twin.slow = slow2
    for name in ("stats", "ring", "det"):
        a, b = getattr(loop.slow, name), getattr(slow2, name)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if isinstance(va, np.ndarray):
                np.testing.assert_array_equal(va, vb, err_msg=f"{name}.{f.name}")
            else:
                assert va == vb, f"{name}.{f.name}"
    loop.run(m.Y[300:])
    twin.run(m.Y[300:])
    np.testing.assert_array_equal(loop.A, twin.A)
    assert [u.frame_index for u in loop.updates] == [u.frame_index for u in twin.updates]


def test_a_confirmed_birth_survives_a_save_between_evaluation_and_hand_over(tmp_path):
    m = h.make_movie(seed=1, T=700, first=[0, 0, 0, 250])
    p = h.params_for()
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p)
    t = N_INIT
    while not loop.slow.pending_births:  # stop right after the evaluation that confirmed it
        loop.step(m.Y[t])
        t += 1
        assert t < 700, "no birth confirmed"
    save_model(tmp_path / "slow.h5", p, loop.slow)
    _, slow2 = load_model(tmp_path / "slow.h5")
    twin = copy.deepcopy(loop)
    twin.slow = slow2
    n = len(loop.updates)
    for lp in (loop, twin):
        lp.step(m.Y[t])  # the next step hands the birth over, alone
        u = lp.updates[-1]
        assert len(lp.updates) == n + 1 and u.new_footprints.shape[1] == 1
        assert u.replaced.size == 0 and u.w_stop == u.w_start
    np.testing.assert_array_equal(loop.A, twin.A)


def test_observe_frame_rejects_a_stale_neuron_count():
    m = h.make_movie(seed=1, T=210)
    p = h.params_for()
    slow = slow_path.init_slow_path(h.init_result(m, N_INIT), m.Y[:N_INIT], p)
    with pytest.raises(ValueError, match="apply every ModelUpdate"):
        slow_path.observe_frame(slow, 200, m.Y[200], np.zeros(3), m.Y[200] * 0, p)


# ---- end to end with the online model -------------------------------------------------------


def test_online_model_finds_late_neurons_once_and_keeps_the_others():
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.params import CNMFEParams
    from tests.online_cnmfe.model_fixtures import make_movie, truth_init

    late = [3, 7]
    movie = make_movie(n_frames=700, seed=3, n_neurons=12, late=[(k, 300) for k in late])
    params = CNMFEParams.from_dict({
        "data": {"neuron_diameter_px": 8.0},
        "detection": {},
        "online": {"residual_buffer_frames": 60, "slow_ring_refresh_period_frames": 300},
    })  # fmt: skip
    init = truth_init(movie, N_INIT)
    keep = [k for k in range(12) if k not in late]
    init = dataclasses.replace(
        init, A=scipy.sparse.csc_array(init.A[:, keep]), C=init.C[keep], S=init.S[keep],
        C_raw=init.C_raw[keep], g=init.g[keep], trace_noise=init.trace_noise[keep],
    )  # fmt: skip
    model = OnlineCNMFE(params)
    model.initialize_from(init, movie.frames[:N_INIT])
    births = []
    for t in range(N_INIT, movie.frames.shape[0]):
        r = model.process_frame(movie.frames[t])
        births += [(t, e.neuron_ids) for e in r.events if e.kind == "born"]
        assert not [e for e in r.events if e.kind in ("merged", "removed")]
    At = movie.A.toarray()
    A = model.footprints.toarray()
    sim = (A.T @ At) / np.linalg.norm(A, axis=0)[:, None] / np.linalg.norm(At, axis=0)[None]
    assert len(births) == 2, births
    assert A.shape[1] == 12 and sorted(sim.argmax(1).tolist()) == list(range(12))
    assert sim.max(1).min() > 0.9
    sep = 10  # event separation (0.5 s at 20 Hz)
    for frame, ids in births:
        k = int(sim[model.neuron_ids.tolist().index(ids[0])].argmax())
        assert k in late
        spikes = np.flatnonzero(movie.S[k])
        events = [s for i, s in enumerate(spikes) if i == 0 or s - spikes[i - 1] >= sep]
        assert frame - events[0] <= 6 * 20  # found within ~6 s of its first transient...
        assert frame - events[1] <= 3 * 20  # ... and within 3 s of its second


def test_refreshes_are_handed_over_in_batches_but_structure_at_once():
    m = h.make_movie(seed=1, T=700, first=[0, 0, 0, 250])
    p = h.params_for(**{
        "online.slow_emit_period_frames": 5, "online.footprint_update_period_frames": 6,
        "online.slow_ring_refresh_period_frames": 40,
    })  # fmt: skip
    init = h.init_result(m, N_INIT, A=m.A[:, :3], C=m.C[:3, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    structural = [u.new_footprints.shape[1] > 0 or u.removed.size or u.merged_kept.size
                  for u in loop.updates]  # fmt: skip
    assert any(structural)
    n_bg = loop.W.shape[0]
    for u, s in zip(loop.updates, structural, strict=True):
        if not s:  # batched on the emit phase, except the flush when the W cursor wraps
            assert u.frame_index % 5 == 0 or u.w_stop == n_bg
        elif not (u.removed.size or u.merged_kept.size):  # a birth alone: refreshes wait
            assert u.replaced.size == 0 and u.w_stop == u.w_start
    covered = np.zeros(n_bg, int)
    for u in loop.updates:
        covered[u.w_start : u.w_stop] += 1
        assert u.replaced.size == np.unique(u.replaced).size <= 4
    assert covered.min() >= 1  # every W row handed over (batches stay contiguous)


def test_starting_from_no_neurons_finds_them():
    m = h.make_movie(seed=1, T=600, centres=((12, 12), (34, 34)), first=[250, 250])
    p = h.params_for()
    init = h.init_result(m, N_INIT, A=m.A[:, :0], C=m.C[:0, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    assert loop.A.shape[1] == 2
    sim = np.array([[_cos(a, b) for b in m.A.T] for a in loop.A.T])
    assert sorted(sim.argmax(1).tolist()) == [0, 1] and sim.max(1).min() > 0.75


def test_a_grown_birth_is_out_of_focus_when_blurred_or_oversized_with_the_reason():
    from types import SimpleNamespace

    H = W = 64
    d = 12.0
    rr, cc = np.mgrid[0:H, 0:W]

    def column(sigma):
        a = np.exp(-((rr - 32) ** 2 + (cc - 30) ** 2) / (2 * sigma**2)).ravel()
        a[a < 0.05] = 0
        pix = np.flatnonzero(a)
        return pix, a[pix]

    slow = SimpleNamespace(dims=np.array([H, W]), size_limit=np.inf, sharpness_limit=0.48)
    assert slow_path._out_of_focus(*column(3.0), slow, d) == ""  # a cell of the expected size
    reason = slow_path._out_of_focus(*column(7.0), slow, d)
    assert reason.startswith("out of focus: sharpness") and "limit 0.48" in reason
    slow.sharpness_limit = 0.0  # disabled: only the size limit is left
    assert slow_path._out_of_focus(*column(7.0), slow, d) == ""
    slow.size_limit = 2.5
    assert "grew to" in slow_path._out_of_focus(*column(7.0), slow, d)
    assert slow_path._out_of_focus(*column(7.0), slow, d, grown=False) == ""  # still young
