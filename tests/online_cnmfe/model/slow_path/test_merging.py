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


def _ewma_pair_history(x_old, x_new, birth, n_buffer, lam):
    """The slow path's statistics of an initial neuron (x_old, stats over all frames) and one
    born at ``birth`` from a buffer of ``n_buffer`` frames, run to the end; plus the reference
    weights of the newborn's window (the buffer's mean decayed, then the EWMA)."""
    from online_cnmfe.model.slow_path import suffstats

    fs = suffstats.empty_stats((4, 4), 2, 4)
    n_init = 200
    fs.slot_of = np.array([0], np.int32)
    fs.used[0] = True
    fs.cc[0, 0] = x_old[:n_init] @ x_old[:n_init] / n_init
    fs.cbar[0] = x_old[:n_init].mean()
    fs.birth[0] = suffstats.INITIAL_BIRTH
    c = np.zeros(2)
    for t in range(n_init, len(x_old)):
        if t == birth:  # as handover.birth_stats: the newborn's moments from the buffer
            buf = slice(t - n_buffer, t)
            s = suffstats.alloc_slot(fs)
            suffstats.record_birth_gaps(fs, s, x_old[None, buf])
            fs.cc[0, s] = fs.cc[s, 0] = x_old[buf] @ x_new[buf] / n_buffer
            fs.cc[s, s] = x_new[buf] @ x_new[buf] / n_buffer
            fs.cbar[s] = x_new[buf].mean()
            fs.birth[s] = t
            fs.slot_of = np.array([0, s], np.int32)
        k = len(fs.slot_of)
        c[:k] = (x_old[t], x_new[t])[:k]
        fs.cc[:k, :k] = lam * fs.cc[:k, :k] + (1 - lam) * np.outer(c[:k], c[:k])
        fs.cbar[:k] = lam * fs.cbar[:k] + (1 - lam) * c[:k]
    T = len(x_old)
    w = np.zeros(T)
    w[birth - n_buffer : birth] = lam ** (T - birth) / n_buffer
    w[birth:] = (1 - lam) * lam ** (T - 1 - np.arange(birth, T))
    return fs, w


def _weighted_corr(x, y, w):
    mx, my = w @ x / w.sum(), w @ y / w.sum()
    cov = w @ ((x - mx) * (y - my))
    return cov / np.sqrt((w @ (x - mx) ** 2) * (w @ (y - my) ** 2))


def test_long_corr_of_a_newborn_is_over_its_own_window():
    """Reference: the weighted correlation over the newborn's window, computed directly."""
    rng = np.random.default_rng(2)
    T, birth, n_buf, lam = 2000, 700, 100, 1 - 1 / 1500
    x_old = np.maximum(rng.standard_normal(T) - 1, 0) * 5
    x_new = 0.6 * x_old + np.maximum(rng.standard_normal(T) - 1, 0) * 3
    x_old[:300] *= 4  # the old neuron's early (initialisation) activity is stronger
    fs, w = _ewma_pair_history(x_old, x_new, birth, n_buf, lam)
    got = merging.long_corr(fs, 0, 1, T - 1, lam)
    assert abs(got - _weighted_corr(x_old, x_new, w)) < 0.02, got


def test_crosstalk_in_the_birth_buffer_does_not_pass_the_long_window():
    """Regression (held-out bursty): a neuron born next to an older one, silent itself in its
    birth buffer but carrying the older one's crosstalk there; afterwards the two fire on
    their own. The mixed-window estimate read 1.04 and merged two distinct cells."""
    rng = np.random.default_rng(3)
    T, birth, n_buf, lam = 1800, 500, 100, 1 - 1 / 6000
    x_old = np.maximum(rng.standard_normal(T) - 1, 0) * 5
    x_new = np.maximum(rng.standard_normal(T) - 1.2, 0) * 5
    buf = slice(birth - n_buf, birth)
    x_new[buf] = 0.3 * x_old[buf] + 0.05 * rng.random(n_buf)  # crosstalk only
    x_old[: birth - n_buf] *= 0.3  # the birth buffer holds the old neuron's bursts
    fs, _ = _ewma_pair_history(x_old, x_new, birth, n_buf, lam)
    stored = merging.long_corr(fs, 0, 1)  # both moments as stored: mixed windows
    fixed = merging.long_corr(fs, 0, 1, T - 1, lam)
    assert stored > 0.8  # what merged them
    assert fixed < 0.8, fixed
