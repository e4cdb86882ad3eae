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

LAYER_TITLES = {
    "auto": "Auto",
    "raw": "Raw frame",
    "background_subtracted": "Background-subtracted",
    "denoised": "Denoised A·C",
    "residual": "Residual",
    "corr_pnr": "Correlation × PNR",
    "max_projection": "Max projection",
}
LAYER_CMAPS = {
    "raw": "CET-L1",
    "background_subtracted": "CET-L1",
    "denoised": "inferno",
    "residual": "CET-D1",
    "corr_pnr": "viridis",
    "max_projection": "CET-L1",
}
MAX_ID_LABELS = 400


def _activity_lut() -> np.ndarray:
    """Transparent → bright green (a GCaMP glow) with alpha rising with activity."""
    v = np.linspace(0, 1, 256)
    lut = np.zeros((256, 4), np.ubyte)
    lut[:, 0] = 40 + 120 * v**2
    lut[:, 1] = 200 + 55 * v
    lut[:, 2] = 80 + 40 * v
    lut[:, 3] = np.clip(170 * v, 0, 170)
    return lut


def segments_xy(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, 2) (row, col) segments → x, y arrays for ``connect='pairs'``."""
    return segments[:, :, 1].ravel(), segments[:, :, 0].ravel()


class LabelsItem(pg.GraphicsObject):
    """All neuron ids in one item: text at fixed screen size, centred on view positions.

    One item painting every label is several times cheaper than one ``TextItem`` each.
    """

    def __init__(self) -> None:
        super().__init__()
        self.font = QtGui.QFont("Sans", 7)
        self._xy = np.zeros((0, 2))
        self._texts: list[str] = []
        self._colours: list[QtGui.QColor] = []
        self._rect = QtCore.QRectF()
        # Text is slow to rasterise: repaint the labels only when they or the view change.
        self.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def set_labels(self, xy: np.ndarray, texts: list[str], colours: list[tuple]) -> None:
        """Place ``texts[i]`` at view position ``xy[i] = (x, y)`` in ``colours[i]``."""
        self.prepareGeometryChange()
        self._xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        self._texts = list(texts)
        self._colours = [QtGui.QColor(*c) for c in colours]
        if self._xy.size:
            lo, hi = self._xy.min(axis=0), self._xy.max(axis=0)
            m = 12.0  # view units around the outermost positions: room for the text
            self._rect = QtCore.QRectF(
                lo[0] - m, lo[1] - m, hi[0] - lo[0] + 2 * m, hi[1] - lo[1] + 2 * m
            )
        else:
            self._rect = QtCore.QRectF()
        self.update()

    def label_positions(self) -> np.ndarray:
        """(n, 2) view positions (x, y) of the labels."""
        return self._xy.copy()

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt API)
        return self._rect

    def paint(self, painter: QtGui.QPainter, *_: object) -> None:
        if not self._texts:
            return
        transform = painter.transform()
        painter.resetTransform()
        painter.setFont(self.font)
        box = QtCore.QRectF(-20, -8, 40, 16)
        centre = QtCore.Qt.AlignmentFlag.AlignCenter
        for (x, y), text, colour in zip(self._xy, self._texts, self._colours, strict=True):
            p = transform.map(QtCore.QPointF(x, y))
            painter.setPen(colour)
            painter.drawText(box.translated(p), int(centre), text)
        painter.setTransform(transform)


class ImagePanel(QtWidgets.QWidget):
    """The image with contours; emits ``neuron_clicked(id_or_None, add)``."""

    neuron_clicked = QtCore.Signal(object, bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._model: DashboardModel | None = None
        self._levels: dict[str, tuple[float, float]] = {}
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
        bar.addWidget(self.title, 1)  # takes the free space; its end is cut in a narrow window
        self.title.setAlignment(
            QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter
        )
        self.glw = pg.GraphicsLayoutWidget()
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.base = pg.ImageItem()
        self.overlay = pg.ImageItem()
        self.overlay.setLookupTable(_activity_lut())
        self.overlay.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_Plus)
        self.contours = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(CONTOUR_COLOUR, width=1))
        self.new_contours = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(NEW_COLOUR, width=2))
        self.selected_contours: list[pg.PlotCurveItem] = []
        for item in (self.base, self.overlay, self.contours, self.new_contours):
            self.vb.addItem(item)
        # The outlines change only with the footprints: paint them from a cached pixmap.
        self.contours.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.labels = LabelsItem()
        self.vb.addItem(self.labels)
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

    @property
    def layer(self) -> str:
        """The chosen layer key ('auto' or one of LAYERS)."""
        return self.layer_box.currentData()

    def set_layer(self, key: str) -> None:
        """Choose the layer to show."""
        self.layer_box.setCurrentIndex(self.layer_box.findData(key))

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
            self.base.setImage(img, autoLevels=False, levels=self._smooth_levels(key, img))
            self.base.setRect(QtCore.QRectF(0, 0, full[1], full[0]))
            self.title.setText(f"{LAYER_TITLES[key]} · frame {layer.frame_index}")
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
            self.contours.setData([], [])
            self._pooled(self.selected_contours, 0, None)
            self.labels.set_labels(np.zeros((0, 2)), [], [])
            return
        self._set_dims(fp.dims)
        self.contours.setData(*segments_xy(fp.contours.segments), connect="pairs")
        column = {int(i): k for k, i in enumerate(fp.ids.tolist())}
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
        ids = fp.ids.tolist()
        colours = [selection_colour(selected[n]) if n in selected else (225, 230, 240) for n in ids]
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
