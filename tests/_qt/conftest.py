"""GUI tests run a real napari viewer under an X server (pytest-xvfb starts Xvfb)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
