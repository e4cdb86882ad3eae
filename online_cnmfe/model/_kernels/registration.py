"""Per-frame image registration: the band-passed registration image and the correlation peak.

Symbols: y frame (H, W) flattened row-major; g its ``ds × ds`` block mean on the registration
grid (h, w); d = (G_σs − G_σl) * g (noise and background removed), then once more the
background part, b = d − G_σl * d (a second high-pass: the DoG alone passes smooth content in
proportion to f², and where a frame has nothing but a smooth background its broad correlation
peak wanders by pixels); x = b · taper the registration image, zero-padded to the FFT shape
(Fh, Fw);
T the template in the same domain. Gaussians are approximated by three box filters per axis,
so the cost does not depend on σ; lines are extended point-symmetrically about their end
samples (x[−k] = 2 x[0] − x[k]), so the smooth 1-photon background's gradient carries on past
the edge instead of leaving a ridge there that would pull every shift towards zero.

  cc[k] = Σ_n x[n + k] T[n]        (computed by the caller as irfft2(rfft2(x) · conj(rfft2(T))))

If x[n] = T[n − d] (the content moved by +d), cc peaks at k = d. ``peak_subpixel`` finds the
integer peak inside a window and refines it with a Gaussian (log-parabola) fit on the 3 × 3
neighbourhood, falling back to a parabola when a value is not positive.

All kernels write into caller-owned arrays and allocate nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def bin_frame(y, height, width, ds, out):
    """Block mean of ``ds × ds`` blocks of y (flat, row-major, height × width) into out (h, w).

    Rows/columns beyond ``h·ds``, ``w·ds`` are ignored. ``out`` is written in place.
    """
    h, w = out.shape
    if ds == 2:  # the usual grid: one pass, no inner block loops (2.5x faster at 608²)
        for i in range(h):
            b0 = 2 * i * width
            b1 = b0 + width
            for j in range(w):
                q = 2 * j
                out[i, j] = np.float32(0.25) * (
                    (y[b0 + q] + y[b0 + q + 1]) + (y[b1 + q] + y[b1 + q + 1])
                )
        return
    scale = np.float32(1.0 / (ds * ds))
    for i in range(h):
        for j in range(w):
            out[i, j] = 0.0
        for a in range(ds):
            base = (i * ds + a) * width
            for j in range(w):
                acc = np.float32(0.0)
                q = base + j * ds
                for b in range(ds):
                    acc += y[q + b]
                out[i, j] += acc
        for j in range(w):
            out[i, j] *= scale


@njit(cache=True, nogil=True)
def _ext(k, n):
    """(index, sign): sample k of a line of n values extended point-symmetrically about its
    end samples, x[-k] = 2 x[0] - x[k] (a linear gradient continues; no edge ridge)."""
    if k < 0:
        return min(-k, n - 1), -1
    if k >= n:
        return max(2 * n - 2 - k, 0), 1
    return k, 0


@njit(cache=True, nogil=True)
def _at(line, k, n):
    i, side = _ext(k, n)
    if side < 0:
        return 2.0 * line[0] - line[i]
    if side > 0:
        return 2.0 * line[n - 1] - line[i]
    return line[i]


@njit(cache=True, nogil=True)
def _box_rows(src, r, out):
    """Moving average of width 2r+1 along each row (point-symmetric extension) into out.

    A running sum is a chain of dependent additions: four rows are summed side by side in
    the interior, so their chains overlap (1.5-2x faster than one row at a time).
    """
    h, w = src.shape
    inv = 1.0 / (2 * r + 1)
    # the window is inside the row for r + 1 <= j <= w - 1 - r: no extension there
    lo = min(r + 1, w)
    hi = max(lo, w - r)
    i = 0
    while i + 4 <= h:
        a0 = _box_row_start(src[i], r, lo, inv, out[i])
        a1 = _box_row_start(src[i + 1], r, lo, inv, out[i + 1])
        a2 = _box_row_start(src[i + 2], r, lo, inv, out[i + 2])
        a3 = _box_row_start(src[i + 3], r, lo, inv, out[i + 3])
        l0, l1, l2, l3 = src[i], src[i + 1], src[i + 2], src[i + 3]
        o0, o1, o2, o3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for j in range(lo, hi):
            a0 += l0[j + r] - l0[j - r - 1]
            a1 += l1[j + r] - l1[j - r - 1]
            a2 += l2[j + r] - l2[j - r - 1]
            a3 += l3[j + r] - l3[j - r - 1]
            o0[j] = a0 * inv
            o1[j] = a1 * inv
            o2[j] = a2 * inv
            o3[j] = a3 * inv
        _box_row_end(l0, r, hi, a0, inv, o0)
        _box_row_end(l1, r, hi, a1, inv, o1)
        _box_row_end(l2, r, hi, a2, inv, o2)
        _box_row_end(l3, r, hi, a3, inv, o3)
        i += 4
    for q in range(i, h):
        line = src[q]
        acc = _box_row_start(line, r, lo, inv, out[q])
        for j in range(lo, hi):
            acc += line[j + r] - line[j - r - 1]
            out[q, j] = acc * inv
        _box_row_end(line, r, hi, acc, inv, out[q])


@njit(cache=True, nogil=True)
def _box_row_start(line, r, lo, inv, out):
    """Columns 0 … lo − 1 of one row's moving average (extended); returns the running sum."""
    w = line.shape[0]
    acc = 0.0
    for k in range(-r, r + 1):
        acc += _at(line, k, w)
    out[0] = acc * inv
    for j in range(1, lo):
        acc += _at(line, j + r, w) - _at(line, j - r - 1, w)
        out[j] = acc * inv
    return acc


@njit(cache=True, nogil=True)
def _box_row_end(line, r, hi, acc, inv, out):
    """Columns hi … w − 1 of one row's moving average, from the running sum ``acc``."""
    w = line.shape[0]
    for j in range(hi, w):
        acc += _at(line, j + r, w) - _at(line, j - r - 1, w)
        out[j] = acc * inv


@njit(cache=True, nogil=True)
def _box_cols(src, r, acc, out):
    """Moving average of width 2r+1 along each column (point-symmetric extension); acc (w,)
    float64 scratch."""
    h, w = src.shape
    inv = 1.0 / (2 * r + 1)
    for j in range(w):
        acc[j] = 0.0
    for k in range(-r, r + 1):
        _col_add(src, k, h, 1.0, acc)
    for j in range(w):
        out[0, j] = acc[j] * inv
    for i in range(1, h):
        add = i + r
        sub = i - r - 1
        if sub >= 0 and add < h:  # inside: plain rows
            ra = src[add]
            rs = src[sub]
            for j in range(w):
                acc[j] += ra[j] - rs[j]
                out[i, j] = acc[j] * inv
        else:
            _col_add(src, add, h, 1.0, acc)
            _col_add(src, sub, h, -1.0, acc)
            for j in range(w):
                out[i, j] = acc[j] * inv


@njit(cache=True, nogil=True)
def _col_add(src, k, h, sign, acc):
    """acc += sign · row k of src (point-symmetric extension beyond the first/last row)."""
    i, side = _ext(k, h)
    w = src.shape[1]
    if side == 0:
        for j in range(w):
            acc[j] += sign * src[i, j]
    else:
        edge = 0 if side < 0 else h - 1
        for j in range(w):
            acc[j] += sign * (2.0 * src[edge, j] - src[i, j])


@njit(cache=True, nogil=True)
def gauss_blur(src, radii, tmp, acc, out):
    """Approximate Gaussian blur of src (h, w): box filters of radii ``radii`` (n,) per axis.

    ``tmp`` (h, w) float32 and ``acc`` (w,) float64 are scratch; the result is written into
    ``out`` (h, w), which may not be ``src``. Radii of 0 (identity) are skipped; all zero
    copies.
    """
    n = 0
    for p in range(radii.shape[0]):
        n += radii[p] > 0
    if n == 0:
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                out[i, j] = src[i, j]
        return
    # 2n passes alternating between tmp and out, the first from src, so the last writes out
    a, b = src, tmp
    for p in range(radii.shape[0]):
        if radii[p] > 0:
            _box_rows(a, radii[p], b)
            a, b = b, (out if b is tmp else tmp)
    for p in range(radii.shape[0]):
        if radii[p] > 0:
            _box_cols(a, radii[p], acc, b)
            a, b = b, (out if b is tmp else tmp)


@njit(cache=True, nogil=True)
def subtract(a, b, out):
    """out = a − b (2-D arrays of one shape; out may be a)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] - b[i, j]


@njit(cache=True, nogil=True)
def bandpass_taper(small, large, taper, bp, xin):
    """bp = small − large; xin[:h, :w] = bp · taper (the rest of xin is left as it is).

    Returns Σ (bp · taper)², the squared norm of the registration image. ``bp`` (h, w) and
    ``xin`` (Fh, Fw) are written in place.
    """
    h, w = small.shape
    norm2 = 0.0
    for i in range(h):
        for j in range(w):
            v = small[i, j] - large[i, j]
            bp[i, j] = v
            t = v * taper[i, j]
            xin[i, j] = t
            norm2 += t * t
    return norm2


@njit(cache=True, nogil=True)
def cross_power(X, T, out):
    """out = X · T elementwise (flat complex arrays; T holds the conjugated template spectrum)."""
    for i in range(X.shape[0]):
        out[i] = X[i] * T[i]


@njit(cache=True, nogil=True)
def _fit(m, c, p):
    """Offset of the maximum of three samples at -1, 0, +1 (c the largest), in [-0.5, 0.5]."""
    if m > 0.0 and c > 0.0 and p > 0.0:
        lm, lc, lp = math.log(m), math.log(c), math.log(p)
        den = lm - 2.0 * lc + lp
    else:
        lm, lc, lp = m, c, p
        den = m - 2.0 * c + p
    if den >= 0.0:
        return 0.0
    d = 0.5 * (lm - lp) / den
    return min(max(d, -0.5), 0.5)


@njit(cache=True, nogil=True)
def _corrected(cc, inv_env, i, j, ey, ex):
    fh, fw = cc.shape
    if inv_env.shape[0] != fh:  # no correction
        return cc[i, j]
    return cc[i, j] * inv_env[((i - ey) % fh + fh) % fh, ((j - ex) % fw + fw) % fw]


@njit(cache=True, nogil=True)
def peak_subpixel(cc, inv_env, cy, cx, ry, rx, ey, ex, out):
    """Sub-pixel maximum of the overlap-corrected cc (Fh, Fw, circular) in cy ± ry, cx ± rx.

    The value at shift k is cc[k] · inv_env[k − e], e = (ey, ex) the offset between the frame's
    and the template's tapers; ``inv_env`` = env[0] / env[k], env the autocorrelation of the
    taper, undoes the loss of overlap away from e, which otherwise pulls the peak towards e
    (an ``inv_env`` of another shape than cc, e.g. (1, 1), means no correction: far from e it
    would amplify chance correlations).
    Writes out[0], out[1] = (row, col) of the peak (window coordinates, may be negative),
    out[2] = the corrected cc at the integer peak, out[3] = 1.0 when the integer peak lies on
    the window's edge (the true peak may be outside), else 0.0.
    """
    fh, fw = cc.shape
    best = -np.inf
    bi = cy
    bj = cx
    for di in range(-ry, ry + 1):
        i = ((cy + di) % fh + fh) % fh
        for dj in range(-rx, rx + 1):
            j = ((cx + dj) % fw + fw) % fw
            v = _corrected(cc, inv_env, i, j, ey, ex)
            if v > best:
                best = v
                bi = cy + di
                bj = cx + dj
    i0 = (bi % fh + fh) % fh
    j0 = (bj % fw + fw) % fw
    im, ip = (i0 - 1 + fh) % fh, (i0 + 1) % fh
    jm, jp = (j0 - 1 + fw) % fw, (j0 + 1) % fw
    up, down = _corrected(cc, inv_env, im, j0, ey, ex), _corrected(cc, inv_env, ip, j0, ey, ex)
    left, right = _corrected(cc, inv_env, i0, jm, ey, ex), _corrected(cc, inv_env, i0, jp, ey, ex)
    out[0] = bi + _fit(up, best, down)
    out[1] = bj + _fit(left, best, right)
    out[2] = best
    edge = abs(bi - cy) == ry or abs(bj - cx) == rx
    out[3] = 1.0 if edge else 0.0


@njit(cache=True, nogil=True)
def taper_shifted(bp, taper, oy, ox, xin):
    """xin[i, j] = bp[i, j] · taper[i − oy, j − ox] (0 where that is outside the taper).

    The frame's window follows its content when it moved by about (oy, ox): frame and template
    are then weighed alike and the peak is unbiased. Writes xin[:h, :w]; returns the squared
    norm.
    """
    h, w = bp.shape
    norm2 = 0.0
    for i in range(h):
        ti = i - oy
        for j in range(w):
            tj = j - ox
            if 0 <= ti < h and 0 <= tj < w:
                t = bp[i, j] * taper[ti, tj]
            else:
                t = np.float32(0.0)
            xin[i, j] = t
            norm2 += t * t
    return norm2


@njit(cache=True, nogil=True)
def patch_peaks(pcc, inv_env, oy, ox, off_r, off_c, radius, out):
    """Peak of every patch's correlation pcc (P, Fh, Fw), out (P, 4) written in place.

    The frame patch (i, j) was cut ``off_r[i]``, ``off_c[j]`` grid pixels from the template
    patch (the rigid shift (oy, ox), clamped to the frame), so its peak is searched at
    (oy − off_r[i], ox − off_c[j]) ± radius and reported as a shift of the content (the offset
    added back).
    """
    nx = off_c.shape[0]
    for p in range(pcc.shape[0]):
        a = off_r[p // nx]
        b = off_c[p % nx]
        peak_subpixel(pcc[p], inv_env, oy - a, ox - b, radius, radius, 0, 0, out[p])
        out[p, 0] += a
        out[p, 1] += b


@njit(cache=True, nogil=True)
def extract_patches(bp, starts_r, starts_c, oy, ox, taper, out, norms2, off_r, off_c):
    """Tapered patches of bp (h, w), cut (oy, ox) from the patch grid, into out (P, Fh, Fw).

    Patch p = i · len(starts_c) + j starts at (starts_r[i] + oy, starts_c[j] + ox), clamped to
    the image; the offsets used are written to off_r[i], off_c[j]. Each patch has the shape of
    ``taper`` (ph, pw) (top-left of its slot; the padding of ``out`` is left as it is); norms2
    (P,) receives the squared norms.
    """
    h, w = bp.shape
    ph, pw = taper.shape
    ny = starts_r.shape[0]
    nx = starts_c.shape[0]
    for i in range(ny):
        off_r[i] = min(max(starts_r[i] + oy, 0), h - ph) - starts_r[i]
    for j in range(nx):
        off_c[j] = min(max(starts_c[j] + ox, 0), w - pw) - starts_c[j]
    for i in range(ny):
        r0 = starts_r[i] + off_r[i]
        for j in range(nx):
            c0 = starts_c[j] + off_c[j]
            p = i * nx + j
            acc = 0.0
            for a in range(ph):
                for b in range(pw):
                    v = bp[r0 + a, c0 + b] * taper[a, b]
                    out[p, a, b] = v
                    acc += v * v
            norms2[p] = acc


@njit(cache=True, nogil=True)
def taper_into(bp, taper, xin):
    """xin[:h, :w] = bp · taper (the rest of xin is left as it is); returns Σ (bp · taper)²."""
    h, w = bp.shape
    norm2 = 0.0
    for i in range(h):
        for j in range(w):
            t = bp[i, j] * taper[i, j]
            xin[i, j] = t
            norm2 += t * t
    return norm2


@njit(cache=True, nogil=True)
def patch_field(peaks, norms2_frame, norms2_template, rigid, min_ratio, ds, quality, grid_y,
                grid_x, field_y, field_x):  # fmt: skip
    """Shift of each patch centre from its correlation peak, the rigid shift where unreliable.

    peaks (P, 4) from :func:`patch_peaks` (grid pixels); rigid (3,) = (dy, dx, quality) of the
    rigid registration, grid pixels. A patch keeps its own peak when it is not on the search
    window's edge and its quality (peak / (‖x_p‖ ‖T_p‖)) is at least ``min_ratio`` × the rigid
    quality. Written in place: quality (P,), grid_y, grid_x (ny, nx) in grid pixels, field_y,
    field_x (ny, nx) in frame pixels (× ds). Returns the number of patches that kept their peak.
    """
    ny, nx = grid_y.shape
    n_own = 0
    for p in range(peaks.shape[0]):
        den = math.sqrt(norms2_frame[p] * norms2_template[p])
        q = peaks[p, 2] / den if den > 0.0 else 0.0
        quality[p] = q
        i = p // nx
        j = p % nx
        if peaks[p, 3] == 0.0 and den > 0.0 and q >= min_ratio * rigid[2]:
            grid_y[i, j] = peaks[p, 0]
            grid_x[i, j] = peaks[p, 1]
            n_own += 1
        else:
            grid_y[i, j] = rigid[0]
            grid_x[i, j] = rigid[1]
        field_y[i, j] = grid_y[i, j] * ds
        field_x[i, j] = grid_x[i, j] * ds
    return n_own
