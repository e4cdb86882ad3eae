"""Held-out movie generator: render frames and write the project's simulation file.

Frame t (image coordinates, pixels row-major) is::

    x_t  = shift(G_t * B + Bl^T (G_t * f_t) + N n_t + A c_t,  m_t)     scene, on a padded canvas
    y_t  = dark + mask * x_t  (+ shot noise)  + sigma_map * eps_t + line_t + bands_t
    y_t  = corrupt(y_t) for the frames in truth/corrupt_frames; stored as rint(y_t) in uint16

with B the static baseline, Bl the blobs (intensities f_t), G_t the global drift x bleaching,
N the out-of-focus neuropil (activity n_t), A the in-focus footprints (truth/footprints,
peak 1) and c_t = truth/C[:, t] in movie units; ``shift(., m)`` translates the scene by +m
(cubic spline, ``scipy.ndimage.shift``), so shifting frame t by -m_t registers it to the
truth. Shot noise: ``Poisson(q x) / q`` with q photons per movie unit; eps_t white Gaussian;
line_t one N(0, line_noise_sigma) offset per row redrawn every frame; bands_t slow drifting
row sinusoids. PNR unit (truth attr ``noise_sigma``): ``HeldoutParams.pnr_sigma``.

Streams: ``SeedSequence(seed, spawn_key=(i,))`` for each part of the scene and its time
courses (drawn once), ``spawn_key=(9, t)`` for the noise of frame t, so any frame range renders
identically whatever the chunking.

Usage::

    PYTHONPATH=. python -m benchmarks.heldout.generator OUT.h5 [--regime baseline] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.ndimage

from benchmarks.heldout import activity as act
from benchmarks.heldout import scene
from benchmarks.heldout.params import HeldoutParams

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
GENERATOR_VERSION = 1  # bump when the same params start giving a different movie
NOISE_STREAM = 9


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class HeldoutMovie:
    """A movie and its truth, drawn from :class:`HeldoutParams`; frames rendered on demand.

    Examples
    --------
    >>> movie = HeldoutMovie(HeldoutParams(height=48, width=48, n_frames=40, n_neurons=4,
    ...                                    n_neuropil=3, n_blobs=2, frame_rate_hz=10))
    >>> movie.frames(0, 5).shape, movie.frames(0, 5).dtype
    ((5, 48, 48), dtype('uint16'))
    """

    def __init__(self, params: HeldoutParams) -> None:
        p = self.params = params
        s = p.seed
        self.neurons = scene.place_neurons(_rng(s, 1), p)
        self.activity = act.neuron_activity(_rng(s, 2), p, p.n_neurons, p.pnr_sigma)
        self.bg = scene.draw_background(_rng(s, 3), p)
        self.blob_courses, self.global_factor = act.background_courses(_rng(s, 4), p)
        self.neuropil = act.neuropil_activity(_rng(s, 5), p, p.pnr_sigma)
        self.motion = (
            act.motion_trajectory(_rng(s, 6), p)
            if p.has_motion
            else np.zeros((p.n_frames, 2), np.float32)
        )
        self.corruption = act.draw_corruption(_rng(s, 7), p)
        self.bands = act.draw_bands(_rng(s, 8), p) if p.band_amplitude > 0 else None
        self.pad = int(math.ceil(np.abs(self.motion).max())) + 4 if p.has_motion else 0
        self.mask = scene.lens_mask(p)
        self._build_canvas()
        self.background_mean = self._background_mean()
        fov = self.mask > 0.5 if self.mask is not None else np.ones((p.height, p.width), bool)
        median_bg = float(np.median(self.background_mean[fov])) - p.dark_level
        # photons per movie unit so that the shot-noise std at the median background is as asked
        self.photons_per_unit = median_bg / p.shot_noise_sigma**2 if p.shot_noise_sigma > 0 else 0.0
        self.n_clipped = 0

    def _build_canvas(self) -> None:
        p, pad = self.params, self.pad
        self.canvas_shape = (p.height + 2 * pad, p.width + 2 * pad)
        rr, cc = scene.canvas_grid(p, pad)
        self._static = scene.static_background(self.bg, p, rr, cc).ravel().astype(np.float32)
        self._blobs = (
            scene.blob_fields(self.bg, rr, cc).reshape(p.n_blobs, rr.size).astype(np.float32)
        )
        self._A_canvas = scene.patches_to_csc(self.neurons.patches, *self.canvas_shape, pad=pad)
        self._N_canvas = scene.neuropil_csc(self.bg, p, pad)
        self.A = scene.patches_to_csc(self.neurons.patches, p.height, p.width)

    def _crop(self, canvas_flat: np.ndarray) -> np.ndarray:
        p, pad = self.params, self.pad
        x = canvas_flat.reshape(self.canvas_shape)
        return x[pad : pad + p.height, pad : pad + p.width]

    def _background_mean(self) -> np.ndarray:
        """Expected background (everything but neurons and noise), no motion: (H, W)."""
        G = self.global_factor
        x = self._static * G.mean()
        if self.params.n_blobs:
            x = x + (self.blob_courses * G).mean(axis=1) @ self._blobs
        if self.params.n_neuropil:
            x = x + self._N_canvas @ self.neuropil.mean(axis=1)
        x = self._crop(x)
        if self.mask is not None:
            x = x * self.mask
        return (self.params.dark_level + x).astype(np.float32)

    # ---- truth -----------------------------------------------------------------------------
    @property
    def footprints_csc(self):
        """A (n_pixels x K, float32), pixels row-major, each column's peak = 1."""
        return self.A

    @property
    def fov_mask(self) -> np.ndarray:
        """(H, W) bool: pixels inside the lens (all True without a lens margin)."""
        if self.mask is None:
            return np.ones((self.params.height, self.params.width), bool)
        return self.mask > 0.5

    # ---- rendering -------------------------------------------------------------------------
    def scene_frames(self, start: int, stop: int) -> np.ndarray:
        """(n, Hc, Wc) float64 noise-free scene on the padded canvas, before motion."""
        p = self.params
        sl = slice(start, stop)
        G = self.global_factor[sl]
        X = np.outer(G, self._static)
        if p.n_blobs:
            X += (self.blob_courses[:, sl] * G).T @ self._blobs
        if p.n_neuropil:
            X += (self._N_canvas @ self.neuropil[:, sl]).T
        if p.n_neurons:
            X += (self._A_canvas @ self.activity.C[:, sl]).T
        return X.reshape(stop - start, *self.canvas_shape)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop-1`` as (n, H, W) uint16."""
        p = self.params
        if not 0 <= start < stop <= p.n_frames:
            raise ValueError(f"frames {start}:{stop} outside the movie's 0:{p.n_frames}")
        X = self.scene_frames(start, stop)
        out = np.empty((stop - start, p.height, p.width), np.uint16)
        sigma_map = p.noise_sigma
        if self.mask is not None:
            sigma_map = p.dark_noise_sigma + (p.noise_sigma - p.dark_noise_sigma) * self.mask
        for i, t in enumerate(range(start, stop)):
            out[i] = self._sensor(X[i], t, sigma_map)
        return out

    def _sensor(self, canvas: np.ndarray, t: int, sigma_map) -> np.ndarray:
        p, pad = self.params, self.pad
        if pad:
            canvas = scipy.ndimage.shift(canvas, self.motion[t], order=3, mode="nearest")
        x = canvas[pad : pad + p.height, pad : pad + p.width]
        if self.mask is not None:
            x = x * self.mask
        rng = _rng(p.seed, NOISE_STREAM, t)
        q = self.photons_per_unit
        if q > 0:
            x = rng.poisson(np.clip(x, 0.0, None) * q) / q
        y = p.dark_level + x + rng.standard_normal((p.height, p.width)) * sigma_map
        if p.line_noise_sigma > 0:
            y += p.line_noise_sigma * rng.standard_normal((p.height, 1))
        if self.bands is not None:
            y += self.bands.offsets(t, p.height)[:, None]
        i = self.corruption.lookup(t)
        if i is not None:
            act.apply_corruption(y, self.corruption, i)
        y = np.rint(y)
        clipped = (y < 0) | (y > 65535)
        if clipped.any():
            self.n_clipped += int(clipped.sum())
            np.clip(y, 0, 65535, out=y)
        return y


# ---- writing -------------------------------------------------------------------------------
def write_movie(path, params: HeldoutParams, *, chunk_frames: int = 64) -> dict:
    """Generate the movie and write it with its truth (docs/simulation-format.md, plus the
    extra truth listed in :func:`_write_truth`). Written to ``PATH.partial`` then renamed, so
    an interrupted run never leaves a file that looks complete.

    Returns
    -------
    dict
        ``path``, ``seconds``, ``n_clipped`` (pixel values clipped to the uint16 range).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    t0 = time.perf_counter()
    movie = HeldoutMovie(params)
    p = params
    last_log = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        _write_attrs(f, movie)
        ds = f.create_dataset(
            "movie", (p.n_frames, p.height, p.width), np.uint16, chunks=(1, p.height, p.width)
        )
        ds.attrs.update(
            offset=0.0,
            gain=1.0,
            noise_sigma=p.pnr_sigma,
            dark_level=p.dark_level,
            units="movie units (uint16 counts)",
        )
        for start in range(0, p.n_frames, chunk_frames):
            stop = min(p.n_frames, start + chunk_frames)
            ds[start:stop] = movie.frames(start, stop)
            if time.perf_counter() - last_log > 10:
                logger.info("generated %d / %d frames of %s", stop, p.n_frames, path.name)
                last_log = time.perf_counter()
        _write_truth(f.create_group("truth"), movie)
    os.replace(tmp, path)
    if movie.n_clipped:
        logger.warning("%s: %d pixel values clipped to [0, 65535]", path, movie.n_clipped)
    seconds = time.perf_counter() - t0
    logger.info("wrote %s (%d frames) in %.1f s", path, p.n_frames, seconds)
    return {"path": str(path), "seconds": seconds, "n_clipped": movie.n_clipped}


def _write_attrs(f: h5py.File, movie: HeldoutMovie) -> None:
    p = movie.params
    f.attrs.update(
        format="online-cnmfe-simulation",
        format_version=FORMAT_VERSION,
        frame_rate_hz=p.frame_rate_hz,
        dims=[p.height, p.width],
        n_frames=p.n_frames,
        params=p.to_json(),
        generator="benchmarks.heldout.generator",
        generator_version=GENERATOR_VERSION,
        software_version=f"heldout-generator {GENERATOR_VERSION}",
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _write_truth(g: h5py.Group, movie: HeldoutMovie) -> None:
    """Truth datasets: the documented ones plus fov_mask, corrupt_*, neuron_kind, sigma_px,
    bursty, rise_s, decay_s."""
    p, a, n = movie.params, movie.activity, movie.neurons
    A = movie.A
    H, W = p.height, p.width
    g.attrs.update(
        noise_sigma=p.pnr_sigma,
        description=(
            "benchmarks.heldout generator: C in movie units at each footprint's brightest "
            "pixel; pnr = max_t C / noise_sigma; motion (d_row, d_col): frame t shows the "
            "reference scene translated by +motion[t]"
        ),
    )
    dense = g.create_dataset(
        "footprints", (A.shape[1], H, W), np.float32, chunks=(1, H, W), compression="gzip"
    )
    for k0 in range(0, A.shape[1], 64):
        k1 = min(A.shape[1], k0 + 64)
        dense[k0:k1] = A[:, k0:k1].toarray().T.reshape(-1, H, W)
    csc = g.create_group("footprints_csc")
    csc.create_dataset("data", data=A.data.astype(np.float32))
    csc.create_dataset("indices", data=A.indices.astype(np.int32))
    csc.create_dataset("indptr", data=A.indptr.astype(np.int64))
    csc.attrs.update(shape=[H * W, A.shape[1]], dims=[H, W])
    c = movie.corruption
    arrays = {
        "C": a.C.astype(np.float32),
        "S": a.S.astype(np.float32),
        "pnr": a.pnr.astype(np.float32),
        "birth_frame": a.birth_frame.astype(np.int64),
        "g": a.g.astype(np.float32),
        "motion": movie.motion.astype(np.float32),
        "background_mean": movie.background_mean,
        "centres": n.centres.astype(np.float32),
        "firing_rate_hz": a.rate_hz.astype(np.float32),
        "fov_mask": movie.fov_mask,
        "corrupt_frames": c.frames,
        "corrupt_kind": c.kinds,
        "corrupt_rows": np.stack([c.row_start, c.row_stop], axis=1).reshape(-1, 2),
        "neuron_kind": n.kinds,
        "sigma_px": n.sigmas.astype(np.float32),
        "bursty": a.bursty,
        "rise_s": a.rise_s.astype(np.float32),
        "decay_s": a.decay_s.astype(np.float32),
    }
    for name, value in arrays.items():
        g.create_dataset(name, data=value)
    g["corrupt_kind"].attrs["names"] = json.dumps(act.CORRUPT_KINDS)
    g["neuron_kind"].attrs["names"] = json.dumps(scene.KIND_NAMES)


def main(argv=None) -> int:
    from benchmarks.heldout.regimes import REGIMES, regime_params

    ap = argparse.ArgumentParser(description="Write one held-out movie (+ truth) to HDF5.")
    ap.add_argument("out", help="HDF5 file to write")
    ap.add_argument("--regime", default="baseline", choices=sorted(REGIMES))
    ap.add_argument("--quick", action="store_true", help="the small/short version of the regime")
    ap.add_argument("--seed", type=int, help="override the regime's seed")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a HeldoutParams field, e.g. --set n_frames=500",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = regime_params(args.regime, quick=args.quick)
    changes = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.seed is not None:
        changes["seed"] = args.seed
    params = params.replace(**changes) if changes else params
    write_movie(args.out, params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
