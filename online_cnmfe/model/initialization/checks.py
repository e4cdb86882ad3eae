"""Input checks and progress reporting of the initialisation (:mod:`.fit`)."""

from __future__ import annotations

import logging
import sys

import numpy as np

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger("online_cnmfe.model.initialization.fit")


class Progress:
    """Stage progress of the initialisation: a tqdm bar (``True``), a callable
    ``f(stage, fraction)`` or nothing.

    The fit announces each stage as it starts (:meth:`begin`); the callable then gets the
    stage's name and the fraction of the fit done before it, the stages weighted by their
    typical share of the fit's time (``stages``: (name, weight) in order; names not listed
    weigh nothing), and ``("done", 1.0)`` at the end (:meth:`finish`).
    """

    def __init__(self, progress, stages: list[tuple[str, float]]) -> None:
        self._bar = None
        self._fn = progress if callable(progress) else None
        total = float(sum(w for _, w in stages)) or 1.0
        self._before: dict[str, float] = {}
        done = 0.0
        for name, weight in stages:
            self._before[name] = done / total
            done += weight
        self._fraction = 0.0
        if progress is True:
            from tqdm import tqdm

            self._bar = tqdm(
                total=100,
                desc="init",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
                leave=False,
                bar_format="{l_bar}{bar}| {postfix}",
            )

    @property
    def fraction(self) -> float:
        """Fraction of the fit done (the last one reported)."""
        return self._fraction

    def begin(self, stage: str, detail: str = "") -> None:
        """Stage ``stage`` starts (``detail``, e.g. a neuron count, is added to its name)."""
        self._fraction = max(self._fraction, self._before.get(stage, self._fraction))
        self._report(f"{stage} ({detail})" if detail else stage)

    def finish(self) -> None:
        self._fraction = 1.0
        self._report("done")

    def _report(self, label: str) -> None:
        logger.debug("init stage %s (%.0f %% done)", label, 100 * self._fraction)
        if self._bar is not None:
            self._bar.set_postfix_str(label)
            self._bar.update(round(100 * self._fraction) - self._bar.n)
        if self._fn is not None:
            self._fn(label, self._fraction)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# Typical CPU seconds of each stage (608x608, 300 frames, 500 neurons, bench_init --stages;
# BENCHMARKS.md "Initialisation at 608², second pass (issue 17)"): only the progress fractions
# use them.
_STAGE_WEIGHT = {
    "preprocessing": 2.5,
    "motion correction": 4.0,
    "seeding": 11.0,
    "background": 4.5,
    "traces and footprints": 0.5,
    "re-seeding": 8.0,
    "acceptance": 0.5,
    "final background and traces": 4.0,
}


def stage_weights(params: CNMFEParams) -> list[tuple[str, float]]:
    """The fit's stages in order with their weights (:class:`Progress`)."""
    w = _STAGE_WEIGHT
    stages = [("preprocessing", w["preprocessing"])]
    if params.motion.enabled:
        stages.append(("motion correction", w["motion correction"]))
    stages.append(("seeding", w["seeding"]))
    for it in range(1, params.init.n_alternations + 1):
        stages += [
            (f"background {it}", w["background"]),
            (f"traces and footprints {it}", w["traces and footprints"]),
        ]
        if it <= params.init.reseed_passes:
            stages.append((f"re-seeding {it}", w["re-seeding"]))
    stages += [
        ("acceptance", w["acceptance"]),
        ("final background and traces", w["final background and traces"]),
    ]
    return stages


def validate_frames(frames, params: CNMFEParams) -> np.ndarray:
    """float32 (T, H, W) copy with non-finite frames replaced by the nearest finite frame."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(
            f"frames must be a (T, H, W) array; got {frames.ndim} dimension(s) with shape "
            f"{frames.shape}. Stack the frames along axis 0."
        )
    if not (np.issubdtype(frames.dtype, np.number) and not np.iscomplexobj(frames)):
        raise TypeError(f"frames must be a real numeric array, got dtype {frames.dtype}")
    T, H, W = frames.shape
    need = params.init.init_frames
    if T < need:
        raise ValueError(
            f"got {T} frames for the initialisation but init.init_frames={need}; pass at least "
            f"{need} frames or lower init.init_frames (minimum 20), e.g. "
            f"--set init.init_frames={max(20, T)}"
        )
    if H < 3 or W < 3:
        raise ValueError(f"frames of {H}x{W} pixels are too small; expected at least 3x3")
    Y = np.ascontiguousarray(frames, dtype=np.float32)
    if Y is frames:
        Y = Y.copy()
    bad = ~np.isfinite(Y).all(axis=(1, 2))
    n_bad = int(bad.sum())
    if n_bad:
        good = np.flatnonzero(~bad)
        if good.size < 20:
            raise OnlineCNMFEError(
                f"{n_bad} of {T} initialisation frames contain NaN or infinite values and only "
                f"{good.size} remain; at least 20 finite frames are needed"
            )
        idx = np.flatnonzero(bad)
        nearest = good[np.clip(np.searchsorted(good, idx), 0, good.size - 1)]
        Y[idx] = Y[nearest]
        logger.warning(
            "initialisation: %d frame(s) with NaN/inf replaced by the nearest finite frame", n_bad
        )
    lo, hi = float(Y.min()), float(Y.max())
    if hi - lo <= 1e-6 * max(abs(hi), abs(lo), 1.0):
        raise ValueError(
            f"the initialisation movie is constant (every pixel = {lo:g}); check the source "
            "(lens cap, wrong channel, dropped frames)"
        )
    return Y


def looks_preprocessed(Y: np.ndarray) -> dict | None:
    """Signs that the movie was already background-removed and/or quantised (e.g. by minian).

    Returns a dict (``levels``: distinct values in a sample, ``zero_fraction``: share of pixels
    at the movie's minimum, ``integer``: whether all sampled values are integers) when at least
    one sign is present (fewer than 32 levels, or more than 10 % of the pixels at the minimum:
    raw sensor data have a noisy floor, a per-pixel minimum subtraction leaves many pixels at
    it), else None. Such data have a different PNR scale (no baseline, spatially filtered
    noise); the init logs a warning with the numbers.
    """
    flat = Y.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)]
    levels = int(np.unique(sample).size)
    zero_fraction = float(np.mean(sample <= sample.min()))
    integer = bool(np.all(sample == np.round(sample)))
    if levels < 32 or zero_fraction > 0.1:
        return {"levels": levels, "zero_fraction": zero_fraction, "integer": integer}
    return None


def warn_if_preprocessed(Y: np.ndarray) -> dict | None:
    """Log a warning when :func:`looks_preprocessed` finds signs of preprocessing."""
    info = looks_preprocessed(Y)
    if info is not None:
        logger.warning(
            "the movie looks preprocessed: %d distinct values (integer: %s), %.0f %% of the "
            "pixels at the minimum (%g). Background-removed, median-filtered or quantised data "
            "have weaker and spatially correlated noise (the seeding threshold is calibrated "
            "on that noise); data.neuron_diameter_px should match the cells as they look "
            "after the filtering",
            info["levels"],
            info["integer"],
            100 * info["zero_fraction"],
            float(Y.min()),
        )
    return info
