"""Building a ModelState from an InitResult, and recomputing its precomputed products.

Symbols as in ``traces.py``: D, U grid operators, W ring coefficients (``Wsp`` its sparse
n_bg × n_bg form), G = W D A, Ã = A − U G, Q = ÃᵀÃ. These run at initialisation, at load and
when the slow path changes A or W; never on an ordinary frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model import deconvolution_online as _deconv
from online_cnmfe.model import traces as _tr
from online_cnmfe.model._kernels import demix as _kd
from online_cnmfe.model._kernels import frame_check as _kf
from online_cnmfe.model._kernels import lens_gaps as _kg
from online_cnmfe.model._kernels import model_update as _ku
from online_cnmfe.model._kernels import oasis_online as _ko
from online_cnmfe.model._kernels import residual as _kr
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.motion import lens_gaps as _gaps
from online_cnmfe.model.preprocessing import sanity as _sanity
from online_cnmfe.model.slotted import INDEX_DTYPE, SlottedColumns
from online_cnmfe.model.state import ModelState
from online_cnmfe.params import CNMFEParams


@dataclass(slots=True)
class Operators:
    """Constant operators derived from the state's geometry and params (not saved)."""

    dims3: np.ndarray  # (H, W, ssub) int64
    alpha_b0: float  # b0 forgetting rate per frame
    D: scipy.sparse.csr_array
    U: scipy.sparse.csr_array
    grid: tuple[int, int]  # (hb, wb)
    scratch_n: np.ndarray  # (n_bg + 1,) float32 zeros (update kernels; used by one thread at
    # a time: the slow path's while it prepares a hand-over, else the model's)
    scratch_g: np.ndarray  # (n_bg,) float32 zeros
    scratch_s: np.ndarray  # (n_bg,) float32 zeros
    scratch_a: np.ndarray  # (n_pixels,) float32 zeros
    mark: np.ndarray  # (n_bg,) int64 visit tags
    frame_buf: np.ndarray  # (n_pixels,) float32 copy of the current frame
    Wt: np.ndarray  # (R, n_bg) float32: W transposed, for the frame's ring product; every
    # change of W's rows is copied here (updates.commit)
    ring_flat: np.ndarray  # (R,) int64 ring offsets on the padded grid (_kd.ring_layout)
    ring_pad: int  # the padded grid's margin (the ring's reach)
    scratch_xd: np.ndarray  # (padded grid size,) float32: D (y - b0), zero around it
    frame_stats: np.ndarray  # (3,) float64: finite min, max, non-finite count of frame_buf
    tag: int = 0
    epoch: int = 0  # hand-overs committed so far (a prepared one is valid for one epoch only)


def operators_for(st: ModelState, params: CNMFEParams) -> Operators:
    """Operators of a state (after build or load)."""
    D, U = _tr.grid_operators(st.dims, st.ssub)
    frames = params.background.forgetting_time_s * params.data.frame_rate_hz
    grid = _tr.grid_shape(st.dims, st.ssub)
    ring_flat, pad, padded = _kd.ring_layout(st.ring_offsets, *grid)
    return Operators(
        dims3=np.array([st.dims[0], st.dims[1], st.ssub], np.int64),
        alpha_b0=float(1.0 / max(frames, 1.0)),
        D=D,
        U=U,
        grid=grid,
        scratch_n=np.zeros(D.shape[0] + 1, np.float32),
        scratch_g=np.zeros(D.shape[0], np.float32),
        scratch_s=np.zeros(D.shape[0], np.float32),
        scratch_a=np.zeros(D.shape[1], np.float32),
        mark=np.full(D.shape[0], -1, np.int64),
        frame_buf=np.zeros(D.shape[1], np.float32),
        frame_stats=np.zeros(3, np.float64),
        Wt=np.ascontiguousarray(st.W.T),
        ring_flat=ring_flat,
        ring_pad=pad,
        scratch_xd=np.zeros(padded, np.float32),
    )


def pixel_limits(init: InitResult, frames, excursion: float) -> tuple[float, float]:
    """Pixel values the model accepts: the initialisation frames' [min, max] widened on each
    side by ``excursion`` × its width (without frames: b0 plus the largest A·c_raw). A frame
    beyond would drive the traces and statistics far from anything seen (1e30 ruins them for
    the rest of a session); ±inf when ``excursion`` is 0."""
    if excursion <= 0:
        return (-math.inf, math.inf)
    if frames is not None and np.size(frames):
        lo, hi, stats = math.inf, -math.inf, np.zeros(3)
        for frame in frames:  # frame by frame: no copy of the whole movie
            _kf.finite_range(np.ascontiguousarray(frame, np.float32).ravel(), stats)
            lo, hi = min(lo, stats[0]), max(hi, stats[1])
        if lo > hi:  # no finite pixel at all
            lo = hi = 0.0
    else:
        b0 = np.asarray(init.b0, np.float32)
        A = scipy.sparse.csc_array(init.A)
        peak = A.max(axis=0).toarray().ravel() if A.shape[1] else np.zeros(0)
        c_max = np.asarray(init.C_raw, np.float32).max(axis=1) if peak.size else peak
        lo, hi = float(b0.min()), float(b0.max() + float((peak * c_max).max(initial=0.0)))
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
    return (lo - excursion * span, hi + excursion * span)


def _validate_init(init: InitResult) -> None:
    H, Wd = init.dims
    n_pixels = H * Wd
    K = init.n_components
    if init.A.shape[0] != n_pixels:
        raise ValueError(
            f"InitResult.A has {init.A.shape[0]} rows; dims {init.dims} need {n_pixels}"
        )
    hb, wb = _tr.grid_shape(init.dims, init.background_downsample)
    if init.W.shape != (hb * wb, init.ring_offsets.shape[0]):
        raise ValueError(
            f"InitResult.W has shape {init.W.shape}; expected ({hb * wb}, "
            f"{init.ring_offsets.shape[0]}) for dims {init.dims} and ssub "
            f"{init.background_downsample}"
        )
    for name in ("C", "C_raw"):
        if getattr(init, name).shape[0] != K:
            raise ValueError(f"InitResult.{name} has {getattr(init, name).shape[0]} rows, not {K}")
    if init.b0.shape != (n_pixels,):
        raise ValueError(f"InitResult.b0 has shape {init.b0.shape}, expected ({n_pixels},)")


def build_state(init: InitResult, frames, params: CNMFEParams):
    """A fresh ModelState (and its Operators) from an InitResult and its frames."""
    _validate_init(init)
    dims = (int(init.dims[0]), int(init.dims[1]))
    ssub = int(init.background_downsample)
    n_pixels = dims[0] * dims[1]
    hb, wb = _tr.grid_shape(dims, ssub)
    n_bg = hb * wb
    K = init.n_components
    L = params.online.residual_buffer_frames
    A = scipy.sparse.csc_array(init.A, dtype=np.float32)
    A.sort_indices()
    g_init = np.asarray(init.g)
    g = np.ascontiguousarray(
        _deconv.ar1_coefficients(g_init if g_init.ndim == 2 else g_init[:, None])
    )
    noise = np.ascontiguousarray(init.trace_noise, np.float32)
    s_min, lam = _deconv.spike_thresholds(g, noise, params.deconv)
    pools = _deconv.empty_pools(K, params.deconv.pool_capacity)
    C_raw = np.asarray(init.C_raw, np.float32)
    T0 = C_raw.shape[1]
    c_den, s, c_den_all = _deconv.run_history(pools, g, lam, s_min, C_raw, 0)
    ring_offsets = np.ascontiguousarray(init.ring_offsets, np.int32)
    st = ModelState(
        t=T0, dims=dims, ssub=ssub, A=SlottedColumns.from_csc(A), DA=None, G=None,
        block_count=None, boxes=None, pattern=None, gram=None, q_indptr=None,
        q_indices=None, q_data=None, q_diag=None, order=None,
        W=np.ascontiguousarray(init.W, np.float32), ring_offsets=ring_offsets,
        ring_idx=_kd.ring_gather_index(ring_offsets, hb, wb),
        b0=np.array(init.b0, np.float32),
        c=(C_raw[:, -1].copy() if T0 else np.zeros(K, np.float32)),
        c_den=c_den, s=s, g=g, lam=lam, s_min=s_min, trace_noise=noise, **pools,
        residual=np.zeros((L, n_pixels), np.float32), residual_frame=np.full(L, -1, np.int64),
        residual_head=0, c_raw_buffer=np.zeros((K, L), np.float32),
        c_den_buffer=np.zeros((K, L), np.float32), neuron_ids=np.arange(K, dtype=np.int64),
        birth_frame=np.zeros(K, np.int64), next_id=K, footprints_version=0, n_skipped=0,
        n_processed=T0, gram_cursor=0, scratch_bg=np.zeros(n_bg, np.float32),
        scratch_ytilde=np.zeros(n_pixels, np.float32),
        scratch_zsum=np.zeros(n_bg, np.float32), scratch_rhs=np.zeros(K, np.float32),
        scratch_ac=np.zeros(n_pixels, np.float32), scratch_gc=np.zeros(n_bg, np.float32),
    )  # fmt: skip
    st.c = np.maximum(st.c, 0).astype(np.float32)
    st.pixel_limits = pixel_limits(init, frames, params.online.max_pixel_excursion_ranges)
    ops = operators_for(st, params)
    refresh_products(st, ops)
    if frames is not None and T0:
        _fill_residuals(st, ops, frames, C_raw, c_den_all)
    return st, ops


def background_subtract(st: ModelState, ops: Operators, y: np.ndarray) -> None:
    """ỹ = (I − UWD)(y − b0) into ``st.scratch_ytilde`` and its block sums into
    ``st.scratch_zsum`` (``_kernels/demix.background_subtract``)."""
    _kd.background_subtract(
        y, st.b0, ops.Wt, ops.ring_flat, ops.ring_pad, st.dims[0], st.dims[1], st.ssub,
        ops.scratch_xd, st.scratch_bg, st.scratch_ytilde, st.scratch_zsum,
    )  # fmt: skip


def fill_lens_gaps(st: ModelState, y: np.ndarray) -> None:
    """Overwrite the pixels of the corrected frame y that saw the lens's dark margin
    (``motion.lens_gaps``) with the model's prediction from the previous frame
    (``_kernels/lens_gaps``); nothing without a lens margin or while the tissue is still."""
    gap = _gaps.frame_gap(st.motion)
    if gap is not None:
        _kg.fill_gaps(y, gap, _gaps.GAP_LEVEL, st.b0, st.scratch_ac)


def _fill_residuals(st: ModelState, ops: Operators, frames, C_raw, c_den_all) -> None:
    """Residuals of the last L initialisation frames (b0 frozen), so detection can start."""
    L = st.residual.shape[0]
    T0 = C_raw.shape[1]
    first = max(0, T0 - L, T0 - frames.shape[0])
    offset = T0 - frames.shape[0]  # frames may be the tail of the init movie
    for j in range(first, T0):
        y = np.ascontiguousarray(frames[j - offset], np.float32).reshape(-1)
        c = np.ascontiguousarray(np.maximum(C_raw[:, j], 0), np.float32)
        background_subtract(st, ops, y)
        slot = st.residual_head
        _kr.residual_update(
            *slot_args(st.A), *slot_args(st.G), c, st.scratch_ytilde, y, 0.0, ops.dims3,
            st.scratch_ac, st.scratch_gc, st.b0, st.residual[slot],
        )  # fmt: skip
        st.residual_frame[slot] = j
        st.c_raw_buffer[:, slot] = C_raw[:, j]
        st.c_den_buffer[:, slot] = c_den_all[:, j]
        st.residual_head = (slot + 1) % L


def refresh_products(st: ModelState, ops: Operators) -> None:
    """Recompute D A, G, Q and its CSR for all neurons from A and W (initialisation)."""
    K = st.n_components
    A = st.A.to_csc()
    st.DA = SlottedColumns.from_csc(ops.D @ A)
    st.block_count = np.ascontiguousarray(np.asarray(ops.U.sum(axis=0)).ravel(), np.float32)
    cols = [
        _ku.g_column(da_idx.astype(np.int64), da_val, st.W, st.ring_idx, st.ring_offsets,
                     ops.grid[0], ops.grid[1], ops.scratch_n, ops.mark, next_tags(ops, 1))
        for da_idx, da_val in (st.DA.column(k) for k in range(K))
    ]  # fmt: skip
    st.G = SlottedColumns.from_columns(cols, ops.D.shape[0])
    G = st.G.to_csc()
    st.gram = _tr.dense_gram(scipy.sparse.csc_array(A - ops.U @ G))
    st.boxes = np.zeros((K, 4), np.int64)
    for k in range(K):
        st.boxes[k] = _tr.column_box(st.DA.column(k)[0], st.G.column(k)[0], ops.grid[1])
    b = st.boxes
    st.pattern = (
        (b[:, None, 0] <= b[None, :, 1])
        & (b[:, None, 1] >= b[None, :, 0])
        & (b[:, None, 2] <= b[None, :, 3])
        & (b[:, None, 3] >= b[None, :, 2])
    )
    _tr.refresh_csr(st)


def slot_args(m: SlottedColumns) -> tuple:
    """(start, stop, indices, data) of a slotted matrix, as kernels take them."""
    return m.start, m.stop, m.indices, m.data


def next_tags(ops: Operators, n: int) -> int:
    """First of ``n`` fresh visit tags for ``g_column``."""
    tag = ops.tag
    ops.tag += n
    return tag


_WARMED = False


def warm_up(slow_path: bool = False) -> None:
    """Compile (or load from cache) every per-frame kernel on tiny inputs, once per process;
    with ``slow_path`` the slow path's too (a model resumed from a state file: a fresh one
    warms them when its slow path starts)."""
    global _WARMED
    if slow_path:
        from online_cnmfe.model.slow_path.warmup import warm_up as warm_slow_path

        warm_slow_path()  # (idempotent; else the first birth or merge would load them)
    if _WARMED:
        return
    f32, i64 = np.float32, np.int64
    y = np.ones(16, f32)
    flat = np.zeros(2, i64)
    sc = [np.zeros(16, f32), np.zeros(4, f32), np.zeros(16, f32), np.zeros(4, f32)]
    _kd.background_subtract(y, y.copy(), np.zeros((2, 4), f32), flat, 1, 4, 4, 2, *sc)
    _kg.fill_gaps(y.copy(), y, _gaps.GAP_LEVEL, y, y)
    ip, ix, dt = np.array([0, 1], i64), np.array([0], i64), np.ones(1, f32)
    s0, s1 = np.zeros(1, i64), np.ones(1, i64)
    rows = np.zeros(1, INDEX_DTYPE)  # slotted A and G
    rhs = np.zeros(1, f32)
    _kd.demix_rhs(s0, s1, rows, dt, s0, s1, rows, dt, y, sc[3], rhs)
    c = np.zeros(1, f32)
    _kd.nnls_cd(ip, ix, dt, dt, rhs, np.zeros(1, i64), 1, c)
    pools = _deconv.empty_pools(1, 2)
    one = np.full(1, 0.5, f32)
    _deconv.run_history(pools, one, one, one, np.ones((1, 2), f32), 0)
    _ko.oasis_ar1_reconstruct(
        one, pools["pool_v"], pools["pool_t"], pools["pool_l"], pools["pool_first"],
        pools["pool_count"], 0, np.zeros((1, 2), f32),
    )  # fmt: skip
    _kr.residual_update(
        s0, s1, rows, dt, s0, s1, rows, dt, c, y, y, 0.0, np.array([4, 4, 2], i64),
        np.zeros(16, f32), np.zeros(4, f32), np.zeros(16, f32), np.zeros(16, f32),
    )  # fmt: skip
    _warm_update_kernels()
    _sanity.warm_up()  # the periodic plausibility check runs on the model thread too
    _WARMED = True


def _warm_update_kernels() -> None:
    f32, i64 = np.float32, np.int64
    W = np.zeros((4, 1), f32)
    ring_idx = np.zeros((4, 1), np.int32)
    off = np.zeros((1, 2), np.int32)
    _ku.g_column(np.zeros(1, i64), np.ones(1, f32), W, ring_idx, off, 2, 2, np.zeros(5, f32),
                 np.full(4, -1, i64), 0)  # fmt: skip
    s0, s1, ix, d = np.zeros(1, i64), np.ones(1, i64), np.zeros(1, INDEX_DTYPE), np.ones(1, f32)
    m = (s0, s1, ix, d)  # a slotted matrix
    nb = np.ones(4, f32)
    _ku.gram_column(0, np.zeros(1, i64), *m, *m, *m, nb, np.zeros(4, f32), np.zeros(4, f32),
                    np.zeros(4, f32), np.zeros(1, f32))  # fmt: skip
    gram = np.ones((1, 1), f32)
    _ku.w_rows_update(0, 1, W, ring_idx, np.zeros(1, i64), *m, *m, nb, gram, np.zeros(5, f32))
    one = np.zeros(1, i64)
    _ku.gather_columns(one, one, s0, s1, ix, d, 0, np.zeros(1, i64), np.zeros(1, i64),
                       np.zeros(1, INDEX_DTYPE), np.zeros(1, f32))  # fmt: skip
