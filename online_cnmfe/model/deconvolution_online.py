"""Online deconvolution orchestration: OASIS AR(1) pools for all neurons, held in ModelState.

Symbols: g AR(1) coefficient, σ noise of the demixed trace, s_min minimal spike size
(``DeconvParams.min_spike_sigma`` · σ · sqrt(1 − g), as CaImAn's negative ``s_min``), λ sparsity
penalty (``DeconvParams.sparsity_penalty`` · σ). Pool arrays: see ``_kernels/oasis_online.py``.
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model._kernels import oasis_online as _ko
from online_cnmfe.params import DeconvParams


def ar1_coefficients(g) -> np.ndarray:
    """AR(1) coefficient per neuron from (K,) or (K, p) AR coefficients, float32 (K,).

    The online OASIS is AR(1): an AR(2) model c_t = g1 c_{t-1} + g2 c_{t-2} + s_t is
    approximated by its decay, the larger root of z² − g1 z − g2 (the slow time constant).
    """
    g = np.asarray(g, np.float64)
    if g.ndim != 2:
        g = g.reshape(-1, 1)
    if g.shape[1] == 1 or g.shape[0] == 0:
        d = g[:, 0] if g.shape[1] else np.zeros(g.shape[0])
    else:
        g1, g2 = g[:, 0], g[:, 1]
        d = 0.5 * (g1 + np.sqrt(np.maximum(g1 * g1 + 4 * g2, 0.0)))
    return np.clip(d, 0.0, 0.9999).astype(np.float32)


def spike_thresholds(g: np.ndarray, noise: np.ndarray, params: DeconvParams):
    """(s_min, lam) per neuron, float32 (K,)."""
    g = np.clip(np.asarray(g, np.float64), 0.0, 0.9999)
    noise = np.maximum(np.asarray(noise, np.float64), 0.0)
    s_min = params.min_spike_sigma * noise * np.sqrt(1.0 - g)
    lam = params.sparsity_penalty * noise
    return s_min.astype(np.float32), lam.astype(np.float32)


def empty_pools(n_components: int, capacity: int) -> dict[str, np.ndarray]:
    """Zeroed pool arrays for ``n_components`` neurons."""
    return {
        "pool_v": np.zeros((n_components, capacity), np.float64),
        "pool_w": np.zeros((n_components, capacity), np.float64),
        "pool_t": np.zeros((n_components, capacity), np.int64),
        "pool_l": np.zeros((n_components, capacity), np.int64),
        "pool_first": np.zeros(n_components, np.int64),
        "pool_count": np.zeros(n_components, np.int64),
    }


def run_history(pools: dict, g, lam, s_min, traces: np.ndarray, t0: int) -> tuple:
    """Feed past demixed traces (K, T) through the online kernel (frames t0 … t0 + T − 1).

    Written in place: the arrays of ``pools``. Returns the causal (C, S) of the last frame
    and the causal C of every frame (K, T).
    """
    K, T = traces.shape
    c = np.zeros(K, np.float32)
    s = np.zeros(K, np.float32)
    c_all = np.zeros((K, T), np.float32)
    for j in range(T):
        _ko.oasis_ar1_step(
            np.ascontiguousarray(traces[:, j], np.float32), t0 + j, g, lam, s_min,
            pools["pool_v"], pools["pool_w"], pools["pool_t"], pools["pool_l"],
            pools["pool_first"], pools["pool_count"], c, s,
        )  # fmt: skip
        c_all[:, j] = c
    return c, s, c_all


def step(st) -> None:
    """One frame of OASIS for every neuron of a ModelState (in place: pools, c_den, s)."""
    _ko.oasis_ar1_step(
        st.c, st.n_processed, st.g, st.lam, st.s_min, st.pool_v, st.pool_w, st.pool_t,
        st.pool_l, st.pool_first, st.pool_count, st.c_den, st.s,
    )  # fmt: skip


def revised_calcium(st, t_start: int, n_frames: int) -> np.ndarray:
    """Denoised C over OASIS frames [t_start, t_start + n_frames) from the current pools.

    Unlike the causal outputs this includes OASIS's revisions of recent pools (slow path).
    """
    out = np.zeros((st.g.shape[0], n_frames), np.float32)
    _ko.oasis_ar1_reconstruct(
        st.g, st.pool_v, st.pool_t, st.pool_l, st.pool_first, st.pool_count, t_start, out
    )
    return out
