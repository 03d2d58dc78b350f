"""The Stack info widget in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel._qt.info_widget import InfoWidget


@pytest.fixture
def viewer_with_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    viewer.add_image(data, name="stack", scale=(5.0, 1.0, 1.0))
    return viewer


def test_shows_shape_dtype_spacing_and_stats(viewer_with_stack):
    widget = InfoWidget(viewer_with_stack)
    assert widget.layer_combo.value.name == "stack"
    assert "4 × 8 × 8" in widget.summary.value
    assert "uint16" in widget.summary.value
    assert "5 × 1 × 1" in widget.summary.value
    assert "max 255" in widget.stats.value
    assert [box.value for box in widget.spacing] == [5.0, 1.0, 1.0]


def test_sets_voxel_size_on_the_layer(viewer_with_stack):
    widget = InfoWidget(viewer_with_stack)
    widget.spacing[0].value = 2.5
    widget.spacing[1].value = 0.5
    widget.apply_button.clicked.emit()
    assert tuple(viewer_with_stack.layers["stack"].scale) == (2.5, 0.5, 1.0)


def test_zero_voxel_size_is_refused_and_layer_untouched(viewer_with_stack, monkeypatch):
    import napari_vessel._qt.info_widget as module

    messages = []
    monkeypatch.setattr(module, "notify_error", lambda err: messages.append(str(err)))
    widget = InfoWidget(viewer_with_stack)
    widget.spacing[2].value = 0.0
    widget.apply_button.clicked.emit()
    assert messages and "positive" in messages[0]
    assert tuple(viewer_with_stack.layers["stack"].scale) == (5.0, 1.0, 1.0)


def test_follows_layers_added_later(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = InfoWidget(viewer)
    assert widget.summary.value == "no image layer"
    viewer.add_image(np.zeros((3, 4, 5), np.float32), name="later")
    assert widget.layer_combo.value.name == "later"
    assert "3 × 4 × 5" in widget.summary.value


def test_fine_voxel_sizes_survive_the_round_trip(make_napari_viewer):
    """0.065 µm used to become 0.07 (2 decimals): an 8 % error on every distance."""
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((4, 8, 8), np.uint8), name="fine", scale=(0.9943, 0.065, 0.065))
    widget = InfoWidget(viewer)
    assert [box.value for box in widget.spacing] == pytest.approx([0.9943, 0.065, 0.065], abs=1e-9)
    widget.apply_button.clicked.emit()
    assert tuple(viewer.layers["fine"].scale) == pytest.approx((0.9943, 0.065, 0.065), abs=1e-9)
