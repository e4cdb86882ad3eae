"""Online merging of a split neuron and removal of a faded one."""

from __future__ import annotations

import numpy as np

from online_cnmfe.model.slow_path import merging
from tests.online_cnmfe import slow_harness as h

N_INIT = 200


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _split(m, k):
    """Neuron k's footprint cut into a left and a right half (both with its trace)."""
    H, W = m.dims
    cols = np.arange(H * W) % W
    centre = int(round((cols * m.A[:, k]).sum() / m.A[:, k].sum()))
    left = np.where(cols < centre, m.A[:, k], 0)
    right = np.where(cols >= centre, m.A[:, k], 0)
    A = np.concatenate([m.A, left[:, None], right[:, None]], axis=1)
    A = np.delete(A, k, axis=1)
    C = np.concatenate([m.C, m.C[[k]], m.C[[k]]])
    C = np.delete(C, k, axis=0)
    return A, C


def test_split_neuron_is_merged_back():
    m = h.make_movie(seed=4, T=700, rate_hz=1.5)
    A, C = _split(m, 0)
    p = h.params_for(**{"detection.enabled": False})
    init = h.init_result(m, N_INIT, A=A, C=C[:, :N_INIT])
    loop = h.MiniLoop(init, m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    merges = [(u.frame_index, u.merged_kept, u.merged_absorbed) for u in loop.updates
              if u.merged_kept.size]  # fmt: skip
    assert len(merges) == 1, merges
    _, kept, absorbed = merges[0]
    assert (int(kept[0]), int(absorbed[0])) == (3, 4)  # the older neuron keeps its id
    assert loop.A.shape[1] == 4
    sim = np.array([[_cos(a, b) for b in m.A.T] for a in loop.A.T])
    assert sorted(sim.argmax(1).tolist()) == [0, 1, 2, 3]
    assert sim.max(1).min() > 0.9


def test_neighbours_with_independent_traces_are_not_merged():
    m = h.make_movie(seed=5, T=600, centres=((12, 12), (12, 19), (34, 34)), rate_hz=1.5)
    p = h.params_for(**{"detection.enabled": False})
    loop = h.MiniLoop(h.init_result(m, N_INIT), m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    assert loop.A.shape[1] == 3
    assert not any(u.merged_kept.size for u in loop.updates)


def test_faded_neuron_is_removed():
    first = [0, 0, 0, 0]
    m = h.make_movie(seed=6, T=600, first=first, rate_hz=1.0)
    m.C[2, 260:] = 0  # neuron 2 stops firing for good
    m.Y[:] = (
        (m.A @ m.C).T.reshape(m.Y.shape)
        + m.b0.reshape(m.dims)
        + np.random.default_rng(0).standard_normal(m.Y.shape).astype(np.float32)
    )
    p = h.params_for(**{"online.slow_remove_inactive_s": 5.0, "detection.enabled": False})
    loop = h.MiniLoop(h.init_result(m, N_INIT), m.Y[:N_INIT], p).run(m.Y[N_INIT:])
    removed = [(u.frame_index, u.removed.tolist()) for u in loop.updates if u.removed.size]
    assert len(removed) == 1 and removed[0][1] == [2]
    u = next(u for u in loop.updates if u.removed.size)
    assert u.removed_reasons == ("inactive: trace below its noise for 5 s",)
    # silent since ~frame 260 (plus its decay): removed about 5 s (100 frames) later
    assert 340 <= removed[0][0] <= 420
    assert loop.A.shape[1] == 3


def test_long_corr_from_statistics():
    from online_cnmfe.model.slow_path import suffstats

    stats = suffstats.empty_stats((4, 4), 2, 4)
    rng = np.random.default_rng(0)
    x = rng.random((2, 500))
    x[1] = 0.5 * x[0] + 0.5 * rng.random(500)
    stats.cc[:] = x @ x.T / 500
    stats.cbar[:] = x.mean(1)
    assert abs(merging.long_corr(stats, 0, 1) - np.corrcoef(x)[0, 1]) < 1e-5
