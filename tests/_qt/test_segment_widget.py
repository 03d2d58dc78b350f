"""The Segment widget in a real viewer: results, live threshold, edits kept, cancel, bad input."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import napari_vessel._qt.segment_widget as module
from napari_vessel._qt.segment_models import card_threshold
from napari_vessel._qt.segment_widget import SegmentWidget
from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.registry import ModelSpec

SHAPE = (8, 48, 48)
SCALE = (2.0, 1.0, 1.0)
TRANSLATE = (0.0, 5.0, 0.0)
GATE = threading.Event()


def _stretch(volume, spacing_zyx=(1.0, 1.0, 1.0)):
    volume = np.asarray(volume, dtype=np.float32)
    return (volume - volume.min()) / (volume.max() - volume.min())


def _gated(volume, spacing_zyx=(1.0, 1.0, 1.0)):
    GATE.wait(20)  # a model that takes a moment: until the test opens the gate
    return _stretch(volume)


@pytest.fixture(autouse=True)
def toy_models(tmp_path, monkeypatch):
    """Two classical toy models (card threshold 0.4) and an empty user models folder."""
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "user-models"))
    GATE.clear()
    for name, func in (("test-stretch", _stretch), ("test-gated", _gated)):
        registry.register(ModelSpec(name=name, kind="classical", description=f"{name} (toy)",
                                    predict=func, card={"threshold": 0.4}), replace_existing=True)
    yield tmp_path / "user-models"
    GATE.set()
    for name in ("test-stretch", "test-gated", "test-net"):
        registry.unregister(name)


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    """Viewer with an 8×48×48 stack and the widget on the toy model; notifications collected."""
    messages: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: messages.append(str(err)))
    monkeypatch.setattr(module, "show_info", lambda text: infos.append(str(text)))
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random(SHAPE, dtype=np.float32) * 100
    layer = viewer.add_image(image, name="stack", scale=SCALE, translate=TRANSLATE)
    widget = SegmentWidget(viewer)
    widget.models.model_combo.value = "test-stretch"
    return SimpleNamespace(viewer=viewer, widget=widget, image=layer, messages=messages,
                           infos=infos)


def _run(setup, qtbot):
    job = setup.widget.segment()
    assert job is not None, setup.messages
    qtbot.waitUntil(lambda: setup.widget.job is None, timeout=20000)
    return setup.widget.results.current


def _snapshot(viewer):
    return [(layer.name, np.array(layer.data, copy=True)) for layer in viewer.layers]


def _unchanged(before, viewer) -> bool:
    after = _snapshot(viewer)
    return len(before) == len(after) and all(
        a[0] == b[0] and a[1].shape == b[1].shape and np.array_equal(a[1], b[1], equal_nan=True)
        for a, b in zip(before, after, strict=True))


def test_lists_models_and_shows_the_card(setup):
    panel = setup.widget.models
    names = [value for value in panel.model_combo.choices if value]
    assert {"test-stretch", "frangi", "tvnet"} <= set(names)
    assert "test-stretch: classical" in panel.card.value
    assert "threshold: 0.4 (from the card)" in panel.card.value
    assert setup.widget.threshold.value == pytest.approx(0.4)
    assert "CPU" in panel.device_note.value and not setup.widget.tta.enabled
    panel.model_combo.value = "tvnet"
    assert "parameters:" in panel.card.value and "supervised" in panel.card.value
    assert panel.device_note.value.startswith("auto picks ")
    assert setup.widget.threshold.value == pytest.approx(
        card_threshold(registry.get("tvnet")), abs=0.01)


def test_refresh_lists_a_new_user_model(setup, toy_models):
    toy_models.mkdir()
    card = {"format_version": 1, "name": "my-tvnet", "architecture": "tvnet",
            "kind": "supervised", "parent": "tvnet", "threshold": 0.3}
    (toy_models / "my-tvnet.json").write_text(json.dumps(card))
    panel = setup.widget.models
    assert "my-tvnet" not in panel.model_combo.choices
    panel.refresh_button.clicked.emit()
    assert "my-tvnet" in panel.model_combo.choices
    assert panel.model_combo.value == "test-stretch"  # the choice is kept
    panel.model_combo.value = "my-tvnet"
    assert "your model" in panel.card.value and "MISSING" in panel.card.value
    assert "fine-tuned from: tvnet" in panel.card.value


def test_segment_adds_probability_and_labels_on_the_image_grid(setup, qtbot):
    output = _run(setup, qtbot)
    names = [layer.name for layer in setup.viewer.layers]
    assert names == ["stack", "stack probability (test-stretch)", "stack vessels (test-stretch)"]
    prob, labels = output.prob_layer, output.labels_layer
    for layer in (prob, labels):
        assert tuple(layer.scale) == SCALE and tuple(layer.translate) == TRANSLATE
    expected = _stretch(setup.image.data)
    np.testing.assert_allclose(prob.data, expected)
    assert np.array_equal(labels.data, (expected > 0.4).astype(np.uint8))
    assert labels.metadata["manifest"].model.name == "test-stretch"
    assert labels.metadata["manifest"].input.spacing_zyx == tuple(SCALE)
    assert prob.metadata["manifest"].parameters.threshold == pytest.approx(0.4)
    assert labels.metadata["edited"] is False
    assert prob not in setup.widget.layer_combo.choices  # the map is no input
    assert "vessel" in setup.widget.progress_text.value and not setup.messages
    assert setup.widget.segment_button.enabled and not setup.widget.cancel_button.enabled


def test_threshold_and_min_size_update_unedited_labels_live(setup, qtbot):
    output = _run(setup, qtbot)
    labels = output.labels_layer
    setup.widget.threshold.value = 0.7
    qtbot.waitUntil(lambda: labels.metadata["threshold"] == pytest.approx(0.7), timeout=3000)
    assert np.array_equal(labels.data, (output.prob > 0.7).astype(np.uint8))
    setup.widget.min_size.value = 5
    qtbot.waitUntil(lambda: labels.metadata["min_size"] == 5, timeout=3000)
    assert labels.metadata["manifest"].parameters.min_size == 5
    assert len(setup.viewer.layers) == 3 and labels.metadata["edited"] is False


@pytest.mark.parametrize("how", ["paint", "data_setitem", "no events"])
def test_edited_labels_are_never_overwritten(setup, qtbot, how):
    output = _run(setup, qtbot)
    edited = output.labels_layer
    if how == "paint":
        edited.brush_size = 3
        edited.paint((4, 20, 20), 7)
    elif how == "data_setitem":
        edited.data_setitem((np.array([4]), np.array([20]), np.array([20])), 7)
    else:  # written straight into the array: only the content check can tell
        edited.data[4, 20, 20] = 7
    kept = np.array(edited.data, copy=True)
    assert kept[4, 20, 20] == 7
    assert edited.metadata["edited"] is (how != "no events")  # marked by the edit events
    setup.widget.threshold.value = 0.8
    setup.widget.apply_threshold()
    assert np.array_equal(edited.data, kept) and edited.metadata["edited"] is True
    new = setup.widget.results.current.labels_layer
    assert new is not edited and new.name == "stack vessels (test-stretch) [2]"
    assert np.array_equal(new.data, (output.prob > 0.8).astype(np.uint8))
    assert any("has your edits" in text for text in setup.infos)
    setup.widget.threshold.value = 0.6  # the slider now follows the new layer only
    setup.widget.apply_threshold()
    assert np.array_equal(new.data, (output.prob > 0.6).astype(np.uint8))
    assert np.array_equal(edited.data, kept) and len(setup.viewer.layers) == 4


def test_second_run_reuses_unedited_layers_and_keeps_edited_ones(setup, qtbot):
    first = _run(setup, qtbot)
    prob, labels = first.prob_layer, first.labels_layer
    setup.widget.threshold.value = 0.6
    second = _run(setup, qtbot)
    assert len(setup.viewer.layers) == 3 and second.labels_layer is labels
    assert second.prob_layer is prob and labels.metadata["threshold"] == pytest.approx(0.6)
    labels.paint((2, 10, 10), 5)
    kept = np.array(labels.data, copy=True)
    third = _run(setup, qtbot)
    assert len(setup.viewer.layers) == 5 and third.labels_layer is not labels
    assert np.array_equal(labels.data, kept)
    assert third.labels_layer.name == "stack vessels (test-stretch) [2]"


def test_cancel_adds_no_layer_and_a_second_click_is_refused(setup, qtbot):
    widget = setup.widget
    widget.models.model_combo.value = "test-gated"
    before = _snapshot(setup.viewer)
    widget.segment_button.clicked.emit()
    assert widget.job is not None
    assert not widget.segment_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: "running" in widget.progress_text.value, timeout=5000)  # GUI alive
    assert widget.segment() is None
    assert any("already running" in text for text in setup.messages)
    widget.cancel_button.clicked.emit()
    GATE.set()
    qtbot.waitUntil(lambda: widget.job is None, timeout=20000)
    assert _unchanged(before, setup.viewer) and widget.results.current is None
    assert any("cancelled" in text for text in setup.infos)
    assert len(setup.messages) == 1  # the refused click only
    assert widget.segment_button.enabled and not widget.cancel_button.enabled


def test_a_removed_labels_layer_is_not_brought_back(setup, qtbot):
    output = _run(setup, qtbot)
    setup.viewer.layers.remove(output.labels_layer)
    setup.widget.threshold.value = 0.9
    assert setup.widget.apply_threshold() is None
    assert len(setup.viewer.layers) == 2 and "removed" in setup.widget.target.value


def test_a_tiny_network_runs_on_the_chosen_device(setup, qtbot, tmp_path):
    torch = pytest.importorskip("torch")
    from napari_vessel.models.weights import save_weights

    def build(**_config):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.Sigmoid())

    weights = save_weights(build(), tmp_path / "test-net", {"kind": "unsupervised"})
    registry.register(ModelSpec(name="test-net", kind="unsupervised", description="toy",
                                builder=build, weights=weights, patch_size_zyx=(4, 16, 16)),
                      replace_existing=True)
    widget = setup.widget
    widget.models.refresh_button.clicked.emit()
    widget.models.model_combo.value = "test-net"
    widget.models.device_combo.value = "cpu"
    widget.tta.value = True
    output = _run(setup, qtbot)
    manifest = output.labels_layer.metadata["manifest"]
    assert manifest.device == "cpu" and manifest.parameters.tta is True
    assert output.labels_layer.name == "stack vessels (test-net)" and not setup.messages


def _user_model(folder, *, corrupt: bool) -> str:
    folder.mkdir(exist_ok=True)
    card = {"format_version": 1, "name": "my-net", "architecture": "tvnet", "kind": "supervised"}
    if corrupt:
        (folder / "my-net.safetensors").write_bytes(b"not a safetensors file")
    (folder / "my-net.json").write_text(json.dumps(card))
    return "my-net"


BAD = {
    "no image": ("no image layer", None),
    "2D image": ("2D", np.ones((48, 48), np.float32)),
    "RGB": ("RGB", np.ones((8, 48, 48, 3), np.uint8)),
    "channels": ("channels", np.ones((2, 8, 48, 48), np.float32)),
    "NaN": ("NaN", np.where(np.eye(48, dtype=bool)[None], np.nan, 1.0) * np.ones(SHAPE)),
    "all zero": ("all zero", np.zeros(SHAPE, np.float32)),
}


def test_bad_images_give_a_message_and_change_nothing(setup, qtbot):
    for case, (expected, data) in BAD.items():
        setup.viewer.layers.clear()
        setup.messages.clear()
        if data is not None:
            setup.viewer.add_image(data, name="bad", rgb=case == "RGB")
        before = _snapshot(setup.viewer)
        if setup.widget.segment() is not None:  # checked in the worker (NaNs, all zero)
            qtbot.waitUntil(lambda: setup.widget.job is None, timeout=20000)
        assert len(setup.messages) == 1 and expected in setup.messages[0], (case, setup.messages)
        assert _unchanged(before, setup.viewer), case


@pytest.mark.parametrize("case", ["unknown model", "weights deleted", "corrupt weights",
                                  "no cuda", "out of memory", "crash"])
def test_bad_models_and_failures_give_a_message_and_change_nothing(setup, qtbot, toy_models,
                                                                   monkeypatch, case):
    widget, expected = setup.widget, None
    if case == "unknown model":
        registry.unregister("test-stretch")  # e.g. a user model deleted after listing
        expected = "unknown model 'test-stretch'"
    elif case in ("weights deleted", "corrupt weights"):
        name = _user_model(toy_models, corrupt=case == "corrupt weights")
        widget.models.refresh()
        widget.models.model_combo.value = name
        expected = "corrupt" if case == "corrupt weights" else "does not exist"
    elif case == "no cuda":
        if pytest.importorskip("torch").cuda.is_available():
            pytest.skip("a CUDA GPU is available here")
        widget.models.model_combo.value = "tvnet"
        widget.models.device_combo.value = "cuda"
        expected = "CUDA"
    else:
        error = (InputError("the cuda device ran out of memory even with one patch")
                 if case == "out of memory" else RuntimeError("boom"))

        def failing(*args, **kwargs):
            raise error

        monkeypatch.setattr(module, "segment", failing)
        expected = "out of memory" if case == "out of memory" else "boom"
    before = _snapshot(setup.viewer)
    if widget.segment() is not None:
        qtbot.waitUntil(lambda: widget.job is None, timeout=20000)
    assert len(setup.messages) == 1 and expected in setup.messages[0], setup.messages
    assert _unchanged(before, setup.viewer) and widget.results.current is None
    assert widget.segment_button.enabled


def test_the_card_says_a_2d_model_runs_slice_by_slice():
    from napari_vessel._qt.segment_models import card_text

    assert "slice by slice" in card_text(registry.get("dbac"))
    assert "slice by slice" not in card_text(registry.get("tvnet"))


def test_a_model_with_its_own_post_processing_gets_it_unless_unticked(setup, qtbot):
    from skimage.filters import apply_hysteresis_threshold

    recipe = {"method": "hysteresis", "low": 0.3, "high": 0.9, "min_size": 0, "connectivity": 1}
    registry.register(ModelSpec(name="test-hyst", kind="classical", description="toy",
                                predict=_stretch, postprocessing=recipe), replace_existing=True)
    try:
        widget = setup.widget
        widget.models.refresh()
        widget.models.model_combo.value = "test-hyst"
        assert not widget.paper_post.native.isHidden()
        assert "hysteresis 0.3/0.9" in widget.paper_post.text
        prob = _stretch(setup.image.data)
        output = _run(setup, qtbot)
        expected = apply_hysteresis_threshold(prob, 0.3, 0.9)
        assert np.array_equal(output.labels_layer.data > 0, expected)
        assert not np.array_equal(expected, prob > widget.threshold.value)
        widget.paper_post.value = False
        output = _run(setup, qtbot)
        assert np.array_equal(output.labels_layer.data > 0, prob > widget.threshold.value)
        widget.models.model_combo.value = "test-stretch"
        assert widget.paper_post.native.isHidden()
    finally:
        registry.unregister("test-hyst")


def test_a_layer_the_preprocess_dock_made_is_not_preprocessed_twice(setup, qtbot):
    """Preprocess -> Segment, the natural order, used to apply the model's preprocessing again
    (F1 0.572 instead of 0.630 on a real stack)."""
    from napari_vessel.preprocess import DEFAULT_2PM

    viewer, widget = setup.viewer, setup.widget
    done = DEFAULT_2PM.apply(setup.image.data.copy(), spacing_zyx=SCALE)
    viewer.add_image(done, name="stack preprocessed", scale=SCALE, translate=TRANSLATE,
                     metadata={"preprocess": DEFAULT_2PM.to_dict(), "source": "stack"})
    widget.models.model_combo.value = "tvnet"
    widget.models.device_combo.value = "cpu"
    widget.layer_combo.value = viewer.layers["stack preprocessed"]
    output = _run(setup, qtbot)
    assert output.labels_layer.metadata["manifest"].parameters.preprocess is False
    assert "already preprocessed" in widget.progress_text.value
    widget.layer_combo.value = viewer.layers["stack"]  # the raw stack gets the card's steps
    output = _run(setup, qtbot)
    assert output.labels_layer.metadata["manifest"].parameters.preprocess is True
    assert "already preprocessed" not in widget.progress_text.value


def test_a_failed_status_is_replaced_by_the_next_successful_run(setup, qtbot, monkeypatch):
    original = module.segment

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "segment", failing)
    widget = setup.widget
    _run_and_wait = lambda: qtbot.waitUntil(lambda: widget.job is None, timeout=20000)  # noqa: E731
    assert widget.segment() is not None
    _run_and_wait()
    assert widget.progress_text.value.startswith("failed:") and "boom" in widget.progress_text.value
    monkeypatch.setattr(module, "segment", original)
    widget.segment_button.clicked.emit()
    assert not widget.progress_text.value.startswith("failed")  # the old failure is gone at once
    _run_and_wait()
    assert widget.results.current is not None
    assert "failed" not in widget.progress_text.value and widget.progress_text.value


def test_a_level_rule_sets_the_slider_to_the_level_it_chose(setup, qtbot):
    """A card whose level follows the stack: after a preview and after a run the slider shows the
    level used (not the card's fallback), an unmoved slider does not redraw, a moved one does."""
    rule = {"intercept": 0.9, "slope": -1.0, "fraction_range": [0.0, 1.0],
            "level_range": [0.0, 1.0]}
    recipe = {"method": "threshold", "level": 0.7, "min_size": 0, "level_rule": rule}
    registry.register(ModelSpec(name="test-rule", kind="classical", description="toy",
                                predict=_stretch, postprocessing=recipe), replace_existing=True)
    try:
        widget, viewer = setup.widget, setup.viewer
        widget.models.refresh()
        widget.models.model_combo.value = "test-rule"
        assert "threshold from the vessel fraction" in widget.paper_post.text
        prob = _stretch(setup.image.data)
        fraction = float(np.mean(prob > 0.5))
        viewer.dims.set_point(0, TRANSLATE[0] + 3 * SCALE[0])
        assert widget.preview() is not None, setup.messages
        qtbot.waitUntil(lambda: widget.job is None, timeout=20000)
        preview = widget.previews.current.manifest.parameters
        assert widget.threshold.value == preview.threshold != 0.7
        assert widget.previews.layer.metadata["threshold"] == preview.threshold
        assert "from this slab's vessel fraction" in widget.progress_text.value

        output = _run(setup, qtbot)
        used = output.manifest.parameters
        assert used.threshold == pytest.approx(0.9 - fraction, abs=1e-6)
        assert widget.threshold.value == used.threshold == output.threshold
        assert abs(used.threshold - 0.7) > 0.1
        assert used.postprocessing["level_from"]["fallback_level"] == 0.7
        np.testing.assert_array_equal(output.labels_layer.data > 0, prob > used.threshold)
        assert (f"level {used.threshold:.2f} from the vessel fraction ({100 * fraction:.1f} % "
                "above 0.5)") in widget.progress_text.value
        assert widget.apply_threshold() is None  # the slider was not moved: nothing to redraw
        widget.threshold.value = 0.6
        assert widget.apply_threshold() is output.labels_layer
        np.testing.assert_array_equal(output.labels_layer.data > 0, prob > 0.6)
        widget.paper_post.value = False  # the slider's level, no rule
        output = _run(setup, qtbot)
        assert output.manifest.parameters.threshold == widget.threshold.value == 0.6
        assert "vessel fraction" not in widget.progress_text.value
    finally:
        registry.unregister("test-rule")


def test_the_card_box_says_when_the_threshold_follows_the_vessel_fraction():
    from napari_vessel._qt.segment_models import card_text
    from napari_vessel.models import registry

    spec = registry.get("tvnet")
    rule = spec.postprocessing["level_rule"]
    text = card_text(spec)
    assert "follows the vessel fraction" in text and f"{rule['slope']:+.3g}" in text
    assert "(from the card)" not in text


def test_the_level_line_says_when_the_fraction_was_held_at_the_fitted_range():
    from napari_vessel._qt.segment_results import level_text

    def manifest(fraction):
        note = {"fraction": fraction, "rule": {"intercept": 1.0, "slope": -2.0, "probe": 0.5,
                                               "fraction_range": [0.05, 0.3]}}
        return SimpleNamespace(parameters=SimpleNamespace(
            threshold=0.6, postprocessing={"level_from": note}))

    assert level_text(manifest(0.1)) == "level 0.60 from the vessel fraction (10.0 % above 0.5)"
    assert "held at the fitted range" in level_text(manifest(0.01))
    assert "held at the fitted range" in level_text(manifest(0.5))
    assert level_text(SimpleNamespace(parameters=SimpleNamespace(
        threshold=0.5, postprocessing={}))) == ""
