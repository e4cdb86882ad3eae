"""Coverage of visible cells by footprint contours (benchmarks/heldout/visible.py): a cell
under a neighbour's wide contour is covered but has no contour of its own."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from benchmarks.heldout.visible import VisibleCells, coverage

DIMS = (40, 60)


def _cells(points) -> VisibleCells:
    rows = np.array([p[0] for p in points])
    cols = np.array([p[1] for p in points])
    zero = np.zeros(DIMS)
    return VisibleCells(
        rows=rows,
        cols=cols,
        score=np.ones(rows.size),
        max_projection=zero,
        peak_image=zero,
        corr_image=zero,
        score_image=zero,
        threshold=0.0,
        corr_threshold=0.0,
        params={},
    )


def _gaussian(r: float, c: float, sigma: float) -> np.ndarray:
    rr, cc = np.mgrid[0 : DIMS[0], 0 : DIMS[1]]
    img = np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    img[img < 0.01] = 0
    return img.ravel()


def _footprints(*columns) -> scipy.sparse.csc_array:
    return scipy.sparse.csc_array(np.column_stack(columns))


def test_a_wide_contour_covers_the_neighbour_but_owns_only_its_cell():
    cells = _cells([(20, 20), (20, 28), (20, 50)])
    wide = _gaussian(20, 20, 6.0)  # 0.2 x max reaches 10.7 px: holds the cell 8 px away
    cov = coverage(cells, _footprints(wide), DIMS)
    assert cov["cells_per_contour"] == [1, 1, 0]
    assert cov["n_covered"] == 2
    assert cov["n_own_contour"] == 1


def test_each_cell_with_its_own_footprint_owns_its_contour():
    cells = _cells([(20, 20), (20, 28), (20, 50)])
    A = _footprints(_gaussian(20, 20, 6.0), _gaussian(20, 28, 2.0), _gaussian(20, 50, 2.0))
    cov = coverage(cells, A, DIMS)
    assert cov["n_covered"] == 3
    assert cov["n_own_contour"] == 3
    assert cov["n_two_contours"] == 1  # the second cell: under the wide one and its own


def test_a_contour_between_two_cells_owns_the_nearer_one():
    cells = _cells([(20, 20), (20, 30)])
    cov = coverage(cells, _footprints(_gaussian(20, 23, 8.0)), DIMS)
    assert cov["n_covered"] == 2
    assert cov["n_own_contour"] == 1
    assert cov["n_contours_on_nothing"] == 0


def test_contours_on_nothing_own_no_cell():
    cells = _cells([(20, 20)])
    cov = coverage(cells, _footprints(_gaussian(5, 50, 2.0)), DIMS)
    assert cov["n_covered"] == 0
    assert cov["n_own_contour"] == 0
    assert cov["n_contours_on_nothing"] == 1
