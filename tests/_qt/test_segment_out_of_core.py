"""The Segment dock's out-of-core path: over the memory budget, or a lazy layer, it writes OME-Zarr
into the output folder and adds lazy layers equal to the in-memory result; Cancel, no folder and
existing outputs leave the user's files and layers alone."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import napari_vessel._qt.segment_widget as module
from napari_vessel._qt.segment_out_of_core import LAZY_TIP, STORE_KEY, choose_path, split_window_options
from napari_vessel._qt.segment_widget import SegmentWidget
from napari_vessel.data.phantom import make_phantom
from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions
from napari_vessel.io.stacks import save_volume
from napari_vessel.manifest import RunManifest
from napari_vessel.models import registry
from napari_vessel.models.registry import ModelSpec

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

SHAPE = (16, 96, 96)  # 2.5 MB to segment in memory: over a 0.001 GB budget
SCALE = (2.0, 1.0, 1.0)
TRANSLATE = (0.0, 5.0, 0.0)
STARTED = threading.Event()
SLOW = {"seconds": 0.0}


class _Toy(torch.nn.Module):
    """sigmoid(8 x - 4): the four grey levels of the input map far from the 0.5 threshold, so
    float rounding (which differs between the two paths by about 1e-7) cannot decide a voxel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(8.0)
            self.conv.bias.fill_(-4.0)

    def forward(self, x):  # noqa: D102 - a toy
        STARTED.set()
        if SLOW["seconds"]:
            time.sleep(SLOW["seconds"])
        return torch.sigmoid(self.conv(x))


def _build(**_config):
    return _Toy()


@pytest.fixture(autouse=True)
def toy_net(tmp_path, monkeypatch):
    """A tiny network (patch 4 × 16 × 16) and a classical toy model."""
    from napari_vessel.models.weights import save_weights

    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "user-models"))
    STARTED.clear()
    SLOW["seconds"] = 0.0
    weights = save_weights(_build(), tmp_path / "toy-net", {"kind": "unsupervised"})
    registry.register(ModelSpec(name="toy-net", kind="unsupervised", description="toy",
                                builder=_build, weights=weights, patch_size_zyx=(4, 16, 16)),
                      replace_existing=True)
    registry.register(ModelSpec(name="toy-classical", kind="classical", description="toy",
                                predict=lambda v, spacing_zyx=None: np.asarray(v, np.float32)
                                / 3), replace_existing=True)
    yield
    for name in ("toy-net", "toy-classical"):
        registry.unregister(name)


def _image() -> np.ndarray:
    phantom = make_phantom(SHAPE, seed=1)
    return np.digitize(phantom.image, [40, 90, 160]).astype(np.uint8)  # grey levels 0..3


@pytest.fixture
def dock(make_napari_viewer, monkeypatch, tmp_path):
    """Viewer with a 16 × 96 × 96 phantom and the dock on the toy network, CPU, small pyramid."""
    messages: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: messages.append(str(err)))
    monkeypatch.setattr(module, "show_info", lambda text: infos.append(str(text)))
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image(), name="stack", scale=SCALE, translate=TRANSLATE)
    widget = SegmentWidget(viewer)
    widget.models.refresh_button.clicked.emit()
    widget.models.model_combo.value = "toy-net"
    widget.models.device_combo.value = "cpu"
    widget.pyramid_smallest = 32  # 96 -> 48 -> 24: a three-level pyramid on a small stack
    return SimpleNamespace(viewer=viewer, widget=widget, image=layer, messages=messages,
                           infos=infos, out=tmp_path / "out")


def _run(dock, qtbot):
    job = dock.widget.segment()
    assert job is not None, (dock.messages, dock.widget.progress_text.value)
    qtbot.waitUntil(lambda: dock.widget.job is None, timeout=30000)
    assert not dock.messages, dock.messages


def _out_of_core(dock) -> None:
    dock.widget.output.budget.value = 0.001
    dock.widget.output.folder.value = str(dock.out)


def test_the_path_is_chosen_by_the_budget_and_laziness():
    net = registry.get("toy-net")
    classical = registry.get("toy-classical")
    assert choose_path(SHAPE, False, net, 1.0).out_of_core is False
    route = choose_path(SHAPE, False, net, 0.001)
    assert route.out_of_core and "0.00251 GB to segment in memory > 0.001 GB" in route.reason
    assert choose_path(SHAPE, True, net, 100.0).out_of_core  # lazy: never loaded whole
    assert not choose_path(SHAPE, True, classical, 100.0).out_of_core  # it fits: loaded
    with pytest.raises(InputError, match="classical"):
        choose_path(SHAPE, False, classical, 0.001)



def test_the_window_settings_go_to_segment_to_zarr_as_options():
    run = {"threshold": 0.5, "min_size": 3, "overlap": 0.5, "tta": True, "device": None,
           "preprocess": False}
    options, rest = split_window_options(run)
    assert options == WindowOptions(overlap=0.5, tta=True)
    assert rest == {"threshold": 0.5, "min_size": 3, "preprocess": False}
    with pytest.raises(InputError):
        split_window_options({"overlap": 2.0})

def test_over_budget_writes_ome_zarr_and_adds_lazy_layers_equal_to_in_memory(dock, qtbot):
    widget = dock.widget
    widget.output.budget.value = 100.0
    assert widget.output.route.value.startswith("next run: in memory")
    _run(dock, qtbot)
    memory = widget.results.current
    mem_prob = np.array(memory.prob)
    mem_labels = np.array(memory.labels_layer.data)
    assert 0 < mem_labels.mean() < 0.9
    _out_of_core(dock)
    assert "out of core" in widget.output.route.value and "> 0.001 GB" in widget.output.route.value
    _run(dock, qtbot)
    assert sorted(p.name for p in dock.out.iterdir()) == [
        "stack_labels.zarr", "stack_manifest.json", "stack_prob.zarr"]
    lazy = widget.lazy
    prob, labels = lazy.prob_layer, lazy.labels_layer
    assert [layer.name for layer in dock.viewer.layers][-2:] == [prob.name, labels.name]
    for layer in (prob, labels):
        assert layer.multiscale and len(layer.data) == 3
        assert all(isinstance(level, da.Array) for level in layer.data)  # read lazily
        assert tuple(layer.scale) == SCALE and tuple(layer.translate) == TRANSLATE
        manifest = layer.metadata["manifest"]
        assert isinstance(manifest, RunManifest) and manifest.out_of_core is not None
        assert layer.metadata[STORE_KEY].startswith(str(dock.out))
    np.testing.assert_array_equal(np.asarray(labels.data[0]), mem_labels)
    np.testing.assert_allclose(np.asarray(prob.data[0]), mem_prob, atol=1e-5)
    assert "written out of core to" in widget.progress_text.value
    # the slider cannot redraw a map on disk: it says so and sets the next run only
    assert widget.threshold.tooltip == LAZY_TIP and "out of core" in widget.target.value
    before = [layer.name for layer in dock.viewer.layers]
    widget.threshold.value = 0.7
    assert widget.apply_threshold() is None
    assert [layer.name for layer in dock.viewer.layers] == before
    assert np.array_equal(np.asarray(labels.data[0]), mem_labels)
    assert "next Segment" in widget.progress_text.value
    np.testing.assert_array_equal(np.asarray(memory.labels_layer.data), mem_labels)


def test_out_of_core_with_a_level_rule_sets_the_slider_to_the_level_used(dock, qtbot):
    import dataclasses

    rule = {"intercept": 0.9, "slope": -1.0, "fraction_range": [0.0, 1.0],
            "level_range": [0.0, 1.0]}
    recipe = {"method": "threshold", "level": 0.99, "min_size": 0, "level_rule": rule}
    registry.register(dataclasses.replace(registry.get("toy-net"), name="toy-net-rule",
                                          postprocessing=recipe), replace_existing=True)
    try:
        widget = dock.widget
        widget.models.refresh_button.clicked.emit()
        widget.models.model_combo.value = "toy-net-rule"
        _out_of_core(dock)
        _run(dock, qtbot)
        lazy = widget.lazy
        used = lazy.manifest.parameters
        prob = np.asarray(lazy.prob_layer.data[0])
        fraction = float(np.mean(prob > 0.5))  # over the whole store
        assert used.postprocessing["level_from"]["fraction"] == pytest.approx(fraction, abs=1e-6)
        assert used.threshold == pytest.approx(0.9 - fraction, abs=1e-5)
        assert widget.threshold.value == used.threshold
        assert lazy.labels_layer.metadata["threshold"] == used.threshold
        labels = np.asarray(lazy.labels_layer.data[0])
        np.testing.assert_array_equal(labels, prob > used.threshold)
        assert not np.array_equal(labels, prob > 0.99)  # not the card's fallback level
        assert "from the vessel fraction" in widget.progress_text.value
    finally:
        registry.unregister("toy-net-rule")


def test_a_lazy_layer_goes_out_of_core_into_a_folder_next_to_its_file(dock, qtbot, tmp_path):
    path = save_volume(tmp_path / "brain.ome.zarr", _image(), SCALE)
    viewer, widget = dock.viewer, dock.widget
    viewer.layers.clear()
    [layer] = viewer.open(str(path), plugin="napari-vessel")
    assert not isinstance(layer.data, np.ndarray)
    widget.layer_combo.value = layer
    assert widget.output.folder_path() == tmp_path / "brain_segmentation"
    assert "read lazily" in widget.output.route.value
    _run(dock, qtbot)
    out = tmp_path / "brain_segmentation"
    assert sorted(p.name for p in out.iterdir()) == [
        "brain_labels.zarr", "brain_manifest.json", "brain_prob.zarr"]
    assert widget.lazy.labels_layer.metadata["image_path"] == str(path)


def test_cancel_adds_nothing_and_leaves_no_finished_outputs(dock, qtbot):
    _out_of_core(dock)
    SLOW["seconds"] = 0.05  # about 15 s in all: Cancel comes long before the end
    before = [layer.name for layer in dock.viewer.layers]
    assert dock.widget.segment() is not None
    assert STARTED.wait(20)
    pressed = time.perf_counter()
    dock.widget.cancel()
    qtbot.waitUntil(lambda: dock.widget.job is None, timeout=10000)
    assert time.perf_counter() - pressed < 2.0
    assert [layer.name for layer in dock.viewer.layers] == before
    assert dock.widget.lazy is None and any("cancelled" in text for text in dock.infos)
    left = list(dock.out.rglob("*")) if dock.out.exists() else []
    assert not [p for p in left if p.name.endswith(("_manifest.json", "_prob.zarr",
                                                     "_labels.zarr"))], left
    assert not left, left  # the temporary stores and the scratch were removed too


def test_no_folder_says_so_and_runs_nothing(dock):
    dock.widget.output.budget.value = 0.001
    assert dock.widget.output.folder_path() is None  # an in-memory layer has no file
    before = [layer.name for layer in dock.viewer.layers]
    assert dock.widget.segment() is None
    assert dock.widget.job is None and "output folder" in dock.messages[-1]
    assert "not started" in dock.widget.progress_text.value
    assert [layer.name for layer in dock.viewer.layers] == before


def test_a_classical_model_over_the_budget_is_refused(dock):
    _out_of_core(dock)
    dock.widget.models.model_combo.value = "toy-classical"
    assert "not possible" in dock.widget.output.route.value
    assert dock.widget.segment() is None and "classical" in dock.messages[-1]
    assert not dock.out.exists()


def test_existing_outputs_are_replaced_only_with_consent(dock, qtbot, monkeypatch):
    _out_of_core(dock)
    _run(dock, qtbot)
    manifest = dock.out / "stack_manifest.json"
    written = manifest.read_text()
    first = dock.widget.lazy
    asked: list[list[str]] = []
    answers = [False, True]

    def confirm(_widget, folder, existing):
        asked.append(sorted(p.name for p in existing))
        return answers.pop(0)

    monkeypatch.setattr(SegmentWidget, "confirm_overwrite", confirm)
    names = [layer.name for layer in dock.viewer.layers]
    assert dock.widget.segment() is None  # declined: nothing runs, nothing changes
    assert asked == [["stack_labels.zarr", "stack_manifest.json", "stack_prob.zarr"]]
    assert manifest.read_text() == written and "keep them" in dock.widget.progress_text.value
    assert [layer.name for layer in dock.viewer.layers] == names
    _run(dock, qtbot)  # agreed: replaced, and the layers of the old stores with them
    assert len(asked) == 2 and manifest.read_text() != written
    assert first.labels_layer not in dock.viewer.layers and dock.widget.lazy is not first
    assert len(dock.viewer.layers) == len(names)
    assert any("stores were replaced" in text for text in dock.infos)


def test_a_cancelled_overwrite_keeps_the_earlier_set_and_its_layers(dock, qtbot, monkeypatch):
    _out_of_core(dock)
    _run(dock, qtbot)
    written = {p.name: p.stat().st_mtime_ns for p in dock.out.rglob("*")}
    names = [layer.name for layer in dock.viewer.layers]
    monkeypatch.setattr(SegmentWidget, "confirm_overwrite", lambda *_: True)
    SLOW["seconds"] = 0.05
    STARTED.clear()
    assert dock.widget.segment() is not None
    assert STARTED.wait(20)
    dock.widget.cancel()
    qtbot.waitUntil(lambda: dock.widget.job is None, timeout=10000)
    assert {p.name: p.stat().st_mtime_ns for p in dock.out.rglob("*")} == written
    assert [layer.name for layer in dock.viewer.layers] == names


def test_a_lazy_layer_within_the_budget_runs_a_classical_model_in_memory(dock, qtbot):
    dock.viewer.layers.clear()
    dock.viewer.add_image(da.from_array(_image(), chunks=(8, 48, 48)), name="lazy", scale=SCALE)
    dock.widget.models.model_combo.value = "toy-classical"
    assert "next run: in memory" in dock.widget.output.route.value
    _run(dock, qtbot)
    assert dock.widget.lazy is None and dock.widget.results.current is not None
    assert not dock.out.exists()


def test_the_overwrite_question_names_the_files_and_defaults_to_no(dock, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QMessageBox

    asked = []
    no = QMessageBox.StandardButton.No
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a: asked.append(a) or no))
    assert dock.widget.confirm_overwrite(tmp_path, [tmp_path / "stack_prob.zarr"]) is False
    assert "stack_prob.zarr" in asked[0][2] and str(tmp_path) in asked[0][2] and asked[0][4] == no
