"""Read-only views of the dashboard state that the widgets draw (mixed into the model).

Everything here derives display data from :class:`dashboard.model.DashboardModel`'s state on
demand: activity per neuron and as an image, the image of a layer (A·C and a max projection
computed here when the engine does not send them), the neuron under a pixel, which neurons are
new, and the trace windows and raster of the trace panel. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dashboard.records import display_downsample
from dashboard.ringbuffer import row_peaks

LAYERS = (
    "raw",
    "background_subtracted",
    "denoised",
    "residual",
    "corr_pnr",
    "max_projection",
    # summary images of a results file (review): mean, local correlation, PNR, baseline b0
    "mean",
    "corr",
    "pnr",
    "background",
)


@dataclass(slots=True)
class LayerImage:
    """The latest image of one layer."""

    frame_index: int
    image: np.ndarray  # (h, w) float32, row-major
    downsample: int
    note: str = ""  # what a summary image covers (review), shown instead of the frame


class ModelQueries:
    """Mixin of :class:`~dashboard.model.DashboardModel`: queries the views call."""

    # ------------------------------------------------------------------ derived
    def frame_rate_hz(self) -> float:
        """Acquisition frame rate estimated from the last traces' ``t_acq_ms``."""
        tb = self.traces
        n = min(tb.n_valid, 200)
        if n >= 2:
            first, last = tb.t_ms[(tb.head - n) % tb.capacity], tb.t_ms[(tb.head - 1) % tb.capacity]
            span = (last - first) / 1000.0
            if np.isfinite(span) and span > 0:
                return (n - 1) / span
        fps = self.status.get("fps_in")
        return float(fps) if isinstance(fps, int | float) and fps > 0 else 20.0

    def footprint_rows(self) -> np.ndarray:
        """Trace-buffer row of each footprint column (-1 when it has no trace yet)."""
        fp = self.footprints
        if fp is None:
            return np.zeros(0, np.int64)
        key = (fp.version, id(fp), self.traces.n_rows)
        if key != self._fp_rows_key:
            rows = [self.traces.row_of(i) for i in fp.ids.tolist()]
            self._fp_rows = np.array([-1 if r is None else r for r in rows], dtype=np.int64)
            self._fp_rows_key = key
        return self._fp_rows

    def neuron_activity(self) -> np.ndarray:
        """Current activity in [0, 1] of each footprint column (0 without a trace)."""
        rows = self.footprint_rows()
        out = np.zeros(rows.size, np.float32)
        ok = rows >= 0
        out[ok] = np.nan_to_num(self.traces.activity(rows[ok]), nan=0.0)
        return out

    def activity_image(self) -> np.ndarray | None:
        """Footprints weighted by current activity, float32 in [0, 1], block-averaged to at most
        ``DISPLAY_MAX_SIDE`` pixels a side: shape (ceil(H / d), ceil(W / d)), d the block size."""
        fp = self.footprints
        if fp is None:
            return None
        img = fp.A_norm @ self.neuron_activity()
        d = display_downsample(fp.dims)
        shape = (-(-fp.dims[0] // d), -(-fp.dims[1] // d))
        return np.clip(img, 0, 1).astype(np.float32).reshape(shape)

    def layer_image(self, layer: str) -> LayerImage | None:
        """Latest image of ``layer``; ``denoised`` and ``max_projection`` are computed here
        (A·C from the footprints and latest C; running max of ``raw``) when the engine does
        not send them."""
        if layer in self.images:
            return self.images[layer]
        if layer == "max_projection":
            return self._local_max
        if layer == "denoised" and self.footprints is not None:
            fp, rows = self.footprints, self.footprint_rows()
            c = np.zeros(rows.size, np.float32)
            ok = rows >= 0
            c[ok] = np.nan_to_num(self.traces.latest(rows[ok]), nan=0.0)
            img = (fp.A @ c).astype(np.float32).reshape(fp.dims)
            return LayerImage(self.last_frame_index or 0, img, 1)
        return None

    def available_layers(self) -> list[str]:
        """Layers that :meth:`layer_image` can return now."""
        return [name for name in LAYERS if self.layer_image(name) is not None]

    def auto_layer(self) -> str | None:
        """Layer to show in 'auto' mode: summary images while initialising, else the
        background-subtracted (or raw) frame."""
        initialising = self.status.get("phase") in ("initialising", "waiting")
        prefs = ("corr_pnr", "max_projection", "raw") if initialising else ()
        prefs += ("background_subtracted", "raw", "denoised", "corr_pnr", "max_projection")
        return next((p for p in prefs if self.layer_image(p) is not None), None)

    def neuron_at(self, row: float, col: float) -> int | None:
        """Id of the neuron whose mask covers pixel (row, col), or None."""
        fp = self.footprints
        if fp is None:
            return None
        r, c = int(np.floor(row)), int(np.floor(col))
        if not (0 <= r < fp.dims[0] and 0 <= c < fp.dims[1]):
            return None
        k = int(fp.owner[r, c])
        return int(fp.ids[k]) if k >= 0 else None

    def is_new(self, neuron_id: int) -> bool:
        """True when the neuron was born less than ``new_marker_s`` ago."""
        birth = self.births.get(int(neuron_id))
        if birth is None or self.last_frame_index is None:
            return False
        return (self.last_frame_index - birth) / self.frame_rate_hz() < self.config.new_marker_s

    # ------------------------------------------------------------------ trace views
    def window_frames(self, window_s: float) -> int:
        """Number of frames covering the last ``window_s`` seconds."""
        return max(2, min(self.traces.capacity, int(round(window_s * self.frame_rate_hz()))))

    def trace_window(self, window_s: float, ids: list[int]) -> dict[str, np.ndarray]:
        """Traces of ``ids`` over the last ``window_s`` seconds.

        Returns
        -------
        dict
            ``t_s`` (n,) time relative to the newest frame (<= 0), ``ids`` (m,) the ids
            found, ``C``, ``S``, ``C_raw`` (m, n) and ``scale`` (m,) each neuron's max of C
            over the window (for normalisation).
        """
        found = [(i, self.traces.row_of(i)) for i in ids]
        found = [(i, r) for i, r in found if r is not None]
        rows = np.array([r for _, r in found], dtype=np.int64)
        win = self.traces.window(self.window_frames(window_s), rows)
        t = win["t_ms"]
        win["t_s"] = (t - t[-1]) / 1000.0 if t.size else t
        win["ids"] = np.array([i for i, _ in found], dtype=np.int64)
        win["scale"] = row_peaks(np.abs(win["C_raw"]))
        return win

    def raster(self, window_s: float, sort: str = "position") -> dict[str, np.ndarray]:
        """Activity of every current neuron over the last ``window_s`` seconds.

        Parameters
        ----------
        window_s : float
        sort : {'position', 'activity', 'id'}
            Row order: by centroid (top to bottom, left to right), by mean activity over
            the window (most active first) or by id.

        Returns
        -------
        dict
            ``image`` (n_neurons, n_frames) float32 in [0, 1] (row i = ``ids[i]``; NaN where a
            neuron did not exist), ``ids``, ``t_s`` (n_frames,) relative to the newest frame,
            ``new`` (n_neurons,) bool marking recently born neurons and ``birth_t_s`` (their
            birth time relative to the newest frame, NaN if outside the window).
        """
        tb = self.traces
        ids = tb.current_ids
        rows = tb.rows_for(ids) if ids.size else np.zeros(0, np.int64)
        win = tb.window(self.window_frames(window_s), rows, fields=("C",))
        C = win["C"]
        peak = row_peaks(C)
        image = np.clip(C / peak[:, None], 0, 1).astype(np.float32)
        order = np.arange(ids.size)
        if sort == "activity" and ids.size:
            order = np.argsort(-np.nan_to_num(image, nan=0.0).mean(axis=1), kind="stable")
        elif sort == "position" and ids.size and self.footprints is not None:
            fp = self.footprints
            pos = {int(i): k for k, i in enumerate(fp.ids.tolist())}
            key = np.array(
                [fp.centroids[pos[i]] if i in pos else (np.inf, np.inf) for i in ids.tolist()],
                dtype=np.float64,
            ).reshape(-1, 2)
            band = np.floor(key[:, 0] / max(1.0, fp.dims[0] / 16))  # rows of bands, then cols
            order = np.lexsort((key[:, 1], band))
        elif sort == "id":
            order = np.argsort(ids, kind="stable")
        t = win["t_ms"]
        t_s = (t - t[-1]) / 1000.0 if t.size else t
        ids = ids[order]
        frame = win["frame_index"]
        birth = np.array([self.births.get(i, -1) for i in ids.tolist()], dtype=np.int64)
        born = birth >= 0
        inside = born & (frame.size > 0) & (birth >= (frame[0] if frame.size else 0))
        birth_t = np.full(ids.size, np.nan)
        if frame.size and inside.any():
            pos = np.clip(np.searchsorted(frame, birth[inside]), 0, frame.size - 1)
            birth_t[inside] = t_s[pos]
        last = self.last_frame_index if self.last_frame_index is not None else 0
        age_s = (last - birth) / self.frame_rate_hz()
        new = born & (age_s < self.config.new_marker_s)
        return {"image": image[order], "ids": ids, "t_s": t_s, "new": new, "birth_t_s": birth_t}
