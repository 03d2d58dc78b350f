"""Vessel analysis: the centreline graph and morphometrics of a Labels layer, over the image.

The dock reads the chosen labels (> 0 is vessel; the layer's scale is the voxel size in µm) and
runs :func:`napari_vessel.graph.vessel_graph` in a worker thread with progress and Cancel. The
result is shown as layers on the labels' grid (:mod:`.graph_layers`), a sortable table of
segments and the summary (:mod:`.graph_table`), and histograms of diameter and length
(:mod:`.graph_plot`). After the user edits the labels (brush, Review & refine tools), *Re-analyse*
reads them again and replaces the graph layers. *Export…* writes the files of
:func:`napari_vessel.graph.write_graph` with a manifest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox

from napari_vessel._qt._common import OUTPUT_KEY, group_box, notify_error, show_info, start_worker
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.graph_export import OUTPUT_FILES, ask_folder, confirm_replace, existing_files, versions
from napari_vessel._qt.graph_layers import GraphLayers, Grid, centre_on
from napari_vessel._qt.graph_table import ResultsPanel
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.runner import DockRunner, RunnerMixin
from napari_vessel.errors import InputError
from napari_vessel.graph import GraphParams, vessel_graph, write_graph
from napari_vessel.io.volume import check_spacing, is_lazy

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["GraphWidget", "read_labels"]

_DEFAULT = GraphParams()


def read_labels(layer: Any) -> tuple[Any, Grid, str | None]:
    """What the graph needs from a Labels layer, read on the GUI thread.

    Returns the vessel mask (a boolean copy of an in-memory array, so painting during the run
    changes nothing; a lazy array as it is), the layer's grid (name, scale = voxel size in µm,
    translation) and its file, if any. Raises :class:`InputError` saying what to do.
    """
    if layer is None:
        raise InputError("no labels layer: segment a stack first (Segment dock) or open vessel "
                         "labels (File > Open), then choose them here")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim != 3:
        what = "a 2D image" if data.ndim == 2 else f"{data.ndim} dimensions"
        raise InputError(f"'{layer.name}' has {what}; the vessel graph needs a 3D label stack "
                         "(z, y, x): choose one, or open the whole stack")
    spacing = check_spacing(tuple(layer.scale)[-3:], 3)
    mask = data if is_lazy(data) else np.greater(data, 0)
    path = getattr(getattr(layer, "source", None), "path", None)
    return mask, Grid(layer.name, spacing, tuple(layer.translate)[-3:]), str(path) if path else None


class GraphWidget(RunnerMixin, ScrollDock):
    """The vessel graph of a Labels layer: layers, table, summary, histograms and export.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    graph : VesselGraph or None
        The graph shown.
    grid : Grid or None
        The grid of the labels it came from.
    shown : GraphLayers
        Its layers in the viewer.
    results : ResultsPanel
        The summary, the table of segments (also ``table``) and the histograms.
    runner : DockRunner
        Runs the analysis: buttons, progress, Cancel, errors.
    job, export_job : Job or None
        The running analysis / export.
    stale : bool
        The labels were edited after the graph shown was made.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.graph: Any = None
        self.grid: Grid | None = None
        self.export_job: Any = None
        self.stale = False
        self.manifest: dict[str, Any] = {}
        self.shown = GraphLayers(napari_viewer)
        self._watched: Any = None  # the labels layer whose edits are followed
        self._source: Any = None  # the labels layer of the graph shown
        self._edits = 0

        self.layer_combo = LayerCombo(napari_viewer, self._labels_layers, label="labels",
                                      status=self._status)
        self.layer_combo.tooltip = "vessel labels (> 0 is vessel); the layer's scale is the voxel size"
        self.layer_note = Label(value="")
        self.prune = FloatSpinBox(label="prune (µm)", value=_DEFAULT.prune_um, min=0.0, max=500.0,
                                  step=0.5)
        self.prune.tooltip = (
            "remove end branches (spurs) that reach less than this beyond the wall of the vessel "
            "they leave: thinning grows such spurs from bumps in the mask. At 0 only spurs "
            "longer than the vessel's radius are kept")
        self.min_piece = SpinBox(label="min piece (voxels)", value=_DEFAULT.min_object_voxels,
                                 min=0, max=10**9, step=10)
        self.min_piece.tooltip = ("vessel pieces (26-connected) with fewer voxels are left out of "
                                  "the graph (0 keeps every piece)")
        self.fill = FloatSpinBox(label="fill cavities (µm³)", value=_DEFAULT.fill_cavities_um3,
                                 min=0.0, max=1e9, step=100.0)
        self.fill.tooltip = ("background pockets enclosed in the vessels up to this volume are "
                             "filled before thinning (a hole in a thick vessel would become "
                             "loops and extra segments); 0 fills none")
        self.analyse_button = PushButton(text="Analyse")
        self.analyse_button.tooltip = (
            "measure the vessel graph of the chosen labels. Re-analyse reads the current labels "
            "again (after brush edits or the Review & refine tools) and replaces the graph layers; "
            "about 3 s for a 25 × 512 × 512 stack")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.export_button = PushButton(text="Export…", enabled=False)
        self.export_button.tooltip = ("write segments.csv, nodes.csv, graph.graphml and "
                                      "summary.json (voxel size, parameters, versions) to a folder")
        self.progress = ProgressBar(min=0, max=1000, value=0, visible=False)
        self.status = Label(value="")
        self.results = ResultsPanel(self.centre_on_segment)
        self.table = self.results.table

        inputs = Container(widgets=[self.layer_combo, self.layer_note, self.prune,
                                    self.min_piece, self.fill], labels=True)
        buttons = Container(widgets=[self.analyse_button, self.cancel_button, self.export_button],
                            layout="horizontal", labels=False)
        layout = self.content.layout()
        layout.addWidget(group_box("Labels", inputs))
        for part in (buttons, self.progress, self.status):
            layout.addWidget(part.native)
        layout.addWidget(self.results)
        layout.addStretch(1)
        self.native.setMinimumWidth(360)
        self._parts = (inputs, buttons)
        for label in (self.layer_note, self.status):
            label.native.setWordWrap(True)

        self.runner = DockRunner(
            buttons=(self.analyse_button, self.export_button), cancel_button=self.cancel_button,
            progress=self.progress, status=self.status, notify=self._notify, info=self._info,
            on_idle=self._idle)
        self.layer_combo.changed.connect(self._choice_changed)
        self.analyse_button.changed.connect(lambda *_: self.analyse())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        self.export_button.changed.connect(lambda *_: self.export())
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._reset_choices)
        self._reset_choices()

    @staticmethod
    def _notify(err: Any) -> None:
        notify_error(err)  # looked up at call time, so tests can capture it

    @staticmethod
    def _info(text: str) -> None:
        show_info(text)

    def _status(self, text: str) -> None:
        self.status.value = text

    # ------------------------------------------------------------------------------- input
    def _labels_layers(self, _widget: Any = None) -> list:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Labels) and OUTPUT_KEY not in layer.metadata]

    def _reset_choices(self, _event: Any = None) -> None:
        self.layer_combo.reset_choices()  # keeps the chosen layer object (see LayerCombo)
        self._choice_changed()

    def _choice_changed(self, _value: Any = None) -> None:
        layer = self.layer_combo.value
        if layer is None:
            self.layer_note.value = "no labels layer: segment or open vessel labels first"
            return
        scale = tuple(layer.scale)[-3:]
        text = f"{layer.ndim}D, voxel size {' × '.join(f'{s:g}' for s in scale)} µm (the layer's scale)"
        if all(s == 1 for s in scale):
            text += "; napari's default: if the voxels are not 1 µm, set the layer's scale"
        self.layer_note.value = text

    # --------------------------------------------------------------------------------- run
    def analyse(self) -> Any:
        """Measure the graph of the chosen labels in a worker; returns the job, or None (notified)."""
        if self.runner.refuse("an analysis is already running; wait for it or press Cancel"):
            return None
        layer = self.layer_combo.value
        try:
            mask, grid, path = read_labels(layer)
            params = GraphParams(prune_um=float(self.prune.value),
                                 min_object_voxels=int(self.min_piece.value),
                                 fill_cavities_um3=float(self.fill.value))
        except InputError as err:
            self._notify(err)
            return None
        self._watch(layer)
        edits, started = self._edits, time.perf_counter()

        def work(progress: Any, cancel: Any) -> Any:
            return vessel_graph(mask, grid.scale, params, progress=progress, cancel=cancel)

        def done(graph: Any) -> None:
            self._show(graph, grid, layer, path, time.perf_counter() - started)
            if self.graph is not None and self._edits != edits:  # painted while it ran
                self._mark_stale()

        return self.runner.start(work, done, starting="reading the labels…",
                                 on_cancelled=self._not_shown, on_failed=self._not_shown)

    def cancel(self) -> None:
        """Stop the running analysis; nothing is added and the graph shown stays."""
        self.runner.cancel()

    def _idle(self) -> None:
        self.export_button.enabled = self.graph is not None

    def _show(self, graph: Any, grid: Grid, layer: Any, path: str | None, seconds: float) -> None:
        if not graph.segments:  # nothing to draw: the graph of these labels is empty
            self.shown.remove()
            self._set_graph(None, None)
            text = f"'{grid.name}': {graph.summary.note or 'no vessel segment found'}"
            self.status.value = text
            self._notify(text)
            return
        self.shown.show(graph, grid)
        self._set_graph(graph, grid, seconds)
        self._source = layer
        self.manifest = {"made_by": "napari-vessel Vessel analysis dock",
                         "labels_layer": grid.name, "labels_file": path,
                         "voxel_size_um": list(grid.scale), "translate": list(grid.translate),
                         "params": graph.params.to_dict(), "seconds": round(seconds, 3)}
        s = graph.summary
        self.status.value = (f"{s.n_segments} segments, {s.n_junctions} junctions, total length "
                             f"{s.total_length_um:.1f} µm ({seconds:.1f} s)")
        self.analyse_button.text = "Re-analyse"

    def _set_graph(self, graph: Any, grid: Grid | None, seconds: float | None = None) -> None:
        self.graph, self.grid, self.stale = graph, grid, False
        self.results.show_graph(graph, seconds)
        if graph is None:
            self._source = None

    def _watch(self, layer: Any) -> None:
        """Follow the edits of the analysed labels (the graph shown is then out of date)."""
        if self._watched is not None:
            for event in (self._watched.events.paint, self._watched.events.data):
                event.disconnect(self._edited)
        self._watched = layer
        if layer is not None:
            for event in (layer.events.paint, layer.events.data):
                event.connect(self._edited)

    def _edited(self, _event: Any = None) -> None:
        self._edits += 1
        if self.job is None and self.graph is not None:
            self._mark_stale()

    def _mark_stale(self) -> None:
        self.stale = True
        self.status.value = "the labels were edited: press Re-analyse to update the graph"

    def _not_shown(self, _err: Any = None) -> None:
        self._watch(self._source)  # the graph shown is still that of its own labels

    # --------------------------------------------------------------------------- the table
    def centre_on_segment(self, segment: Any) -> np.ndarray | None:
        """Centre the view (camera and slice) on the middle point of ``segment``."""
        if self.grid is None:
            return None
        middle = segment.path[len(segment.path) // 2]
        return centre_on(self.viewer, self.grid, middle)

    # ------------------------------------------------------------------------------ export
    def export(self, folder: str | Path | None = None, *, overwrite: bool | None = None) -> Any:
        """Write the graph's files to ``folder`` (asked for when None) in a worker.

        An earlier set of graph files there is replaced only when ``overwrite`` is True or, when
        it is None, when the user confirms. Returns the job, or None (notified).
        """
        if self.graph is None:
            self._notify("nothing to export yet: press Analyse first")
            return None
        if self.export_job is not None:
            self._notify("an export is already running; wait for it")
            return None
        out = ask_folder(self.native) if folder is None else Path(folder)
        if out is None:
            return None
        existing = existing_files(out)
        if existing and overwrite is None:
            overwrite = confirm_replace(self.native, out, existing)
        if existing and not overwrite:
            self.status.value = f"not exported: {out} already holds a vessel graph"
            self._notify(f"{out} already holds {', '.join(existing)}; choose another folder or "
                         "confirm replacing them")
            return None
        graph = self.graph
        manifest = {**self.manifest, "labels_edited_after_analysis": self.stale,
                    "versions": versions()}

        def work(progress: Any, cancel: Any) -> Any:
            return write_graph(graph, out, manifest, overwrite=bool(overwrite))

        def done(_paths: Any) -> None:
            self.status.value = f"exported {', '.join(OUTPUT_FILES)} to {out}"
            self._info(self.status.value)

        def failed(err: BaseException) -> None:
            self.status.value = "export failed (see the message); no file was replaced"
            self._notify(err)

        def finished() -> None:
            self.export_job = None

        self.export_job = start_worker(work, on_done=done, on_error=failed, on_finished=finished)
        return self.export_job
