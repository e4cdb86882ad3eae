"""Items drawn over the image: neuron ids (outlined so they read on any layer), a scale bar,
and the look-up tables of the activity glow."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

OUTLINE = QtGui.QColor(0, 0, 0, 220)  # dark halo behind ids, contours and the scale bar


def activity_lut() -> np.ndarray:
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
    """All neuron ids in one item: text at fixed screen size, centred on view positions, each
    with a dark outline so it reads on bright and dark layers alike.

    One item painting every label is several times cheaper than one ``TextItem`` each.
    """

    def __init__(self) -> None:
        super().__init__()
        self.font = QtGui.QFont("Sans", 7)
        self.font.setBold(True)
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

    def label_colours(self) -> list[tuple[int, int, int]]:
        """(r, g, b) of each label."""
        return [(c.red(), c.green(), c.blue()) for c in self._colours]

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt API)
        return self._rect

    def paint(self, painter: QtGui.QPainter, *_: object) -> None:
        if not self._texts:
            return
        transform = painter.transform()
        painter.resetTransform()
        painter.setFont(self.font)
        box = QtCore.QRectF(-20, -8, 40, 16)
        centre = int(QtCore.Qt.AlignmentFlag.AlignCenter)
        halo = [QtCore.QPointF(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
        for (x, y), text, colour in zip(self._xy, self._texts, self._colours, strict=True):
            p = transform.map(QtCore.QPointF(x, y))
            painter.setPen(OUTLINE)
            for d in halo:
                painter.drawText(box.translated(p + d), centre, text)
            painter.setPen(colour)
            painter.drawText(box.translated(p), centre, text)
        painter.setTransform(transform)


def nice_length(target: float) -> float:
    """The 1-2-5 number closest below ``target`` (> 0).

    Examples
    --------
    >>> [nice_length(x) for x in (0.7, 3.0, 130.0, 480.0)]
    [0.5, 2.0, 100.0, 200.0]
    """
    exponent = math.floor(math.log10(target))
    for step in (5, 2, 1):
        value = step * 10.0**exponent
        if value <= target:
            return value
    return 10.0**exponent


class ScaleBar(pg.GraphicsObject):
    """A bar of a round physical length at the bottom left of a ViewBox, fixed on screen.

    Parameters
    ----------
    vb : pg.ViewBox
        The image's view (x, y in image pixels).
    """

    def __init__(self, vb: pg.ViewBox) -> None:
        super().__init__()
        self.vb = vb
        self.pixel_size_um: float | None = None
        self.font = QtGui.QFont("Sans", 8)
        self.font.setBold(True)
        self.setParentItem(vb)
        self.setZValue(1000)
        vb.sigRangeChanged.connect(lambda *_: self.update())
        vb.sigResized.connect(lambda *_: self.update())
        self.length_px = 0.0  # image pixels of the bar last drawn
        self.text = ""

    def set_pixel_size(self, pixel_size_um: float | None) -> None:
        """Micrometres per image pixel (None: the bar is in pixels)."""
        self.pixel_size_um = pixel_size_um
        self.update()

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt API)
        return self.vb.boundingRect()

    def _layout(self) -> tuple[float, str, float]:
        """(bar length in image pixels, its text, its length on screen)."""
        (x0, x1), _ = self.vb.viewRange()
        width = self.vb.width()
        if width <= 0 or x1 <= x0:
            return 0.0, "", 0.0
        screen_per_px = width / (x1 - x0)
        unit = self.pixel_size_um or 1.0
        physical = nice_length(0.2 * (x1 - x0) * unit)
        length_px = physical / unit
        suffix = "µm" if self.pixel_size_um else "px"
        text = f"{physical:g} {suffix}"
        if self.pixel_size_um and physical >= 1000:
            text = f"{physical / 1000:g} mm"
        return length_px, text, length_px * screen_per_px

    def paint(self, painter: QtGui.QPainter, *_: object) -> None:
        self.length_px, self.text, screen = self._layout()
        if screen <= 0:
            return
        rect = self.vb.boundingRect()
        x, y = rect.left() + 12, rect.bottom() - 14
        bar = QtCore.QRectF(x, y, screen, 4)
        painter.setPen(QtGui.QPen(OUTLINE, 1))
        painter.setBrush(QtGui.QColor(255, 255, 255))
        painter.drawRect(bar)
        painter.setFont(self.font)
        box = QtCore.QRectF(x, y - 18, max(screen, 60), 16)
        align = int(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignBottom)
        for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            painter.setPen(OUTLINE)
            painter.drawText(box.translated(dx, dy), align, self.text)
        painter.setPen(QtGui.QColor(255, 255, 255))
        painter.drawText(box, align, self.text)
