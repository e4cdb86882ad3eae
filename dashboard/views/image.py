"""Image panel: a selectable layer, an activity glow per neuron, contours with ids.

Coordinates: pixel (row, col) of a full-resolution image covers x in [col, col+1] and y in
[row, row+1]; the y axis is inverted so row 0 is at the top. Downsampled layers are stretched
over the same (H, W) rectangle so contours stay on their pixels.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from dashboard.model import LAYERS, DashboardModel
from dashboard.views import CONTOUR_COLOUR, NEW_COLOUR, selection_colour
from dashboard.views.overlays import OUTLINE, LabelsItem, ScaleBar, activity_lut, segments_xy

__all__ = ["ImagePanel", "LabelsItem", "segments_xy"]

LAYER_TITLES = {
    "auto": "Auto",
    "raw": "Raw frame",
    "background_subtracted": "Background-subtracted",
    "denoised": "Denoised A·C",
    "residual": "Residual",
    "corr_pnr": "Correlation × PNR",
    "max_projection": "Max projection",
    "mean": "Mean image",
    "corr": "Local correlation",
    "pnr": "Peak-to-noise",
    "background": "Background b0",
}
LAYER_CMAPS = {
    "raw": "CET-L1",
    "background_subtracted": "CET-L1",
    "denoised": "inferno",
    "residual": "CET-D4",  # blue-black-red: a dark middle keeps contours and glow readable
    "corr_pnr": "viridis",
    "max_projection": "CET-L1",
    "mean": "CET-L1",
    "corr": "viridis",
    "pnr": "viridis",
    "background": "CET-L1",
}
MAX_ID_LABELS = 400
REJECTED_COLOUR = (245, 85, 85)
ACCEPTED_COLOUR = (110, 220, 130)
ID_COLOUR = (235, 238, 245)


class ImagePanel(QtWidgets.QWidget):
    """The image with contours; emits ``neuron_clicked(id_or_None, add)``."""

    neuron_clicked = QtCore.Signal(object, bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._model: DashboardModel | None = None
        self._levels: dict[str, tuple[float, float]] = {}
        self._manual_levels: dict[str, tuple[float, float]] = {}  # set on the histogram
        self._syncing_levels = False
        self._shown_layer: str | None = None
        self._dims: tuple[int, int] | None = None
        self._build()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        bar = QtWidgets.QHBoxLayout()
        self.layer_box = QtWidgets.QComboBox()
        for key in ("auto", *LAYERS):
            self.layer_box.addItem(LAYER_TITLES[key], key)
        self.layer_box.setToolTip("Image layer (Auto: summary images while initialising)")
        self.contours_box = QtWidgets.QCheckBox("Contours")
        self.ids_box = QtWidgets.QCheckBox("Ids")
        self.activity_box = QtWidgets.QCheckBox("Activity")
        for box in (self.contours_box, self.ids_box, self.activity_box):
            box.setChecked(True)
            box.toggled.connect(self._options_changed)
        self.levels_box = QtWidgets.QCheckBox("Levels")
        self.levels_box.setToolTip(
            "show the histogram: drag its region to set the display levels of this layer"
        )
        self.levels_box.toggled.connect(self._toggle_histogram)
        self.auto_levels = QtWidgets.QPushButton("Auto")
        self.auto_levels.setToolTip("back to automatic levels (1st-99.8th percentile)")
        self.auto_levels.clicked.connect(self._reset_levels)
        self.auto_levels.hide()
        self.layer_box.currentIndexChanged.connect(self._options_changed)
        self.title = QtWidgets.QLabel("")
        self.title.setStyleSheet("color:#9aa4b2;")
        self.title.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        bar.addWidget(QtWidgets.QLabel("Layer"))
        bar.addWidget(self.layer_box)
        bar.addWidget(self.contours_box)
        bar.addWidget(self.ids_box)
        bar.addWidget(self.activity_box)
        bar.addWidget(self.levels_box)
        bar.addWidget(self.auto_levels)
        bar.addWidget(self.title, 1)  # takes the free space; its end is cut in a narrow window
        self.title.setAlignment(
            QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter
        )
        self.glw = pg.GraphicsLayoutWidget()
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.base = pg.ImageItem()
        self.overlay = pg.ImageItem()
        self.overlay.setLookupTable(activity_lut())
        self.overlay.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_Plus)
        # a dark line under every outline keeps it visible on bright and diverging layers
        self.contour_shadow = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(OUTLINE, width=3))
        self.contours = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(CONTOUR_COLOUR, width=1))
        self.rejected_contours = pg.PlotCurveItem(
            connect="pairs",
            pen=pg.mkPen(REJECTED_COLOUR, width=1.5, style=QtCore.Qt.PenStyle.DashLine),
        )
        self.new_contours = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(NEW_COLOUR, width=2))
        self.selected_contours: list[pg.PlotCurveItem] = []
        for item in (
            self.base, self.overlay, self.contour_shadow, self.contours, self.rejected_contours,
            self.new_contours,
        ):  # fmt: skip
            self.vb.addItem(item)
        # The outlines change only with the footprints: paint them from a cached pixmap.
        for item in (self.contour_shadow, self.contours, self.rejected_contours):
            item.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.labels = LabelsItem()
        self.vb.addItem(self.labels)
        self.scale_bar = ScaleBar(self.vb)
        self.hist = pg.HistogramLUTItem()
        self.hist.gradient.hide()  # the layer's colour map stays; only the levels are set here
        self.hist.sigLevelChangeFinished.connect(self._on_user_levels)
        self.glw.addItem(self.hist, row=0, col=1)
        self.hist.hide()
        self.hover = QtWidgets.QLabel(" ")
        self.hover.setStyleSheet("color:#c8d0dc; font-family:monospace;")
        self.hover.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.glw, 1)
        layout.addWidget(self.hover)
        self.glw.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.glw.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    def _options_changed(self, *_: object) -> None:
        if self._model is not None:
            self._model.mark_dirty("image", "footprints")

    def set_scale(self, pixel_size_um: float | None) -> None:
        """Micrometres per pixel for the scale bar (None: the bar counts pixels)."""
        self.scale_bar.set_pixel_size(pixel_size_um)

    def centre_on(self, neuron_id: int, model: DashboardModel) -> None:
        """Pan the view (zoom kept) to centre the neuron, when it is near the edge or out."""
        fp = model.footprints
        if fp is None:
            return
        k = np.flatnonzero(fp.ids == int(neuron_id))
        rect = self.vb.viewRect()
        w, h = rect.width(), rect.height()
        if k.size and np.isfinite([w, h]).all() and 0 < w < 1e6 and 0 < h < 1e6:
            row, col = (float(x) for x in fp.centroids[k[0]])
            inner = rect.adjusted(0.1 * w, 0.1 * h, -0.1 * w, -0.1 * h)
            if not inner.contains(QtCore.QPointF(col + 0.5, row + 0.5)):
                centred = QtCore.QRectF(col + 0.5 - w / 2, row + 0.5 - h / 2, w, h)
                self.vb.setRange(centred, padding=0)

    def _toggle_histogram(self, on: bool) -> None:
        self.hist.setVisible(on)
        self.auto_levels.setVisible(on)
        self._options_changed()

    def _on_user_levels(self, *_: object) -> None:
        if self._syncing_levels or self._shown_layer is None:
            return
        lo, hi = self.hist.getLevels()
        self._manual_levels[self._shown_layer] = (float(lo), float(hi))
        self._options_changed()

    def _reset_levels(self) -> None:
        self._manual_levels.pop(self._shown_layer, None)
        self._options_changed()

    def _show_histogram(self, img: np.ndarray, levels: tuple[float, float]) -> None:
        finite = img[np.isfinite(img)]
        if finite.size == 0:
            return
        counts, edges = np.histogram(finite, bins=128)
        self._syncing_levels = True
        try:
            self.hist.plot.setData(0.5 * (edges[:-1] + edges[1:]), counts)
            self.hist.setHistogramRange(float(edges[0]), float(edges[-1]))
            self.hist.setLevels(*levels)
        finally:
            self._syncing_levels = False

    @property
    def layer(self) -> str:
        """The chosen layer key ('auto' or one of LAYERS)."""
        return self.layer_box.currentData()

    def set_layer(self, key: str) -> None:
        """Choose the layer to show (ignored when the layer is not offered)."""
        index = self.layer_box.findData(key)
        if index >= 0:
            self.layer_box.setCurrentIndex(index)

    def limit_layers(self, keys: list[str]) -> None:
        """Offer only ``auto`` and these layers (review: the images the file has)."""
        current = self.layer
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        for key in ("auto", *[k for k in LAYERS if k in keys]):
            self.layer_box.addItem(LAYER_TITLES[key], key)
        self.layer_box.blockSignals(False)
        self.set_layer(current if current in keys else "auto")
        self._options_changed()

    # ------------------------------------------------------------------ render
    def refresh(self, model: DashboardModel, dirty: set[str]) -> None:
        """Redraw the parts of the image named in ``dirty``."""
        self._model = model
        if dirty & {"footprints", "selection"}:
            self._draw_contours(model)
        if dirty & {"footprints", "selection", "status", "events"}:
            self._draw_new(model)
        if dirty & {"image", "footprints", "traces"}:
            self._draw_image(model)
            if model.pixel_size_um != self.scale_bar.pixel_size_um and model.pixel_size_um:
                self.set_scale(model.pixel_size_um)

    def _set_dims(self, dims: tuple[int, int]) -> None:
        if dims != self._dims:
            self._dims = dims
            self.vb.setRange(QtCore.QRectF(0, 0, dims[1], dims[0]), padding=0.01)

    def _draw_image(self, model: DashboardModel) -> None:
        key = model.auto_layer() if self.layer == "auto" else self.layer
        layer = model.layer_image(key) if key else None
        dims = model.footprints.dims if model.footprints is not None else None
        if layer is None:
            self.base.clear()
            self.title.setText(f"{LAYER_TITLES[self.layer]}: no image yet")
        else:
            img = layer.image
            full = dims or (img.shape[0] * layer.downsample, img.shape[1] * layer.downsample)
            self._set_dims(full)
            if key != self._shown_layer:
                self.base.setColorMap(pg.colormap.get(LAYER_CMAPS[key]))
                self._shown_layer = key
            levels = self._smooth_levels(key, img)
            levels = self._manual_levels.get(key, levels)
            self.base.setImage(img, autoLevels=False, levels=levels)
            if self.levels_box.isChecked():
                self._show_histogram(img, levels)
            self.base.setRect(QtCore.QRectF(0, 0, full[1], full[0]))
            where = layer.note or f"frame {layer.frame_index}"
            self.title.setText(f"{LAYER_TITLES[key]} · {where}")
        act = model.activity_image() if self.activity_box.isChecked() else None
        if act is None:
            self.overlay.clear()
        else:
            full = model.footprints.dims  # the glow may be block-averaged: stretch it over (H, W)
            self._set_dims(full)
            self.overlay.setImage(act, autoLevels=False, levels=(0.0, 1.0))
            self.overlay.setRect(QtCore.QRectF(0, 0, full[1], full[0]))

    def _smooth_levels(self, key: str, img: np.ndarray) -> tuple[float, float]:
        step = max(1, int(np.sqrt(img.size / 40000)))
        sample = img[::step, ::step]
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            return (0.0, 1.0)
        lo, hi = np.percentile(finite, [1.0, 99.8])
        if key == "residual":
            m = max(abs(lo), abs(hi))
            lo, hi = -m, m
        old = self._levels.get(key)
        if old is not None:  # smooth so the display does not flicker
            lo, hi = 0.8 * old[0] + 0.2 * lo, 0.8 * old[1] + 0.2 * hi
        if hi <= lo:
            hi = lo + 1.0
        self._levels[key] = (float(lo), float(hi))
        return self._levels[key]

    def _pooled(self, pool: list, n: int, make) -> list:
        """First ``n`` items of ``pool`` (created on demand), the rest hidden."""
        while len(pool) < n:
            item = make()
            self.vb.addItem(item)
            pool.append(item)
        for item in pool[n:]:
            item.hide()
        return pool[:n]

    def _draw_contours(self, model: DashboardModel) -> None:
        fp = model.footprints
        if fp is None or not self.contours_box.isChecked():
            for item in (self.contour_shadow, self.contours, self.rejected_contours):
                item.setData([], [])
            self._pooled(self.selected_contours, 0, None)
            self.labels.set_labels(np.zeros((0, 2)), [], [])
            return
        self._set_dims(fp.dims)
        labels = model.labels
        ids = fp.ids.tolist()
        rejected_cols = [k for k, n in enumerate(ids) if labels.get(n) == -1]
        is_rejected = np.isin(fp.contours.neuron, rejected_cols)
        self.contour_shadow.setData(*segments_xy(fp.contours.segments), connect="pairs")
        self.contours.setData(*segments_xy(fp.contours.segments[~is_rejected]), connect="pairs")
        self.rejected_contours.setData(
            *segments_xy(fp.contours.segments[is_rejected]), connect="pairs"
        )
        column = {int(i): k for k, i in enumerate(ids)}
        chosen = [(i, nid) for i, nid in enumerate(model.selected) if nid in column]
        items = self._pooled(
            self.selected_contours, len(chosen), lambda: pg.PlotCurveItem(connect="pairs")
        )
        for item, (i, nid) in zip(items, chosen, strict=True):
            item.setPen(pg.mkPen(selection_colour(i), width=2.5))
            item.setData(*segments_xy(fp.contours.of(column[nid])), connect="pairs")
            item.show()
        show_ids = self.ids_box.isChecked() and fp.ids.size <= MAX_ID_LABELS
        if not show_ids:
            self.labels.set_labels(np.zeros((0, 2)), [], [])
            return
        selected = {nid: i for i, nid in enumerate(model.selected)}
        label_colour = {1: ACCEPTED_COLOUR, -1: REJECTED_COLOUR}
        colours = [
            selection_colour(selected[n])
            if n in selected
            else label_colour.get(labels.get(n), ID_COLOUR)
            for n in ids
        ]
        xy = fp.centroids[:, ::-1].astype(np.float64) + 0.5  # (row, col) -> (x, y) pixel centre
        self.labels.set_labels(xy, [str(n) for n in ids], colours)

    def _draw_new(self, model: DashboardModel) -> None:
        """Highlight the contours of recently born neurons (they expire with time)."""
        fp = model.footprints
        if fp is None or not self.contours_box.isChecked() or not model.births:
            self.new_contours.setData([], [])
            return
        new_cols = [k for k, i in enumerate(fp.ids.tolist()) if i in model.births]
        new_cols = [k for k in new_cols if model.is_new(int(fp.ids[k]))]
        new_mask = np.isin(fp.contours.neuron, new_cols)
        self.new_contours.setData(*segments_xy(fp.contours.segments[new_mask]), connect="pairs")

    # ------------------------------------------------------------------ mouse
    def _pixel_at(self, scene_pos: QtCore.QPointF) -> tuple[float, float] | None:
        if not self.vb.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.vb.mapSceneToView(scene_pos)
        return float(p.y()), float(p.x())  # (row, col)

    def describe(self, row: float, col: float) -> str:
        """Hover text for pixel (row, col): coordinates, layer value, neuron id and activity."""
        model = self._model
        if model is None:
            return " "
        r, c = int(np.floor(row)), int(np.floor(col))
        parts = [f"row {r:4d} col {c:4d}"]
        key = model.auto_layer() if self.layer == "auto" else self.layer
        layer = model.layer_image(key) if key else None
        if layer is not None:
            d = layer.downsample
            rr, cc = r // d, c // d
            if 0 <= rr < layer.image.shape[0] and 0 <= cc < layer.image.shape[1]:
                parts.append(f"{LAYER_TITLES[key]} {layer.image[rr, cc]:.4g}")
        nid = model.neuron_at(row, col)
        if nid is not None:
            row_ = model.traces.row_of(nid)
            c_now = model.traces.latest([row_])[0] if row_ is not None else float("nan")
            act = model.traces.activity(np.array([row_]))[0] if row_ is not None else np.nan
            parts.append(f"neuron {nid}: C {c_now:.3g}, activity {100 * act:.0f}%")
        return " · ".join(parts)

    def _on_mouse_moved(self, scene_pos: QtCore.QPointF) -> None:
        pix = self._pixel_at(scene_pos)
        self.hover.setText(self.describe(*pix) if pix else " ")

    def _on_mouse_clicked(self, event) -> None:
        pix = self._pixel_at(event.scenePos())
        if pix is None or self._model is None:
            return
        nid = self._model.neuron_at(*pix)
        add = bool(event.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier)
        self.neuron_clicked.emit(nid, add)
