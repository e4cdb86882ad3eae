"""Warm-up of the slow-path kernels, so no frame pays for numba compilation or cache loading.

The first birth, merge or W solve of a run would otherwise load (or compile) its kernels on the
frame where it happens (measured: a 139 ms CPU spike on the first birth). :func:`warm_up` drives
every code path once on a tiny synthetic model with the same argument types as online.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse

_DONE = False


def warm_up() -> None:
    """Run each slow-path kernel once (idempotent; ~0.1-0.5 s the first time per process)."""
    global _DONE
    if _DONE:
        return
    from online_cnmfe.model._kernels import detection as kdet
    from online_cnmfe.model._kernels.ring import ring_offsets
    from online_cnmfe.model.init_result import InitResult
    from online_cnmfe.model.slow_path import candidates as cand_mod
    from online_cnmfe.model.slow_path import detection as det_mod
    from online_cnmfe.model.slow_path import handover, merging, suffstats
    from online_cnmfe.model.slow_path import ring_refresh as rr
    from online_cnmfe.model.slow_path import schedule as slow_path
    from online_cnmfe.params import CNMFEParams

    rng = np.random.default_rng(0)
    H = W = 24
    T, L = 40, 20
    rows, cols = np.mgrid[0:H, 0:W]
    A = np.stack(
        [np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 4.0).ravel() for r, c in ((7, 7), (7, 11))],
        axis=1,
    ).astype(np.float32)
    C = rng.random((2, T)).astype(np.float32)
    frames = ((A @ C).T + rng.standard_normal((T, H * W))).astype(np.float32)
    off = ring_offsets(3)
    params = CNMFEParams().replace(
        **{"data.neuron_diameter_px": 8.0, "online.residual_buffer_frames": L}
    )
    init = InitResult(
        dims=(H, W), A=scipy.sparse.csc_array(A), C=C, S=C, C_raw=C,
        b0=np.zeros(H * W, np.float32), W=np.zeros((144, len(off)), np.float32),
        ring_offsets=off, background_downsample=2, g=np.full(2, 0.9, np.float32),
        trace_noise=np.ones(2, np.float32), pixel_noise=np.ones(H * W, np.float32),
        corr_image=np.zeros((H, W), np.float32), pnr_image=np.zeros((H, W), np.float32),
    )  # fmt: skip
    slow = slow_path.init_slow_path(init, frames.reshape(T, H, W), params, warm=False)
    resid = frames[-L:] - (A @ C[:, -L:]).T
    view = slow_path.SlowPathInputs(
        t=T, A=init.A, W=init.W, b0=init.b0, g=init.g, residual=resid,
        residual_frame=np.arange(T - L, T, dtype=np.int64), c_buffer=C[:, -L:].copy(),
    )  # fmt: skip
    for t in range(T, T + 3):
        slow_path.observe_frame(slow, t, frames[t - T], C[:, -1], resid[0], params)
    # a ring-sample frame (its downsampling and clipping run only on those frames), then whole
    # steps on every phase of the schedule (detection, hand-over, sample ingestion)
    t0 = slow.ring.stride * (T // slow.ring.stride + 1)
    for t in range(t0, t0 + 8):
        slow_path.observe_frame(slow, t, frames[t % T], C[:, -1], resid[0], params)
        step_view = dataclasses.replace(view, t=t)
        u = slow_path.slow_step(slow, step_view, params)
        if u is not None and (u.removed.size or u.merged_kept.size or u.new_footprints.shape[1]):
            break  # the toy model changed shape: enough
    fs = slow.stats
    buffer = (view.residual, view.c_buffer, view.residual_frame >= 0)
    suffstats.refresh_footprint(fs, 0, 2, buffer, True)
    geo = det_mod.geometry(params)
    cand_mod.evaluate(fs, view, 7, 7, params, geo)
    det_mod.calibrate(slow.det, geo, params, T)
    kdet.corr_pnr_image(slow.det.neg, slow.det.nvar, slow.det.vimg)
    res = dict(
        pix=np.arange(100, 110, dtype=np.int64), a=np.ones(10, np.float32),
        trace=np.ones(L, np.float32), frames=view.residual_frame.copy(),
        noise=np.float32(1.0), events=np.zeros(1, np.int64), zmax=1.0, energy=1.0,
        centroid=(4.0, 4.0),
    )  # fmt: skip
    handover.birth_stats(fs, view, res, params)
    from online_cnmfe.model._kernels import stats as kst

    ok = view.residual_frame >= 0  # the margin seed (reached above only if a footprint grew)
    a_hat = np.empty(4, np.float32)
    kst.buffer_regression(
        np.ascontiguousarray(C[0, -L:]), np.ascontiguousarray(resid, np.float32), ok,
        np.arange(4, dtype=np.int32), a_hat,
    )  # fmt: skip
    keep = np.zeros(4, np.int64)
    kdet.nms_greedy(np.zeros(2), np.zeros(2), np.arange(2), 1.0, 2, keep)
    det = slow.det  # the search's candidate kernel (reached above only once calibrated)
    kdet.detection_candidates(
        det.z, det.pos, det.nvar, det.blocked_until, T, math.inf, det.vimg, det.cand_idx,
        det.cand_score,
    )  # fmt: skip
    rr.solve_slice(slow.ring, init.W, T, 4, 0.99, 16.0)
    merging.merge_into(fs, 0, 1, fs.sup_idx.shape[1])
    _DONE = True
