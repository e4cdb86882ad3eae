"""The candidate's duplicate test (slow_path/candidates._duplicate_of) on a synthetic box."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.slow_path import candidates as cand_mod
from online_cnmfe.model.slow_path import detection as det_mod
from online_cnmfe.model.slow_path import suffstats
from online_cnmfe.model.slow_path.update import SlowPathInputs
from tests.online_cnmfe import slow_harness as h

DIMS = (32, 32)
L = 60


def _transients(rng, times, amp, g=0.9):
    s = np.zeros(L)
    s[list(times)] = amp
    c = np.zeros(L)
    for t in range(L):
        c[t] = (g * c[t - 1] if t else 0) + s[t]
    return c


def _case(rng, a_true_nbr, a_model_nbr, a_new, c_nbr, c_new, birth, t=10_000):
    """Residual box around the candidate after the model fitted its neighbour (true cells
    ``a_true_nbr``, ``a_new``; the model has ``a_model_nbr``); returns ``_duplicate_of``'s
    verdict for the candidate footprint found as :func:`evaluate` starts it: the residual's
    mean over the frames where the candidate is active, positive part."""
    p = h.params_for()
    geo = det_mod.geometry(p)
    Y = np.outer(c_nbr, a_true_nbr) + np.outer(c_new, a_new)
    Y += 0.05 * rng.standard_normal(Y.shape)
    am = a_model_nbr / np.linalg.norm(a_model_nbr)
    c_model = np.maximum(Y @ am, 0)  # the model's trace of its neighbour: it takes the leak
    R = (Y - np.outer(c_model, am)).astype(np.float32)
    A = scipy.sparse.csc_array(am[:, None].astype(np.float32))
    fs = suffstats.stats_from_footprints(
        A, c_model[None].astype(np.float32), None, DIMS, 2, 400, np.ones(1, np.float32), 0
    )
    fs.birth[0] = birth
    row, col = 16, 18
    hs = geo.box_half
    r0, r1, c0, c1 = row - hs, row + hs + 1, col - hs, col + hs + 1
    rr, cc = np.mgrid[r0:r1, c0:c1]
    pix = (rr * DIMS[1] + cc).ravel()
    Yb = R[:, pix] - R[:, pix].mean(axis=0)
    view = SlowPathInputs(
        t=t, A=A, W=np.zeros((1, 1), np.float32), b0=np.zeros(DIMS[0] * DIMS[1], np.float32),
        g=np.full(1, 0.9, np.float32), residual=R, residual_frame=np.arange(L),
        c_buffer=c_model[None].astype(np.float32),
    )  # fmt: skip
    active = (c_new if c_new.any() else c_nbr) > 0.5 * max(c_new.max(), c_nbr.max())
    a = np.maximum(Yb[active].mean(axis=0), 0).astype(np.float32)
    return cand_mod._duplicate_of(
        fs, view, a, pix, np.ascontiguousarray(Yb, np.float32), np.arange(L), (r0, r1, c0, c1),
        p, geo,
    )  # fmt: skip


def _cells():
    nbr = h.gaussian_footprint(DIMS, (16, 14), 2.0).astype(np.float64)
    new = h.gaussian_footprint(DIMS, (16, 18), 2.0).astype(np.float64)
    return nbr, new


def test_a_new_cell_partly_absorbed_by_a_settled_neighbour_is_not_its_duplicate():
    # the neighbour's footprint took part of the newcomer's shape (0.4 x it, added) before it
    # was born: its demixed trace follows the newcomer's leak (corr > duplicate_corr), but
    # the newcomer carries the larger part of the shared signal; the neighbour itself fires
    # on its own once. (Before the signal-share rule this newcomer was a "duplicate", as
    # the young-neighbour case below still is.)
    rng = np.random.default_rng(0)
    nbr, new = _cells()
    c_new = _transients(rng, (5, 25, 45), 8.0)
    c_nbr = _transients(rng, (55,), 1.0)
    args = (nbr, nbr + 0.4 * new, new, c_nbr, c_new)
    assert not _case(rng, *args, birth=-(2**40))
    # the same with a neighbour born a moment ago: its footprint is still growing, what
    # follows it is its own unfinished part
    assert _case(rng, *args, birth=10_000 - 50)


@pytest.mark.parametrize("shift", [1, 2])
def test_a_neighbours_footprint_error_is_still_a_duplicate(shift):
    # the model's footprint of an active, settled neighbour (sigma 2 px) is off by `shift`
    # px (up to 1 sigma): the residual's lobe follows the neighbour, whose share of the
    # signal stays well above _NEWCOMER_SHARE x the lobe's (0.8 at 1 sigma, 2.1 at 0.5)
    rng = np.random.default_rng(1)
    nbr = h.gaussian_footprint(DIMS, (16, 14), 2.0).astype(np.float64)
    model = h.gaussian_footprint(DIMS, (16, 14 - shift), 2.0).astype(np.float64)
    c_nbr = _transients(rng, (5, 25, 45), 8.0)
    assert _case(rng, nbr, model, nbr, c_nbr, np.zeros(L), birth=-(2**40))


def _lone_cell(rng, a, noise):
    """(stats, view) of a model without components whose residual is footprint ``a`` firing
    four times, plus white noise of std ``noise``."""
    c = _transients(rng, (5, 20, 35, 50), 4.0)
    R = (np.outer(c, a) + noise * rng.standard_normal((L, a.size))).astype(np.float32)
    A = scipy.sparse.csc_array((DIMS[0] * DIMS[1], 0), dtype=np.float32)
    fs = suffstats.stats_from_footprints(
        A, np.zeros((0, L), np.float32), None, DIMS, 2, 400, np.ones(0, np.float32), 0
    )
    view = SlowPathInputs(
        t=L, A=A, W=np.zeros((1, 1), np.float32), b0=np.zeros(R.shape[1], np.float32),
        g=np.zeros(0, np.float32), residual=R, residual_frame=np.arange(L),
        c_buffer=np.zeros((0, L), np.float32),
    )  # fmt: skip
    return fs, view


def test_the_size_test_scales_with_the_initial_components_typical_size(rng):
    """A lone cell 1.5 x wider (in sigma^2) than detection.max_size_ratio allows fails the
    size test, and passes it when the initial components were that large too
    (``SlowPathState.size_scale``)."""
    p = h.params_for()
    geo = det_mod.geometry(p)
    d = p.data.neuron_diameter_px
    sigma = np.sqrt(1.5 * p.detection.max_size_ratio) * d / 4
    big = h.gaussian_footprint(DIMS, (16, 16), sigma).astype(np.float64)
    fs, view = _lone_cell(rng, big, 0.02)
    size = cand_mod.REASONS.index("size")
    reason, _ = cand_mod.evaluate(fs, view, 16, 16, p, geo)
    assert reason == size
    reason, _ = cand_mod.evaluate(fs, view, 16, 16, p, geo, size_scale=2.0)
    assert reason != size


def test_the_sharpness_test_rejects_a_blurred_candidate_only_when_given_a_limit(rng):
    """A cell-sized Gaussian passes a sharpness limit just under its own sharpness; the same
    cell under a broad blob (out-of-focus neuropil firing with it) is 'blurred' at that limit,
    and passes every test without a limit (the online search's own candidates)."""
    from online_cnmfe.model.footprint_shape import sharpness_of

    p = h.params_for()
    geo = det_mod.geometry(p)
    d = p.data.neuron_diameter_px
    cell = h.gaussian_footprint(DIMS, (16, 16), d / 4, truncate=4).astype(np.float64)
    blob = h.gaussian_footprint(DIMS, (16, 16), d / 2.2, truncate=4).astype(np.float64)
    pad = int(np.ceil(d))
    limit = 0.97 * sharpness_of(np.pad(cell.reshape(DIMS), pad), d)
    assert sharpness_of(np.pad((cell + 2 * blob).reshape(DIMS), pad), d) < limit  # the premise
    blurred = cand_mod.REASONS.index("blurred")
    reasons = {}
    for name, a in (("cell", cell), ("blurred", cell + 2 * blob)):
        fs, view = _lone_cell(rng, a, 0.01)
        reasons[name] = (
            cand_mod.evaluate(fs, view, 16, 16, p, geo, size_scale=4.0, sharpness_limit=limit)[0],
            cand_mod.evaluate(fs, view, 16, 16, p, geo, size_scale=4.0)[0],
        )
    assert reasons["cell"] == (0, 0)
    assert reasons["blurred"] == (blurred, 0)


def test_a_candidates_sharpness_mirrors_its_box_where_the_frame_cuts_it():
    """The candidate's sharpness of a blob cut by the frame's top edge is the neurons' own
    (footprint_shape.sharpness_box, mirrored), below the zero-padded box's."""
    from online_cnmfe.model.footprint_shape import sharpness_box, sharpness_of

    d = 8.0
    blob = h.gaussian_footprint(DIMS, (0, 16), d / 2.2, truncate=4).astype(np.float64)
    hs = 8
    box = blob.reshape(DIMS)[: hs + 1, 16 - hs : 16 + hs + 1]  # evaluate's box at (0, 16)
    got = cand_mod._sharpness(box.ravel(), box.shape, (True, False, False, False), d)
    idx = np.flatnonzero(blob)
    neurons = sharpness_of(sharpness_box(idx, blob[idx], DIMS, d), d)
    zero_padded = cand_mod._sharpness(box.ravel(), box.shape, (False,) * 4, d)
    assert got == pytest.approx(neurons, abs=0.03)  # the box cuts the blob's far tail
    assert got < 0.85 * zero_padded
