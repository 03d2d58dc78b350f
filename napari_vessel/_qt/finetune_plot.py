"""A small live loss curve for the Fine-tune dock, drawn with QPainter (no plotting library).

The raw loss of every step is drawn in grey, its moving average in orange, and the step whose
state is kept (the best so far) as a dot. The y range follows the data (with a little margin).
An unsupervised run also shows its guard: the change of the predicted vessel fraction from the
parent's at each check (green, own scale, dashed lines at the allowed limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossPlot"]

_RAW = QColor(150, 150, 150)
_SMOOTH = QColor(255, 160, 40)
_BEST = QColor(80, 200, 255)
_AXES = QColor(120, 120, 120)
_TEXT = QColor(210, 210, 210)
_DRIFT = QColor(90, 210, 90)


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


class LossPlot(QWidget):
    """Loss per step (grey), its moving average (orange) and the kept step (blue dot).

    Parameters
    ----------
    parent : QWidget, optional

    Attributes
    ----------
    losses, smoothed : list of float
        The curves shown (one value per step).
    best_step : int
        The step whose state is kept (1-based; 0: none yet).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.best_step = 0
        self.drift: list[tuple[int, float, float]] = []
        self.limit: float | None = None
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("loss per step (grey) and its moving average (orange); the blue dot is "
                        "the state that will be kept")

    def set_curves(self, losses: Sequence[float], smoothed: Sequence[float],
                   best_step: int = 0) -> None:
        """Show new curves (called with the whole history at every update)."""
        self.losses, self.smoothed = list(losses), list(smoothed)
        self.best_step = int(best_step)
        self.update()

    def set_drift(self, drift: Sequence[tuple[int, float, float]], limit: float | None) -> None:
        """Show the guard's checks: (step, vessel-fraction change, skeleton change) and the limit."""
        self.drift, self.limit = [tuple(d) for d in drift], limit
        self.update()

    def clear(self) -> None:
        """Remove the curves."""
        self.drift = []
        self.set_curves([], [], 0)

    def _draw_drift(self, painter: QPainter, area: QRectF, steps: int) -> None:
        if not self.drift or not self.limit:
            return
        span = 1.6 * max(self.limit, max(abs(d[1]) for d in self.drift))

        def y(value: float) -> float:
            return area.center().y() - 0.5 * area.height() * value / span

        pen = QPen(_DRIFT, 1, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        for bound in (-self.limit, self.limit):
            painter.drawLine(QPointF(area.left(), y(bound)), QPointF(area.right(), y(bound)))
        path = QPainterPath()
        for i, (step, fraction, _skeleton) in enumerate(self.drift):
            x = area.left() + area.width() * ((step - 1) / max(steps - 1, 1))
            point = QPointF(min(x, area.right()), y(fraction))
            path.lineTo(point) if i else path.moveTo(point)
        painter.setPen(QPen(_DRIFT, 2))
        painter.drawPath(path)
        painter.drawText(QRectF(area.left() + 4, area.top() + 2, area.width() - 8, 14),
                         Qt.AlignmentFlag.AlignRight,
                         f"vessel fraction {100 * self.drift[-1][1]:+.0f} % "
                         f"(limit ±{100 * self.limit:.0f} %)")

    def _range(self) -> tuple[float, float]:
        values = _finite(self.losses) + _finite(self.smoothed)
        if not values:
            return 0.0, 1.0
        lo, hi = min(values), max(values)
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-3)
        return lo - pad, hi + pad

    def paintEvent(self, _event: object) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(painter.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        left, top, bottom, right = 48, 18, 18, 8
        area = QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))
        painter.setPen(QPen(_AXES, 1))
        painter.drawRect(area)
        painter.setPen(_TEXT)
        steps = len(self.losses)
        if not steps:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "the loss curve appears here")
            painter.end()
            return
        lo, hi = self._range()

        def point(i: int, value: float) -> QPointF:
            x = area.left() + area.width() * (i / max(steps - 1, 1))
            y = area.bottom() - area.height() * ((value - lo) / (hi - lo))
            return QPointF(x, y)

        for values, colour, width in ((self.losses, _RAW, 1.0), (self.smoothed, _SMOOTH, 2.0)):
            path = QPainterPath()
            started = False
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    started = False
                    continue
                if started:
                    path.lineTo(point(i, value))
                else:
                    path.moveTo(point(i, value))
                    started = True
            painter.setPen(QPen(colour, width))
            painter.drawPath(path)
        self._draw_drift(painter, area, steps)
        if 0 < self.best_step <= len(self.smoothed):
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(_BEST)
            painter.drawEllipse(point(self.best_step - 1, self.smoothed[self.best_step - 1]),
                                4, 4)
        painter.setPen(_TEXT)
        label_w = left - 4
        hi_text, lo_text = axis_labels(lo, hi)
        painter.drawText(QRectF(0, area.top() - 6, label_w, 14),
                         Qt.AlignmentFlag.AlignRight, hi_text)
        painter.drawText(QRectF(0, area.bottom() - 8, label_w, 14),
                         Qt.AlignmentFlag.AlignRight, lo_text)
        last = self.smoothed[-1] if self.smoothed else self.losses[-1]
        painter.drawText(QRectF(left, 0, area.width(), top), Qt.AlignmentFlag.AlignLeft,
                         f"loss {last:.4g} (moving average)")
        painter.drawText(QRectF(left, area.bottom() + 2, area.width(), bottom),
                         Qt.AlignmentFlag.AlignRight, f"step {steps}")
        painter.drawText(QRectF(left, area.bottom() + 2, area.width(), bottom),
                         Qt.AlignmentFlag.AlignLeft, "step 1")
        painter.end()


def axis_labels(lo: float, hi: float) -> tuple[str, str]:
    """Texts for the top (``hi``) and bottom (``lo``) of the loss axis, with as many significant
    digits (3 to 7) as it takes to tell them apart (a flat curve read 1.01 / 1.01)."""
    for digits in range(3, 8):
        top, bottom = f"{hi:.{digits}g}", f"{lo:.{digits}g}"
        if top != bottom:
            break
    return top, bottom
