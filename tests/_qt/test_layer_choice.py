"""Every dock keeps its chosen layer (the object, not its name) across renames and new layers.

The bug: after the user renamed the dock's input layer, the next layer added (a result) became the
input. Each dock is docked in a real viewer (so napari's own ``reset_choices`` runs too), its input
chosen, renamed, a result added, then removed: the documented fallback
(:func:`~napari_vessel._qt.layer_choice.first_source`) is chosen and the status says so.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import napari_vessel._qt.layer_choice as module
from napari_vessel._qt._common import name_metadata
from napari_vessel._qt.finetune_widget import FinetuneWidget
from napari_vessel._qt.graph_widget import GraphWidget
from napari_vessel._qt.info_widget import InfoWidget
from napari_vessel._qt.layer_choice import LayerCombo, first_source, is_output, newest
from napari_vessel._qt.preprocess_widget import PreprocessWidget
from napari_vessel._qt.review_widget import ReviewWidget
from napari_vessel._qt.segment_widget import SegmentWidget
from napari_vessel.models import registry

SHAPE = (6, 16, 16)

#: dock -> (class, combo attribute, kind of input layer, status label attribute or None)
DOCKS = {
    "preprocess": (PreprocessWidget, "layer_combo", "image", "progress_text"),
    "segment": (SegmentWidget, "layer_combo", "image", "progress_text"),
    "finetune": (FinetuneWidget, "layer_combo", "image", "status"),
    "graph": (GraphWidget, "layer_combo", "labels", "status"),
    "review": (ReviewWidget, "image_combo", "image", None),
    "info": (InfoWidget, "layer_combo", "image", None),
}


@pytest.fixture(autouse=True)
def infos(tmp_path, monkeypatch) -> list[str]:
    """Notifications of the combo (docks without a status line); no user model folder."""
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "user-models"))
    said: list[str] = []
    monkeypatch.setattr(module, "show_info", lambda text: said.append(str(text)))
    return said


def _add(viewer, kind: str, name: str, **kwargs):
    if kind == "labels":
        return viewer.add_labels(np.zeros(SHAPE, np.uint8), name=name, **kwargs)
    return viewer.add_image(np.random.default_rng(0).random(SHAPE, np.float32), name=name,
                            **kwargs)


def _texts(combo) -> list[str]:
    return [combo.native.itemText(i) for i in range(combo.native.count())]


@pytest.mark.parametrize("dock", list(DOCKS))
def test_the_choice_follows_the_layer_across_rename_insert_and_remove(
        make_napari_viewer, infos, dock):
    cls, attr, kind, status = DOCKS[dock]
    viewer = make_napari_viewer()
    raw = _add(viewer, kind, "raw")
    chosen = _add(viewer, kind, "stack")
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget, name=dock)  # napari's reset_choices runs as well
    combo = getattr(widget, attr)
    combo.value = raw
    combo.value = chosen
    seen: list = []
    combo.changed.connect(seen.append)

    chosen.name = "renamed"
    assert combo.value is chosen
    assert combo.native.currentText() == "renamed"
    assert "stack" not in _texts(combo)

    # a result of the dock (named after its source) arrives: the input stays the renamed layer
    _add(viewer, kind, "renamed result", metadata=name_metadata("renamed", "result"))
    assert combo.value is chosen
    assert combo.native.currentText() == "renamed"
    viewer.layers.move(0, len(viewer.layers))  # reordering keeps it too
    assert combo.value is chosen
    assert seen == []  # nothing changed for the dock

    viewer.layers.remove(chosen)
    assert combo.value is raw  # first_source: the first layer that is not a result
    assert seen == [raw]
    text = getattr(widget, status).value if status else infos[-1]
    assert f"'renamed' was removed; {combo.label.lower()} is now 'raw'" in text.lower()


def test_after_a_removal_with_no_source_left_a_result_is_never_taken(make_napari_viewer, infos):
    viewer = make_napari_viewer()
    stack = _add(viewer, "image", "stack")
    combo = LayerCombo(viewer, lambda: list(viewer.layers), label="image")
    combo.reset_choices()
    assert combo.value is stack  # nothing chosen yet: the newest
    viewer.layers.remove(stack)
    assert combo.value is None
    assert infos == ["'stack' was removed; choose the image"]
    result = _add(viewer, "image", "stack result", metadata=name_metadata("stack", "result"))
    assert combo.value is None  # a result is never taken after a removal
    assert _texts(combo) == ["-----", "stack result"]
    other = _add(viewer, "image", "other")  # a newly opened stack is, and the status says so
    assert combo.value is other
    assert infos[-1] == "image is now 'other'"
    combo.value = result  # the user's choice, whatever layer it is, is kept
    other.name = "zzz"
    _add(viewer, "image", "new")
    assert combo.value is result
    assert _texts(combo) == ["-----", "stack result", "zzz", "new"]


def test_a_layer_that_no_longer_qualifies_is_said_too(make_napari_viewer, infos):
    viewer = make_napari_viewer()
    raw = _add(viewer, "image", "raw")
    stack = _add(viewer, "image", "stack")
    said: list[str] = []
    combo = LayerCombo(viewer, lambda: [layer for layer in viewer.layers if layer.visible],
                       label="image", status=said.append, fallback=newest)
    combo.reset_choices()
    assert combo.value is stack
    stack.visible = False
    combo.reset_choices()
    assert combo.value is raw
    assert said == ["'stack' can no longer be used; image is now 'raw'"]
    assert infos == []


def test_the_default_picks():
    plain, result = SimpleNamespace(metadata={}), SimpleNamespace(
        metadata=name_metadata("a", "b"))
    derived = SimpleNamespace(metadata={"napari_vessel_output": "mip"})
    assert [is_output(layer) for layer in (plain, result, derived)] == [False, True, True]
    assert first_source([result, derived, plain]) is plain
    assert first_source([result]) is None
    assert newest([plain, result]) is result
    assert newest([]) is None
