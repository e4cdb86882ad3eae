"""Temporal content of a held-out movie: spikes, calcium, background fluctuations, motion,
line-noise bands and corrupted frames. Everything is drawn once for the whole movie (arrays of
n_series x T, small next to the movie), so rendering any frame range is deterministic.

Calcium (per neuron k): ``C[k, t] = g1 C[k, t-1] + g2 C[k, t-2] + S[k, t]`` with
``g1 = d + r``, ``g2 = -d r``, ``d = exp(-1 / (decay_s f))``, ``r = exp(-1 / (rise_s f))``
(difference-of-exponentials kernel); C is scaled so that ``max_t C[k] = pnr[k] * pnr_sigma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal

from benchmarks.heldout.params import HeldoutParams

CORRUPT_KINDS = ("zeroed_rows", "shifted_rows", "brightness_jump")


def log_uniform(rng, lo: float, hi: float, size) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def ar2_coefficients(rise_s: float, decay_s: float, rate_hz: float) -> tuple[float, float]:
    d = math.exp(-1.0 / (decay_s * rate_hz))
    r = math.exp(-1.0 / (rise_s * rate_hz)) if rise_s > 0 else 0.0
    return d + r, -d * r


def ou(rng, tau_frames: float, n_frames: int, n: int = 1) -> np.ndarray:
    """(n, T) stationary Ornstein-Uhlenbeck (AR(1)) series of unit variance."""
    a = math.exp(-1.0 / max(tau_frames, 1e-6))
    x = rng.standard_normal((n, n_frames)) * math.sqrt(1 - a * a)
    x[:, 0] = rng.standard_normal(n)
    return scipy.signal.lfilter([1.0], [1.0, -a], x, axis=1)


# ---- spikes ------------------------------------------------------------------------------
def poisson_train(rng, rate_hz: float, p: HeldoutParams) -> np.ndarray:
    """(T,) spike amplitudes per frame: Poisson counts, each spike log-normal (sd 0.25)."""
    counts = rng.poisson(rate_hz / p.frame_rate_hz, p.n_frames)
    idx = np.repeat(np.arange(p.n_frames), counts)
    return np.bincount(idx, rng.lognormal(0.0, 0.25, len(idx)), minlength=p.n_frames)


def burst_train(rng, rate_hz: float, p: HeldoutParams) -> np.ndarray:
    """(T,) bursts at Poisson onsets; 1 + Poisson(3) spikes each, 40 ms mean inter-spike
    interval; the burst rate keeps the mean spike rate at ``rate_hz``."""
    duration = p.n_frames / p.frame_rate_hz
    n_bursts = rng.poisson(rate_hz / 4.0 * duration)
    onsets = rng.uniform(0, duration, n_bursts)
    times = []
    for t0 in onsets:
        times.append(t0 + np.cumsum(np.r_[0.0, rng.exponential(0.04, rng.poisson(3))]))
    times = np.concatenate(times) if times else np.zeros(0)
    idx = (times * p.frame_rate_hz).astype(np.int64)
    idx = idx[idx < p.n_frames]
    return np.bincount(idx, rng.lognormal(0.0, 0.25, len(idx)), minlength=p.n_frames)


@dataclass(slots=True)
class Activity:
    """Calcium truth of the in-focus neurons (movie units)."""

    C: np.ndarray  # (K, T) float64
    S: np.ndarray  # (K, T) float64
    g: np.ndarray  # (K, 2) AR coefficients
    pnr: np.ndarray  # (K,)
    birth_frame: np.ndarray  # (K,) int64, 0 = present from the start
    rate_hz: np.ndarray  # (K,) drawn mean rate
    bursty: np.ndarray  # (K,) bool
    rise_s: np.ndarray
    decay_s: np.ndarray


def neuron_activity(rng, p: HeldoutParams, n: int, pnr_sigma: float) -> Activity:
    T, f = p.n_frames, p.frame_rate_hz
    rate = log_uniform(rng, *p.rate_hz, n)
    bursty = rng.random(n) < p.bursty_fraction
    rise = rng.uniform(*p.rise_s, n)
    decay = rng.uniform(*p.decay_s, n)
    target = log_uniform(rng, *p.pnr, n)
    late = rng.random(n) < p.late_fraction
    lo, hi = (
        int(p.late_window[0] * T),
        max(int(p.late_window[1] * T), int(p.late_window[0] * T) + 1),
    )
    birth = np.where(late, rng.integers(lo, hi, n), 0).astype(np.int64)
    C = np.zeros((n, T))
    S = np.zeros((n, T))
    g = np.zeros((n, 2))
    for k in range(n):
        s = burst_train(rng, rate[k], p) if bursty[k] else poisson_train(rng, rate[k], p)
        if late[k]:
            s[: birth[k]] = 0.0
            s[birth[k]] += rng.lognormal(0.4, 0.25)  # the birth is the first (clear) spike
        elif not s.any():
            s[rng.integers(0, T)] = 1.0  # every neuron fires at least once
        g[k] = ar2_coefficients(rise[k], decay[k], f)
        c = scipy.signal.lfilter([1.0], [1.0, -g[k, 0], -g[k, 1]], s)
        scale = target[k] * pnr_sigma / c.max()
        C[k], S[k] = c * scale, s * scale
    pnr = C.max(axis=1, initial=0.0) / pnr_sigma
    return Activity(C, S, g, pnr, birth, rate, bursty, rise, decay)


def neuropil_activity(rng, p: HeldoutParams, pnr_sigma: float) -> np.ndarray:
    """(N, T) slow activity of the out-of-focus cells, peak log-uniform in neuropil_pnr."""
    n = p.n_neuropil
    out = np.zeros((n, p.n_frames))
    rates = rng.uniform(*p.neuropil_rate_hz, n)
    peaks = log_uniform(rng, *p.neuropil_pnr, n) * pnr_sigma
    for k in range(n):
        s = poisson_train(rng, rates[k], p)
        g1, g2 = ar2_coefficients(0.15, rng.uniform(*p.neuropil_decay_s), p.frame_rate_hz)
        c = scipy.signal.lfilter([1.0], [1.0, -g1, -g2], s)
        if c.max() > 0:
            out[k] = c * (peaks[k] / c.max())
    return out


# ---- background time courses -------------------------------------------------------------
def background_courses(rng, p: HeldoutParams) -> tuple[np.ndarray, np.ndarray]:
    """Blob intensities (n_blobs, T) and the global factor (T,) = drift x bleaching."""
    T, f = p.n_frames, p.frame_rate_hz
    taus = rng.uniform(*p.blob_time_s, p.n_blobs) * f
    levels = rng.uniform(0.4, 1.6, p.n_blobs) * p.blob_level
    blobs = np.zeros((p.n_blobs, T))
    for j in range(p.n_blobs):
        z = ou(rng, taus[j], T)[0]
        blobs[j] = levels[j] * np.clip(1.0 + p.blob_fluctuation * z, 0.05, None)
    drift = 1.0 + p.drift_amplitude * ou(rng, p.drift_time_s * f, T)[0]
    t = np.arange(T) / f
    bleach = 1.0 - p.bleach_fraction * (1.0 - np.exp(-t / p.bleach_time_s))
    return blobs, np.clip(drift, 0.2, None) * bleach


@dataclass(slots=True)
class Bands:
    """Slow horizontal bands: sum_b amp_b sin(2 pi (row / wavelength_b - t / period_b + phase_b))
    (period_b in frames, signed: the direction the bands travel)."""

    amp: np.ndarray
    wavelength_rows: np.ndarray
    period_frames: np.ndarray
    phase: np.ndarray

    def offsets(self, t: int, n_rows: int) -> np.ndarray:
        rows = np.arange(n_rows)[:, None]
        arg = rows / self.wavelength_rows - t / self.period_frames + self.phase
        return (self.amp * np.sin(2 * math.pi * arg)).sum(axis=1)


def draw_bands(rng, p: HeldoutParams) -> Bands:
    n = 3
    amp = rng.uniform(0.5, 1.0, n)
    amp *= p.band_amplitude / math.sqrt(0.5 * (amp**2).sum())  # std of the sum = band_amplitude
    return Bands(
        amp=amp,
        wavelength_rows=rng.uniform(0.08, 0.5, n) * p.height,
        period_frames=rng.uniform(*p.band_period_s, n) * p.frame_rate_hz * rng.choice((-1, 1), n),
        phase=rng.uniform(0, 1, n),
    )


# ---- motion ------------------------------------------------------------------------------
def motion_trajectory(rng, p: HeldoutParams) -> np.ndarray:
    """(T, 2) float32 (d_row, d_col): an OU walk of std motion_std_px plus transient jumps
    (size in jump_px, random direction, exponential recovery)."""
    T, f = p.n_frames, p.frame_rate_hz
    m = np.zeros((T, 2))
    if p.motion_std_px > 0:
        m += p.motion_std_px * ou(rng, p.motion_time_s * f, T, 2).T
    n_jumps = rng.poisson(p.jump_rate_hz * T / f) if p.jump_rate_hz > 0 else 0
    t = np.arange(T)
    for _ in range(n_jumps):
        t0 = rng.integers(0, T)
        size = rng.uniform(*p.jump_px)
        angle = rng.uniform(0, 2 * math.pi)
        recovery = rng.uniform(*p.jump_recovery_s) * f
        profile = np.where(t >= t0, np.exp(-(t - t0) / recovery), 0.0)
        m += profile[:, None] * size * np.array([math.cos(angle), math.sin(angle)])
    return m.astype(np.float32)


# ---- corrupted frames --------------------------------------------------------------------
@dataclass(slots=True)
class Corruption:
    frames: np.ndarray  # (n,) int64 sorted
    kinds: np.ndarray  # (n,) uint8 index into CORRUPT_KINDS
    row_start: np.ndarray  # (n,) first affected row
    row_stop: np.ndarray  # (n,)
    amount: np.ndarray  # (n,) column shift (shifted_rows) or gain (brightness_jump)

    def lookup(self, t: int) -> int | None:
        i = int(np.searchsorted(self.frames, t))
        return i if i < len(self.frames) and self.frames[i] == t else None


def draw_corruption(rng, p: HeldoutParams) -> Corruption:
    T, H = p.n_frames, p.height
    n = int(round(p.corrupt_fraction * T))
    frames = np.sort(rng.choice(T, size=n, replace=False)).astype(np.int64)
    kinds = rng.integers(0, len(CORRUPT_KINDS), n).astype(np.uint8)
    height = (rng.uniform(0.05, 0.5, n) * H).astype(np.int64) + 1
    start = rng.integers(0, H, n)
    stop = np.where(kinds == 1, H, np.minimum(start + height, H))  # a shift runs to the end
    shift = rng.integers(8, max(p.width // 3, 9), n) * rng.choice((-1, 1), n)
    gain = rng.uniform(1.3, 2.0, n)
    amount = np.where(kinds == 1, shift, np.where(kinds == 2, gain, 0.0)).astype(np.float64)
    return Corruption(frames, kinds, start.astype(np.int64), stop.astype(np.int64), amount)


def apply_corruption(frame: np.ndarray, c: Corruption, i: int) -> None:
    """Corrupt one sensor frame (float, in place) as entry ``i`` of ``c`` says."""
    r0, r1 = c.row_start[i], c.row_stop[i]
    kind = CORRUPT_KINDS[c.kinds[i]]
    if kind == "zeroed_rows":
        frame[r0:r1] = 0.0
    elif kind == "shifted_rows":
        frame[r0:] = np.roll(frame[r0:], int(c.amount[i]), axis=1)
    else:
        frame *= c.amount[i]
