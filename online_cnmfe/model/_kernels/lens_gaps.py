"""Filling the pixels of a motion-corrected frame that saw the lens's dark margin.

The lens stands still on the sensor while the tissue moves under it, so in the corrected
(tissue) frame the margin outside the lens moves by the shifts: a pixel near the lens's edge
saw tissue in some frames and the sensor's dark level in others. Those samples carry no
information on the tissue; they are replaced by the model's prediction of the pixel

  y[p] = b0[p] + (A c)[p]        where gap[p] > level

(the baseline and the neurons of the previous frame: ``ac`` = A c as
``residual.residual_update`` left it), so the pixel adds little to the residual, to the
baseline's update or to the footprints' statistics, and the ring background of its neighbours
sees a plausible value instead of a step of hundreds of counts.

Tried and left out (held-out ``lens_motion`` and two more seeds of it):
- the ring background's fluctuation at the pixel, W D (y − b0) − G c of the previous frame,
  added to the prediction: it feeds back through the ring coefficients over the margin (a
  recursion nothing bounds) and diverged within a few hundred frames;
- the same fluctuation of the frame itself, added after the ring background and with ỹ set to
  the prediction (no recursion): F1 0.931 / 0.956 / 0.928 against 0.950 / 0.946 / 0.942.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def fill_gaps(y, gap, level, b0, ac):
    """Overwrite y[p] where gap[p] > level with b0[p] + ac[p] (module docstring).

    All (n_pixels,) float32; ``y`` is written in place. Returns the number of pixels filled.
    """
    n = 0
    for p in range(y.shape[0]):
        if gap[p] > level:
            y[p] = b0[p] + ac[p]
            n += 1
    return n
