"""The Preprocess widget in a real viewer: editor, live preview, Apply/Cancel, JSON, bad input."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import napari_vessel._qt.preprocess_reference as reference_module
import napari_vessel._qt.preprocess_widget as module
from napari_vessel._qt.preprocess_preview import PREVIEW_ROLE
from napari_vessel._qt.preprocess_widget import PreprocessWidget
from napari_vessel.models.card import ModelCard
from napari_vessel.preprocess import DEFAULT_2PM, DEFAULT_CONFOCAL, Pipeline, intensity_profile

SHAPE = (8, 64, 64)
SCALE = (2.0, 1.0, 1.0)
TRANSLATE = (0.0, 5.0, 0.0)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE, dtype=np.float32) * 100 + 50
    image[:, 30:34, 5:60] += 400  # a vessel along x
    image[2:6, 5:60, 10:13] += 300  # another along y
    return image


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    """Viewer with a stack and the widget; error and info notifications are collected."""
    messages: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: messages.append(str(err)))
    monkeypatch.setattr(module, "show_info", lambda text: infos.append(str(text)))
    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="stack", scale=SCALE, translate=TRANSLATE)
    widget = PreprocessWidget(viewer)
    return SimpleNamespace(viewer=viewer, widget=widget, image=image, messages=messages,
                           infos=infos)


def _snapshot(viewer):
    return [(layer.name, np.array(layer.data, copy=True)) for layer in viewer.layers]


def _unchanged(before, viewer) -> bool:
    after = _snapshot(viewer)
    return len(before) == len(after) and all(
        a[0] == b[0] and a[1].shape == b[1].shape and np.array_equal(a[1], b[1], equal_nan=True)
        for a, b in zip(before, after, strict=True))


def _preview_layers(viewer):
    return [layer for layer in viewer.layers
            if layer.metadata.get("napari_vessel_output") == PREVIEW_ROLE]


def _apply_and_wait(qtbot, widget):
    job = widget.apply()
    qtbot.waitUntil(lambda: widget.job is None, timeout=10000)
    return job


# ------------------------------------------------------------------------------------- editor
def test_starts_with_the_2pm_preset_on_the_last_image(setup):
    assert setup.widget.layer_combo.value is setup.image
    assert setup.widget.editor.pipeline == DEFAULT_2PM
    assert setup.widget.editor.list.count() == 3


def test_builds_a_pipeline_add_remove_reorder_edit(setup):
    editor = setup.widget.editor
    editor.preset_buttons["confocal"].click()
    assert editor.pipeline == DEFAULT_CONFOCAL
    editor.step_combo.setCurrentIndex(editor.step_combo.findData("median3d"))
    editor.add_button.click()
    assert editor.pipeline.names == ("clahe", "median3d", "normalize")  # before normalising
    assert editor.current_row == 1  # the new step is selected, its form shown
    editor.up_button.click()
    assert editor.pipeline.names == ("median3d", "clahe", "normalize")
    editor.down_button.click()
    assert editor.pipeline.names == ("clahe", "median3d", "normalize")
    editor.form.editors["size"].value = 5  # edit through the generated form
    assert editor.pipeline.steps[1].size == 5
    assert "size=5" in editor.list.item(1).text()
    editor.list.setCurrentRow(0)
    editor.form.editors["mode"].value = "3d"
    editor.form.editors["clip_limit"].value = 0.02
    assert editor.pipeline.steps[0].mode == "3d" and editor.pipeline.steps[0].clip_limit == 0.02
    editor.form.editors["kernel_size"].value = 16
    assert editor.pipeline.steps[0].kernel_size == 16
    editor.form.editors["kernel_size"].value = editor.form.editors["kernel_size"].min  # "auto"
    assert editor.pipeline.steps[0].kernel_size is None
    editor.remove_button.click()
    assert editor.pipeline.names == ("median3d", "normalize")
    assert setup.messages == []


def test_a_refused_value_keeps_the_step_and_says_why(setup):
    editor = setup.widget.editor
    editor.list.setCurrentRow(1)  # median3d
    editor.form.editors["size"].value = 4  # must be odd
    assert editor.pipeline.steps[1].size == 3
    assert editor.form.editors["size"].value == 3  # the form shows the valid value again
    assert setup.messages and "odd" in setup.messages[-1]
    editor.list.setCurrentRow(2)
    editor.form.editors["low"].value = 99.9  # above high = 99.8
    assert editor.pipeline.steps[2].low == 1.0 and len(setup.messages) == 2


@pytest.mark.parametrize("factor", [0.0, -2.0])
def test_zero_or_negative_factor_is_refused(setup, factor):
    editor = setup.widget.editor
    editor.add_step("histogram_scale")
    before = editor.pipeline
    assert not editor.set_parameter(3, "factor", factor)
    assert editor.pipeline == before
    assert setup.messages


# ------------------------------------------------------------------------------------ preview
def test_preview_shows_the_current_slice_and_follows_it(setup, qtbot):
    viewer, widget, data = setup.viewer, setup.widget, setup.image.data
    viewer.dims.set_current_step(0, 2)
    widget.preview.toggle.value = True

    def shows(expected):
        layers = _preview_layers(viewer)
        return len(layers) == 1 and np.array_equal(layers[0].data, expected)

    pipeline = widget.editor.pipeline
    qtbot.waitUntil(lambda: shows(pipeline.preview_plane(data, 2, spacing_zyx=SCALE)),
                    timeout=5000)
    layer = _preview_layers(viewer)[0]
    assert layer.name == "stack preview" and layer.ndim == 2
    assert tuple(layer.scale) == SCALE[1:] and tuple(layer.translate) == TRANSLATE[1:]
    viewer.dims.set_current_step(0, 6)
    qtbot.waitUntil(lambda: shows(pipeline.preview_plane(data, 6, spacing_zyx=SCALE)),
                    timeout=5000)
    widget.editor.set_parameter(2, "high", 99.0)  # a parameter change updates it too
    pipeline = widget.editor.pipeline
    qtbot.waitUntil(lambda: shows(pipeline.preview_plane(data, 6, spacing_zyx=SCALE)),
                    timeout=5000)
    setup.image.data = data[:, ::-1].copy()  # new data in the input layer: the preview follows
    qtbot.waitUntil(lambda: shows(pipeline.preview_plane(data[:, ::-1], 6, spacing_zyx=SCALE)),
                    timeout=5000)
    setup.image.data = data
    widget.preview.mode.value = "MIP"
    qtbot.waitUntil(lambda: shows(pipeline.preview(data.max(axis=0), spacing_zyx=SCALE)),
                    timeout=5000)
    widget.preview.toggle.value = False
    assert _preview_layers(viewer) == []
    assert np.array_equal(setup.image.data, _image())


def test_slow_previews_run_in_a_worker_and_stale_results_are_dropped(setup, qtbot,
                                                                     monkeypatch):
    import napari_vessel._qt.preprocess_preview as preview_module

    monkeypatch.setattr(preview_module, "FAST_MS", -1.0)  # every preview counts as slow
    viewer, widget, data = setup.viewer, setup.widget, setup.image.data
    widget.preview.toggle.value = True
    for z in (1, 2, 3, 4, 5):  # faster than the preview: only the last slice may be shown
        viewer.dims.set_current_step(0, z)
        widget.preview.refresh()
    expected = widget.editor.pipeline.preview_plane(data, 5, spacing_zyx=SCALE)
    qtbot.waitUntil(lambda: len(_preview_layers(viewer)) == 1
                    and np.array_equal(_preview_layers(viewer)[0].data, expected), timeout=5000)
    qtbot.waitUntil(lambda: not widget.preview._busy, timeout=5000)
    assert np.array_equal(_preview_layers(viewer)[0].data, expected)
    assert widget.preview.status.value.startswith("slice 5")


def test_the_first_preview_runs_in_a_worker_then_fast_slices_on_the_gui(setup, qtbot,
                                                                       monkeypatch):
    """The first preview of an input (and of every new pipeline) is computed in a worker, where
    it is timed; it used to run on the GUI thread, however slow the pipeline was."""
    import napari_vessel._qt.preprocess_preview as preview_module

    threads: list[bool] = []  # True: computed on the GUI thread
    original = preview_module.preview_image

    def spy(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(preview_module, "preview_image", spy)
    monkeypatch.setattr(preview_module, "FAST_MS", 1e9)  # whatever this machine's speed
    viewer, widget = setup.viewer, setup.widget
    widget.preview.toggle.value = True
    widget.preview.timer.stop()  # the test calls refresh() itself, as the timer would
    widget.preview.refresh()  # not on the GUI thread
    assert widget.preview._busy and widget.preview.status.value.endswith("computing…")
    qtbot.waitUntil(lambda: len(_preview_layers(viewer)) == 1, timeout=5000)
    assert threads == [False]
    qtbot.waitUntil(lambda: not widget.preview._busy, timeout=5000)
    viewer.dims.set_current_step(0, 5)  # timed as fast: the next slice is shown at once
    widget.preview.timer.stop()
    widget.preview.refresh()
    assert threads == [False, True]
    widget.editor.set_parameter(2, "high", 99.0)  # a new pipeline is timed again in a worker
    widget.preview.timer.stop()
    widget.preview.refresh()
    assert widget.preview._busy  # handed to a worker
    qtbot.waitUntil(lambda: not widget.preview._busy, timeout=5000)
    assert threads == [False, True, False]
    expected = widget.editor.pipeline.preview_plane(setup.image.data, 5, spacing_zyx=SCALE)
    qtbot.waitUntil(lambda: np.array_equal(_preview_layers(viewer)[0].data, expected),
                    timeout=5000)


def test_preview_error_is_shown_once_and_adds_nothing(setup, qtbot):
    viewer = setup.viewer
    flat = viewer.add_image(np.full(SHAPE, 7.0, np.float32), name="flat")
    setup.widget.layer_combo.value = flat
    before = _snapshot(viewer)
    setup.widget.preview.toggle.value = True
    qtbot.waitUntil(lambda: len(setup.messages) == 1, timeout=5000)
    viewer.dims.set_current_step(0, 5)
    qtbot.wait(300)
    assert len(setup.messages) == 1 and "constant" in setup.messages[0]
    assert _unchanged(before, viewer)


# -------------------------------------------------------------------------------------- apply
def test_apply_adds_a_new_layer_and_leaves_the_input_alone(setup, qtbot):
    widget, viewer = setup.widget, setup.viewer
    widget.editor.add_step("clahe")
    pipeline = widget.editor.pipeline
    _apply_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["stack", "stack preprocessed"]
    out = viewer.layers["stack preprocessed"]
    np.testing.assert_array_equal(out.data, pipeline.apply(_image(), spacing_zyx=SCALE))
    assert np.array_equal(setup.image.data, _image())
    assert tuple(out.scale) == SCALE and tuple(out.translate) == TRANSLATE
    assert Pipeline.from_dict(out.metadata["preprocess"]) == pipeline
    json.dumps(out.metadata["preprocess"])  # JSON-able as stored
    assert widget.apply_button.enabled and not widget.cancel_button.enabled
    _apply_and_wait(qtbot, widget)  # a second run gets a new name
    assert viewer.layers[-1].name == "stack preprocessed [2]"
    assert setup.messages == []


def test_a_long_input_name_gives_a_short_unique_output_name(setup, qtbot):
    """Long layer names were cut in the layer list: outputs get a name of at most MAX_NAME
    characters (start and end kept), the full one in the metadata."""
    from napari_vessel._qt._common import FULL_NAME_KEY, MAX_NAME

    long_name = "2024-05-17_mouse3_cortex_region2_920nm_stack_ch1"
    setup.image.name = long_name
    widget, viewer = setup.widget, setup.viewer
    assert widget.layer_combo.value is setup.image
    _apply_and_wait(qtbot, widget)
    assert widget.layer_combo.value is setup.image
    _apply_and_wait(qtbot, widget)
    first, second = viewer.layers[-2], viewer.layers[-1]
    assert len(first.name) <= MAX_NAME and first.name.startswith("2024-05")
    assert first.name.endswith("ch1 preprocessed") and "…" in first.name
    assert second.name == f"{first.name} [2]"
    assert first.metadata[FULL_NAME_KEY] == f"{long_name} preprocessed"
    assert first.metadata["source"] == long_name
    assert setup.messages == []


def test_apply_on_a_lazy_stack_equals_numpy(setup, qtbot):
    da = pytest.importorskip("dask.array")
    lazy = setup.viewer.add_image(da.from_array(_image(), chunks=(3, 64, 64)), name="lazy",
                                  scale=SCALE)
    setup.widget.layer_combo.value = lazy
    _apply_and_wait(qtbot, setup.widget)
    out = setup.viewer.layers["lazy preprocessed"].data
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, DEFAULT_2PM.apply(_image(), spacing_zyx=SCALE))


def test_cancel_adds_no_layer_and_a_second_apply_is_refused(setup, qtbot, monkeypatch):
    gate = threading.Event()
    original = module.run_pipeline

    def gated(*args, **kwargs):
        gate.wait(5)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "run_pipeline", gated)
    widget, viewer = setup.widget, setup.viewer
    before = _snapshot(viewer)
    assert widget.apply() is not None
    assert not widget.apply_button.enabled and widget.cancel_button.enabled
    assert widget.apply() is None  # refused while running
    assert "already running" in setup.messages[-1]
    widget.cancel_button.clicked.emit()
    gate.set()
    qtbot.waitUntil(lambda: widget.job is None, timeout=10000)
    assert _unchanged(before, viewer)
    assert any("cancelled" in text for text in setup.infos)
    assert widget.apply_button.enabled and not widget.cancel_button.enabled


# ---------------------------------------------------------------------------------- JSON files
def test_json_save_load_round_trip(setup, tmp_path):
    editor = setup.widget.editor
    editor.add_step("clahe", clip_limit=0.03, mode="3d")
    editor.set_parameter(1, "size", 5)
    pipeline = editor.pipeline
    path = editor.save_pipeline(tmp_path / "pipe.json")
    assert Pipeline.load(path) == pipeline
    editor.load_preset("confocal")
    assert editor.load_pipeline(path) == pipeline
    assert editor.pipeline == pipeline and editor.list.count() == 4


@pytest.mark.parametrize("content, expected", [
    ({"format": "napari-vessel-preprocess", "version": 1, "steps": [{"name": "sharpen"}]},
     "unknown preprocessing step"),
    ({"format": "napari-vessel-preprocess", "version": 99, "steps": []}, "newer"),
    ({"format": "napari-vessel-preprocess", "version": 1,
      "steps": [{"name": "histogram_scale", "factor": -2}]}, "out of range"),
    ("{not json", "not valid JSON"),
])
def test_bad_pipeline_files_are_refused(setup, tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    before = _snapshot(setup.viewer)
    assert setup.widget.editor.load_pipeline(path) is None
    assert setup.widget.editor.pipeline == DEFAULT_2PM
    assert setup.messages and expected in setup.messages[-1]
    assert _unchanged(before, setup.viewer)


# ---------------------------------------------------------------------------------- bad input
def _bad(kind: str) -> np.ndarray:
    image = _image()
    if kind == "constant":
        return np.full(SHAPE, 3.0, np.float32)
    if kind == "nan":
        image[3, 10, 10] = np.nan
    if kind == "inf":
        image[3, 10, 10] = np.inf
    return image


@pytest.mark.parametrize("kind, expected", [
    ("constant", "constant"), ("nan", "NaN"), ("inf", "NaN or infinite")])
def test_bad_volumes_give_a_message_and_no_layer(setup, qtbot, kind, expected):
    layer = setup.viewer.add_image(_bad(kind), name="bad", contrast_limits=(0, 1))
    setup.widget.layer_combo.value = layer
    before = _snapshot(setup.viewer)
    _apply_and_wait(qtbot, setup.widget)
    assert setup.messages and expected in setup.messages[-1]
    assert _unchanged(before, setup.viewer)


def test_empty_volume_is_refused(setup):
    layer = setup.viewer.add_image(np.zeros((0, 64, 64), np.float32), name="empty",
                                   contrast_limits=(0, 1))
    setup.widget.layer_combo.value = layer
    before = _snapshot(setup.viewer)
    assert setup.widget.apply() is None
    assert "empty" in setup.messages[-1]
    assert _unchanged(before, setup.viewer)


@pytest.mark.parametrize("name, params", [("median3d", {"size": 15}),
                                          ("clahe", {"kernel_size": 100})])
def test_kernel_larger_than_the_volume(setup, qtbot, name, params):
    setup.widget.editor.add_step(name, **params)
    before = _snapshot(setup.viewer)
    _apply_and_wait(qtbot, setup.widget)
    assert setup.messages and "larger than the image" in setup.messages[-1]
    assert _unchanged(before, setup.viewer)


def test_2d_layer_refuses_3d_steps_but_runs_per_slice_ones(setup, qtbot):
    plane = setup.viewer.add_image(_image()[3], name="plane")
    setup.widget.layer_combo.value = plane
    assert any("2D image" in text for text in setup.infos)
    before = _snapshot(setup.viewer)
    assert setup.widget.apply() is None  # the 2PM preset has median3d
    assert "median3d" in setup.messages[-1] and "3D" in setup.messages[-1]
    assert _unchanged(before, setup.viewer)
    setup.widget.editor.load_preset("confocal")
    _apply_and_wait(qtbot, setup.widget)
    np.testing.assert_array_equal(setup.viewer.layers["plane preprocessed"].data,
                                  DEFAULT_CONFOCAL.apply(_image()[3]))


# ---------------------------------------------------------------------------------- reference
def test_reference_layer_sets_histogram_scaling(setup, qtbot):
    setup.viewer.add_image(_image() * 16, name="bright reference")
    setup.widget.layer_combo.value = setup.image
    panel = setup.widget.reference
    panel.choice.value = setup.viewer.layers["bright reference"]
    panel.use_reference()
    qtbot.waitUntil(lambda: panel.job is None, timeout=5000)
    step = setup.widget.editor.pipeline.steps[0]
    assert step.name == "histogram_scale" and step.factor is None
    assert step.profile == intensity_profile(_image() * 16)
    assert abs(step.fit(_image()) - 16) < 0.5
    assert "factor for 'stack': 16" in panel.status.value


def test_reference_layer_stays_chosen_when_renamed(setup, qtbot):
    """The reference is bound to the layer: renaming it, then adding a layer, keeps it (the combo
    listed names and lost the choice on the next refill)."""
    reference = setup.viewer.add_image(_image() * 16, name="bright reference")
    setup.widget.layer_combo.value = setup.image
    panel = setup.widget.reference
    panel.choice.value = reference
    reference.name = "renamed reference"
    setup.viewer.add_image(_image(), name="another stack")
    assert panel.choice.value is reference
    panel.use_reference()
    qtbot.waitUntil(lambda: panel.job is None, timeout=5000)
    assert abs(setup.widget.editor.pipeline.steps[0].fit(_image()) - 16) < 0.5
    assert "renamed reference" in panel.status.value


def test_model_reference_uses_its_card_or_says_it_has_none(setup, qtbot, monkeypatch):
    profile = intensity_profile(_image() * 4)
    specs = [SimpleNamespace(name="with-profile", intensity_profile=None,
                             card=ModelCard(name="with-profile", intensity_profile=profile)),
             SimpleNamespace(name="bare", intensity_profile=None, card={})]
    monkeypatch.setattr(reference_module, "list_models", lambda: specs)
    panel = setup.widget.reference
    panel.source.value = "model"
    qtbot.waitUntil(lambda: "bare" in panel.choice.choices, timeout=5000)
    panel.choice.value = "bare"
    assert panel.use_reference() is None
    assert "no intensity profile" in setup.messages[-1]
    assert setup.widget.editor.pipeline == DEFAULT_2PM
    panel.choice.value = "with-profile"
    panel.use_reference()
    qtbot.waitUntil(lambda: panel.job is None, timeout=5000)
    assert setup.widget.editor.pipeline.steps[0].profile == profile


def test_add_puts_a_new_step_before_the_final_normalisation(setup):
    """The 2PM pipeline ends with a normalisation; a new step goes before it (it used to land
    after it, and took three Up clicks to put right)."""
    from napari_vessel.preprocess import Clahe, Normalize

    editor = setup.widget.editor
    assert isinstance(editor.pipeline.steps[-1], Normalize)
    editor.step_combo.setCurrentIndex(editor.step_combo.findData("clahe"))
    editor.add_button.click()  # as the user does: no Up clicks needed afterwards
    steps = editor.pipeline.steps
    assert isinstance(steps[-1], Normalize) and isinstance(steps[-2], Clahe)
    assert editor.current_row == len(steps) - 2  # the new step is selected
    editor.add_step("normalize")  # a normalisation itself goes last
    assert isinstance(editor.pipeline.steps[-1], Normalize) and len(editor.pipeline.steps) == \
        len(steps) + 1


def test_a_failed_status_is_replaced_by_the_next_successful_run(setup, qtbot, monkeypatch):
    original = module.run_pipeline

    def failing(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "run_pipeline", failing)
    _apply_and_wait(qtbot, setup.widget)
    assert setup.widget.progress_text.value == "failed: RuntimeError: disk full"
    monkeypatch.setattr(module, "run_pipeline", original)
    setup.widget.apply_button.clicked.emit()
    assert setup.widget.progress_text.value == "starting…"  # the old failure is gone at once
    qtbot.waitUntil(lambda: setup.widget.job is None, timeout=10000)
    assert setup.widget.progress_text.value == "added 'stack preprocessed'"
