"""Shared by the screenshot scripts: where the images go, and waiting for Qt to settle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QApplication

#: docs/images of the repository.
OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def wait(condition: Callable[[], bool] = lambda: False, seconds: float = 1.0) -> None:
    """Process Qt events until ``condition()`` holds or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not condition():
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(10):
        QApplication.processEvents()
