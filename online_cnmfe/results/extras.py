"""What the writer stores besides traces and footprints: model events, flagged frames and
summary images.

:class:`PendingExtras` buffers them on the writer's side and writes them at each flush
(``events``, ``frames/flagged`` and ``images/*``, created up front by
:func:`~.layout.create_datasets` because SWMR mode forbids creating datasets later; a file of
an older version without ``events`` or ``images/`` is left without them).
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from online_cnmfe.results.layout import EVENT_DTYPE, FLAG_DTYPE


class PendingExtras:
    """Events and images waiting for the next flush."""

    def __init__(self, dims: tuple[int, int]) -> None:
        self.dims = dims
        self.events: list[tuple[int, bytes, int, bytes]] = []
        self.flags: list[tuple[int, bytes]] = []
        self.images: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def add_frame(self, result, frame_index: int) -> None:
        """The frame's flag (processed but not used to update the model), and one row per
        neuron of each of its model events (born, merged, removed)."""
        if getattr(result, "flag", ""):
            self.flags.append((int(frame_index), str(result.flag).encode("utf-8", "replace")))
        for ev in result.events:
            kind = ev.kind.encode("ascii", "replace")[:16]
            detail = str(ev.detail).encode("utf-8", "replace")[:120]
            for nid in ev.neuron_ids:
                self.events.append((int(frame_index), kind, int(nid), detail))

    def set_images(self, images: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Keep copies of (H, W) images to write (``attrs`` on each: n_frames, source)."""
        for name, image in images.items():
            image = np.asarray(image, np.float32)
            if image.shape != self.dims:
                raise ValueError(f"image {name!r} has shape {image.shape}; expected {self.dims}")
            self.images[name] = (image.copy(), dict(attrs))

    def write(self, f: h5py.File) -> None:
        """Append the events and overwrite the images (call from the writer's flush)."""
        if self.events and "events" in f:
            ds = f["events"]
            rows = np.array(self.events, EVENT_DTYPE)
            n = ds.shape[0]
            ds.resize((n + rows.shape[0],))
            ds[n:] = rows
        self.events = []
        if self.flags:
            ds = f["frames/flagged"]
            rows = np.array([(i, r[: FLAG_DTYPE["reason"].itemsize]) for i, r in self.flags],
                            FLAG_DTYPE)  # fmt: skip
            n = ds.shape[0]
            ds.resize((n + rows.shape[0],))
            ds[n:] = rows
        self.flags = []
        for name, (image, attrs) in self.images.items():
            ds = f.get(f"images/{name}")
            if ds is not None:
                ds[...] = image
                ds.attrs.update(set=True, **attrs)
        self.images = {}
