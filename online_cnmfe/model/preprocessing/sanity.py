"""The sanity guard: a loud warning when a result cannot be right (:func:`check_components`).

A 1-photon field of view holds tens to a few hundred cells; when line noise, a lens margin or a
wrong neuron size fool the extraction it returns thousands of components that tile stripes and
dark margins, most of them without a single calcium transient. Four figures catch that:

* coverage: the components' disks of the configured diameter, summed, over the field-of-view
  area (one layer of cells covers at most the tissue, and a 1-photon image overlaps about
  two: above ``sanity_max_coverage``, 1.5 by default, the count is implausible);
* silent share: components whose raw trace never rises ``TRANSIENT_Z`` noise units above its
  median within the window looked at;
* stripe share: footprints elongated more than ``ELONGATION`` : 1 (second moments), the shape
  line noise gives;
* size: the median footprint area far from the configured diameter's disk.

Each failing figure gives one sentence naming what to check (neuron diameter, frame rate, line
noise). The report is logged, published in the status, shown on the dashboard and stored in the
results file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from online_cnmfe.model._kernels import shapes as _ks
from online_cnmfe.params import PreprocessParams

TRANSIENT_Z = 4.0
ELONGATION = 3.0
MIN_COMPONENTS = 10  # fewer components: shares are not meaningful, no warning from them
SIZE_RANGE = (0.1, 6.0)  # median effective area / disk of the neuron diameter


@dataclass(frozen=True, slots=True)
class SanityReport:
    """Figures of the plausibility check and the warnings they raise.

    Attributes
    ----------
    n_components : int
    coverage : float
        Sum of the components' disk areas (diameter ``d``) over the field-of-view area.
    silent_fraction, elongated_fraction : float
        Shares of components without a transient / stripe-like (NaN when not measured).
    size_ratio : float
        Median effective footprint area ``(sum a)^2 / sum a^2`` over the disk of ``d``.
    warnings : tuple of str
        One sentence per failed figure, saying what to check.
    """

    n_components: int
    coverage: float
    silent_fraction: float
    elongated_fraction: float
    size_ratio: float
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.warnings

    @property
    def message(self) -> str | None:
        """The warnings as one line (None when all is plausible)."""
        if not self.warnings:
            return None
        return "Result implausible: " + " ".join(self.warnings)


def footprint_shapes(A, dims: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Elongation (major / minor axis from second moments) and effective area of each column.

    Parameters
    ----------
    A : sparse array of shape (n_pixels, K)
        Footprints, pixels flattened row-major.
    dims : (H, W)

    Returns
    -------
    elongation, area : ndarray of shape (K,), float64
    """
    A = scipy.sparse.csc_array(A)
    K = A.shape[1]
    elongation, area = np.ones(K), np.zeros(K)
    if K and A.nnz:  # (the moments do not depend on the pixels' order)
        _ks.footprint_shapes_csc(A.indptr, A.indices, A.data, int(dims[1]), elongation, area)
    return elongation, area


def warm_up() -> None:
    """Load the check's kernels (numba's cache) on tiny inputs shaped as the model's
    (``SlottedColumns.to_csc`` footprints, a float32 trace buffer), so the first periodic
    check on the model thread does not pay ~6 ms of loading."""
    A = scipy.sparse.csc_array(
        (np.ones(2, np.float32), np.array([0, 5], np.int32), np.array([0, 1, 2], np.int64)),
        shape=(16, 2),
    )
    footprint_shapes(A, (4, 4))
    buffer = np.ones((2, 4), np.float32)
    for filled in (np.ones(4, bool), np.arange(4) < 3):  # its filled slots: a full buffer's
        silent_fraction(buffer[:, filled], np.ones(2, np.float32))  # copy is F-ordered


def silent_fraction(traces: np.ndarray, noise: np.ndarray) -> float:
    """Share of rows of ``traces`` (K, T) that never rise ``TRANSIENT_Z`` x ``noise`` above
    their median (NaN without traces)."""
    traces = np.asarray(traces, np.float32)
    if traces.ndim != 2 or traces.shape[0] == 0 or traces.shape[1] < 3:
        return math.nan
    peak = np.empty(traces.shape[0], np.float64)
    _ks.peak_over_median(traces, peak)
    return float(np.mean(peak < TRANSIENT_Z * np.maximum(np.asarray(noise, np.float32), 1e-12)))


def check_components(
    A,
    dims: tuple[int, int],
    diameter_px: float,
    params: PreprocessParams,
    fov: np.ndarray | None = None,
    traces: np.ndarray | None = None,
    noise: np.ndarray | None = None,
) -> SanityReport:
    """Plausibility of a set of components (see the module docstring).

    Parameters
    ----------
    A : sparse array of shape (n_pixels, K)
    dims : (H, W)
    diameter_px : float
        The configured neuron diameter.
    params : PreprocessParams
        ``sanity_max_*`` thresholds.
    fov : ndarray of shape (H, W), bool, optional
        Field of view (default: the whole frame).
    traces : ndarray of shape (K, T), optional
        Raw (demixed) traces over a recent window, with ``noise`` (K,) their noise.

    Returns
    -------
    SanityReport
    """
    K = int(A.shape[1])
    fov_area = float(np.count_nonzero(fov)) if fov is not None else float(dims[0] * dims[1])
    disk = math.pi * diameter_px * diameter_px / 4.0
    coverage = K * disk / max(fov_area, 1.0)
    elong, area = footprint_shapes(A, dims)
    stripes = float(np.mean(elong > ELONGATION)) if K else math.nan
    size = float(np.median(area) / disk) if K else math.nan
    silent = math.nan
    if traces is not None and noise is not None:
        silent = silent_fraction(traces, noise)
    warnings = []
    if coverage > params.sanity_max_coverage:
        warnings.append(
            f"{K} components would cover {100 * coverage:.0f} % of the field of view with disks "
            f"of the neuron diameter ({diameter_px:g} px): more than cells can; check "
            "data.neuron_diameter_px (preprocess.estimate_diameter=true estimates it), the "
            "frame rate and line noise in the raw movie."
        )
    if K >= MIN_COMPONENTS and stripes > params.sanity_max_elongated_fraction:
        warnings.append(
            f"{100 * stripes:.0f} % of the components are stripe-like (elongated > "
            f"{ELONGATION:g}:1): line noise or scan artefacts; check "
            "preprocess.remove_row_offsets / remove_column_offsets and the raw frames."
        )
    if K >= MIN_COMPONENTS and silent > params.sanity_max_silent_fraction:
        warnings.append(
            f"{100 * silent:.0f} % of the components show no calcium transient: most are "
            "noise; check data.frame_rate_hz, data.decay_time_s and line noise."
        )
    if K >= MIN_COMPONENTS and not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        word = "smaller" if size < SIZE_RANGE[0] else "larger"
        warnings.append(
            f"the components are much {word} than a disk of data.neuron_diameter_px "
            f"({diameter_px:g} px; median area ratio {size:.2f}); check the neuron diameter."
        )
    return SanityReport(
        n_components=K, coverage=float(coverage), silent_fraction=silent,
        elongated_fraction=stripes, size_ratio=size, warnings=tuple(warnings),
    )  # fmt: skip
