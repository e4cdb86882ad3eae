"""Per-frame preprocessing kernels: line-noise offsets, frame quality, corrections.

Symbols: y the frame (H, W) float32, T the running template (H, W) (mean of recent corrected
frames, before bleaching normalisation), d the sensor dark level, s the frame's gain against
the template, o_r / o_c the row / column offsets, g the slow bleaching gain, m the FOV mask
(uint8, 1 inside the lens).

  s    = sum_m (y - d)(T - d) / sum_m (T - d)^2                  (on a sparse grid)
  o_r  = loc_c (y[r, c] - d - s (T[r, c] - d))                    (on sampled columns)
  o_c  = loc_r (y[r, c] - o_r - d - s (T[r, c] - d))              (on sampled rows)
  v    = y - o_r - o_c;   T <- T + alpha (v - T);   y <- d + (v - d) / g

loc is the median refined by one Huber step (threshold 1.5 x the samples' usual scale): as
robust, less noisy, and not quantised on integer (uint8) frames.

A row's roughness is the mean absolute difference of horizontally adjacent pixels: stripes
(row offsets) do not change it, missing lines (constant rows) drop it to 0 and transmission
noise multiplies it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}  # fastmath without nnan/ninf (NaN frames)


@njit(cache=True, nogil=True)
def select_median(a, n):
    """Median of ``a[:n]`` (the upper one for even n) by quickselect; ``a`` is reordered."""
    if n <= 0:
        return 0.0
    k = n // 2
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit(cache=True, nogil=True)
def frame_gain(y, template, mask, dark, step):
    """Least-squares gain s of ``y - dark`` on ``template - dark`` over the mask, on every
    ``step``-th row and column. Returns (s, mean of y over those pixels); s = 1 if undefined."""
    H, W = y.shape
    num = 0.0
    den = 0.0
    tot = 0.0
    n = 0
    for r in range(step // 2, H, step):
        for c in range(step // 2, W, step):
            if mask[r, c] == 0:
                continue
            t = template[r, c] - dark
            v = y[r, c] - dark
            num += v * t
            den += t * t
            tot += y[r, c]
            n += 1
    s = num / den if den > 0.0 else 1.0
    return s, tot / max(n, 1)


@njit(cache=True, nogil=True, fastmath=_FAST)
def _row_roughness(row):
    acc = np.float32(0.0)
    for c in range(row.shape[0] - 1):
        acc += abs(row[c + 1] - row[c])
    return acc / np.float32(max(row.shape[0] - 1, 1))


@njit(cache=True, nogil=True, fastmath=_FAST)
def _clipped_mean_step(samples, n, m, c):
    """One Huber step from m: m + mean(clip(x - m, -c, c)) over samples[:n]."""
    acc = np.float32(0.0)
    for i in range(n):
        d = samples[i] - m
        acc += min(max(d, -c), c)
    return m + acc / np.float32(max(n, 1))


@njit(cache=True, nogil=True)
def robust_location(samples, n, scale):
    """Median of ``samples[:n]`` refined by one Huber step with threshold 1.5 ``scale`` (the
    median alone when scale <= 0): as robust, but not quantised on integer data and less
    noisy. ``samples`` is reordered (the Huber sum does not depend on order)."""
    m = select_median(samples, n)
    if scale <= 0.0 or n == 0:
        return m
    return _clipped_mean_step(samples, n, m, np.float32(1.5 * scale))


@njit(cache=True, nogil=True)
def row_offsets(y, template, dark, gain, col_step, scale, samples, row_off, row_rough):
    """Row offsets o_r (:func:`robust_location` over every ``col_step``-th column of the
    frame minus the scaled template) and row roughness. Written in place: samples
    (>= W / col_step + 1) scratch, row_off (H,), row_rough (H,)."""
    H, W = y.shape
    d = np.float32(dark)
    s = np.float32(gain)
    start = (W - 1 - ((W - 1) // col_step) * col_step) // 2
    for r in range(H):
        row_rough[r] = _row_roughness(y[r])
        n = 0
        for c in range(start, W, col_step):
            samples[n] = y[r, c] - d - s * (template[r, c] - d)
            n += 1
        row_off[r] = robust_location(samples, n, scale)


@njit(cache=True, nogil=True)
def row_roughness(y, row_rough):
    """The row roughness alone, as :func:`row_offsets` writes it (for frames whose row offsets
    are not removed: no medians). Written in place: row_rough (H,)."""
    for r in range(y.shape[0]):
        row_rough[r] = _row_roughness(y[r])


@njit(cache=True, nogil=True)
def column_offsets(y, template, dark, gain, row_off, row_step, scale, samples, col_off):
    """Column offsets o_c after the row offsets (:func:`robust_location` over every
    ``row_step``-th row). Written in place: samples (>= H / row_step + 1) scratch,
    col_off (W,)."""
    H, W = y.shape
    d = np.float32(dark)
    s = np.float32(gain)
    start = (H - 1 - ((H - 1) // row_step) * row_step) // 2
    for c in range(W):
        n = 0
        for r in range(start, H, row_step):
            samples[n] = y[r, c] - row_off[r] - d - s * (template[r, c] - d)
            n += 1
        col_off[c] = robust_location(samples, n, scale)


@njit(cache=True, nogil=True, fastmath=_FAST)
def apply_corrections(y, row_off, col_off, dark, inv_gain, template, alpha, mask):
    """Subtract the offsets, update the template, normalise the bleaching, all in place.

    v = y - o_r - o_c; if alpha > 0: T <- T + alpha (v - T); y <- d + (v - d) inv_gain.
    Written in place: y (H, W), template (H, W). Returns the mean of v over the mask.
    """
    H, W = y.shape
    d = np.float32(dark)
    ig = np.float32(inv_gain)
    a = np.float32(alpha)
    total = 0.0
    n = 0
    for r in range(H):
        ro = row_off[r]
        acc = np.float32(0.0)
        cnt = 0
        if a > 0:
            for c in range(W):
                v = y[r, c] - ro - col_off[c]
                template[r, c] += a * (v - template[r, c])
                acc += v * mask[r, c]
                cnt += mask[r, c]
                y[r, c] = d + (v - d) * ig
        else:
            for c in range(W):
                v = y[r, c] - ro - col_off[c]
                acc += v * mask[r, c]
                cnt += mask[r, c]
                y[r, c] = d + (v - d) * ig
        total += acc
        n += cnt
    return total / max(n, 1)


@njit(cache=True, nogil=True)
def count_broken_rows(row_rough, baseline, ratio, floor, max_padding):
    """Rows whose roughness is above ``ratio`` x their baseline (noise, broken lines) or below
    baseline / ratio (missing or repeated lines; only where the baseline exceeds ``floor``).

    Flat rows forming a run of at most ``max_padding`` rows from the top or the bottom edge
    are the padding of a registered (motion-corrected) movie, not missing lines: not counted.
    Returns (n_high, n_low).
    """
    H = row_rough.shape[0]
    n_high = 0
    n_low = 0
    top = 0  # length of the run of flat rows from each edge
    bottom = 0
    run_top = True
    for r in range(H):
        b = baseline[r]
        x = row_rough[r]
        low = b > floor and x * ratio < b
        if x > ratio * max(b, floor):
            n_high += 1
        elif low:
            n_low += 1
        if run_top:
            if low:
                top += 1
            else:
                run_top = False
    for r in range(H - 1, -1, -1):
        b = baseline[r]
        if b > floor and row_rough[r] * ratio < b and bottom < H - top:
            bottom += 1
        else:
            break
    if 0 < top <= max_padding:
        n_low -= top
    if 0 < bottom <= max_padding:
        n_low -= bottom
    return n_high, n_low


@njit(cache=True, nogil=True)
def ema_update(state, x, alpha):
    """state <- state + alpha (x - state), in place (1-D float32)."""
    a = np.float32(alpha)
    for i in range(state.shape[0]):
        state[i] += a * (x[i] - state[i])
