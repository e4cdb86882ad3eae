"""The sanity guard: implausible results (stripes, tiling, silent components) warn loudly."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from online_cnmfe.model.preprocessing.sanity import (
    check_components,
    footprint_shapes,
    silent_fraction,
)
from online_cnmfe.params import PreprocessParams

DIMS = (120, 120)
D = 10.0


def _gaussians(centres, sigma=D / 4) -> scipy.sparse.csc_array:
    rr, cc = np.mgrid[: DIMS[0], : DIMS[1]]
    cols = []
    for r, c in centres:
        img = np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
        img[img < 0.05] = 0
        cols.append(img.ravel())
    return scipy.sparse.csc_array(np.stack(cols, 1).astype(np.float32))


def _stripes(n: int) -> scipy.sparse.csc_array:
    cols = []
    for k in range(n):
        img = np.zeros(DIMS, np.float32)
        r, c0 = (7 * k) % DIMS[0], (13 * k) % 60
        img[r, c0 : c0 + 50] = 1.0
        img[min(r + 1, DIMS[0] - 1), c0 : c0 + 50] = 0.5
        cols.append(img.ravel())
    return scipy.sparse.csc_array(np.stack(cols, 1))


def _active_traces(n, T=200, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(0, 1, (n, T)).astype(np.float32)
    C[:, 50:55] += 12.0  # one transient each
    return C, np.ones(n, np.float32)


def test_plausible_cells_raise_no_warning():
    centres = [(15 + 18 * i, 15 + 18 * j) for i in range(6) for j in range(6)]
    A = _gaussians(centres)
    C, noise = _active_traces(len(centres))
    rep = check_components(A, DIMS, D, PreprocessParams(), traces=C, noise=noise)
    assert rep.ok and rep.message is None, rep.warnings
    assert 0.5 < rep.size_ratio < 2.0
    assert rep.elongated_fraction == 0.0 and rep.silent_fraction == 0.0


def test_densely_packed_overlapping_cells_are_plausible():
    """A 1-photon field packed as densely as the held-out high_density regime (true cells'
    disks summing to 1.2 x the field: neighbours 0.8 diameters apart) is not called out."""
    step = 0.8 * D
    n = int(DIMS[0] // step)
    centres = [(step * (i + 0.5), step * (j + 0.5)) for i in range(n) for j in range(n)]
    A = _gaussians(centres)
    C, noise = _active_traces(len(centres))
    rep = check_components(A, DIMS, D, PreprocessParams(), traces=C, noise=noise)
    assert 1.1 < rep.coverage < PreprocessParams().sanity_max_coverage
    assert rep.ok, rep.warnings


def test_stripes_tiling_the_frame_are_called_out():
    A = _stripes(400)
    C = np.random.default_rng(1).normal(0, 1, (400, 200)).astype(np.float32)
    rep = check_components(A, DIMS, D, PreprocessParams(), traces=C, noise=np.ones(400))
    assert not rep.ok
    text = rep.message
    assert text.startswith("Result implausible:")
    assert "cover" in text and "data.neuron_diameter_px" in text  # coverage 400 disks
    assert "stripe-like" in text and "line noise" in text
    assert "no calcium transient" in text and "data.frame_rate_hz" in text
    assert rep.coverage > 2 and rep.elongated_fraction == 1.0 and rep.silent_fraction > 0.95


def test_coverage_counts_the_field_of_view_only():
    centres = [(60 + 3 * i, 60) for i in range(12)]
    A = _gaussians(centres)
    fov = np.zeros(DIMS, bool)
    fov[50:70, 50:70] = True  # 400 px: 12 disks of 78 px cover > 2x it
    p = PreprocessParams()
    assert check_components(A, DIMS, D, p).coverage < p.sanity_max_coverage
    rep = check_components(A, DIMS, D, p, fov=fov)
    assert rep.coverage > 2 and not rep.ok


def test_wrong_diameter_is_called_out():
    centres = [(15 + 18 * i, 15 + 18 * j) for i in range(6) for j in range(6)]
    rep = check_components(_gaussians(centres, sigma=6.0), DIMS, 5.0, PreprocessParams())
    assert any("much larger" in w for w in rep.warnings), rep.warnings


def test_footprint_shapes_of_a_disk_and_a_line():
    A = scipy.sparse.hstack([_gaussians([(60, 60)]), _stripes(1)]).tocsc()
    elong, area = footprint_shapes(A, DIMS)
    assert elong[0] < 1.2 and elong[1] > 10
    assert area[0] == np.float64(area[0]) and 0.7 < area[0] / (math.pi * D * D / 4) < 1.3


def test_silent_fraction_edge_cases():
    assert math.isnan(silent_fraction(np.zeros((3, 2)), np.ones(3)))
    C, noise = _active_traces(4)
    C[0] = 0.0
    assert silent_fraction(C, noise) == 0.25


def test_no_components_no_crash():
    A = scipy.sparse.csc_array((DIMS[0] * DIMS[1], 0), dtype=np.float32)
    rep = check_components(A, DIMS, D, PreprocessParams())
    assert rep.ok and rep.n_components == 0 and rep.coverage == 0.0


def test_warm_up_loads_what_the_models_first_check_calls():
    """The first periodic check on the model thread cost ~6 ms of numba loading: the trace
    buffer's filled slots are an F-ordered copy, a type the warm-up did not load. In a fresh
    interpreter, after ``warm_up`` a check on model-shaped inputs (slotted footprints, a
    partly and a fully filled buffer) must add no kernel specialisation."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np
        from online_cnmfe.model._kernels import shapes as ks
        from online_cnmfe.model.preprocessing import sanity
        from online_cnmfe.model.slotted import SlottedColumns
        from online_cnmfe.params import PreprocessParams

        sanity.warm_up()
        kernels = (ks.footprint_shapes_csc, ks.peak_over_median)
        before = [len(k.signatures) for k in kernels]
        rng = np.random.default_rng(0)
        cols = [(np.sort(rng.choice(400, 30, replace=False)), rng.random(30, np.float32))
                for _ in range(12)]
        A = SlottedColumns.from_columns(cols, 400).to_csc()
        buffer = rng.random((12, 50), dtype=np.float32)
        for filled in (np.arange(50) < 20, np.ones(50, bool)):
            sanity.check_components(A, (20, 20), 6.0, PreprocessParams(),
                                    traces=buffer[:, filled], noise=np.ones(12, np.float32))
        after = [len(k.signatures) for k in kernels]
        assert after == before, (before, after)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
