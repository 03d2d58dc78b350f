"""The Fine-tune dock in a real viewer: both modes, live curve and preview, stop, bad input."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import napari_vessel._qt.finetune_run as run_module
import napari_vessel._qt.finetune_widget as module
from napari_vessel._qt._common import output_name
from napari_vessel._qt.finetune_widget import FinetuneWidget, default_name
from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.weights import save_weights

SHAPE = (8, 32, 32)
TV_CFG = {"widths": [2, 4], "strides": [[1, 2, 2]], "convs": [1, 1], "norm": "batch"}
FAST = {"threads": 1, "patch_size_zyx": (8, 32, 32), "batch_size": 1, "lr": 1e-2,
        "probe_patches": 1, "preview_every_s": 0.01, "preview_size": None}


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory, fit_to_bars):
    """A tiny TV-Net that finds bright bars, registered as 'ft-gui-tvnet'."""
    torch.manual_seed(0)
    weights = save_weights(fit_to_bars(build_tvnet(**TV_CFG)),
                           tmp_path_factory.mktemp("w") / "ft-gui-tvnet",
                           {"architecture": "tvnet", "config": TV_CFG, "kind": "supervised",
                            "threshold": 0.5})
    spec = registry.register(registry.ModelSpec(
        name="ft-gui-tvnet", kind="supervised", description="tiny test network",
        builder=build_tvnet, config=TV_CFG, weights=weights, patch_size_zyx=(8, 32, 32),
        input_multiple_zyx=(1, 2, 2), architecture="tvnet", output="logits",
        card={"threshold": 0.5}), replace_existing=True)
    yield spec
    registry.unregister(spec.name)


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder
    torch.set_num_threads(threads)


def bars(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright bars on dim noise (uint8) and the bars as labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.uint8)
    for _ in range(3):
        y = rng.integers(3, SHAPE[1] - 3)
        labels[:, y - 1:y + 2, :] = 1
    image = np.clip(labels * 180 + 30 + rng.normal(0, 12, SHAPE), 0, 255).astype(np.uint8)
    return image, labels


@pytest.fixture
def setup(make_napari_viewer, monkeypatch, tiny_net):
    """Viewer with an 8×32×32 image and labels, the dock on the tiny net, messages collected."""
    errors: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: errors.append(str(err)))
    monkeypatch.setattr(module, "show_info", lambda text: infos.append(str(text)))
    viewer = make_napari_viewer()
    image, labels = bars()
    viewer.add_image(image, name="stack", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(labels, name="stack vessels", scale=(2.0, 1.0, 1.0))
    widget = FinetuneWidget(viewer)
    widget.model_combo.value = tiny_net.name
    widget.layer_combo.value = viewer.layers["stack"]
    widget.settings = dict(FAST)
    widget.minutes.value, widget.steps.value = 0.0, 3
    assert widget.method_combo.value == "adabn"  # the measured default
    widget.method_combo.value = "selftrain"  # these tests follow a training curve
    return SimpleNamespace(viewer=viewer, widget=widget, errors=errors, infos=infos,
                           labels=viewer.layers["stack vessels"])


def _finish(setup, qtbot, timeout=30000):
    qtbot.waitUntil(lambda: setup.widget.job is None, timeout=timeout)


def _user_models() -> set[str]:
    return {s.name for s in registry.list_models() if s.source == "user"}


def _snapshot(viewer):
    return [(layer.name, np.array(layer.data, copy=True)) for layer in viewer.layers]


def _unchanged(before, viewer) -> bool:
    after = _snapshot(viewer)
    return len(before) == len(after) and all(
        a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(before, after, strict=True))


def test_default_name_is_a_valid_model_name():
    from napari_vessel.training.finetune_save import check_name_syntax

    assert default_name("tvnet", "my stack (2).tif") == "tvnet-ft-my-stack-2"
    assert default_name("tvnet", "mouse1.ome.tif preprocessed [2]") == "tvnet-ft-mouse1"
    assert default_name("tvnet", "mouse1 preprocessed preprocessed") == "tvnet-ft-mouse1"
    assert default_name(None, None) == "model-ft-image"
    for image in ("x" * 200, "__", "a.json", "é è"):
        assert check_name_syntax(default_name("tvnet", image))


def test_lists_only_trainable_networks(setup, tiny_net):
    choices = setup.widget.model_combo.choices
    assert tiny_net.name in choices and "frangi" not in choices
    assert setup.widget.name_edit.value == "ft-gui-tvnet-ft-stack"
    assert not setup.widget._corrections_box.isVisible()


def test_unsupervised_run_saves_a_model_with_curve_preview_and_segmentation(setup, qtbot):
    from napari_vessel._qt.segment_widget import SegmentWidget

    widget = setup.widget
    segment_dock, other = SegmentWidget(setup.viewer), FinetuneWidget(setup.viewer)
    assert "ft-gui-tvnet-ft-stack" not in segment_dock.models.model_combo.choices
    before = _snapshot(setup.viewer)
    setup.viewer.dims.set_current_step(0, 5)  # the preview follows the viewer's slice
    assert widget.start() is not None
    assert not widget.start_button.enabled and widget.stop_button.enabled
    _finish(setup, qtbot)
    assert not setup.errors, setup.errors
    assert "ft-gui-tvnet-ft-stack" in _user_models()
    assert len(widget.plot.losses) == 3 and len(widget.plot.smoothed) == 3
    assert widget.preview.updates >= 2
    preview = widget.preview.layer
    assert preview in setup.viewer.layers and preview.data.shape == SHAPE[1:]
    assert tuple(preview.scale) == (1.0, 1.0) and preview.metadata["preview_z"] == 5
    names = [layer.name for layer in setup.viewer.layers]
    assert output_name("stack", "vessels (ft-gui-tvnet-ft-stack)") in names  # shortened
    for (name, data), layer in zip(before, setup.viewer.layers, strict=False):
        assert layer.name == name and np.array_equal(layer.data, data)  # inputs untouched
    assert "saved model 'ft-gui-tvnet-ft-stack'" in setup.infos[-1]
    assert widget.name_edit.value == "ft-gui-tvnet-ft-stack-2"  # the next free name
    assert widget.start_button.enabled and not widget.stop_button.enabled
    # the open docks list the new model without a Refresh click
    assert "ft-gui-tvnet-ft-stack" in segment_dock.models.model_combo.choices
    assert "ft-gui-tvnet-ft-stack" in other.model_combo.choices
    # before / after side by side, then one click back to the parent
    compare = widget.compare
    assert compare.isVisibleTo(widget.native) and compare.images[0].pixmap() is not None
    assert "ft-gui-tvnet\n" in compare.titles[0].text()
    assert "ft-gui-tvnet-ft-stack" in compare.titles[1].text()
    # the dock widens for the pair (no sideways scrolling); the long message wraps instead
    assert widget.native.minimumWidth() >= widget.content.minimumSizeHint().width()
    assert widget.content.minimumSizeHint().width() < 600
    widget.revert()
    assert "ft-gui-tvnet-ft-stack" not in _user_models()
    assert "ft-gui-tvnet-ft-stack" not in segment_dock.models.model_combo.choices
    assert [layer.name for layer in setup.viewer.layers] == [name for name, _ in before]
    assert not compare.isVisibleTo(widget.native) and "reverted" in widget.status.value
    assert not list(setup.widget.viewer.layers["stack"].data.shape) == []  # the image stays


def test_default_adabn_run_saves_in_seconds_without_a_curve(setup, qtbot):
    widget = setup.widget
    widget.method_combo.value = "adabn"
    widget.segment_check.value = False
    widget.start()
    _finish(setup, qtbot)
    result = widget.outcome.result
    assert result.config.method == "adabn" and result.steps == 1 and not setup.errors
    if result.kept_parent:  # the guard declined: nothing saved, the reason said
        assert result.declined and "nothing was saved" in widget.status.value
    else:
        assert widget.outcome.weights is not None and "batch-norm" in setup.infos[-1]


def test_compare_images_colour_what_changed():
    from napari_vessel._qt.finetune_compare import compare_images

    before = np.zeros((2, 3, 3), np.uint8)
    after = np.zeros_like(before)
    before[0, 0, 0] = after[1, 0, 0] = 1  # both (different slices, same MIP pixel)
    before[1, 1, 1] = 1  # only before
    after[0, 2, 2] = 1  # only after
    left, right = compare_images(before, after)
    assert tuple(left[0, 0]) == (255, 255, 255) and tuple(right[0, 0]) == (255, 255, 255)
    assert tuple(left[1, 1]) == (255, 0, 255) and tuple(right[1, 1]) == (0, 0, 0)
    assert tuple(right[2, 2]) == (0, 220, 0) and tuple(left[2, 2]) == (0, 0, 0)


def test_revert_refuses_a_model_that_is_not_fine_tuned(tmp_path):
    from napari_vessel.training.finetune_save import remove_finetuned

    weights = tmp_path / "plain.safetensors"
    weights.write_bytes(b"x")
    (tmp_path / "plain.json").write_text('{"architecture": "tvnet"}')
    with pytest.raises(InputError, match="not a fine-tuned model"):
        remove_finetuned(weights)
    assert weights.exists()


def test_supervised_run_learns_from_painted_voxels(setup, qtbot):
    widget = setup.widget
    widget.mode_combo.value = "from my corrections (labels)"
    widget.corrections.labels_combo.value = setup.labels
    widget.segment_check.value = False
    widget.settings = {**FAST, "keep_parent": False}  # three painted voxels: keep what it learnt
    assert widget._corrections_box.isVisibleTo(widget.native)
    setup.labels.data_setitem((np.array([2, 2, 2]), np.array([5, 6, 7]), np.array([9, 9, 9])), 1)
    setup.viewer.dims.set_current_step(0, 3)
    assert widget.mark_checked() == 3
    note = widget.corrections.note.value
    assert "3 voxels painted" in note and "slices: 3" in note
    widget.start()
    _finish(setup, qtbot)
    assert not setup.errors, setup.errors
    assert widget.outcome.weights is not None, setup.infos
    job = widget.run_job
    assert job.config.mode == "supervised" and int(job.edited_mask.sum()) == 3
    assert list(job.checked_slices) == [3]
    spec = registry.get("ft-gui-tvnet-ft-stack")
    assert spec.card.parent == "ft-gui-tvnet" and spec.card.training["mode"] == "supervised"


def test_stop_keeps_the_best_state_and_saves(setup, qtbot):
    widget = setup.widget
    widget.steps.value = 100000
    widget.segment_check.value = False
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.losses) >= 2, timeout=30000)
    widget.stop()
    _finish(setup, qtbot)
    outcome = widget.outcome
    assert outcome.result.stopped_early and 2 <= outcome.result.steps < 100000
    assert outcome.weights is not None and "ft-gui-tvnet-ft-stack" in _user_models()
    assert "stopped by the user" in setup.infos[-1]


def test_stop_still_segments_with_the_kept_model_when_asked(setup, qtbot):
    widget = setup.widget
    widget.steps.value = 100000
    assert widget.segment_check.value
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.losses) >= 2, timeout=30000)
    widget.stop()
    assert "then segmenting" in widget.status.value
    _finish(setup, qtbot)
    outcome = widget.outcome
    assert not setup.errors, setup.errors
    assert outcome.result.stopped_early and outcome.weights is not None
    assert outcome.segmentation is not None and not outcome.segment_stopped
    assert output_name("stack", "vessels (ft-gui-tvnet-ft-stack)") in [
        layer.name for layer in setup.viewer.layers]


def test_stop_while_segmenting_stops_only_the_segmentation(setup, qtbot, monkeypatch):
    import napari_vessel.inference.run as inference
    from napari_vessel.errors import Cancelled

    widget = setup.widget

    def slow_segment(*args, cancel, **kwargs):
        while not cancel.cancelled:
            cancel_seen.append(widget.run_job.phase)
            time.sleep(0.01)
        raise Cancelled("stopped")

    cancel_seen: list[str] = []
    monkeypatch.setattr(inference, "segment", slow_segment)
    widget.start()
    qtbot.waitUntil(lambda: bool(cancel_seen), timeout=30000)
    widget.stop()
    _finish(setup, qtbot)
    outcome = widget.outcome
    assert cancel_seen[0] == "segmenting" and not widget.job
    assert outcome.weights is not None and outcome.segment_stopped
    assert "segmentation stopped" in setup.infos[-1]


def test_closed_docks_stop_watching_the_models(setup, qtbot):
    from napari_vessel._qt import segment_models
    from napari_vessel._qt.segment_widget import SegmentWidget

    dock = SegmentWidget(setup.viewer)
    count = len(segment_models._watchers)
    dock.native.deleteLater()
    qtbot.waitUntil(lambda: len(segment_models._watchers) == count - 1, timeout=5000)
    segment_models.models_changed()  # the others still refresh, nothing raises


def test_the_loss_plot_tells_a_tiny_range_apart(setup, monkeypatch):
    import napari_vessel._qt.finetune_plot as plot_module

    drawn: list[tuple[str, str]] = []
    labels = plot_module.axis_labels
    monkeypatch.setattr(plot_module, "axis_labels",
                        lambda lo, hi: drawn.append(labels(lo, hi)) or drawn[-1])
    plot = setup.widget.plot
    plot.set_curves([1.0100, 1.0102, 1.0101], [1.0100, 1.0101, 1.0101], 2)
    plot.resize(300, 150)
    plot.grab()  # paints
    assert drawn and drawn[-1][0] != drawn[-1][1], drawn


def test_stop_at_once_saves_nothing_and_leaves_the_layers(setup, qtbot):
    before = _snapshot(setup.viewer)
    setup.widget.steps.value = 100000
    setup.widget.start()
    setup.widget.stop()
    _finish(setup, qtbot)
    assert not _user_models() and not setup.errors
    assert "nothing was saved" in setup.infos[-1]
    assert _unchanged(before, setup.viewer)


@pytest.mark.parametrize("case", ["wrong shape", "no edits", "constant", "classical", "bad name"])
def test_bad_input_is_refused_with_a_message(setup, qtbot, monkeypatch, case):
    widget, viewer = setup.widget, setup.viewer
    if case in ("wrong shape", "no edits"):
        widget.mode_combo.value = "from my corrections (labels)"
        if case == "wrong shape":
            viewer.add_labels(np.zeros((8, 16, 16), np.uint8), name="small")
        widget.corrections.labels_combo.value = viewer.layers["small" if case == "wrong shape" else
                                                  "stack vessels"]
    elif case == "constant":
        viewer.add_image(np.full(SHAPE, 7, np.uint8), name="flat")
        widget.layer_combo.value = viewer.layers["flat"]
    elif case == "classical":
        monkeypatch.setattr(module, "trainable_models", lambda: ["frangi", "ft-gui-tvnet"])
        widget.refresh_models()
        widget.model_combo.value = "frangi"
    else:
        widget.name_edit.value = "ft-gui-tvnet"  # the parent's own name
    before = _snapshot(viewer)
    widget.start()
    _finish(setup, qtbot)
    expected = {"wrong shape": "shape", "no edits": "no edits", "constant": "constant",
                "classical": "classical", "bad name": "already exists"}[case]
    assert len(setup.errors) == 1 and expected in setup.errors[0], setup.errors
    assert not _user_models() and _unchanged(before, viewer)


def test_save_failure_says_so_and_removes_the_preview(setup, qtbot, monkeypatch):
    def full_disk(*args, **kwargs):
        raise InputError("could not save the model: No space left on device; free some disk "
                         "space or choose a folder you can write to")

    monkeypatch.setattr(run_module, "save_finetuned", full_disk)
    before = _snapshot(setup.viewer)
    setup.widget.start()
    _finish(setup, qtbot)
    assert len(setup.errors) == 1 and "No space left" in setup.errors[0]
    assert _unchanged(before, setup.viewer) and not _user_models()


def test_second_start_is_refused(setup, qtbot):
    widget = setup.widget
    widget.steps.value = 100000
    widget.segment_check.value = False
    assert widget.start() is not None
    assert not widget.start_button.enabled
    assert widget.start() is None
    assert "already running" in setup.errors[-1]
    widget.stop()
    _finish(setup, qtbot)


def test_edit_tracker_marks_exactly_the_brushed_voxels():
    from napari.layers import Labels

    from napari_vessel._qt.finetune_layers import EditTracker

    layer = Labels(np.zeros(SHAPE, np.uint8))
    calls = []
    tracker = EditTracker(layer, on_change=lambda: calls.append(tracker.count))
    layer.brush_size = 3
    layer.paint((4, 10, 10), 1)
    changed = np.argwhere(layer.data > 0)
    assert tracker.count == len(changed) > 0
    assert tracker.mask()[tuple(changed.T)].all()
    assert calls == [len(changed)]

    # the Review dock's tools and prompts write an Edit with data_setitem as one undo step
    from napari_vessel._qt.review_sync import apply_edit_to_layer
    from napari_vessel.refine.edits import Edit

    before = np.array(layer.data)
    target = np.zeros(SHAPE, bool)
    target[2, 20:23, 5:9] = True
    target[4, 10, 10] = True  # already 1: not a change, not counted
    assert apply_edit_to_layer(layer, Edit.from_mask(before, target, 1)) == 12
    assert tracker.count == len(changed) + 12 and not tracker.unknown
    np.testing.assert_array_equal(tracker.mask(), (before != layer.data) | (before > 0))

    layer.brush_size = 1  # an eraser scribble on a false vessel
    before = np.array(layer.data)
    layer.paint((2, 21, 6), 0)
    erased = before != layer.data
    assert erased.sum() == 1 and tracker.mask()[erased].all()
    assert tracker.count == len(changed) + 12  # it was marked when it was painted
    assert len(calls) == 3
    layer.data = np.zeros(SHAPE, np.uint8)  # replaced: edits made this way are unknown
    assert tracker.unknown
    tracker.close()


def test_a_confident_model_is_kept_and_nothing_is_saved(setup, qtbot):
    widget = setup.widget
    assert not widget.only_unsure.value
    assert widget._make_job()[0].config.min_uncertainty == 0.0  # the guard decides
    widget.only_unsure.value = True
    assert widget._make_job()[0].config.min_uncertainty == 0.45
    before = _snapshot(setup.viewer)
    widget.settings = {**FAST, "min_uncertainty": 1.0}  # no model is that unsure
    widget.start()
    _finish(setup, qtbot)
    assert not _user_models() and not setup.errors
    assert "confident" in setup.infos[-1] and "nothing was saved" in widget.status.value
    assert _unchanged(before, setup.viewer)


def test_loss_axis_labels_tell_close_values_apart():
    from napari_vessel._qt.finetune_plot import axis_labels

    assert axis_labels(1.0061, 1.0139) == ("1.014", "1.006")  # read "1.01 / 1.01" before
    assert axis_labels(0.2, 0.9) == ("0.9", "0.2")
    assert axis_labels(0.5, 0.5) == ("0.5", "0.5")  # a truly flat curve stays readable


def test_the_model_box_starts_on_the_recommended_model_and_names_follow_the_raw_stack(
        make_napari_viewer):
    from napari_vessel.models import registry
    from napari_vessel.preprocess import DEFAULT_2PM

    viewer = make_napari_viewer()
    raw = np.random.default_rng(0).random((6, 32, 32), dtype=np.float32)
    viewer.add_image(raw, name="mouse1")
    viewer.add_image(raw, name="mouse1 preprocessed",
                     metadata={"preprocess": DEFAULT_2PM.to_dict(), "source": "mouse1"})
    widget = FinetuneWidget(viewer)
    assert widget.model_combo.value == registry.default_model_name()  # it started empty
    widget.layer_combo.value = viewer.layers["mouse1 preprocessed"]
    assert widget.name_edit.value.startswith(f"{widget.model_combo.value}-ft-mouse1")
    assert "preprocessed" not in widget.name_edit.value
