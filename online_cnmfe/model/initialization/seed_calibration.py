"""What the initialisation's seeding learns from the recording before it trusts its defaults.

Three choices the user cannot make well, decided on the movie itself (each logged):

* **the matched temporal filter** (``detection.matched_filter = "auto"``,
  :func:`choose_matched_filter`): seed on frames averaged with the indicator's decay, or on
  single frames. Both statistics are calibrated at the same false-seed rate (their nulls go
  through the same filters), so the one with more neuron-sized peaks above its threshold sees
  more signal. White noise in time (a background-removed Miniscope movie): the filter lifts
  weak cells 1.6x at 10 Hz (minian CA1: 46 -> 77 peaks). In raw movies slow fluctuations
  survive the spatial filter (drifting background, neuropil) and the count misleads (held-out
  small_cells: 120 -> 231 peaks, yet 6 cells lost and recall 1.00 -> 0.96), so "auto" is off
  for raw movies.
* **the seed tests' scale** (:func:`calibrate_seed_tests`): the out-of-focus and half-maximum
  area tests are made for a Gaussian neuron of ``data.neuron_diameter_px``; in a
  background-removed movie the strongest seeds are cells, and their median ratio and area say
  how this recording's cells look (minian's median-filtered CA1 cells: 1.8-2.4x; the held-out
  simulations 0.8-1.1).
* **the cells' diameter** (``init.adapt_diameter``, :func:`cell_diameter`): fitted footprints
  whose median size is more than twice the expected neuron's mean the filter, the seeding
  window and the size tests were made for smaller cells; the fit runs again at the cells' own
  diameter.

All three only for movies that look preprocessed (background-removed; see
:func:`.checks.looks_preprocessed`): in a raw movie the strongest seeds can be out-of-focus
blobs (96 x 96 simulations: 4-5x the neuron's size).
"""

from __future__ import annotations

import logging

import numpy as np

from online_cnmfe.model.footprint_shape import size_ratios
from online_cnmfe.model.initialization.noise_null import data_floor, seeding_threshold
from online_cnmfe.model.initialization.out_of_focus import filter_response
from online_cnmfe.model.initialization.seeding import reference_seeds, seed_statistic
from online_cnmfe.model.initialization.summary_images import summary_images
from online_cnmfe.model.motion import zero_border
from online_cnmfe.model.null_threshold import peak_values
from online_cnmfe.model.preprocessing.fov import fov_in_model, fov_on_grid

logger = logging.getLogger(__name__)

# "auto" turns the filter on for 30 % and at least 5 more seeds (a few are noise: the rate)
MATCHED_FILTER_MARGIN = 1.3
MATCHED_FILTER_EXTRA = 5
SEED_TEST_DEAD_ZONE = 1.25  # measured / expected ratios up to this leave the seed tests alone
MIN_REFERENCE_SEEDS = 5  # fewer strong seeds than this: the expected neuron's figures are used
HALFMAX_AREA_PER_D2 = 0.272  # half-maximum area of a Gaussian of sigma d / 4, over d^2
ADAPT_SIZE_RATIO = 2.0  # median footprint size ratio above which the diameter is re-measured


def seed_image(fit, images, gsiz: int, s: int) -> np.ndarray:
    """The seeding statistic (:func:`.seeding.seed_statistic`), zero in the lens margin and
    the motion border band (where no seed may be)."""
    v = images.corr * images.pnr
    fov = fov_in_model(fit.pre, fit.band)  # the lens in the corrected frame
    if fov is not None:
        v[~fov_on_grid(fov, s)] = 0.0
    if fit.band is not None:
        zero_border(v, fit.band, s)
    return seed_statistic(v, gsiz)


def seed_peaks(stat: np.ndarray, threshold: float, gsiz: int) -> int:
    """Neuron-sized peaks (one per ``gsiz`` square) of the seeding statistic ``stat``
    (:func:`seed_image`) above ``threshold``."""
    return int(np.count_nonzero(peak_values(stat, max(3, gsiz)) >= threshold))


def choose_matched_filter(fit, data, gsig: float, gsiz: int, rate: float, s: int):
    """Decide ``detection.matched_filter = "auto"`` (see the module docstring).

    Sets ``fit.tau`` and ``fit.matched_filter``. Returns (filtered, images, null) of the
    chosen variant; filtered and images are None when they must be recomputed (one filtered
    movie is kept in memory at a time).
    """
    counts, nulls, last = {}, {}, None
    for tau in (0.0, fit.tau_decay):
        last = None
        try:
            nulls[tau] = seeding_threshold(data, gsig, gsiz, rate, tau_frames=tau)
        except ValueError:  # too few null peaks (a tiny frame): averaged frames have fewer
            if tau == 0.0:
                raise
            counts[tau] = -1
            break
        filtered, images = summary_images(
            data, gsig, remove_global=fit.p.init.remove_global_fluctuation, tau_frames=tau
        )
        stat = seed_image(fit, images, gsiz, s)
        nulls[tau] = data_floor(nulls[tau], stat, gsiz, rate)
        counts[tau] = seed_peaks(stat, nulls[tau].threshold, gsiz)
        last = (filtered, images)
        del filtered, images
    on = counts[fit.tau_decay] >= MATCHED_FILTER_MARGIN * counts[0.0] + MATCHED_FILTER_EXTRA
    fit.matched_filter = bool(on)
    fit.tau = fit.tau_decay if on else 0.0
    logger.info(
        "detection.matched_filter=auto: %d seeds above the calibrated threshold on single "
        "frames, %d with the matched temporal filter (time constant %.1f frames): %s",
        counts[0.0], counts[fit.tau_decay], fit.tau_decay, "on" if on else "off",
    )  # fmt: skip
    if on:  # the last variant computed
        return last[0], last[1], nulls[fit.tau]
    return None, None, nulls[fit.tau]


def calibrate_seed_tests(fit, filtered_pm, raw_pm, v, gsiz, threshold, kernel, s) -> None:
    """Scale the out-of-focus and size tests (``fit.kappa_scale``, ``fit.area_scale``,
    ``fit.kappa_ref_grid``) to the strongest seeds (:func:`.seeding.reference_seeds`) when
    their median ratio or half-maximum area exceeds the expected neuron's by more than
    :data:`SEED_TEST_DEAD_ZONE`, in preprocessed movies only."""
    expected_kappa = 1.0 / filter_response(kernel, fit.diameter / 4.0, s)
    fit.kappa_ref_grid = expected_kappa
    if not fit.preprocessed:
        return
    expected_area = HALFMAX_AREA_PER_D2 * (fit.diameter / s) ** 2
    ref = reference_seeds(filtered_pm, raw_pm, v, gsiz, threshold)
    ok = ref.n >= MIN_REFERENCE_SEEDS
    k_ratio, a_ratio = ref.kappa / expected_kappa, ref.halfmax_area / expected_area
    fit.kappa_scale = k_ratio if ok and k_ratio > SEED_TEST_DEAD_ZONE else 1.0
    fit.area_scale = a_ratio if ok and a_ratio > SEED_TEST_DEAD_ZONE else 1.0
    fit.kappa_ref_grid = expected_kappa * fit.kappa_scale
    logger.info(
        "seed tests: the %d strongest seeds have %.1f x the expected neuron's raw/filtered "
        "ratio and %.1f x its half-maximum area; limits scaled by %.2f and %.2f",
        ref.n, k_ratio, a_ratio, fit.kappa_scale, fit.area_scale,
    )  # fmt: skip


def cell_diameter(fit) -> float | None:
    """The cells' diameter when the fitted footprints are much wider than declared, else None.

    The median size ratio of the footprints after one alternation (their best-fitting
    Gaussian's sigma over ``d / 4``, squared) above :data:`ADAPT_SIZE_RATIO`: the diameter
    that would make it 1, at most twice the declared one. Preprocessed movies only.
    """
    if not fit.preprocessed or fit.K < MIN_REFERENCE_SEEDS:
        return None
    ratios = size_ratios(fit.A, fit.dims, fit.diameter)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size < MIN_REFERENCE_SEEDS:
        return None
    median = float(np.median(ratios))
    if median <= ADAPT_SIZE_RATIO:
        return None
    d_new = float(min(2.0, np.sqrt(median)) * fit.diameter)
    logger.warning(
        "the cells look %.0f px wide, not %.0f (their footprints' median size is %.1f x the "
        "expected neuron's): fitting again at %.0f px; set data.neuron_diameter_px=%.0f to "
        "skip this pass, or init.adapt_diameter=false to keep yours",
        d_new, fit.diameter, median, d_new, d_new,
    )  # fmt: skip
    return d_new
