"""The Vessel analysis dock in a real viewer: graph layers, table, summary, edits, cancel, export."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import Qt

import napari_vessel._qt.graph_widget as module
from napari_vessel._qt._common import OUTPUT_KEY
from napari_vessel._qt.graph_widget import GraphWidget
from napari_vessel.data.tubes import draw_tubes
from napari_vessel.graph import OUTPUT_FILES

SHAPE = (24, 64, 64)
SCALE = (2.0, 1.0, 1.0)
TRANSLATE = (0.0, 5.0, -3.0)
#: A Y of tubes (start z, y, x, end z, y, x, radius; µm): a stem and two arms through z.
Y_TUBES = [[24, 32, 4, 24, 32, 30, 3], [24, 32, 30, 10, 12, 58, 3], [24, 32, 30, 38, 52, 58, 3]]
#: A branch painted off the stem later, down to z = 40 µm.
BRANCH = [[24, 32, 16, 40, 60, 16, 2.5]]


def tubes(rows, shape=SHAPE) -> np.ndarray:
    return draw_tubes(shape, np.asarray(rows, float), SCALE)[0].astype(np.uint8)


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    """Viewer with the Y as labels (scale 2 × 1 × 1 µm, translated) and the dock; messages kept."""
    errors: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(module, "notify_error", lambda err: errors.append(str(err)))
    monkeypatch.setattr(module, "show_info", lambda text: infos.append(str(text)))
    viewer = make_napari_viewer()
    labels = viewer.add_labels(tubes(Y_TUBES), name="vessels", scale=SCALE, translate=TRANSLATE)
    widget = GraphWidget(viewer)
    return SimpleNamespace(viewer=viewer, widget=widget, labels=labels, errors=errors, infos=infos)


def _finish(qtbot, widget, timeout=30000):
    qtbot.waitUntil(lambda: widget.job is None and widget.export_job is None, timeout=timeout)


def _graph_layers(viewer) -> list:
    return [layer for layer in viewer.layers if OUTPUT_KEY in layer.metadata]


def _analyse(setup, qtbot):
    assert setup.widget.analyse() is not None
    _finish(qtbot, setup.widget)
    assert not setup.errors, setup.errors
    return setup.widget.graph


def test_analyse_shows_the_graph_table_and_summary_and_centres_on_a_row(setup, qtbot):
    widget, viewer = setup.widget, setup.viewer
    before = setup.labels.data.copy()
    assert widget.layer_combo.value is setup.labels and "2 × 1 × 1 µm" in widget.layer_note.value
    graph = _analyse(setup, qtbot)
    assert len(graph.segments) == 3 and graph.spacing_zyx == SCALE
    layers = _graph_layers(viewer)
    assert [layer.metadata["graph_role"] for layer in layers] == ["centrelines", "junctions", "ends"]
    for layer in layers:
        assert tuple(layer.scale) == SCALE and tuple(layer.translate) == TRANSLATE
    vectors, junctions, ends = layers
    assert len(junctions.data) + len(ends.data) == len(graph.nodes) == 4
    assert len(junctions.data) == 1 and list(junctions.features["degree"]) == [3]
    assert set(vectors.features["segment_id"]) == {0, 1, 2}
    assert len(vectors.data) == sum(len(s.path) - 1 for s in graph.segments)
    # the user's labels are untouched and stay selected (painting can go on)
    assert np.array_equal(setup.labels.data, before) and viewer.layers[0] is setup.labels
    assert viewer.layers.selection.active is setup.labels
    # table, summary, histograms
    assert widget.table.rowCount() == 3
    text = widget.results.summary.text()
    assert f"{graph.summary.total_length_um:.1f} µm" in text and "incorrect bifurcations" in text
    assert widget.results.diameters.counts.sum() == 3 and widget.results.lengths.counts.sum() == 3
    assert widget.analyse_button.text == "Re-analyse" and widget.export_button.enabled
    # sorting is numeric; a picked row moves the camera and the slice to its middle voxel
    widget.table.sortItems(1, order=Qt.SortOrder.DescendingOrder)
    longest = max(graph.segments, key=lambda s: s.length_um)
    assert widget.table.segment_at(0) is longest
    seg = widget.table.pick_row(2)
    middle = seg.path[len(seg.path) // 2]
    world = np.asarray(TRANSLATE) + np.asarray(SCALE) * middle
    assert viewer.dims.current_step[0] == round(middle[0])
    assert np.allclose(viewer.scene.camera.center[-2:], world[1:])
    rect = widget.table.visualItemRect(widget.table.item(1, 3))  # a real click on a cell
    qtbot.mouseClick(widget.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    seg = widget.table.segment_at(1)
    assert widget.table.currentRow() == 1 and seg is not longest
    assert viewer.dims.current_step[0] == round(seg.path[len(seg.path) // 2][0])
    viewer.dims.ndisplay = 3
    widget.table.pick_row(0)
    middle = longest.path[len(longest.path) // 2]
    assert np.allclose(viewer.scene.camera.center, np.asarray(TRANSLATE) + np.asarray(SCALE) * middle)


def test_reanalyse_after_an_edit_replaces_the_layers(setup, qtbot):
    widget, viewer = setup.widget, setup.viewer
    _analyse(setup, qtbot)
    first = _graph_layers(viewer)
    branch = np.nonzero(tubes(BRANCH) & (setup.labels.data == 0))
    setup.labels.data_setitem(branch, 1)  # a brush-like edit: one undo step
    assert widget.stale and "Re-analyse" in widget.status.value
    graph = _analyse(setup, qtbot)
    assert len(graph.segments) == 5 and graph.summary.n_junctions == 2 and not widget.stale
    layers = _graph_layers(viewer)
    assert layers == first and len(viewer.layers) == 4  # the same three layers, updated
    vectors, junctions, ends = layers
    assert set(vectors.features["segment_id"]) == set(range(5))
    assert len(vectors.data) == len(vectors.edge_color) == sum(len(s.path) - 1 for s in graph.segments)
    assert len(junctions.data) == 2 and len(ends.data) == 4 and widget.table.rowCount() == 5
    # a graph layer the user deleted comes back; the others are not doubled
    viewer.layers.remove(junctions)
    setup.labels.undo()
    graph = _analyse(setup, qtbot)
    assert len(graph.segments) == 3 and len(_graph_layers(viewer)) == 3 and len(viewer.layers) == 4
    assert [layer.name for layer in _graph_layers(viewer)] == [
        "vessels centrelines", "vessels junctions", "vessels end points"]


def test_cancel_stops_within_a_second_and_adds_nothing(setup, qtbot):
    from napari_vessel.data.phantom import make_phantom

    widget, viewer = setup.widget, setup.viewer
    phantom = make_phantom((48, 256, 256), seed=1, noise=False)
    big = viewer.add_labels(phantom.labels, name="phantom", scale=phantom.spacing_zyx)
    widget.layer_combo.value = big
    names = [layer.name for layer in viewer.layers]
    assert widget.analyse() is not None and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 300, timeout=30000)  # thinning
    start = time.perf_counter()
    widget.cancel()
    _finish(qtbot, widget)
    assert time.perf_counter() - start < 1.5
    assert [layer.name for layer in viewer.layers] == names and widget.graph is None
    assert "cancelled" in setup.infos[-1] and not setup.errors
    assert widget.analyse_button.enabled and not widget.cancel_button.enabled


def test_bad_input_says_what_to_do_and_adds_nothing(setup, qtbot, make_napari_viewer):
    widget, viewer = setup.widget, setup.viewer
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="empty", scale=SCALE)
    widget.layer_combo.value = viewer.layers["empty"]
    assert widget.analyse() is not None
    _finish(qtbot, widget)
    assert "no vessel" in setup.errors[-1] and not _graph_layers(viewer)
    viewer.add_labels(np.ones((64, 64), np.uint8), name="flat")
    widget.layer_combo.value = viewer.layers["flat"]
    assert widget.analyse() is None and "2D" in setup.errors[-1]
    assert widget.export() is None and "Analyse first" in setup.errors[-1]
    other = GraphWidget(make_napari_viewer())  # no labels layer at all
    assert other.analyse() is None and "no labels layer" in setup.errors[-1]
    assert len(viewer.layers) == 3 and not _graph_layers(viewer)


def test_export_writes_the_four_files_and_asks_before_replacing(setup, qtbot, tmp_path, monkeypatch):
    widget = setup.widget
    graph = _analyse(setup, qtbot)
    out = tmp_path / "graph"
    monkeypatch.setattr(module, "ask_folder", lambda parent: None)  # the user closed the chooser
    assert widget.export() is None and not out.exists()
    monkeypatch.setattr(module, "ask_folder", lambda parent: out)
    assert widget.export() is not None
    _finish(qtbot, widget)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    manifest = summary["manifest"]
    assert manifest["labels_layer"] == "vessels" and manifest["voxel_size_um"] == list(SCALE)
    assert manifest["params"]["prune_um"] == widget.prune.value
    assert manifest["params"]["fill_cavities_um3"] == widget.fill.value == 1000.0
    assert {"napari-vessel", "napari", "skan", "networkx"} <= set(manifest["versions"])
    assert summary["summary"]["n_segments"] == len(graph.segments)
    assert len((out / "segments.csv").read_text().splitlines()) == 1 + len(graph.segments)
    stamp = (out / "summary.json").stat().st_mtime_ns
    asked = []
    monkeypatch.setattr(module, "confirm_replace", lambda *args: asked.append(args[1]) or False)
    assert widget.export() is None and asked == [out]  # asked, and the user said no
    assert widget.export(out, overwrite=False) is None
    assert "already holds" in setup.errors[-1] and (out / "summary.json").stat().st_mtime_ns == stamp
    monkeypatch.setattr(module, "confirm_replace", lambda *args: True)
    assert widget.export() is not None
    _finish(qtbot, widget)
    assert "exported" in setup.infos[-1] and (out / "summary.json").stat().st_mtime_ns != stamp


def test_a_failed_status_is_replaced_by_the_next_successful_run(setup, qtbot, monkeypatch):
    original = module.vessel_graph

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "vessel_graph", failing)
    widget = setup.widget
    assert widget.analyse() is not None
    _finish(qtbot, widget)
    assert widget.status.value == "failed: RuntimeError: boom"
    monkeypatch.setattr(module, "vessel_graph", original)
    widget.analyse_button.clicked.emit()
    assert not widget.status.value.startswith("failed")  # the old failure is gone at once
    _finish(qtbot, widget)
    assert widget.graph is not None and "segments" in widget.status.value
