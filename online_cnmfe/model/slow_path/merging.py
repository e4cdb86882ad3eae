"""Online merging of duplicate neurons and removal of faded ones (slow path).

Symbols: a_i footprint, c_i trace, CY / CC / cbar the footprint statistics
(:mod:`.suffstats`).

Merge test for a neuron i (a few per slow step, round robin): a partner j whose footprint
touches i's (j's support meets i's allowed region, i.e. i's support dilated by the growth
margin) and whose trace over the recent buffer correlates above
``DetectionParams.merge_corr_threshold`` (both must be active in the buffer) *and* over the
whole forgetting window (from CC and cbar, the older neuron's moments taken over the younger's
window: :func:`long_corr`), so a burst of crosstalk in a short buffer does not merge two
neighbours. CaImAn has no online merge; it only blocks duplicates at birth.

The merged neuron keeps the *older* neuron's identity and history (the lower model index:
neurons are appended at birth), the younger is absorbed, and it carries the summed trace
``c = c_i + c_j``, so its statistics are exact sums: ``CY_s = CY_i + CY_j`` (on the union
region; entries a neuron never accumulated take their model prediction), ``CC_s. = CC_i. +
CC_j.``, ``cbar_s = cbar_i + cbar_j``; the footprint is one exact HALS step on them. The
model must set the kept neuron's trace to ``c_i + c_j`` (see ``ModelUpdate``).

Removal: a footprint that HALS drives to zero, a neuron whose trace stayed below its noise
for ``OnlineParams.slow_remove_inactive_s``, or a neuron born online that grew beyond the
initialisation's size limit (out-of-focus neuropil, :func:`size_ratio`); the reason goes with
the removal (``ModelUpdate.removed_reasons``, the ``removed`` event's detail).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels import stats as kst
from online_cnmfe.model.footprint_shape import size_ratios
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.model.slow_path.state import forgetting_factor
from online_cnmfe.params import CNMFEParams


def find_partner(fs: suffstats.FootprintStats, i: int, view, params: CNMFEParams) -> int:
    """Model index of i's best merge partner, or -1."""
    si = fs.slot_of[i]
    region = fs.sup_idx[si, : fs.sup_n[si]]
    ok = view.residual_frame >= 0
    ci = view.c_buffer[i, ok]
    if ci.size < 3 or ci.std() <= 0:
        return -1
    best, best_r = -1, params.detection.merge_corr_threshold
    t, lam = int(view.t), forgetting_factor(params)
    for j in suffstats.neighbours(fs, i):
        if j == i:
            continue
        sj = fs.slot_of[j]
        r_long = long_corr(fs, si, sj, t, lam)
        if r_long <= best_r:
            continue
        n = fs.sup_n[sj]
        supp = fs.sup_idx[sj, :n][fs.a_sup[sj, :n] > 0]
        if not np.isin(supp, region, assume_unique=True).any():
            continue
        cj = view.c_buffer[j, ok]
        if cj.std() <= 0:
            continue
        r = min(float(np.corrcoef(ci, cj)[0, 1]), r_long)
        if r > best_r:
            best, best_r = int(j), r
    return best


def long_corr(
    fs: suffstats.FootprintStats, si: int, sj: int, t: int | None = None, lam: float = 1.0
) -> float:
    """Trace correlation of slots si, sj over the forgetting window (from CC and cbar).

    A neuron born online has CC and cbar from its birth buffer on, and so has its cross term
    with an older neuron, whose own CC and cbar span the whole window: mixing the two windows
    gave "correlations" of 1.04-3.45 on the held-out bursty movie, and merged two cells whose
    traces correlate 0.28 over their common life (0.95 in a 5 s buffer where one of them was
    silent and its trace held the other's crosstalk). With the frame ``t`` and the forgetting
    factor ``lam`` the older neuron's moments are taken over the younger's window
    (:func:`suffstats.window_moments`); without ``t``, as stored.
    """
    young, old = (sj, si) if fs.birth[sj] >= fs.birth[si] else (si, sj)
    mean_o, sq_o = float(fs.cbar[old]), float(fs.cc[old, old])
    if t is not None and fs.birth[young] > suffstats.INITIAL_BIRTH:
        decay = lam ** max(int(t) - int(fs.birth[young]), 0)
        mean_o, sq_o = suffstats.window_moments(fs, old, young, decay)
    v_old = sq_o - mean_o**2
    v_young = float(fs.cc[young, young] - fs.cbar[young] ** 2)
    if v_old <= 0 or v_young <= 0:
        return 0.0
    return float(fs.cc[si, sj] - mean_o * fs.cbar[young]) / math.sqrt(v_old * v_young)


def merge_into(fs: suffstats.FootprintStats, i: int, j: int, max_region: int) -> bool:
    """Fold neuron j's statistics into i's and refit i's footprint (j's slot is freed).

    Returns False if the merged footprint is empty. The caller drops j from ``slot_of``.
    """
    si, sj = int(fs.slot_of[i]), int(fs.slot_of[j])
    ni, nj = int(fs.sup_n[si]), int(fs.sup_n[sj])
    pix_i, pix_j = fs.sup_idx[si, :ni].copy(), fs.sup_idx[sj, :nj].copy()
    union = np.union1d(pix_i, pix_j).astype(np.int32)
    if union.size > max_region:
        a_all = np.zeros(union.size, np.float32)
        a_all[np.searchsorted(union, pix_i)] += fs.a_sup[si, :ni]
        a_all[np.searchsorted(union, pix_j)] += fs.a_sup[sj, :nj]
        w = np.maximum(a_all, 0)
        H, W = (int(v) for v in fs.dims)
        rows, cols = np.divmod(union, W)
        cr = (rows * w).sum() / max(w.sum(), 1e-12)
        cc = (cols * w).sum() / max(w.sum(), 1e-12)
        keep = np.argsort((rows - cr) ** 2 + (cols - cc) ** 2, kind="stable")[:max_region]
        union = np.sort(union[keep])
    nbrs = np.union1d(suffstats.neighbours(fs, i), suffstats.neighbours(fs, j))
    cy = np.zeros(union.size, np.float32)
    for k, s, pix, n in ((i, si, pix_i, ni), (j, sj, pix_j, nj)):
        pos = np.searchsorted(pix, union)
        known = (pos < n) & (pix[np.minimum(pos, n - 1)] == union)
        part = np.zeros(union.size, np.float32)
        kst.predict_cy(
            k, union, fs.slot_of, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cc, nbrs, fs.scratch, part
        )
        part[known] = fs.cy[s, pos[known]]
        cy += part
    # CC row/column of the sum c_i + c_j (diagonal gets CC_ii + 2 CC_ij + CC_jj)
    fs.cc[si, :] += fs.cc[sj, :]
    fs.cc[:, si] += fs.cc[:, sj]
    fs.cbar[si] += fs.cbar[sj]
    fs.noise[si] = math.hypot(float(fs.noise[si]), float(fs.noise[sj]))
    fs.last_active[si] = max(fs.last_active[si], fs.last_active[sj])
    a_old = np.zeros(union.size, np.float32)
    for s, pix, n in ((si, pix_i, ni), (sj, pix_j, nj)):
        pos = np.searchsorted(union, pix)
        inside = (pos < union.size) & (union[np.minimum(pos, union.size - 1)] == pix)
        a_old[pos[inside]] += fs.a_sup[s, :n][inside]
    suffstats.set_region(fs, si, union, a_old, cy)
    fs.used[sj] = False
    fs.sup_n[sj] = 0
    fs.bbox[sj] = 0
    fs.cc[sj, :] = 0.0
    fs.cc[:, sj] = 0.0
    keep_k = np.flatnonzero(np.arange(fs.slot_of.shape[0]) != j)
    slot_of_wo_j = np.ascontiguousarray(fs.slot_of[keep_k])
    i_new = int(np.searchsorted(keep_k, i))
    nb = np.flatnonzero(np.isin(keep_k, nbrs)).astype(np.int64)
    out = np.zeros(fs.sup_idx.shape[1], np.float32)
    kst.hals_neuron(
        i_new, slot_of_wo_j, fs.sup_idx, fs.sup_n, fs.a_sup, fs.cy, fs.cc, nb, fs.scratch, out
    )
    a = out[: union.size]
    fs.a_sup[si, : union.size] = a
    return bool(a.max() > 0)


def size_ratio(pix: np.ndarray, val: np.ndarray, dims, d: float) -> float:
    """Size ratio (:func:`..footprint_shape.size_ratios`) of one footprint given as (pixel
    indices, values)."""
    H, W = (int(v) for v in dims)
    col = scipy.sparse.csc_array(
        (np.asarray(val, np.float64), (np.asarray(pix, np.int64), np.zeros(len(pix), np.int64))),
        shape=(H * W, 1),
    )
    return float(size_ratios(col, (H, W), d)[0])


def inactive(fs: suffstats.FootprintStats, t: int, limit_frames: int) -> np.ndarray:
    """Model indices silent (trace below noise) for more than ``limit_frames``."""
    return np.flatnonzero(t - fs.last_active[fs.slot_of] > limit_frames).astype(np.int64)
