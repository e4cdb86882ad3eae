"""Ground-truth simulator of 1-photon microendoscopic (miniscope) calcium movies.

In the spirit of the CNMF-E paper's simulations (Zhou et al. 2018, eLife 7:e28728): elliptical
Gaussian footprints, Poisson (or bursty) spikes, AR(1)/AR(2) calcium kinetics, and a large
fluctuating background that dominates the neural signal (static vignetting, broad blobs with
slowly varying amplitude, dim out-of-focus "neuropil" cells, optional dark vessels), Gaussian
noise and optional rigid motion.

Model of frame t (pixels flattened row-major, ``P = H * W``)::

    y_t = vignette * shift(vessel * (baseline + G^T f_t), m_t) + shift(A c_t, m_t) + noise_t

A (P x K) peak-normalised footprints, c_t (K,) calcium in movie units (so ``c_t[k]`` is the
neuron's contribution at its brightest pixel), G the background profiles (blobs and neuropil)
with temporal amplitudes f_t, m_t the rigid motion (row, col) and noise ~ N(0, noise_sigma^2).
Calcium follows ``C[:, t] = g1 C[:, t-1] + g2 C[:, t-2] + S[:, t]`` exactly (g2 = 0 for AR(1)).

A neuron's peak-to-noise ratio is ``PNR_k = max_t C[k, t] / noise_sigma``; amplitudes are drawn so
that PNR_k, measured over the calibration window (the whole movie, or the first
``max(2000, last birth + 1000)`` frames of an endless one), is uniform in ``pnr_range``.

Determinism: temporal processes are generated in fixed blocks of :data:`BLOCK_FRAMES` frames from
per-block random streams ``SeedSequence(seed, spawn_key=(stream, block))`` with the filter state
carried from block to block; pixels are rendered in fixed aligned groups of :data:`RENDER_FRAMES`
frames with per-frame noise streams. ``frames(start, stop)`` therefore returns bit-identical
values whatever the chunking, and works on an endless movie (``n_frames=None``) for live streaming.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from acquisition import simulator_nuisance as nuisance
from acquisition import simulator_scene as scene
from acquisition.simulator_dynamics import (
    ar_coefficients,
    ar_run,
    bilinear_shift,
    block_rng,
    impulse_peak,
)
from acquisition.simulator_io import load_simulator, write_simulation
from acquisition.simulator_params import SimulationParams, SimulationTruth

__all__ = [
    "MiniscopeSimulator",
    "SimulationParams",
    "SimulationTruth",
    "load_simulator",
    "write_simulation",
]

logger = logging.getLogger(__name__)

BLOCK_FRAMES = 1000  # temporal processes are drawn in blocks of this many frames
RENDER_FRAMES = 16  # pixels are rendered in aligned groups of this many frames
_STREAM_SCENE, _STREAM_TEMPORAL, _STREAM_NOISE, _STREAM_JUMPS = 1, 2, 3, 4
_JUMP_HOLD_S = (0.5, 5.0)  # how long a jump holds before it snaps back
_BLOB_MODULATION = 0.3  # std of a blob's amplitude, as a fraction of its mean
_BLOB_TIME_S = (2.0, 8.0)  # time constants of the blobs' slow fluctuations
_MOTION_TIME_S = 1.0


class MiniscopeSimulator:
    """A deterministic, chunkable simulated miniscope movie with its ground truth.

    Parameters
    ----------
    params : SimulationParams

    Attributes
    ----------
    params : SimulationParams
    truth : SimulationTruth

    Examples
    --------
    >>> sim = MiniscopeSimulator(SimulationParams(height=32, width=32, n_frames=50, n_neurons=3))
    >>> sim.frames(0, 10).shape, sim.calcium(0, 10).shape
    ((10, 32, 32), (3, 10))
    >>> bool((sim.frames(5, 7) == sim.frames(0, 10)[5:7]).all())
    True
    """

    def __init__(self, params: SimulationParams) -> None:
        if not isinstance(params, SimulationParams):
            raise TypeError(f"params must be SimulationParams, got {type(params).__name__}")
        self.params = params
        self._states: list[tuple[np.ndarray, np.ndarray]] = []
        self._blocks: dict[int, dict[str, np.ndarray]] = {}
        self._group: tuple[int, tuple[np.ndarray, ...]] | None = None
        self._n_clipped = 0
        self._build_scene()
        self._calibrate()

    # ---- construction ------------------------------------------------------------------
    def _build_scene(self) -> None:
        """Draw the static scene (one seeded stream, fixed draw order) and the AR dynamics."""
        rng = block_rng(self.params.seed, _STREAM_SCENE)
        decay, rise = self._build_neurons(rng)
        np_decay, blob_a = self._build_background(rng)
        self._build_dynamics(decay, rise, np_decay, blob_a)

    def _build_neurons(self, rng: np.random.Generator):
        """Footprints, kinetics, rates, target PNRs, birth frames; returns time constants."""
        p = self.params
        fps, k = p.frame_rate_hz, p.n_neurons
        sigma = p.neuron_diameter_px / 4.0
        inside = None
        if p.lens_radius_fraction > 0:  # whole footprints inside the lens
            inside = nuisance.inside_lens(p.dims, p.lens_radius_fraction, p.neuron_diameter_px)
        self._centres = scene.place_centres(
            rng, p.dims, k, 0.5 * p.neuron_diameter_px, sigma, inside
        )
        self._A = scene.gaussian_footprints(rng, p.dims, self._centres, sigma)
        rise = p.rise_time_s * fps * rng.uniform(0.8, 1.2, k) if p.rise_time_s > 0 else None
        decay = p.decay_time_s * fps * rng.uniform(0.8, 1.2, k)
        self._rates_neuron = p.firing_rate_hz * np.exp(rng.normal(0.0, 0.5, k) - 0.125)
        self._pnr_target = rng.uniform(p.pnr_range[0], p.pnr_range[1], k)
        birth = np.zeros(k, np.int64)
        n_late = int(round(p.late_fraction * k))
        late = rng.permutation(k)[:n_late]
        span = (p.n_frames - p.late_after_frame) * 0.7 if p.n_frames else 2000
        birth[late] = p.late_after_frame + np.floor(rng.random(n_late) * span).astype(np.int64)
        first = birth + rng.integers(0, 40, k) * (birth == 0)  # a guaranteed first event
        if p.n_frames is not None:
            first = np.minimum(first, p.n_frames - 1)
        self._birth, self._first = birth, first
        self._ar_order = 1 if rise is None else 2
        return decay, rise

    def _build_background(self, rng: np.random.Generator):
        """Neuropil cells, blobs, vessels, vignetting; returns their time constants."""
        p = self.params
        fps, n_np, n_b = p.frame_rate_hz, p.n_neuropil, p.n_blobs
        np_profiles, _ = scene.neuropil_profiles(rng, p.dims, n_np)
        np_decay = 2.0 * p.decay_time_s * fps * rng.uniform(0.8, 1.2, n_np)
        self._np_rates = p.firing_rate_hz * np.exp(rng.normal(0.0, 0.5, n_np) - 0.125)
        typical_peak = p.noise_sigma * 0.5 * (p.pnr_range[0] + p.pnr_range[1])
        self._np_amp = p.background_strength * typical_peak * rng.uniform(0.15, 0.5, n_np)
        blobs = scene.blob_profiles(rng, p.dims, n_b)
        self._blob_mean = p.background_strength * typical_peak * rng.uniform(0.5, 1.5, n_b)
        blob_a = np.exp(-1.0 / (fps * rng.uniform(*_BLOB_TIME_S, n_b)))
        self._vessel = scene.vessel_map(rng, p.dims, p.n_vessels)
        self._vignette = scene.vignette_map(p.dims, p.vignetting)
        self._G = np.concatenate([blobs, np_profiles]).reshape(n_b + n_np, p.height * p.width)
        return np_decay, blob_a

    def _build_dynamics(self, decay, rise, np_decay, blob_a) -> None:
        """Stack every temporal process as one AR(2) system: neurons, neuropil, blobs, motion.

        Spikes are scaled so a unit spike's transient peaks at 1; the slow processes (blob
        amplitudes, motion) are critically damped AR(2) with unit (motion: motion_px / 2)
        stationary std.
        """
        p = self.params
        fps, n_np, n_b = p.frame_rate_hz, p.n_neuropil, p.n_blobs
        np_rise = None if rise is None else np.full(n_np, p.rise_time_s * fps)
        motion_a = math.exp(-1.0 / (fps * _MOTION_TIME_S))
        slow_a = np.array([*blob_a, motion_a, motion_a])
        g_slow = np.stack([2 * slow_a, -slow_a * slow_a], axis=1)
        g_spiking = np.concatenate(
            [ar_coefficients(decay, rise), ar_coefficients(np_decay, np_rise)]
        )
        self._g = np.concatenate([g_spiking, g_slow])
        self._slow_scale = np.sqrt((1 - slow_a**2) ** 3 / (1 + slow_a**2))
        self._slow_scale[n_b:] *= p.motion_px / 2.0
        self._spike_scale = 1.0 / impulse_peak(g_spiking, np.concatenate([decay, np_decay]))
        self._rates = np.concatenate([self._rates_neuron, self._np_rates])

    def _calibrate(self) -> None:
        """Measure unit-calcium peaks over the calibration window and set the amplitudes."""
        p = self.params
        k = p.n_neurons
        if p.n_frames is not None:
            n_cal = p.n_frames
        else:
            n_cal = max(2000, int(self._first.max(initial=0)) + 1000)
        peak = np.zeros(k)
        np_sum = np.zeros(p.n_neuropil)
        for b in range(-(-n_cal // BLOCK_FRAMES)):
            block = self._block(b)
            stop = min(BLOCK_FRAMES, n_cal - b * BLOCK_FRAMES)
            peak = np.maximum(peak, block["calcium"][:, :stop].max(axis=1, initial=0))
            np_sum += block["neuropil"][:, :stop].sum(axis=1)
        peak = np.where(peak > 0, peak, 1.0)
        self._amp = (self._pnr_target * p.noise_sigma / peak).astype(np.float32)
        tissue = p.baseline + (self._blob_mean @ self._G[: p.n_blobs]) if p.n_blobs else p.baseline
        tissue = tissue + (self._np_amp * np_sum / n_cal) @ self._G[p.n_blobs :]
        bg_mean = self._vignette * self._vessel * np.reshape(tissue, p.dims)
        self._lens = fov = None
        if p.lens_radius_fraction > 0:
            self._lens = nuisance.lens_map(p.dims, p.lens_radius_fraction)
            bg_mean = bg_mean * self._lens + p.lens_dark_level
            fov = self._lens > 0.5
        self._bands = nuisance.row_bands(p.seed)
        self._static = (p.baseline * self._vignette * self._vessel).ravel().astype(np.float32)
        self._Gv = (self._G * (self._vignette * self._vessel).ravel()).astype(np.float32)
        self.truth = SimulationTruth(
            A=self._A,
            dims=p.dims,
            centres=self._centres,
            pnr=(self._amp * peak / p.noise_sigma).astype(np.float32),
            birth_frame=self._birth,
            g=self._g[:k, : self._ar_order].astype(np.float32),
            firing_rate_hz=self._rates_neuron.astype(np.float32),
            amplitude=self._amp,
            background_mean=np.asarray(bg_mean, np.float32),
            calibration_frames=n_cal,
            fov_mask=fov,
        )

    # ---- temporal processes, in fixed blocks -------------------------------------------
    def _block(self, b: int) -> dict[str, np.ndarray]:
        """Temporal processes of block ``b`` (unit calcium, spikes, neuropil, blobs, motion)."""
        if b in self._blocks:
            return self._blocks[b]
        if not self._states:
            zeros = np.zeros(len(self._g))
            self._states.append((zeros, zeros.copy()))
        while len(self._states) <= b:  # compute earlier blocks in order to carry the state
            self._cache(len(self._states) - 1, self._make_block(len(self._states) - 1))
        return self._cache(b, self._make_block(b))

    def _cache(self, b: int, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._blocks[b] = block
        while len(self._blocks) > 4:
            self._blocks.pop(next(iter(self._blocks)))
        return block

    def _make_block(self, b: int) -> dict[str, np.ndarray]:
        p = self.params
        k, n_np, n_b = p.n_neurons, p.n_neuropil, p.n_blobs
        n = BLOCK_FRAMES
        t0 = b * n
        rng = block_rng(p.seed, _STREAM_TEMPORAL, b)
        lam = self._rates[:, None] / p.frame_rate_hz
        events = rng.poisson(lam / 3.0 if p.bursty else lam, (k + n_np, n))
        size = 1 + rng.poisson(2.0, (k + n_np, n))
        counts = events * size if p.bursty else events
        spikes = counts * rng.uniform(0.7, 1.3, (k + n_np, n))
        slow = rng.standard_normal((n_b + 2, n))
        frame = t0 + np.arange(n)
        first = self._first - t0
        hit = np.flatnonzero((first >= 0) & (first < n))
        spikes[hit, first[hit]] = np.maximum(spikes[hit, first[hit]], 1.0)
        spikes[:k] *= frame[None, :] >= self._birth[:, None]
        x = np.concatenate([spikes * self._spike_scale[:, None], slow * self._slow_scale[:, None]])
        y, state = ar_run(x, self._g, self._states[b])
        if len(self._states) == b + 1:
            self._states.append(state)
        motion = np.clip(y[k + n_np + n_b :].T, -p.motion_px, p.motion_px)
        if p.jump_rate_hz > 0:
            motion = motion + _jumps(p, b, n)
        return {
            "spikes": x[:k],
            "calcium": y[:k],
            "neuropil": y[k : k + n_np],
            "blobs": np.maximum(1.0 + _BLOB_MODULATION * y[k + n_np : k + n_np + n_b], 0.1),
            "motion": motion,
        }

    def _temporal(self, name: str, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        parts = []
        for b in range(start // BLOCK_FRAMES, -(-stop // BLOCK_FRAMES)):
            t0 = b * BLOCK_FRAMES
            arr = self._block(b)[name]
            sl = slice(max(start - t0, 0), min(stop - t0, BLOCK_FRAMES))
            parts.append(arr[sl] if name == "motion" else arr[:, sl])
        if not parts:
            rows = {"spikes": self.params.n_neurons, "calcium": self.params.n_neurons}
            return np.zeros((0, 2)) if name == "motion" else np.zeros((rows.get(name, 0), 0))
        return np.concatenate(parts, axis=0 if name == "motion" else 1)

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        n = self.params.n_frames
        if start < 0 or stop < start or (n is not None and stop > n):
            limit = "an endless movie" if n is None else f"{n} frames"
            raise ValueError(
                f"frame range [{start}, {stop}) is invalid for {limit}; "
                "expected 0 <= start <= stop <= n_frames"
            )
        return start, stop

    # ---- public traces ----------------------------------------------------------------
    def calcium(self, start: int, stop: int) -> np.ndarray:
        """True calcium C in movie units, ndarray of shape (n_neurons, stop - start), float32."""
        return (self._amp[:, None] * self._temporal("calcium", start, stop)).astype(np.float32)

    def spikes(self, start: int, stop: int) -> np.ndarray:
        """True spikes S (input of the AR model of C), shape (n_neurons, stop - start), float32."""
        return (self._amp[:, None] * self._temporal("spikes", start, stop)).astype(np.float32)

    def motion(self, start: int, stop: int) -> np.ndarray:
        """Rigid displacement (d_row, d_col) of the scene in each frame, shape (n, 2), float32.

        Frame t shows the reference scene translated by ``motion[t]`` pixels; shifting the frame
        by ``-motion[t]`` registers it to the truth footprints.
        """
        return self._temporal("motion", start, stop).astype(np.float32)

    # ---- pixels, in fixed aligned groups ----------------------------------------------
    def _render_group(self, grp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(background, neural, noise) of the frames of render group ``grp``, each (n, H, W)."""
        if self._group is not None and self._group[0] == grp:
            return self._group[1]
        p = self.params
        start = grp * RENDER_FRAMES
        stop = start + RENDER_FRAMES
        if p.n_frames is not None:
            stop = min(stop, p.n_frames)
        n = stop - start
        c = self._amp[:, None] * self._temporal("calcium", start, stop).astype(np.float32)
        neural = np.ascontiguousarray((self._A @ c).T)
        f = np.concatenate(
            [
                self._blob_mean[:, None] * self._temporal("blobs", start, stop),
                self._np_amp[:, None] * self._temporal("neuropil", start, stop),
            ]
        ).astype(np.float32)
        if p.motion_px > 0 or p.jump_rate_hz > 0:
            tissue = (p.baseline + f.T @ self._G.astype(np.float32)) * self._vessel.ravel()
            motion = self.motion(start, stop)
            stack = np.stack([tissue, neural], axis=1).reshape(n, 2, *p.dims)
            moved = np.empty_like(stack)
            for i in range(n):
                bilinear_shift(stack[i], motion[i], moved[i])
            background = moved[:, 0] * self._vignette
            neural = moved[:, 1]
        else:
            background = (self._static + f.T @ self._Gv).reshape(n, *p.dims)
            neural = neural.reshape(n, *p.dims)
        background, neural = self._signal_nuisance(start, stop, background, neural)
        noise = np.empty((n, *p.dims), np.float32)
        gamma = p.photons_per_unit
        for i in range(n):
            rng = block_rng(p.seed, _STREAM_NOISE, start + i)
            rng.standard_normal(p.dims, np.float32, noise[i])
            noise[i] *= np.float32(p.noise_sigma)
            if gamma > 0:  # shot noise: Poisson(x * gamma) / gamma - x on the clean frame
                clean = np.maximum(background[i] + neural[i], 0.0)
                noise[i] += (rng.poisson(clean * gamma) / gamma - clean).astype(np.float32)
            if p.line_noise_sigma > 0 or p.row_band_amplitude > 0:
                noise[i] += nuisance.line_offsets(
                    p.seed, start + i, p.height, p.line_noise_sigma, p.row_band_amplitude,
                    p.frame_rate_hz, self._bands,
                )[:, None]  # fmt: skip
        parts = (background, neural, noise)
        self._group = (grp, parts)
        return parts

    def _signal_nuisance(self, start: int, stop: int, background, neural):
        """Bleaching, the lens disc and the dark level on the rendered signal (float32)."""
        p = self.params
        scale = nuisance.bleach_factor(start, stop, p.frame_rate_hz, p.bleach_time_s)[:, None, None]
        if self._lens is not None:
            scale = scale * self._lens
        background = (background * scale).astype(np.float32)
        neural = (neural * scale).astype(np.float32)
        if self._lens is not None:
            background += np.float32(p.lens_dark_level)
        return background, neural

    def corrupt_frames(self, start: int, stop: int) -> np.ndarray:
        """Truth of the corrupted frames: index into ``simulator_nuisance.CORRUPT_KINDS``
        (0 = clean) of each frame ``[start, stop)``, ndarray of shape (n,), int8."""
        start, stop = self._check_range(start, stop)
        f = self.params.corrupt_fraction
        kinds = [nuisance.corrupt_kind(self.params.seed, t, f) for t in range(start, stop)]
        return np.asarray(kinds, np.int8)

    def render(
        self,
        start: int,
        stop: int,
        *,
        neurons: bool = True,
        background: bool = True,
        noise: bool = True,
    ) -> np.ndarray:
        """Frames in movie units before quantisation, with chosen parts left out.

        Returns
        -------
        ndarray of shape (stop - start, H, W), float32
        """
        start, stop = self._check_range(start, stop)
        out = np.zeros((stop - start, *self.params.dims), np.float32)
        for grp in range(start // RENDER_FRAMES, -(-stop // RENDER_FRAMES)):
            g0 = grp * RENDER_FRAMES
            bg, nr, nz = self._render_group(grp)
            lo, hi = max(start, g0), min(stop, g0 + len(bg))
            dst = out[lo - start : hi - start]
            src = slice(lo - g0, hi - g0)
            if background:
                dst += bg[src]
            if neurons:
                dst += nr[src]
            if noise:
                dst += nz[src]
        return out

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Movie frames ``[start, stop)``, shape (n, H, W), in ``params.dtype``.

        uint16 frames are the movie units rounded (offset 0, gain 1); values outside
        [0, 65535] are clipped, counted and logged as a warning.
        """
        movie = self.render(start, stop)
        if self.params.corrupt_fraction > 0:
            p = self.params  # noise bands up to a fixed level (chunking-independent)
            high = max(3.0 * p.baseline, 20.0 * p.noise_sigma) + p.lens_dark_level
            for i, kind in enumerate(self.corrupt_frames(start, stop)):
                nuisance.corrupt_frame(movie[i], self.params.seed, start + i, int(kind), high)
        if self.params.dtype == "float32":
            return movie
        bad = int(np.count_nonzero((movie < 0) | (movie > 65535)))
        if bad:
            self._n_clipped += bad
            logger.warning(
                "clipped %d pixel values to the uint16 range in frames %d-%d", bad, start, stop
            )
        return np.rint(np.clip(movie, 0, 65535, out=movie)).astype(np.uint16)

    def iter_frames(self, start: int = 0, stop: int | None = None):
        """Yield ``(frame_index, frame)`` one at a time; endless if both stops are None."""
        stop = self.params.n_frames if stop is None else stop
        t = start
        while stop is None or t < stop:
            g_end = (t // RENDER_FRAMES + 1) * RENDER_FRAMES
            chunk_stop = g_end if stop is None else min(g_end, stop)
            for i, frame in enumerate(self.frames(t, chunk_stop)):
                yield t + i, frame
            t = chunk_stop

    @property
    def n_clipped(self) -> int:
        """Pixel values clipped to the uint16 range so far."""
        return self._n_clipped


def _jumps(p: SimulationParams, b: int, n: int) -> np.ndarray:
    """(n, 2) displacement of block b by sudden jumps (own random stream: the rest of the
    movie is the same with or without jumps)."""
    rng = block_rng(p.seed, _STREAM_JUMPS, b)
    out = np.zeros((n, 2))
    for _ in range(rng.poisson(p.jump_rate_hz * n / p.frame_rate_hz)):
        t0 = int(rng.integers(0, n))
        hold = int(round(rng.uniform(*_JUMP_HOLD_S) * p.frame_rate_hz))
        size, angle = rng.uniform(*p.jump_px), rng.uniform(0, 2 * math.pi)
        out[t0 : t0 + hold] += size * np.array([math.cos(angle), math.sin(angle)])
    return out
