"""The summary images of a session (``images/`` in the results file).

- ``mean`` and ``max``: mean and maximum projection of every frame the model used (raw pixels;
  frames skipped or flagged, e.g. motion outliers, are left out), accumulated frame by frame by
  :class:`SessionSummary` (one compiled pass per frame).
- ``corr``, ``pnr`` and ``corr_pnr``: the local-correlation and peak-to-noise images of the
  initialisation frames (CNMF-E's seeding images, after its Gaussian filter), and their product.

They are written when the model is initialised and refreshed at the end of the session (and at
each engine checkpoint); every image carries ``n_frames`` (frames summarised) and ``source``.
"""

from __future__ import annotations

import numpy as np

from online_cnmfe.model._kernels.session_summary import accumulate_sum_max

SUMMARY_IMAGES = ("mean", "max", "corr", "pnr", "corr_pnr")


class SessionSummary:
    """Running mean and max projection of the frames of a session.

    Parameters
    ----------
    dims : tuple of int
        (H, W) of the frames.

    Examples
    --------
    >>> s = SessionSummary((2, 3))
    >>> s.add(np.arange(6, dtype=np.uint16).reshape(2, 3))
    >>> s.add(np.full((2, 3), 4, np.uint16))
    >>> s.images()["max"].tolist()
    [[4.0, 4.0, 4.0], [4.0, 4.0, 5.0]]
    >>> float(s.images()["mean"][1, 2]), s.n_frames
    (4.5, 2)
    """

    def __init__(self, dims: tuple[int, int]) -> None:
        self.dims = (int(dims[0]), int(dims[1]))
        self.total = np.zeros(self.dims, np.float64)
        self.peak = np.full(self.dims, -np.inf, np.float32)
        self.n_frames = 0
        self.n_with_nan = 0  # frames with NaN pixels (those pixels are left out of the sums)

    def add(self, pixels: np.ndarray) -> None:
        """Add one (H, W) frame (any real dtype); no allocation."""
        if pixels.shape != self.dims:
            raise ValueError(f"frame has shape {pixels.shape}; the summary is over {self.dims}")
        self.n_with_nan += accumulate_sum_max(pixels, self.total, self.peak) > 0
        self.n_frames += 1

    def add_many(self, frames: np.ndarray) -> None:
        """Add a (T, H, W) stack."""
        for frame in frames:
            self.add(frame)

    def images(self) -> dict[str, np.ndarray]:
        """``mean`` and ``max`` as (H, W) float32 (NaN before the first frame)."""
        if self.n_frames == 0:
            empty = np.full(self.dims, np.nan, np.float32)
            return {"mean": empty, "max": empty.copy()}
        return {
            "mean": (self.total / self.n_frames).astype(np.float32),
            "max": self.peak.copy(),
        }

    def attrs(self) -> dict[str, object]:
        """What the images summarise (stored beside them)."""
        return {"n_frames": self.n_frames, "source": "every frame used by the model"}


def init_images(init) -> dict[str, np.ndarray]:
    """``corr``, ``pnr`` and ``corr_pnr`` of an initialisation fit (an ``InitResult``), when
    it has them; an empty dict otherwise."""
    corr = getattr(init, "corr_image", None)
    pnr = getattr(init, "pnr_image", None)
    if corr is None or pnr is None:
        return {}
    corr = np.asarray(corr, np.float32)
    pnr = np.asarray(pnr, np.float32)
    return {"corr": corr, "pnr": pnr, "corr_pnr": (corr * pnr).astype(np.float32)}
