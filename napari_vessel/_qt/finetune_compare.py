"""Before / after of a fine-tune in the dock: the two segmentations' MIPs side by side, and Revert.

The parent's and the new model's labels are projected along Z
(:func:`napari_vessel.projection.mip`) and shown next to each other, with how many vessel voxels
each found; voxels only the new model finds are green, voxels only the parent found magenta, so
what the adaptation changed stands out. Revert deletes the new model and its layers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QWidget

from napari_vessel.projection import mip

__all__ = ["ComparePanel", "compare_images"]

#: Side of each thumbnail, in screen pixels.
THUMB = 170


def compare_images(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB MIPs (uint8, shape (Y, X, 3)) of two label volumes, their differences coloured.

    White: vessel in both projections; magenta: only in ``before``'s; green: only in ``after``'s.
    """
    a, b = mip(np.asarray(before) > 0) > 0, mip(np.asarray(after) > 0) > 0
    images = []
    for mine, other, colour in ((a, b, (255, 0, 255)), (b, a, (0, 220, 0))):
        rgb = np.zeros(mine.shape + (3,), np.uint8)
        rgb[mine & other] = 255
        rgb[mine & ~other] = colour
        images.append(rgb)
    return images[0], images[1]


def _pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb)
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)


class ComparePanel(QWidget):
    """Two MIP thumbnails (parent | new model), a caption and a Revert button; hidden when empty.

    Parameters
    ----------
    on_revert : callable()
        Called when the user presses Revert.
    """

    def __init__(self, on_revert: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        self.titles = [QLabel(), QLabel()]
        self.images = [QLabel(), QLabel()]
        for column, (title, image) in enumerate(zip(self.titles, self.images, strict=True)):
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            image.setAlignment(Qt.AlignmentFlag.AlignCenter)
            layout.addWidget(title, 0, column)
            layout.addWidget(image, 1, column)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.revert_button = QPushButton("Revert (delete the new model)")
        self.revert_button.setToolTip("go back to the parent: delete the new model and the "
                                      "layers it made")
        self.revert_button.clicked.connect(lambda *_: on_revert())
        layout.addWidget(self.caption, 2, 0, 1, 2)
        layout.addWidget(self.revert_button, 3, 0, 1, 2)
        self.setVisible(False)

    def show_pair(self, before: np.ndarray, after: np.ndarray, parent_name: str,
                  new_name: str) -> None:
        """Show the MIPs of the parent's (``before``) and the new model's (``after``) labels."""
        images = compare_images(before, after)
        counts = (int(np.count_nonzero(before)), int(np.count_nonzero(after)))
        for title, image, name, rgb, count in zip(self.titles, self.images,
                                                  (parent_name, new_name), images, counts,
                                                  strict=True):
            title.setText(f"{name}\n{count:,} vessel voxels")
            image.setPixmap(_pixmap(rgb))
        change = 100.0 * (counts[1] - counts[0]) / max(counts[0], 1)
        self.caption.setText(f"MIP along Z. Vessel volume {change:+.0f} %: magenta only "
                             f"{parent_name} finds, green only {new_name} finds.")
        self.revert_button.setEnabled(True)
        self.setVisible(True)

    def clear(self) -> None:
        """Hide the panel."""
        for label in self.images:
            label.clear()
        self.setVisible(False)
