"""Everything of the online model that evolves, declared in one place.

Symbols: A footprints (n_pixels × K, CSC), G = W D A (background grid × K, CSC),
Ã = (I − UWD) A = A − U G, Q = ÃᵀÃ (the demixing Gram), b0 baseline, W ring coefficients on
the background grid, c traces. Arrays are float32 unless noted; pixel vectors are row-major.

Only :class:`online_cnmfe.model.OnlineCNMFE` mutates a ModelState. The slow-path engineer's
``SlowPathState`` hangs off ``slow`` (``None`` when the slow path is unavailable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_cnmfe.model.slotted import SlottedColumns


@dataclass(slots=True)
class ModelState:
    """The complete evolving state of :class:`~online_cnmfe.model.OnlineCNMFE`.

    Attributes
    ----------
    t : int
        Index of the next frame (initialisation frames are 0 … init_frames − 1).
    dims : tuple (H, W)
    ssub : int
        Background grid downsampling.
    A, DA, G : SlottedColumns
        Footprints (n_pixels × K), D A (grid block averages) and G = W D A (grid; structural
        support: every grid pixel whose ring touches D A_k, zeros kept), in slotted CSC
        (``online_cnmfe/model/slotted.py``) so columns are replaced without copying the matrix.
    block_count : ndarray of shape (n_bg,), float32
        Pixels in each background block (N; S = Uᵀ A = N ∘ D A).
    boxes : ndarray of shape (K, 4), int64
        Grid bounding box (row min, row max, col min, col max) of the support of Ã_k.
    pattern : ndarray of shape (K, K), bool
        Pairs whose boxes overlap (the sparsity pattern kept for Q).
    gram : ndarray of shape (K, K), float32
        Q = ÃᵀÃ; ``q_indptr, q_indices, q_data`` its CSR on ``pattern``, ``q_diag`` its
        diagonal, ``order`` the sweep order (groups of non-interacting neurons).
    W : ndarray of shape (n_bg, R); ring_offsets (R, 2) int32; ring_idx (n_bg, R) int32
    b0 : ndarray of shape (n_pixels,)
    c : ndarray of shape (K,)
        Last demixed traces (the warm start of the next frame).
    c_den, s : ndarray of shape (K,)
        Last causal denoised calcium and spike estimate.
    g, lam, s_min, trace_noise : ndarray of shape (K,)
        AR(1) coefficient, sparsity penalty, minimal spike size and noise of each trace.
    pool_v, pool_w : ndarray of shape (K, P), float64; pool_t, pool_l (K, P) int64;
    pool_first, pool_count : (K,) int64
        OASIS pools of every neuron (see ``_kernels/oasis_online.py``).
    residual : ndarray of shape (L, n_pixels)
        Ring buffer of the last L residuals; ``residual_frame`` (L,) int64 the frame held by
        each slot (−1 = empty), ``residual_head`` the next slot to write.
    c_raw_buffer, c_den_buffer : ndarray of shape (K, L)
        Demixed and causal denoised traces aligned with ``residual`` (same slots).
    neuron_ids, birth_frame : ndarray of shape (K,), int64; next_id : int
    footprints_version : int
    n_skipped : int
        Frames skipped so far (NaN, …).
    gram_cursor : int
        Next Gram column recomputed exactly after an update (round robin), so rounding from
        the incremental W-row corrections cannot accumulate over long runs.
    n_processed : int
        Frames used so far, initialisation included (the OASIS clock: skipped frames do not
        advance it).
    scratch_* : ndarray
        Per-frame work arrays (not meaningful between frames).
    pixel_limits : (float, float)
        Accepted pixel values: a frame with a pixel outside is skipped (see
        ``online.max_pixel_excursion_ranges``); (-inf, inf) in states saved before it existed.
    slow : SlowPathState or None
    motion : MotionState or None
        The motion-correction stage (``online_cnmfe/model/motion/``); None when it is off.
    pending_update : ModelUpdate or None
        The slow-path step of the previous frame, applied after this frame's traces (see
        :meth:`OnlineCNMFE.settle_slow_path`); kept in the state so that a checkpoint taken
        between two frames resumes exactly.
    pre : PreprocessState or None
        The preprocessing stage's state (``online_cnmfe.model.preprocessing``); None when
        preprocessing is off or the model was built from an InitResult without it.
    n_flagged : int
        Frames flagged so far (``FrameResult.flag``): traces given, model not updated.
    """

    t: int
    dims: tuple[int, int]
    ssub: int
    A: SlottedColumns
    DA: SlottedColumns
    G: SlottedColumns
    block_count: np.ndarray
    boxes: np.ndarray
    pattern: np.ndarray
    gram: np.ndarray
    q_indptr: np.ndarray
    q_indices: np.ndarray
    q_data: np.ndarray
    q_diag: np.ndarray
    order: np.ndarray
    W: np.ndarray
    ring_offsets: np.ndarray
    ring_idx: np.ndarray
    b0: np.ndarray
    c: np.ndarray
    c_den: np.ndarray
    s: np.ndarray
    g: np.ndarray
    lam: np.ndarray
    s_min: np.ndarray
    trace_noise: np.ndarray
    pool_v: np.ndarray
    pool_w: np.ndarray
    pool_t: np.ndarray
    pool_l: np.ndarray
    pool_first: np.ndarray
    pool_count: np.ndarray
    residual: np.ndarray
    residual_frame: np.ndarray
    residual_head: int
    c_raw_buffer: np.ndarray
    c_den_buffer: np.ndarray
    neuron_ids: np.ndarray
    birth_frame: np.ndarray
    next_id: int
    footprints_version: int
    n_skipped: int
    n_processed: int
    gram_cursor: int
    scratch_bg: np.ndarray
    scratch_ytilde: np.ndarray
    scratch_zsum: np.ndarray
    scratch_rhs: np.ndarray
    scratch_ac: np.ndarray
    scratch_gc: np.ndarray
    slow: Any = None
    motion: Any = None
    pending_update: Any = None
    pixel_limits: tuple[float, float] = (-math.inf, math.inf)
    pre: Any = None
    n_flagged: int = 0

    @property
    def n_components(self) -> int:
        return self.A.n_columns

    @property
    def n_pixels(self) -> int:
        return int(self.dims[0] * self.dims[1])
