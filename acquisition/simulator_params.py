"""Validated parameters and ground-truth record of the simulator (acquisition.simulator)."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass

import numpy as np
import scipy.sparse


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationParams:
    """Parameters of a simulated miniscope movie (validated; units in the names).

    Parameters
    ----------
    height, width : int
        Frame size in pixels (>= 16).
    n_frames : int or None
        Length of the movie; None for an endless stream (live simulated miniscope).
    frame_rate_hz : float
    n_neurons : int
        In-focus neurons K (>= 0).
    neuron_diameter_px : float
        Footprints are elliptical Gaussians with sigma about diameter / 4.
    decay_time_s, rise_time_s : float
        Calcium kinetics (each neuron varies by +-20 %); AR(2) when ``rise_time_s > 0``,
        else AR(1).
    firing_rate_hz : float
        Mean Poisson rate; each neuron's rate is log-normal around it.
    bursty : bool
        Spikes come in bursts (same mean rate, 1 + Poisson(2) spikes per event).
    pnr_range : (float, float)
        Per-neuron peak-to-noise ratio, drawn uniformly in this range.
    noise_sigma : float
        Standard deviation of the Gaussian pixel (read) noise, in movie units; PNRs are
        relative to it.
    photons_per_unit : float
        0 (default): Gaussian noise only. > 0: Poisson shot noise as well, each clean pixel
        value x becoming Poisson(x * photons_per_unit) / photons_per_unit (variance
        x / photons_per_unit on top of ``noise_sigma**2``).
    baseline : float
        Mean tissue brightness (movie units) before vignetting and vessels.
    background_strength : float
        Mean peak brightness of a background blob relative to a typical neuron's peak
        (``noise_sigma * mean(pnr_range)``); neuropil cells are 0.15–0.5 times that bright.
    n_neuropil, n_blobs : int
        Out-of-focus cells (sigma 9–15 px, own activity) and broad slow blobs.
    vignetting : float
        Fraction of brightness lost in the corners, in [0, 0.9].
    n_vessels : int
        Dark curvy blood-vessel-like structures (0 = none).
    motion_px : float
        Maximum rigid displacement (smooth random walk, std about motion_px / 2); 0 = none.
    jump_rate_hz : float
        Sudden rigid jumps (an animal grooming, a cable knock) per second, Poisson; 0 = none.
        Each displaces the scene by ``jump_px`` (uniform in that range, random direction) at
        once, holds for 0.5-5 s and snaps back (jumps end at the 1000-frame block boundaries).
    jump_px : (float, float)
    late_fraction : float
        Fraction of neurons silent until a random birth frame after ``late_after_frame``.
    late_after_frame : int
    seed : int
    dtype : {'uint16', 'float32'}
        Output pixels; uint16 are rounded movie units (offset 0, gain 1), never clipped in
        normal use (the baseline keeps them positive).
    line_noise_sigma : float
        Real-recording nuisance (``acquisition.simulator_nuisance``): standard deviation of a
        per-row offset drawn anew every frame (the horizontal line noise of Miniscope V4
        sensors and cables), in movie units; 0 = none.
    row_band_amplitude : float
        Amplitude of two slow sinusoidal row bands that roll through the frame (periods of
        40-90 rows, 0.05-0.2 Hz), in movie units; 0 = none.
    lens_radius_fraction : float
        0 = no lens margin. Otherwise the GRIN lens is a disc of this radius (fraction of half
        the smaller image side) at the centre: outside it the tissue is dark (only
        ``lens_dark_level`` and noise) and no neuron is placed there.
    lens_dark_level : float
        Sensor level added everywhere when a lens is simulated (what the dark margin shows).
    corrupt_fraction : float
        Fraction of frames corrupted in transmission (missing lines set to 0, a band of random
        values, or a brightness flash); ``MiniscopeSimulator.corrupt_frames`` is the truth.
    bleach_time_s : float
        Time constant of an exponential photobleaching of the whole signal (tissue and
        neurons); 0 = none.
    """

    height: int = 256
    width: int = 256
    n_frames: int | None = 2000
    frame_rate_hz: float = 20.0
    n_neurons: int = 120
    neuron_diameter_px: float = 13.0
    decay_time_s: float = 0.4
    rise_time_s: float = 0.05
    firing_rate_hz: float = 0.5
    bursty: bool = False
    pnr_range: tuple[float, float] = (3.0, 20.0)
    noise_sigma: float = 10.0
    photons_per_unit: float = 0.0
    baseline: float = 1000.0
    background_strength: float = 3.0
    n_neuropil: int = 40
    n_blobs: int = 6
    vignetting: float = 0.3
    n_vessels: int = 0
    motion_px: float = 0.0
    jump_rate_hz: float = 0.0
    jump_px: tuple[float, float] = (5.0, 15.0)
    late_fraction: float = 0.0
    late_after_frame: int = 500
    seed: int = 0
    dtype: str = "uint16"
    line_noise_sigma: float = 0.0
    row_band_amplitude: float = 0.0
    lens_radius_fraction: float = 0.0
    lens_dark_level: float = 100.0
    corrupt_fraction: float = 0.0
    bleach_time_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            _check(name, v, isinstance(v, int) and 16 <= v <= 8192, "an integer in [16, 8192]")
        if self.n_frames is not None:
            _check(
                "n_frames",
                self.n_frames,
                isinstance(self.n_frames, int) and self.n_frames >= 1,
                "an integer >= 1 or None (endless)",
            )
        _check("frame_rate_hz", self.frame_rate_hz, 0 < self.frame_rate_hz <= 1000, "(0, 1000]")
        for name in ("n_neurons", "n_neuropil", "n_blobs", "n_vessels"):
            v = getattr(self, name)
            _check(name, v, isinstance(v, int) and 0 <= v <= 100_000, "an integer >= 0")
        _check(
            "neuron_diameter_px",
            self.neuron_diameter_px,
            3 <= self.neuron_diameter_px <= 100,
            "[3, 100] pixels",
        )
        _check("decay_time_s", self.decay_time_s, 0 < self.decay_time_s <= 100, "(0, 100] s")
        _check(
            "rise_time_s",
            self.rise_time_s,
            0 <= self.rise_time_s < self.decay_time_s,
            "[0, decay_time_s) s",
        )
        _check(
            "firing_rate_hz",
            self.firing_rate_hz,
            0 < self.firing_rate_hz < self.frame_rate_hz,
            "(0, frame_rate_hz)",
        )
        lo_hi = tuple(self.pnr_range)
        _check(
            "pnr_range",
            self.pnr_range,
            len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] <= 1000,
            "(lo, hi) with 0 < lo <= hi",
        )
        _check("noise_sigma", self.noise_sigma, 0 < self.noise_sigma <= 1e4, "(0, 1e4]")
        _check(
            "photons_per_unit", self.photons_per_unit, 0 <= self.photons_per_unit <= 1e4, "[0, 1e4]"
        )
        _check("baseline", self.baseline, 0 <= self.baseline <= 3e4, "[0, 3e4]")
        _check(
            "background_strength",
            self.background_strength,
            0 <= self.background_strength <= 100,
            "[0, 100]",
        )
        _check("vignetting", self.vignetting, 0 <= self.vignetting <= 0.9, "[0, 0.9]")
        _check("motion_px", self.motion_px, 0 <= self.motion_px <= 50, "[0, 50] pixels")
        _check("jump_rate_hz", self.jump_rate_hz, 0 <= self.jump_rate_hz <= 1, "[0, 1] per second")
        lo_hi = tuple(self.jump_px)
        _check(
            "jump_px", self.jump_px, len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] <= 50,
            "(lo, hi) with 0 < lo <= hi <= 50 pixels",
        )  # fmt: skip
        _check("late_fraction", self.late_fraction, 0 <= self.late_fraction <= 1, "[0, 1]")
        _check(
            "late_after_frame",
            self.late_after_frame,
            isinstance(self.late_after_frame, int) and self.late_after_frame >= 0,
            "an integer >= 0",
        )
        if self.late_fraction > 0 and self.n_frames is not None:
            _check(
                "late_after_frame",
                self.late_after_frame,
                self.late_after_frame <= self.n_frames - 20,
                f"<= n_frames - 20 = {self.n_frames - 20} when late_fraction > 0",
            )
        _check("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0")
        _check("dtype", self.dtype, self.dtype in ("uint16", "float32"), "'uint16' or 'float32'")
        for name in ("line_noise_sigma", "row_band_amplitude", "lens_dark_level"):
            v = getattr(self, name)
            _check(name, v, 0 <= v <= 1e4, "[0, 1e4] movie units")
        _check(
            "lens_radius_fraction",
            self.lens_radius_fraction,
            self.lens_radius_fraction == 0 or 0.3 <= self.lens_radius_fraction <= 1.5,
            "0 (no lens) or [0.3, 1.5]",
        )
        _check(
            "corrupt_fraction", self.corrupt_fraction, 0 <= self.corrupt_fraction <= 0.5, "[0, 0.5]"
        )
        _check("bleach_time_s", self.bleach_time_s, self.bleach_time_s >= 0, ">= 0 s (0 = none)")

    @property
    def dims(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def ar_order(self) -> int:
        return 2 if self.rise_time_s > 0 else 1

    def to_dict(self) -> dict:
        """JSON-safe dict of the fields."""
        out = dataclasses.asdict(self)
        out["pnr_range"] = list(self.pnr_range)
        out["jump_px"] = list(self.jump_px)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> SimulationParams:
        """Build from a dict (e.g. the ``params`` JSON of a simulation file).

        Raises
        ------
        ValueError
            An unknown key (with the closest valid names) or an out-of-range value.
        """
        values = dict(values)
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ValueError(f"unknown simulation parameter {key!r}; {hint}valid: {valid}")
        for name in ("pnr_range", "jump_px"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(slots=True)
class SimulationTruth:
    """Ground truth of a simulated movie (static part; traces come from the simulator).

    Attributes
    ----------
    A : scipy.sparse.csc_array of shape (n_pixels, n_neurons), float32
        Footprints, pixels flattened row-major, each with its brightest pixel = 1.
    dims : (H, W)
    centres : ndarray of shape (n_neurons, 2), float64, (row, col)
    pnr : ndarray of shape (n_neurons,), float32
        Realised peak-to-noise ratio ``max_t C[k, t] / noise_sigma`` over the calibration window.
    birth_frame : ndarray of shape (n_neurons,), int64
        First frame a neuron may be active (0, or the first spike of a late-born neuron).
    g : ndarray of shape (n_neurons, ar_order), float32
        AR coefficients: ``C[:, t] = g1 C[:, t-1] + g2 C[:, t-2] + S[:, t]``.
    firing_rate_hz : ndarray of shape (n_neurons,), float32
    amplitude : ndarray of shape (n_neurons,), float32
        Movie units per unit of calcium (a unit spike's transient peaks at 1 unit).
    background_mean : ndarray of shape (H, W), float32
        Expected background (everything but neurons and noise) without motion.
    calibration_frames : int
        Frames over which ``pnr`` was measured.
    fov_mask : ndarray of shape (H, W), bool, or None
        Pixels inside the simulated lens (None: no lens, the whole frame is tissue).
    """

    A: scipy.sparse.csc_array
    dims: tuple[int, int]
    centres: np.ndarray
    pnr: np.ndarray
    birth_frame: np.ndarray
    g: np.ndarray
    firing_rate_hz: np.ndarray
    amplitude: np.ndarray
    background_mean: np.ndarray
    calibration_frames: int
    fov_mask: np.ndarray | None = None

    @property
    def n_neurons(self) -> int:
        return int(self.A.shape[1])

    @property
    def footprints(self) -> np.ndarray:
        """Dense footprints, ndarray of shape (n_neurons, H, W), float32."""
        return np.ascontiguousarray(self.A.toarray().T).reshape(self.n_neurons, *self.dims)
