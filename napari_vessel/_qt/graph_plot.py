"""A small histogram for the Vessel analysis dock, drawn with QPainter (no plotting library).

One widget shows one distribution (segment diameters or lengths in µm): bars over equal bins
from the smallest to the largest value, the count of the tallest bar, the range on the x axis
and the median as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["Histogram", "histogram_bins"]

_AXES = QColor(120, 120, 120)
_TEXT = QColor(210, 210, 210)
_MEDIAN = QColor(255, 160, 40)


def histogram_bins(values: Sequence[float], bins: int = 20) -> tuple[np.ndarray, float, float]:
    """Counts of the finite ``values`` in ``bins`` equal bins, and the range ``(low, high)``."""
    data = np.asarray([v for v in values if math.isfinite(float(v))], dtype=float)
    if data.size == 0:
        return np.zeros(0, dtype=int), 0.0, 0.0
    low, high = float(data.min()), float(data.max())
    if high <= low:
        high = low + max(abs(low) * 0.05, 0.5)
    counts, _ = np.histogram(data, bins=bins, range=(low, high))
    return counts, low, high


class Histogram(QWidget):
    """Bars of a distribution with its title, the range and the median.

    Parameters
    ----------
    title : str
        Shown above the bars (e.g. ``"diameter (µm)"``).
    bins : int
        Number of bars.
    parent : QWidget, optional

    Attributes
    ----------
    counts : ndarray of int
        The bars shown.
    low, high : float
        The range of the bars.
    median : float
        Median of the values (NaN when empty).
    """

    def __init__(self, title: str, bins: int = 20, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.bins = int(bins)
        self.counts = np.zeros(0, dtype=int)
        self.low = self.high = 0.0
        self.median = math.nan
        self.setMinimumHeight(90)
        self.setMinimumWidth(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, values: Sequence[float]) -> None:
        """Show the distribution of ``values`` (NaN and infinite values are left out)."""
        self.counts, self.low, self.high = histogram_bins(values, self.bins)
        finite = [float(v) for v in values if math.isfinite(float(v))]
        self.median = float(np.median(finite)) if finite else math.nan
        self.update()

    def clear(self) -> None:
        """Remove the bars."""
        self.set_values([])

    def paintEvent(self, _event: object) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        font = QFont(painter.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        left, top, bottom, right = 6, 16, 16, 6
        area = QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))
        painter.setPen(QPen(_AXES, 1))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        painter.setPen(_TEXT)
        painter.drawText(QRectF(0, 0, self.width(), top), Qt.AlignmentFlag.AlignHCenter,
                         self.title)
        total = int(self.counts.sum())
        if not total:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "no segments")
            painter.end()
            return
        peak = int(self.counts.max())
        width = area.width() / len(self.counts)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(80, 200, 255))
        for i, count in enumerate(self.counts):
            height = area.height() * count / peak
            painter.drawRect(QRectF(area.left() + i * width + 0.5, area.bottom() - height,
                                    max(width - 1.0, 1.0), height))
        if math.isfinite(self.median):
            x = area.left() + area.width() * (self.median - self.low) / (self.high - self.low)
            painter.setPen(QPen(_MEDIAN, 1.5, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        painter.setPen(_TEXT)
        painter.drawText(QRectF(area.left(), area.top(), area.width(), 14),
                         Qt.AlignmentFlag.AlignRight, f"{peak} ")
        painter.drawText(QRectF(left, area.bottom() + 1, area.width(), bottom),
                         Qt.AlignmentFlag.AlignLeft, f"{self.low:.3g}")
        painter.drawText(QRectF(left, area.bottom() + 1, area.width(), bottom),
                         Qt.AlignmentFlag.AlignHCenter, f"median {self.median:.3g}")
        painter.drawText(QRectF(left, area.bottom() + 1, area.width(), bottom),
                         Qt.AlignmentFlag.AlignRight, f"{self.high:.3g}")
        painter.end()
