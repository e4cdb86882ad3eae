"""Calibrated acceptance tests of fitted components (trace significance, spatial consistency).

Both tests are scale-free, so they mean the same on raw, float, preprocessed or quantised data:

* **transient significance**: the trace ``c`` (C_raw, the demixed trace with its noise) is
  z-scored with a robust noise ``sd`` (the RMS of the deviations below the median, which
  calcium transients do not reach) and a component passes when some run of ``n_frames``
  consecutive frames is all above ``min_snr`` (white noise does that with probability about
  ``T * Phi(-min_snr) ** n_frames``, 1e-5 at 2.5 and 3 frames on 500 frames). ``n_frames``
  follows the indicator decay (``decay_time_s * frame_rate_hz / 2``, at least 2), so
  single-frame jumps (motion, flicker, transmission glitches) are not transients;
* **spatial consistency** (CaImAn's ``r_values``): the event-triggered image, the mean of the
  background-subtracted frames where the trace is significant minus their mean elsewhere, is
  correlated with the footprint in a box of +- one neuron diameter around the footprint's peak;
  a neuron's transients look like its footprint, a vessel edge or a texture fluctuation does
  not.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

EVENT_Z = 2.0  # frames above this robust z-score make the event-triggered image


def robust_zscore(traces: np.ndarray) -> np.ndarray:
    """``(c - median) / sd`` with ``sd`` the RMS of the deviations below the median.

    Parameters
    ----------
    traces : ndarray of shape (K, T)

    Returns
    -------
    ndarray of shape (K, T), float32
    """
    traces = np.asarray(traces, np.float64)
    md = np.median(traces, axis=1, keepdims=True)
    neg = np.minimum(traces - md, 0.0)
    n_neg = np.maximum((neg < 0).sum(axis=1, keepdims=True), 1)
    sd = np.sqrt((neg**2).sum(axis=1, keepdims=True) / n_neg)
    sd = np.maximum(sd, 1e-12 * max(float(np.abs(traces).max(initial=0.0)), 1e-30))
    return ((traces - md) / sd).astype(np.float32)


def transient_score(traces: np.ndarray, n_frames: int) -> np.ndarray:
    """Largest z-score held for ``n_frames`` consecutive frames, per trace.

    ``max_t min_{t <= s < t + n_frames} z(s)`` with ``z`` from :func:`robust_zscore`.

    Parameters
    ----------
    traces : ndarray of shape (K, T)
    n_frames : int >= 1

    Returns
    -------
    ndarray of shape (K,), float32
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    z = robust_zscore(traces)
    K, T = z.shape
    if K == 0:
        return np.zeros(0, np.float32)
    n = min(n_frames, T)
    run = z[:, : T - n + 1].copy()
    for s in range(1, n):
        np.minimum(run, z[:, s : T - n + 1 + s], out=run)
    return run.max(axis=1).astype(np.float32)


def spatial_consistency(Yt: np.ndarray, dims, A, traces: np.ndarray, radius: int) -> np.ndarray:
    """Correlation of each footprint with its event-triggered image (``r_values``).

    Parameters
    ----------
    Yt : ndarray of shape (n_pixels, T), float32
        Background-subtracted frames, pixel-major.
    dims : (H, W)
    A : sparse (n_pixels, K)
    traces : ndarray of shape (K, T)
        C_raw (significant frames: robust z > ``EVENT_Z``).
    radius : int
        Half-size of the box around the footprint's peak.

    Returns
    -------
    ndarray of shape (K,), float32; -1 for a component without a significant frame.
    """
    H, W = dims
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    z = robust_zscore(traces)
    out = np.full(K, -1.0, np.float32)
    a_full = np.zeros(H * W, np.float32)
    for k in range(K):
        sl = slice(A.indptr[k], A.indptr[k + 1])
        if sl.stop == sl.start:
            continue
        act = z[k] > EVENT_Z
        n_act = int(act.sum())
        if n_act == 0 or n_act == z.shape[1]:
            continue
        peak = A.indices[sl][np.argmax(A.data[sl])]
        pr, pc = divmod(int(peak), W)
        r0, r1 = max(0, pr - radius), min(H, pr + radius + 1)
        c0, c1 = max(0, pc - radius), min(W, pc + radius + 1)
        pix = (np.arange(r0, r1)[:, None] * W + np.arange(c0, c1)[None]).ravel()
        box = Yt[pix]
        img = box[:, act].mean(axis=1) - box[:, ~act].mean(axis=1)
        a_full[A.indices[sl]] = A.data[sl]
        a = a_full[pix]
        a_full[A.indices[sl]] = 0
        if np.ptp(a) <= 0 or np.ptp(img) <= 0:
            continue
        out[k] = float(np.corrcoef(a, img)[0, 1])
    return out
