"""The Segment dock's Preview in a real viewer: one layer on the slice, replaced, re-thresholded."""

from __future__ import annotations

import numpy as np
import pytest

import napari_vessel._qt.segment_widget as module
from napari_vessel._qt.segment_preview import PREVIEW_ROLE

from . import test_segment_widget as base
from .test_segment_widget import GATE, SCALE, SHAPE, TRANSLATE, _snapshot, _stretch, _unchanged

# the Segment dock tests' fixtures: a viewer with an 8×48×48 stack, the widget, toy models
setup, toy_models = base.setup, base.toy_models


def _preview(setup, qtbot, z: int):
    setup.viewer.dims.set_point(0, TRANSLATE[0] + z * SCALE[0])
    setup.widget.preview_button.clicked.emit()
    assert setup.widget.job is not None, setup.messages
    qtbot.waitUntil(lambda: setup.widget.job is None, timeout=20000)
    return setup.widget.previews.layer


@pytest.fixture
def calls(monkeypatch):
    """How often the core preview ran."""
    count = []
    real = module.segment_slice

    def counting(*args, **kwargs):
        count.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "segment_slice", counting)
    return count


def test_preview_shows_the_slice_on_the_image_grid_and_is_replaced(setup, qtbot, calls):
    before = _snapshot(setup.viewer)
    layer = _preview(setup, qtbot, 3)
    assert calls == [3] and not setup.messages
    assert [lay.name for lay in setup.viewer.layers] == ["stack", "stack preview"]
    assert layer.data.shape == (1, *SHAPE[1:]) and tuple(layer.scale) == SCALE
    assert tuple(layer.translate) == (TRANSLATE[0] + 3 * SCALE[0], *TRANSLATE[1:])
    expected = _stretch(setup.image.data)  # 8 slices: the slab is the whole stack
    np.testing.assert_array_equal(layer.data, (expected[3:4] > 0.4).astype(np.uint8))
    assert layer.metadata["napari_vessel_output"] == PREVIEW_ROLE
    assert layer not in setup.widget.layer_combo.choices  # no input for a run
    assert "preview of slice 3" in setup.widget.progress_text.value
    assert _unchanged(before, _Only(setup.viewer, "stack"))  # the user's layer untouched

    second = _preview(setup, qtbot, SHAPE[0] - 1)  # the last slice: the slab shifts inwards
    assert second is layer and len(setup.viewer.layers) == 2 and calls == [3, SHAPE[0] - 1]
    assert tuple(layer.translate)[0] == TRANSLATE[0] + (SHAPE[0] - 1) * SCALE[0]
    np.testing.assert_array_equal(layer.data, (expected[-1:] > 0.4).astype(np.uint8))


class _Only:
    """The viewer's layers with these names (to compare the user's layers only)."""

    def __init__(self, viewer, *names):
        self.layers = [layer for layer in viewer.layers if layer.name in names]


def test_threshold_and_min_size_redraw_the_preview_without_running_the_model(setup, qtbot,
                                                                             calls):
    layer = _preview(setup, qtbot, 4)
    prob = setup.widget.previews.current.prob
    setup.widget.threshold.value = 0.7
    qtbot.waitUntil(lambda: layer.metadata["threshold"] == pytest.approx(0.7), timeout=3000)
    np.testing.assert_array_equal(layer.data, (prob[4:5] > 0.7).astype(np.uint8))
    setup.widget.min_size.value = 3
    qtbot.waitUntil(lambda: layer.metadata["min_size"] == 3, timeout=3000)
    assert calls == [4] and len(setup.viewer.layers) == 2


def test_visible_area_only_previews_the_part_on_screen(setup, qtbot):
    setup.image.corner_pixels = np.array([[0, 10, 12], [SHAPE[0] - 1, 29, 39]])
    layer = _preview(setup, qtbot, 2)
    assert layer.data.shape == (1, 20, 28)
    assert tuple(layer.translate) == (2 * SCALE[0], TRANSLATE[1] + 10, TRANSLATE[2] + 12)
    setup.widget.visible_only.value = False
    assert _preview(setup, qtbot, 2).data.shape == (1, *SHAPE[1:])


def test_cancel_adds_nothing(setup, qtbot):
    widget = setup.widget
    widget.models.model_combo.value = "test-gated"
    before = _snapshot(setup.viewer)
    widget.preview_button.clicked.emit()
    assert widget.job is not None and not widget.preview_button.enabled
    assert not widget.segment_button.enabled and widget.cancel_button.enabled
    assert widget.preview() is None  # one job at a time
    widget.cancel_button.clicked.emit()
    GATE.set()
    qtbot.waitUntil(lambda: widget.job is None, timeout=20000)
    assert _unchanged(before, setup.viewer) and widget.previews.current is None
    assert widget.progress_text.value == "cancelled" and widget.preview_button.enabled


def test_a_full_run_replaces_the_preview(setup, qtbot):
    _preview(setup, qtbot, 1)
    setup.widget.segment()
    qtbot.waitUntil(lambda: setup.widget.job is None, timeout=20000)
    names = [layer.name for layer in setup.viewer.layers]
    assert names == ["stack", "stack probability (test-stretch)", "stack vessels (test-stretch)"]
    assert setup.widget.previews.current is None


@pytest.mark.parametrize("case", ["no image", "2D image", "slice outside", "model fails"])
def test_bad_input_gives_a_message_in_the_dock_and_changes_nothing(setup, qtbot, monkeypatch,
                                                                   case):
    viewer, widget = setup.viewer, setup.widget
    expected = {"no image": "no image layer", "2D image": "2D", "slice outside": "outside",
                "model fails": "boom"}[case]
    if case == "no image":
        viewer.layers.clear()
    elif case == "2D image":
        viewer.layers.clear()
        viewer.add_image(np.ones((48, 48), np.float32), name="flat")
    elif case == "slice outside":  # a deeper layer lets the slider go past the stack
        other = viewer.add_image(np.zeros((40, 4, 4), np.float32), name="deep", scale=SCALE)
        widget.layer_combo.value = setup.image
        viewer.dims.set_point(0, 30 * SCALE[0])
        assert other in viewer.layers
    else:
        def failing(*args, **kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(module, "segment_slice", failing)
    before = _snapshot(viewer)
    if widget.preview() is not None:
        qtbot.waitUntil(lambda: widget.job is None, timeout=20000)
    assert len(setup.messages) == 1 and expected in setup.messages[0], setup.messages
    assert expected in widget.progress_text.value
    assert _unchanged(before, viewer) and widget.previews.current is None
    assert widget.preview_button.enabled
