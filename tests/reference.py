"""Slow, obvious NumPy/SciPy versions of the compiled kernels (the test oracles).

Each engineer adds the references of their kernels here with small targeted edits.
"""

from __future__ import annotations

import numpy as np

# ---- ring background (online_cnmfe/_kernels/ring.py) ------------------------------------


def ring_matrix_dense(W: np.ndarray, offsets: np.ndarray, hb: int, wb: int) -> np.ndarray:
    """Dense (n_bg, n_bg) matrix of the ring model built entry by entry."""
    n = hb * wb
    M = np.zeros((n, n), dtype=np.float64)
    for p in range(n):
        i, j = divmod(p, wb)
        for k, (di, dj) in enumerate(offsets):
            ii, jj = i + di, j + dj
            if 0 <= ii < hb and 0 <= jj < wb:
                M[p, ii * wb + jj] += W[p, k]
    return M


def downsample_mean_ref(x: np.ndarray, factor: int) -> np.ndarray:
    """Block average with partial edge blocks averaged over their real pixels."""
    H, Wd = x.shape
    hb, wb = -(-H // factor), -(-Wd // factor)
    out = np.zeros((hb, wb))
    for bi in range(hb):
        for bj in range(wb):
            out[bi, bj] = x[bi * factor : (bi + 1) * factor, bj * factor : (bj + 1) * factor].mean()
    return out


def ring_stats_ref(X: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """XXt (n_bg, R, R) and Xx (n_bg, R) from frames X (T, hb, wb), out-of-grid entries 0."""
    T, hb, wb = X.shape
    R = len(offsets)
    XXt = np.zeros((hb * wb, R, R))
    Xx = np.zeros((hb * wb, R))
    Xf = X.astype(np.float64)
    for p in range(hb * wb):
        i, j = divmod(p, wb)
        ring = np.zeros((R, T))
        for k, (di, dj) in enumerate(offsets):
            ii, jj = i + di, j + dj
            if 0 <= ii < hb and 0 <= jj < wb:
                ring[k] = Xf[:, ii, jj]
        XXt[p] = ring @ ring.T
        Xx[p] = ring @ Xf[:, i, j]
    return XXt, Xx


def ring_solve_ref(XXt: np.ndarray, Xx: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge solution per pixel via numpy lstsq on the augmented system."""
    n, R, _ = XXt.shape
    out = np.zeros((n, R))
    for p in range(n):
        G = XXt[p].astype(np.float64)
        valid = np.diag(G) > 0
        lam = ridge * (np.trace(G) / R + 1e-12) + 1e-12
        A = G + lam * np.eye(R)
        sol = np.linalg.lstsq(A, Xx[p].astype(np.float64), rcond=None)[0]
        out[p] = np.where(valid, sol, 0.0)
    return out
