"""Parameters of a held-out movie: one frozen, validated object, JSON round trip.

Ranges are ``(low, high)`` tuples; a value is drawn per neuron (or per blob, per neuropil
cell) uniformly in the range unless the field says log-uniform. Intensities are in movie units
(the stored uint16 values); ``noise_sigma`` is the unit of every PNR.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldoutParams:
    """Everything that defines a movie; the same params give the same movie, bit for bit.

    Parameters
    ----------
    height, width, n_frames, frame_rate_hz : size and timing of the movie.
    seed : int
        Root of every random stream (``numpy.random.SeedSequence(seed, spawn_key=...)``).
    n_neurons : int
        In-focus neurons (the truth).
    sigma_px : (float, float)
        Range of the Gaussian sigma of each footprint axis (major and minor drawn separately).
    min_separation : float
        Smallest centre distance, in units of the mean sigma (< 2 lets neighbours overlap).
    textured_fraction, donut_fraction : float
        Share of footprints that are irregular (a Gaussian times a smooth random texture) or
        ring-shaped (a dim nucleus); the rest are plain elliptical Gaussians.
    pnr : (float, float)
        Log-uniform range of each neuron's PNR = max_t C / noise_sigma.
    rate_hz : (float, float)
        Log-uniform range of each neuron's mean spike rate.
    bursty_fraction : float
        Share of neurons that fire in bursts (same mean rate, clustered spikes).
    rise_s, decay_s : (float, float)
        Ranges of the rise and decay time constants of the AR(2) calcium kernel.
    late_fraction : float
        Share of neurons silent until a birth frame drawn in ``late_window`` (fractions of
        the movie length).
    noise_sigma : float
        Standard deviation of the white (Gaussian) sensor noise, movie units.
    shot_noise_sigma : float
        If > 0, Poisson shot noise whose std at the median background pixel is this (photons
        per movie unit derived from it). The PNR unit is then the total noise there,
        ``sqrt(noise_sigma**2 + shot_noise_sigma**2)``.
    dark_level : float
        Sensor offset, added to every pixel (and the only signal outside the lens).
    background_level : float
        Mean of the static background (illumination x tissue autofluorescence).
    n_blobs, blob_sigma_frac, blob_level, blob_fluctuation, blob_time_s :
        Broad background blobs: count, sigma as a fraction of the image size, mean amplitude,
        relative std of their intensity, and time constant of that (Ornstein-Uhlenbeck)
        fluctuation.
    drift_amplitude, drift_time_s : global multiplicative drift of the whole background.
    bleach_fraction, bleach_time_s : the baseline decays by this fraction with this time
        constant (photobleaching of the background; 0 disables).
    n_neuropil, neuropil_sigma_px, neuropil_pnr, neuropil_rate_hz, neuropil_decay_s :
        Out-of-focus cells: count, blur sigma, log-uniform peak in units of noise_sigma,
        spike rate and decay time of their (slow) activity.
    line_noise_sigma : float
        Std of a per-row offset redrawn every frame (Miniscope V4 line noise), movie units.
    band_amplitude, band_period_s : slow horizontal bands (sum of drifting row sinusoids).
    lens_radius_frac : float
        Radius of the circular field of view as a fraction of min(H, W) / 2 (0 = no lens margin;
        pixels outside are dark with ``dark_noise_sigma``).
    dark_noise_sigma : float
        Noise std outside the lens.
    corrupt_fraction : float
        Share of frames corrupted (zeroed rows, a horizontally shifted block of rows, or a
        brightness jump); their indices are in ``truth/corrupt_frames``.
    motion_std_px : float
        Std of the slow rigid random walk (0 = no motion).
    motion_time_s : float
        Time constant of that walk.
    jump_rate_hz, jump_px, jump_recovery_s : occasional transient jumps of the scene:
        their rate, size range and recovery time constant.
    """

    height: int = 256
    width: int = 256
    n_frames: int = 2000
    frame_rate_hz: float = 20.0
    seed: int = 0
    # neurons
    n_neurons: int = 150
    sigma_px: Range = (3.0, 5.0)
    min_separation: float = 1.6
    textured_fraction: float = 0.2
    donut_fraction: float = 0.1
    pnr: Range = (3.0, 20.0)
    rate_hz: Range = (0.2, 1.5)
    bursty_fraction: float = 0.2
    rise_s: Range = (0.05, 0.1)
    decay_s: Range = (0.3, 1.0)
    late_fraction: float = 0.0
    late_window: Range = (0.3, 0.85)
    # noise
    noise_sigma: float = 10.0
    shot_noise_sigma: float = 0.0
    dark_level: float = 100.0
    # background
    background_level: float = 400.0
    n_blobs: int = 6
    blob_sigma_frac: Range = (0.15, 0.35)
    blob_level: float = 150.0
    blob_fluctuation: float = 0.3
    blob_time_s: Range = (4.0, 15.0)
    drift_amplitude: float = 0.05
    drift_time_s: float = 30.0
    bleach_fraction: float = 0.0
    bleach_time_s: float = 300.0
    n_neuropil: int = 80
    neuropil_sigma_px: Range = (9.0, 16.0)
    neuropil_pnr: Range = (1.0, 4.0)
    neuropil_rate_hz: Range = (0.2, 1.0)
    neuropil_decay_s: Range = (1.0, 2.5)
    # sensor artefacts
    line_noise_sigma: float = 0.0
    band_amplitude: float = 0.0
    band_period_s: Range = (3.0, 12.0)
    lens_radius_frac: float = 0.0
    dark_noise_sigma: float = 1.5
    corrupt_fraction: float = 0.0
    # motion
    motion_std_px: float = 0.0
    motion_time_s: float = 2.0
    jump_rate_hz: float = 0.0
    jump_px: Range = (5.0, 15.0)
    jump_recovery_s: Range = (0.5, 3.0)

    def __post_init__(self) -> None:
        def check(name, ok, allowed):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range; {allowed}")

        for name in ("height", "width"):
            check(name, isinstance(getattr(self, name), int) and getattr(self, name) >= 16, ">= 16")
        check("n_frames", isinstance(self.n_frames, int) and self.n_frames >= 2, "an int >= 2")
        check("frame_rate_hz", 0 < self.frame_rate_hz <= 200, "(0, 200] Hz")
        check("n_neurons", self.n_neurons >= 0, ">= 0")
        check("n_neuropil", self.n_neuropil >= 0, ">= 0")
        check("n_blobs", self.n_blobs >= 0, ">= 0")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                check(
                    f.name,
                    len(value) == 2 and 0 <= value[0] <= value[1],
                    "(low, high), 0 <= low <= high",
                )
        for name in (
            "textured_fraction",
            "donut_fraction",
            "bursty_fraction",
            "late_fraction",
            "corrupt_fraction",
            "bleach_fraction",
        ):
            check(name, 0 <= getattr(self, name) <= 1, "[0, 1]")
        check(
            "textured_fraction",
            self.textured_fraction + self.donut_fraction <= 1,
            "textured_fraction + donut_fraction <= 1",
        )
        check("late_window", self.late_window[1] <= 1, "fractions of the movie in [0, 1]")
        check("sigma_px", self.sigma_px[0] > 0.5, "sigma >= 0.5 px")
        check("pnr", self.pnr[0] > 0, "PNR > 0")
        check("rate_hz", self.rate_hz[0] > 0, "rates > 0")
        check("decay_s", self.decay_s[0] > self.rise_s[1], "every decay slower than every rise")
        check("noise_sigma", self.noise_sigma > 0, "> 0")
        check("lens_radius_frac", 0 <= self.lens_radius_frac <= 1.5, "[0, 1.5]")
        check("min_separation", self.min_separation >= 0, ">= 0")

    # ---- derived --------------------------------------------------------------------------
    @property
    def pnr_sigma(self) -> float:
        """The noise unit of every PNR: white noise, plus shot noise at the median background."""
        return float((self.noise_sigma**2 + self.shot_noise_sigma**2) ** 0.5)

    @property
    def diameter_px(self) -> int:
        """The neuron diameter a user would give: 4 x the mid sigma, rounded."""
        return int(round(4 * 0.5 * (self.sigma_px[0] + self.sigma_px[1])))

    @property
    def has_motion(self) -> bool:
        return self.motion_std_px > 0 or self.jump_rate_hz > 0

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> HeldoutParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown generator parameter(s) {unknown}; valid: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **changes) -> HeldoutParams:
        return HeldoutParams.from_dict({**self.to_dict(), **changes})


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
