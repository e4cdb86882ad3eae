"""Where a motion-corrected frame saw the lens's dark margin instead of tissue ("gaps").

The lens stands still on the sensor while the tissue moves under it. Motion correction samples
frame pixel (r, c) at (r + dy, c + dx); when that sample lies outside the lens (preprocessing's
field of view, ``preprocessing.fov.find_fov``: the margin and the glare band along the edge),
the corrected pixel shows the sensor's dark level, not the tissue. Such a sample is no
measurement of the tissue; left in, the dark step, moving with the shifts, spoils the baseline,
the ring background and the footprints of the cells near the lens's edge (held-out
``lens_motion``: cells found 12-24 px inside the edge got footprints cut by the margin).

The gap image of a frame is the outside-the-lens indicator resampled by the frame's own
correction (:func:`warp_like`): > :data:`GAP_LEVEL` where the bilinear sample is mostly outside.
- initialisation frames (:class:`InitialGaps`): a gap pixel is filled with the mean of that
  pixel's samples inside the lens over the unflagged initialisation frames (``MotionInit.
  gap_fill``, computed once at the fit and replayed as is for the online start; adding the
  frame's local departure from those means, averaged over the pixels around the gap that saw
  the lens in a box of two neuron diameters, lost 0.02-0.04 F1 on three ``lens_motion``
  movies);
- online frames (:func:`frame_gap`): the model fills them with its own prediction
  (``_kernels/lens_gaps.fill_gaps``).
Nothing happens without a lens margin, or while the tissue is taken as still (the frame is not
resampled: the margin stays where it was at initialisation).
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model._kernels import warp as kw
from online_cnmfe.model.motion.state import MotionInit, MotionState

GAP_LEVEL = np.float32(0.5)  # a sample at least half outside the lens is a gap


def warp_like(ms: MotionState, src, dy: float, dx: float, field, out, valid) -> None:
    """Resample ``src`` (n_pixels,) float32 into ``out`` as a frame corrected by (dy, dx) or,
    piecewise (``field`` (2, ny, nx) and ``ms.patches``), by that shift field."""
    H, W = ms.dims
    ps = ms.patches
    if field is None or ps is None:
        kw.warp_rigid(src, H, W, float(dy), float(dx), out, valid)
    else:
        kw.warp_field(src, H, W, ps.row_i, ps.row_w, ps.col_i, ps.col_w, field[0], field[1],
                      out, valid, ps.line_y, ps.line_x)  # fmt: skip


def attach(ms: MotionState, lens_outside: np.ndarray | None) -> None:
    """Give the online state the lens's outside (H, W) bool on the sensor (None: no margin)."""
    if lens_outside is None:
        return
    n = ms.registered.shape[0]
    ms.lens_outside = np.ascontiguousarray(lens_outside, np.float32).reshape(n)
    ms.scratch_gap = np.zeros(n, np.float32)
    ms.scratch_gap_valid = np.zeros(n, np.uint8)


def frame_gap(ms: MotionState) -> np.ndarray | None:
    """The gap image (n_pixels,) of the frame ``correct_frame`` just corrected (in
    ``ms.scratch_gap``), or None when nothing is to be filled (no lens margin, or the tissue
    taken as still: the frame was not resampled)."""
    if ms.lens_outside is None or ms.still_limit_px > 0:
        return None
    field = None
    if ms.patches is not None:
        field = (ms.patches.field_y, ms.patches.field_x)
    warp_like(ms, ms.lens_outside, ms.last[0], ms.last[1], field, ms.scratch_gap,
              ms.scratch_gap_valid)  # fmt: skip
    return ms.scratch_gap


class InitialGaps:
    """The gaps of the registered initialisation frames, recorded frame by frame as they are
    warped (:meth:`record`), then filled (:meth:`fill`).

    At the fit (``init.gap_fill`` None) the fill image is computed from the frames and kept in
    ``init`` (with ``init.lens_seen``, the fraction of unflagged frames each pixel saw the lens);
    a replay of (the tail of) the same frames uses it as it is, so both see the same frames.
    """

    def __init__(self, init: MotionInit, n_frames: int, n_pixels: int) -> None:
        self.init = init
        self.outside = np.ascontiguousarray(init.lens_outside, np.float32).reshape(n_pixels)
        self.packed = np.zeros((n_frames, -(-n_pixels // 8)), np.uint8)
        self.sums = np.zeros(n_pixels, np.float64)
        self.counts = np.zeros(n_pixels, np.int64)
        self.n_good = 0
        self.buf = np.empty(n_pixels, np.float32)
        self.valid = np.empty(n_pixels, np.uint8)

    @staticmethod
    def wanted(init: MotionInit) -> bool:
        """Whether the initialisation frames have gaps to fill (a lens margin, tissue moving)."""
        return init.lens_outside is not None and not init.still_limit_px > 0

    def record(self, t: int, ms: MotionState, dy, dx, field, y: np.ndarray, flagged: bool):
        """Frame t (registered, ``y`` (n_pixels,)) by (dy, dx) or ``field``: its gaps, and its
        samples inside the lens for the fill image unless it is flagged."""
        warp_like(ms, self.outside, dy, dx, field, self.buf, self.valid)
        gap = self.buf > GAP_LEVEL
        self.packed[t] = np.packbits(gap)
        if not flagged:
            seen = ~gap
            self.sums[seen] += y[seen]
            self.counts += seen
            self.n_good += 1

    def fill(self, Y: np.ndarray) -> int:
        """Fill every recorded frame of Y (T, H, W) in place; returns the pixels filled."""
        init = self.init
        if init.gap_fill is None:
            with np.errstate(invalid="ignore", divide="ignore"):
                fill = (self.sums / self.counts).astype(np.float32)  # NaN: never inside
            init.gap_fill = fill.reshape(Y.shape[1:])
            init.lens_seen = (
                (self.counts / max(self.n_good, 1)).astype(np.float32).reshape(Y.shape[1:])
            )
        fill = init.gap_fill.reshape(-1)
        known = np.isfinite(fill)
        total = 0
        for t in range(Y.shape[0]):
            gap = np.unpackbits(self.packed[t], count=fill.size).astype(bool) & known
            Y[t][gap.reshape(Y.shape[1:])] = fill[gap]
            total += int(gap.sum())
        return total
