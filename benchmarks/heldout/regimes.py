"""Named regimes of the held-out bench: each a change of :class:`HeldoutParams` from the
baseline, the ``--set`` overrides a user would give ``online-cnmfe process`` for it, and a
``--quick`` version (128 x 128, 800 frames, counts scaled by area) for smoke runs.

The user overrides carry what a user knows about their recording: the true frame rate and
the neuron diameter (4 x the mid sigma, rounded); see _MOTION_SET for motion correction.
Every regime uses the same seed, so two regimes differ only by what their changes change
(``motion_3px`` and ``motion_free`` share the scene).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks.heldout.params import HeldoutParams

SEED = 2026
BASELINE = HeldoutParams(seed=SEED)  # 256 x 256, 150 neurons, PNR 3-20, 20 Hz, 2000 frames
QUICK_SIZE = 128
QUICK_FRAMES = 800


@dataclass(frozen=True, slots=True)
class Regime:
    name: str
    description: str
    changes: dict = field(default_factory=dict)
    extra_overrides: tuple[str, ...] = ()
    heavy: bool = False  # opt-in only (named explicitly in --regimes)
    quick_changes: dict = field(default_factory=dict)  # besides the generic scaling


_MOTION = {"motion_std_px": 3.0, "jump_rate_hz": 0.05, "jump_px": (9.0, 11.0)}
# Motion correction is on by default (rigid, motion.max_shift_px 20): the motion regimes run
# with the defaults. Add --set motion.enabled=false to measure the model on uncorrected motion.
_MOTION_SET: tuple[str, ...] = ()

_LIST = [
    Regime("baseline", "256², 150 neurons, PNR 3-20 (log-uniform), 20 Hz, 2000 frames"),
    Regime("low_pnr", "PNR 2-8", {"pnr": (2.0, 8.0)}),
    Regime(
        "high_density",
        "400 neurons at 256², spacing >= 1.1 sigma",
        {"n_neurons": 400, "min_separation": 1.1},
    ),
    Regime("small_cells", "sigma 2-3 px (diameter 10)", {"sigma_px": (2.0, 3.0)}),
    Regime(
        "large_cells",
        "sigma 5-7 px (diameter 24), 100 neurons",
        {"sigma_px": (5.0, 7.0), "n_neurons": 100},
    ),
    Regime("sparse_firing", "0.1-0.3 Hz", {"rate_hz": (0.1, 0.3)}),
    Regime(
        "bursty",
        "every neuron bursty (1 + Poisson(3) spikes per burst), 0.2-1 Hz",
        {"bursty_fraction": 1.0, "rate_hz": (0.2, 1.0)},
    ),
    Regime(
        "strong_background",
        "blobs 3x brighter, +-60 % on 1-3 s, global drift 15 % on 10 s",
        {
            "blob_level": 450.0,
            "blob_fluctuation": 0.6,
            "blob_time_s": (1.0, 3.0),
            "drift_amplitude": 0.15,
            "drift_time_s": 10.0,
        },
    ),
    Regime(
        "heavy_neuropil",
        "300 out-of-focus cells at PNR 2-8",
        {"n_neuropil": 300, "neuropil_pnr": (2.0, 8.0)},
    ),
    Regime(
        "poisson_noise",
        "shot noise dominant: std 9.5 at the median background, read 3",
        {"noise_sigma": 3.0, "shot_noise_sigma": 9.5},
    ),
    Regime(
        "line_noise",
        "V4-like: per-row offsets std 20 (2x the pixel noise) + bands std 10",
        {"line_noise_sigma": 20.0, "band_amplitude": 10.0},
    ),
    Regime(
        "lens_margin",
        "circular FOV (radius 0.92 x half-size, 1/3 of pixels dark), 100 neurons",
        {"lens_radius_frac": 0.92, "n_neurons": 100},
    ),
    Regime(
        "photobleaching",
        "baseline loses 40 % with a 60 s time constant",
        {"bleach_fraction": 0.4, "bleach_time_s": 60.0},
    ),
    Regime(
        "corrupt_frames",
        "1 % of frames corrupted (zeroed rows, shifted rows, brightness x1.3-2)",
        {"corrupt_fraction": 0.01},
    ),
    Regime(
        "slow_10hz", "10 Hz, 1000 frames (same 100 s)", {"frame_rate_hz": 10.0, "n_frames": 1000}
    ),
    Regime(
        "fast_30hz", "30 Hz, 3000 frames (same 100 s)", {"frame_rate_hz": 30.0, "n_frames": 3000}
    ),
    Regime(
        "motion_3px",
        "rigid walk std 3 px + transient 9-11 px jumps (~1 per 20 s)",
        dict(_MOTION),
        _MOTION_SET,
    ),
    Regime("motion_free", "the motion_3px scene without motion (same overrides)", {}, _MOTION_SET),
    Regime(
        "lens_motion",
        "lens_margin's lens (still on the sensor) over tissue moving as in motion_3px",
        {"lens_radius_frac": 0.92, "n_neurons": 100, **_MOTION},
        _MOTION_SET,
    ),
    Regime(
        "late_born",
        "20 % of neurons silent until a birth in 30-85 % of the movie",
        {"late_fraction": 0.2},
        quick_changes={"late_window": (0.45, 0.85)},  # births after the 300 init frames
    ),
    Regime(
        "large_512",
        "512², 400 neurons, 320 neuropil cells",
        {"height": 512, "width": 512, "n_neurons": 400, "n_neuropil": 320},
        quick_changes={"height": 192, "width": 192, "n_neurons": 120, "n_neuropil": 96},
    ),
    Regime(
        "long_20min",
        "20 min at 20 Hz (24,000 frames), 10 % late-born, photobleaching 20 %",
        {"n_frames": 24000, "late_fraction": 0.1, "bleach_fraction": 0.2, "bleach_time_s": 600.0},
        heavy=True,
        quick_changes={"n_frames": 2400},
    ),
]
REGIMES: dict[str, Regime] = {r.name: r for r in _LIST}


def regime_params(name: str, *, quick: bool = False) -> HeldoutParams:
    """The :class:`HeldoutParams` of a regime (its quick version with ``quick``)."""
    if name not in REGIMES:
        raise KeyError(f"unknown regime {name!r}; known: {', '.join(REGIMES)}")
    r = REGIMES[name]
    p = BASELINE.replace(**r.changes)
    if not quick:
        return p
    area = (QUICK_SIZE * QUICK_SIZE) / (p.height * p.width)
    quick_p = {
        "height": QUICK_SIZE,
        "width": QUICK_SIZE,
        "n_neurons": max(8, int(round(p.n_neurons * area))),
        "n_neuropil": int(round(p.n_neuropil * area)),
        "n_frames": min(p.n_frames, max(700, math.ceil(QUICK_FRAMES * p.frame_rate_hz / 20))),
    }
    quick_p.update(r.quick_changes)
    return p.replace(**quick_p)


def user_overrides(name: str, *, quick: bool = False) -> list[str]:
    """The ``--set`` overrides a user would give for the regime's movie."""
    p = regime_params(name, quick=quick)
    return [
        f"data.frame_rate_hz={p.frame_rate_hz:g}",
        f"data.neuron_diameter_px={p.diameter_px}",
        *REGIMES[name].extra_overrides,
    ]


def default_selection() -> list[str]:
    """Every regime that is not heavy."""
    return [r.name for r in _LIST if not r.heavy]
