"""The lens's field of view in motion-corrected coordinates (``fov.registered_fov``): the lens
stands still on the sensor while the tissue moves, so after registration only the pixels
inside the lens at every shift are tissue."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from online_cnmfe.model import motion
from online_cnmfe.model.motion.state import box_radii, geometry, lens_weight
from online_cnmfe.model.preprocessing.fov import fov_on_grid, registered_fov
from online_cnmfe.model.preprocessing.online import attach, model_fov
from online_cnmfe.params import CNMFEParams


def ref_registered_fov(mask: np.ndarray, band) -> np.ndarray:
    """Slow: pixel (r, c) is inside when mask holds at (r + a, c + b) for every a in
    [-top, bottom], b in [-left, right] that lies in the frame."""
    top, bottom, left, right = band
    H, W = mask.shape
    out = np.ones((H, W), bool)
    for r in range(H):
        for c in range(W):
            for a in range(-top, bottom + 1):
                for b in range(-left, right + 1):
                    if 0 <= r + a < H and 0 <= c + b < W and not mask[r + a, c + b]:
                        out[r, c] = False
    return out


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    band=st.tuples(*[st.integers(0, 4)] * 4),
    seed=st.integers(0, 2**16),
)
def test_registered_fov_is_the_mask_at_every_shift(h, w, band, seed):
    mask = np.random.default_rng(seed).random((h, w)) > 0.3
    before = mask.copy()
    got = registered_fov(mask, band)
    np.testing.assert_array_equal(got, ref_registered_fov(mask, band), err_msg=f"seed {seed}")
    np.testing.assert_array_equal(mask, before)  # input untouched


def test_a_disk_shrinks_on_the_sides_the_samples_reach_past():
    """Shifts dy in [-2, 3], dx in [0, 4] (band (2, 3, 0, 4)) on a disk of radius 15 at
    (20, 20): a pixel stays only if every sample (r + dy, c + dx) is inside."""
    rows, cols = np.mgrid[0:41, 0:41]
    disk = (rows - 20) ** 2 + (cols - 20) ** 2 <= 15**2
    out = registered_fov(disk, (2, 3, 0, 4))
    # row 20 samples rows 18-23 (narrowest: row 23, columns 6-34) and columns c … c + 4
    assert out[20, 6] and not out[20, 5] and out[20, 30] and not out[20, 31]
    # column 20 samples columns 20-24 (narrowest: column 24, rows 6-34) and rows r - 2 … r + 3
    assert out[8, 20] and not out[7, 20] and out[31, 20] and not out[32, 20]
    assert registered_fov(disk, (0, 0, 0, 0)) is disk


def _lens_state(band):
    fov = np.zeros((40, 48), bool)
    fov[6:34, 8:40] = True
    det = SimpleNamespace(ds=2, blocked_until=np.zeros((20, 24), np.int64))
    motion = SimpleNamespace(band=np.array(band, np.int64))
    return SimpleNamespace(pre=None, motion=motion, slow=SimpleNamespace(det=det)), fov


def test_online_detection_is_blocked_where_the_lens_moved_over_the_tissue():
    """Fault injection for the raw-frame mask used in registered coordinates: online
    detection is blocked (and the sanity check's area taken) on the FOV at every shift."""
    st, fov = _lens_state((2, 0, 0, 4))
    pre = SimpleNamespace(fov_found=True, fov=fov, fov_registered=None)
    params = CNMFEParams().replace(**{"preprocess.sanity_check": False})
    attach(st, pre, None, params)
    expect = registered_fov(fov, (2, 0, 0, 4))
    np.testing.assert_array_equal(model_fov(st), expect)
    assert (fov & ~expect).sum() == 2 * 32 + 4 * 26  # rows 6-7 and columns 36-39 lost
    forever = st.slow.det.blocked_until > 10**15
    np.testing.assert_array_equal(forever, ~fov_on_grid(expect, 2))
    st.motion = None  # without motion correction: the sensor's FOV
    np.testing.assert_array_equal(model_fov(st), fov)
    st.pre = SimpleNamespace(fov_found=False, fov=fov, fov_registered=None)
    assert model_fov(st) is None


def test_registration_ignores_the_lens_edge_that_stands_still():
    """A moving movie with a lens margin: unweighted, the static edge of the lens wins and
    every shift is ~0; with the lens weight the tissue's walk is followed."""
    sim = MiniscopeSimulator(
        SimulationParams(height=192, width=192, n_frames=120, n_neurons=80, seed=31,
                         lens_radius_fraction=0.95, motion_px=6.0)
    )  # fmt: skip
    truth = sim.motion(0, 120).astype(np.float64)
    frames = sim.frames(0, 120).astype(np.float32)
    params = CNMFEParams().replace(**{"init.init_frames": 120})
    rms = {}
    for name, fov in (("raw", None), ("lens", sim.truth.fov_mask)):
        minit = motion.register_initial(frames.copy(), params, fov)
        ok = np.array([not f for f in minit.flags])
        err = minit.shifts - truth
        err -= np.median(err[ok], axis=0)
        rms[name] = float(np.sqrt((err[ok] ** 2).sum(1).mean()))
    assert np.ptp(truth, axis=0).min() > 3
    assert rms["raw"] > 1.5 and rms["lens"] < 0.5, rms


def test_lens_weight_is_zero_within_the_band_pass_reach_of_the_edge():
    """The weight is 0 outside the lens and where the band-pass's boxes reach the edge, then
    rises to 1 over the taper's ramp."""
    params = CNMFEParams().replace(**{"data.neuron_diameter_px": 14.0})
    geom = geometry((128, 160), params.motion, 14.0)
    fov = np.zeros((128, 160), bool)
    fov[:, 40:] = True  # a straight lens edge at column 40 (grid column 20)
    w = lens_weight(fov, geom)
    assert w.shape == geom.grid and w.dtype == np.float32
    rest = np.sqrt(geom.sigma_large**2 - geom.sigma_small**2)
    reach = sum(int(box_radii(s).sum()) for s in (geom.sigma_small, rest, geom.sigma_large))
    edge = 40 // geom.ds
    row = w[geom.grid[0] // 2]
    assert (row[: edge + reach] == 0).all()  # outside, and the step's reach inside
    assert row[edge + reach + 1] > 0
    assert (row[edge + reach + geom.margin + 1 :] == 1).all()
    assert (np.diff(row) >= 0).all()
