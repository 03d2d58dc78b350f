"""The Review & refine widget in a real viewer: MIPs, live label MIP, tools, autosave, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import napari_vessel._qt.review_widget as module
from napari_vessel._qt.review_widget import ReviewWidget
from napari_vessel.projection import depth_colours
from napari_vessel.refine.autosave import find_recovery

SHAPE = (10, 64, 64)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE, dtype=np.float32) * 0.2
    image[4, 30:34, 5:60] = 1.0  # a bright vessel along x at z = 4
    image[7, 5:60, 10:13] = 0.9  # another along y at z = 7
    return image


def _labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.int32)
    labels[4, 30:34, 5:25] = 1  # a vessel with a gap at x = 25..39
    labels[4, 30:34, 40:60] = 1
    labels[2, 5:7, 5:7] = 1  # a speck of 4 voxels
    return labels


@pytest.fixture
def setup(make_napari_viewer, tmp_path, monkeypatch):
    """Viewer with an image, its labels and the widget; notifications are collected."""
    monkeypatch.setenv("NAPARI_VESSEL_RECOVERY", str(tmp_path / "recovery"))
    messages: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: messages.append(str(err)))
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="stack", scale=(2.0, 1.0, 1.0), translate=(0, 5, 0))
    labels = viewer.add_labels(_labels(), name="vessels", scale=(2.0, 1.0, 1.0),
                               translate=(0, 5, 0))
    widget = ReviewWidget(viewer)
    widget.autosave.ask_restore = lambda info: "keep"
    yield viewer, widget, image, labels, messages
    widget.autosave.stop_all(flush=False)


def _output(viewer, role):
    return [layer for layer in viewer.layers if layer.metadata.get("napari_vessel_output") == role]


def _snapshot(viewer):
    return [(layer.name, np.array(layer.data, copy=True)) for layer in viewer.layers]


def _unchanged(before, viewer):
    after = _snapshot(viewer)
    return len(before) == len(after) and all(
        a[0] == b[0] and a[1].shape == b[1].shape
        and np.array_equal(a[1], b[1], equal_nan=a[1].dtype.kind == "f")
        for a, b in zip(before, after, strict=True))


def test_full_mip_overlays_with_scale_and_label_mip(setup, make_napari_viewer):
    viewer, widget, image, labels, messages = setup
    prob = viewer.add_image(np.clip(_image(), 0, 1), name="stack probability",
                            scale=(2.0, 1.0, 1.0), translate=(0, 5, 0))
    widget.prob_combo.value = prob
    assert widget.mip.show_mips()
    (mip_layer,) = _output(viewer, "image")
    np.testing.assert_array_equal(mip_layer.data, image.data.max(axis=0))
    assert tuple(mip_layer.scale) == (1.0, 1.0) and tuple(mip_layer.translate) == (5.0, 0.0)
    (prob_layer,) = _output(viewer, "prob")
    np.testing.assert_array_equal(prob_layer.data, prob.data.max(axis=0))
    (label_layer,) = _output(viewer, "label MIP")
    np.testing.assert_array_equal(label_layer.data, labels.data.max(axis=0))
    assert viewer.layers[-1] is label_layer  # the label MIP is drawn on top
    widget.mip.axis.value = "y"  # updated in place
    assert _output(viewer, "image") == [mip_layer]
    np.testing.assert_array_equal(mip_layer.data, image.data.max(axis=1))
    assert tuple(mip_layer.scale) == (2.0, 1.0)
    np.testing.assert_array_equal(_output(viewer, "label MIP")[0].data, labels.data.max(axis=1))
    assert not messages


def test_label_mip_follows_paint_data_setitem_and_undo(setup, qtbot):
    viewer, widget, _image_layer, labels, _messages = setup
    widget.mip.show_mips()
    overlay = widget.mip.overlay

    def in_sync():
        return np.array_equal(overlay.layer.data, labels.data.max(axis=0))

    labels.brush_size = 5
    labels.paint((6, 10, 40), 3)  # outside block_history: napari sends paint before writing
    assert labels.data[6, 10, 40] == 3
    qtbot.waitUntil(in_sync, timeout=2000)
    index = (np.array([1, 8]), np.array([50, 51]), np.array([50, 51]))
    with labels.block_history():  # a tool edit: one undo step
        labels.data_setitem(index, 5)
    qtbot.waitUntil(in_sync, timeout=2000)
    assert overlay.layer.data[50, 50] == 5
    labels.data_setitem((np.array([9]), np.array([0]), np.array([0])), 7)
    qtbot.waitUntil(in_sync, timeout=2000)
    with labels.block_history():  # a brush drag: several moves, one stroke
        for x in (20, 24, 28):
            labels.paint((3, 60, x), 2)
            assert in_sync()  # live, from labels_update, before the stroke ends
    qtbot.waitUntil(in_sync, timeout=2000)
    for _ in range(4):  # undo emits only set_data: a debounced recompute
        labels.undo()
    qtbot.waitUntil(in_sync, timeout=2000)
    np.testing.assert_array_equal(labels.data, _labels())
    labels.redo()
    qtbot.waitUntil(in_sync, timeout=2000)


def test_slab_mip_follows_the_slider(setup, qtbot):
    viewer, widget, image, labels, messages = setup
    widget.mip.mode.value = "slab"
    widget.mip.thickness.value = 3
    viewer.dims.set_current_step(0, 7)
    assert widget.mip.show_mips()
    (mip_layer,) = _output(viewer, "image")
    np.testing.assert_array_equal(mip_layer.data, image.data[6:9].max(axis=0))
    viewer.dims.set_current_step(0, 4)
    np.testing.assert_array_equal(mip_layer.data, image.data[3:6].max(axis=0))
    label_layer = _output(viewer, "label MIP")[0]
    np.testing.assert_array_equal(label_layer.data, labels.data[3:6].max(axis=0))
    viewer.dims.set_current_step(0, 0)  # the slab is cut at the first slice
    np.testing.assert_array_equal(mip_layer.data, image.data[0:2].max(axis=0))
    np.testing.assert_array_equal(label_layer.data, labels.data[0:2].max(axis=0))
    assert not messages


def test_sliding_depth_coded_and_background_projection(setup, qtbot):
    viewer, widget, image, _labels_layer, messages = setup
    widget.mip.mode.value = "sliding"
    widget.mip.show_mips()
    (layer,) = _output(viewer, "image")
    assert layer.data.shape == (3, 64, 64)  # (10 - 5) // 2 + 1 MIPs
    np.testing.assert_array_equal(layer.data[1], image.data[2:7].max(axis=0))
    assert tuple(layer.scale) == (4.0, 1.0, 1.0) and layer.translate[0] == 4.0
    widget.mip.mode.value = "depth-coded"
    (layer,) = _output(viewer, "image")
    assert layer.rgb and layer.data.shape == (64, 64, 3)
    widget.mip.sync_voxels = 0  # project in a background thread
    widget.mip.mode.value = "full"
    qtbot.waitUntil(lambda: _output(viewer, "image") and not _output(viewer, "image")[0].rgb,
                    timeout=5000)
    np.testing.assert_array_equal(_output(viewer, "image")[0].data, image.data.max(axis=0))
    widget.mip.remove_mips()
    assert not _output(viewer, "image") and not _output(viewer, "label MIP")
    assert not messages


def test_overlays_have_distinct_colours_a_depth_legend_and_a_status(setup, qtbot):
    viewer, widget, image, _labels_layer, messages = setup
    prob = viewer.add_image(np.clip(_image(), 0, 1), name="stack probability",
                            scale=(2.0, 1.0, 1.0), translate=(0, 5, 0))
    widget.prob_combo.value = prob
    panel = widget.mip
    assert panel.show_mips()
    (mip_layer,), (prob_layer,) = _output(viewer, "image"), _output(viewer, "prob")
    (label_layer,) = _output(viewer, "label MIP")
    assert mip_layer.colormap.name == "gray" and prob_layer.colormap.name == "magenta"
    assert prob_layer.blending == "additive" and prob_layer.visible
    label_colours = label_layer.colormap.map(np.array([1, 2, 7]))
    np.testing.assert_allclose(label_colours, [[0, 1, 1, 1]] * 3)  # every label: one cyan
    assert label_layer.opacity == 0.5 and label_layer.contour == 0
    prob_top = prob_layer.colormap.map(np.array([1.0]))[0, :3]
    assert np.abs(prob_top - label_colours[0, :3]).max() == 1.0  # magenta vs cyan: no overlap
    assert viewer.layers[-3:] == [mip_layer, prob_layer, label_layer]
    assert panel.status.value == "MIP of 10 slices along z"
    assert panel.legend.native.isHidden()

    panel.sync_voxels = 0  # project in a background thread
    panel.mode.value = "depth-coded"
    qtbot.waitUntil(lambda: panel._job is None and _output(viewer, "image")[0].rgb, timeout=5000)
    (depth_layer,) = _output(viewer, "image")
    assert panel.status.value == ("depth MIP of 10 slices along z, depth coded 0-18 µm "
                                  "(red = slice 0, violet = slice 9)")  # kept after the thread
    assert not panel.legend.native.isHidden()
    assert (panel.legend_first.value, panel.legend_last.value) == ("0 µm (slice 0)",
                                                                   "18 µm (slice 9)")
    bar = panel.legend_bar.native.pixmap().toImage()
    ends = [bar.pixelColor(x, 6) for x in (0, bar.width() - 1)]
    rgb = np.array([(c.red(), c.green(), c.blue()) for c in ends])
    expected = depth_colours(np.array([0.0, 1.0])) * 255  # red and violet, as depth_coded_mip
    assert np.abs(rgb - expected).max() <= 8  # a 16-bit display rounds the colours
    assert depth_layer.visible and not _output(viewer, "prob")  # the depth MIP is not covered
    assert viewer.layers[-1] is label_layer and label_layer.contour > 0  # outlines: hues show
    np.testing.assert_allclose(label_layer.colormap.map(np.array([1]))[0], [1, 1, 1, 1])

    panel.mode.value = "full"
    qtbot.waitUntil(lambda: panel._job is None and not _output(viewer, "image")[0].rgb,
                    timeout=5000)
    assert panel.status.value == "MIP of 10 slices along z"
    (prob_layer,) = _output(viewer, "prob")
    assert prob_layer.visible and prob_layer.colormap.name == "magenta"
    assert viewer.layers[-1] is label_layer and label_layer.visible and label_layer.contour == 0
    assert panel.legend.native.isHidden()
    assert not messages


def test_paint_on_the_mip_places_strokes_at_the_brightest_depth(setup, qtbot):
    viewer, widget, image, labels, messages = setup
    labels.visible = False  # as when looking at the MIP; napari cannot write a hidden slice
    viewer.dims.set_current_step(0, 7)
    widget.mip.paint.value = True
    overlay = widget.mip.overlay
    assert overlay.painting and overlay.layer.editable
    overlay.layer.selected_label = 4
    overlay.layer.brush_size = 1
    with overlay.layer.block_history():  # a stroke on the bright vessel at z = 7
        for y in (20, 21, 22):
            overlay.layer.paint((y, 11), 4)
    qtbot.waitUntil(lambda: (labels.data == 4).sum() == 3, timeout=2000)
    assert np.all(labels.data[7, 20:23, 11] == 4)
    np.testing.assert_array_equal(overlay.layer.data, labels.data.max(axis=0))
    labels.undo()  # one undo step
    np.testing.assert_array_equal(labels.data, _labels())
    overlay.layer.paint((31, 10), 0)  # the eraser clears the column within the slab
    qtbot.waitUntil(lambda: labels.data[4, 31, 10] == 0, timeout=2000)
    qtbot.waitUntil(lambda: np.array_equal(overlay.layer.data, labels.data.max(axis=0)),
                    timeout=2000)
    assert not messages


def _wait_tool(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.tools.busy, timeout=10000)


def test_each_tool_is_one_undo_step(setup, qtbot):
    viewer, widget, _image_layer, labels, messages = setup
    tools = widget.tools
    original = _labels()
    tools.min_size.value = 10
    assert tools.remove_small()
    _wait_tool(qtbot, widget)
    assert labels.data[2, 5, 5] == 0 and labels.data[4, 31, 10] == 1
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    points = tools.pick_points()
    points.add([(4.0, 31.0, 10.0)])  # data coordinates of the labels (the layer shares their grid)
    asked = []
    tools.confirm_large = lambda *args: asked.append(args) or False  # the user says no
    assert tools.keep_at_points()
    _wait_tool(qtbot, widget)
    assert asked and asked[0][1:] == (84, 164) and "not applied" in tools.status.value
    np.testing.assert_array_equal(labels.data, original)  # it would erase half: it asked first
    tools.confirm_large = lambda *args: True
    assert tools.keep_at_points()
    _wait_tool(qtbot, widget)
    assert labels.data[4, 31, 10] == 1 and labels.data[4, 31, 50] == 0 and labels.data[2, 5, 5] == 0
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    assert tools.erase_at_last_point()
    _wait_tool(qtbot, widget)
    assert labels.data[4, 31, 10] == 0 and labels.data[4, 31, 50] == 1
    labels.undo()

    labels.data_setitem((np.array([4]), np.array([31]), np.array([50])), 0)  # a hole
    before = np.array(labels.data)
    widget.tools.per_slice.value = True
    assert tools.fill()
    _wait_tool(qtbot, widget)
    assert labels.data[4, 31, 50] == 1
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    labels.undo()

    tools.click_erase.value = True  # click a vessel on the labels layer
    assert labels.mode == "pan_zoom" and tools._on_click in labels.mouse_drag_callbacks

    class Click:
        type, position = "mouse_press", (8.0, 36.0, 50.0)

    tools._on_click(labels, Click())
    _wait_tool(qtbot, widget)
    assert labels.data[4, 31, 50] == 0 and labels.data[4, 31, 10] == 1
    labels.undo()
    tools.click_erase.value = False
    assert tools._on_click not in labels.mouse_drag_callbacks

    points.add([(4.0, 31.0, 50.0)])  # bridge the gap along the bright vessel
    assert tools.bridge()
    _wait_tool(qtbot, widget)
    assert np.all(labels.data[4, 31:33, 25:40] == 1)
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)
    assert not messages


def test_click_to_add_fills_a_missed_vessel_counts_for_fine_tune_and_undoes(setup, qtbot):
    from napari_vessel._qt.finetune_corrections import CorrectionsPanel

    viewer, widget, _image_layer, labels, messages = setup
    corrections = CorrectionsPanel(viewer, lambda: 4, messages.append)  # the Fine-tune dock's part
    corrections.layers_changed()
    corrections.labels_combo.value = labels
    tools = widget.tools
    original = _labels()
    tools.click_erase.value = True
    tools.click_add.value = True  # one click mode at a time
    assert not tools.click_erase.value
    assert labels.mode == "pan_zoom" and labels.mouse_drag_callbacks.count(tools._on_click) == 1

    class Click:  # world position of voxel (4, 31.5, 32): in the gap of the bright vessel
        type, position = "mouse_press", (8.0, 36.5, 32.0)

    tools._on_click(labels, Click())
    _wait_tool(qtbot, widget)
    assert not messages
    added = labels.data != original
    assert np.all(labels.data[4, 30:34, 25:40] == 1)  # the gap (4 x 15 voxels) is filled
    assert added.sum() == 60 and np.all(labels.data[added] == 1)  # and nothing else
    assert "add vessel: 60 voxels changed" in tools.status.value

    tracker = corrections.tracker()  # the Fine-tune dock counts the prompt as a correction
    assert tracker.count == 60 and not tracker.unknown
    np.testing.assert_array_equal(tracker.mask(), added)
    assert "60 voxels painted or erased here" in corrections.note.value

    labels.undo()  # Ctrl+Z removes the added vessel in one step
    np.testing.assert_array_equal(labels.data, original)

    before = np.array(labels.data)  # a scribble with the eraser on a false vessel (the speck)
    labels.paint((2, 5, 5), 0)
    erased = before != labels.data
    assert erased.any() and tracker.count == 60 + erased.sum()
    assert tracker.mask()[erased].all()

    tools.click_add.value = False
    assert tools._on_click not in labels.mouse_drag_callbacks
    tools.click_add.value = True
    before = _snapshot(viewer)

    class Miss:  # background, away from both vessels
        type, position = "mouse_press", (4.0, 20.0, 50.0)

    tools._on_click(labels, Miss())
    _wait_tool(qtbot, widget)
    assert "no vessel at" in messages[-1]
    assert _unchanged(before, viewer)
    tools.click_add.value = False
    corrections.stop_tracking()


def test_bad_input_gives_a_message_and_leaves_layers_untouched(setup, qtbot, tmp_path):
    viewer, widget, image, labels, messages = setup
    before = _snapshot(viewer)
    widget.mip.mode.value = "slab"
    for thickness in (0, 11):
        widget.mip.thickness.value = thickness
        assert not widget.mip.show_mips()
        assert "slab thickness" in messages[-1]
    widget.mip.mode.value = "full"
    assert _unchanged(before, viewer)

    flat = viewer.add_image(np.ones((64, 64), np.float32), name="flat")
    widget.image_combo.value = flat
    before = _snapshot(viewer)
    assert not widget.mip.show_mips()
    assert "3D stack" in messages[-1]
    widget.image_combo.value = image

    small = viewer.add_labels(np.zeros((10, 32, 32), np.int32), name="small")
    coarse = viewer.add_labels(_labels(), name="coarse", scale=(1.0, 1.0, 1.0))
    before = _snapshot(viewer)
    for bad, words in ((small, "shape"), (coarse, "scale")):
        widget.labels_combo.value = bad
        assert not widget.mip.show_mips()
        assert words in messages[-1] and bad.name in messages[-1]
        widget.mip.paint.value = True
        assert not widget.mip.paint.value
    widget.labels_combo.value = labels
    assert _unchanged(before, viewer)

    tools = widget.tools
    points = tools.pick_points()
    points.add([(4.0, 31.0, 10.0), (4.0, 31.0, 500.0)])
    before = _snapshot(viewer)
    assert tools.bridge()
    _wait_tool(qtbot, widget)
    assert "outside the volume" in messages[-1]
    walled = image.data.copy()
    walled[:, :, 30] = np.nan  # nothing can cross x = 30
    image.data = walled
    points.data = np.array([(4.0, 31.0, 10.0), (4.0, 31.0, 50.0)])
    before = _snapshot(viewer)
    assert tools.bridge()
    _wait_tool(qtbot, widget)
    assert "no path" in messages[-1]
    assert _unchanged(before, viewer)

    blocker = tmp_path / "a file"
    blocker.write_text("")
    widget.autosave.folder.value = str(blocker / "recovery")
    assert not widget.autosave.apply_folder()
    assert "recovery folder" in messages[-1] and widget.autosave.folder.value == ""
    count = len(messages)
    saver = widget.autosave.saver_for(labels)
    saver.set_path(blocker / "x" / "vessels.vessel-recovery.npz")  # fails in the saving thread
    labels.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
    qtbot.waitUntil(lambda: len(messages) > count, timeout=5000)
    assert "cannot write the recovery file" in messages[-1]


def test_autosave_writes_a_recovery_file_and_restore_adds_a_layer(make_napari_viewer, qtbot,
                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VESSEL_RECOVERY", str(tmp_path / "recovery"))
    source = str(tmp_path / "stack.tif")
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="stack", metadata={"source": source})
    labels = viewer.add_labels(_labels(), name="vessels")
    widget = ReviewWidget(viewer)
    widget.autosave.interval.value = 1
    labels.visible = False
    labels.visible = True  # a refresh, not an edit: nothing to back up
    qtbot.wait(50)
    assert not widget.autosave.saver_for(labels).dirty
    labels.paint((5, 40, 40), 9)
    qtbot.waitUntil(lambda: bool(find_recovery(source)), timeout=5000)
    qtbot.waitUntil(lambda: not widget.autosave.saver_for(labels).dirty, timeout=5000)
    edited = np.array(labels.data)
    widget.autosave.stop_all(flush=False)  # as if napari were killed now

    viewer2 = make_napari_viewer()
    widget2 = ReviewWidget(viewer2)
    asked = []
    widget2.autosave.ask_restore = lambda info: asked.append(info) or "restore"
    viewer2.add_image(_image(), name="stack", metadata={"source": source})
    qtbot.waitUntil(lambda: len(viewer2.layers) == 2, timeout=5000)
    restored = viewer2.layers[1]
    assert asked[0].layer_name == "vessels" and restored.name == "vessels recovered"
    np.testing.assert_array_equal(restored.data, edited)
    remaining = find_recovery(source)  # the old file is replaced by the restored layer's one
    assert [info.layer_name for info in remaining] == ["vessels recovered"]
    widget2.autosave.stop_all(flush=False)


def test_a_finished_stroke_is_in_the_recovery_file_within_the_throttle(setup, qtbot):
    """A stroke right after a save is saved about a second later (the throttle), not after a
    10-second interval as before, which could lose the last strokes of a crash."""
    import time

    from napari_vessel._qt.review_autosave import DEFAULT_INTERVAL_S
    from napari_vessel.refine.autosave import load_recovery

    _viewer, widget, _image_layer, labels, messages = setup
    assert widget.autosave.interval.value == DEFAULT_INTERVAL_S <= 1
    saver = widget.autosave.saver_for(labels)
    labels.brush_size = 1
    labels.paint((5, 40, 40), 9)  # a first stroke: saved at once
    qtbot.waitUntil(lambda: saver.saves == 1 and not saver.dirty, timeout=5000)
    labels.paint((6, 20, 20), 8)  # the last stroke before a crash, right after that save
    ended = time.monotonic()
    qtbot.waitUntil(lambda: saver.saves == 2 and not saver.dirty,
                    timeout=int(1000 * (saver.gap_s + 3)))
    assert time.monotonic() - ended < saver.gap_s + 2.5  # the throttle, not a long interval
    data, _info = load_recovery(saver.path)
    assert data[6, 20, 20] == 8 and data[5, 40, 40] == 9
    assert not messages


def test_show_mip_of_a_large_stack_returns_before_the_projection(setup, qtbot, monkeypatch):
    """'Show MIP' on 25 × 512 × 512 blocked the viewer (projected on the GUI thread up to 8
    million voxels); now such a stack is projected in a worker and the layer comes after it."""
    import threading

    import napari_vessel._qt.review_mip as mip_module

    viewer, widget, image, _labels_layer, messages = setup
    panel = widget.mip
    assert panel.sync_voxels == mip_module.SYNC_VOXELS < 25 * 512 * 512
    panel.sync_voxels = image.data.size - 1  # this small stack counts as large
    gate, threads = threading.Event(), []
    original = mip_module.project

    def gated(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        assert gate.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(mip_module, "project", gated)
    panel.show_button.native.click()  # returns while the projection waits in the worker
    assert not _output(viewer, "image") and panel.status.value == mip_module._BACKGROUND
    assert _output(viewer, "label MIP")  # the label MIP (cheap, kept in sync) is shown at once
    gate.set()
    qtbot.waitUntil(lambda: bool(_output(viewer, "image")) and panel._job is None, timeout=5000)
    assert threads == [False]
    np.testing.assert_array_equal(_output(viewer, "image")[0].data, image.data.max(axis=0))
    assert panel.status.value == "MIP of 10 slices along z" and not messages
