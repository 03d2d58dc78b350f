"""The Segment dock's out-of-core path: when a stack is written block by block to OME-Zarr.

A stack whose in-memory segmentation would need more than the dock's *memory budget* (default half
the memory available when napari started), or an image layer that is itself lazy (a multiscale
pyramid or a dask / Zarr array read from disk), is segmented with
:func:`napari_vessel.inference.out_of_core.segment_to_zarr` into an output folder instead of in memory:
``NAME_prob.zarr``, ``NAME_labels.zarr`` (OME-Zarr pyramids) and ``NAME_manifest.json``, published
together. The results come back as lazy (multiscale) layers read from the written stores by the
plugin's reader (:func:`napari_vessel._napari.reader.read_stack`), so the dock never holds the
whole map either.

This module holds the dock's *Output* group (:class:`OutOfCorePanel`: budget, folder, which path
the next run takes and why), the helpers that choose the path and add the lazy layers
(:func:`choose_path`, :func:`add_lazy_layers`) and the dock's methods for such runs
(:class:`OutOfCoreRuns`). The core is called in the dock's worker.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, FileEdit, FloatSpinBox, Label

from napari_vessel._qt._common import name_metadata, output_name
from napari_vessel._qt.segment_input import layer_volume
from napari_vessel._qt.segment_results import ROLE_KEY, RunInput, level_text
from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.inference.out_of_core import BYTES_PER_VOXEL, needs_out_of_core, segment_to_zarr
from napari_vessel.io.common import file_stem
from napari_vessel.io.outputs import check_writable, output_paths
from napari_vessel.io.volume import Volume, is_lazy
from napari_vessel.manifest import RunManifest
from napari_vessel.models.registry import ModelSpec

__all__ = ["default_budget_gb", "is_lazy_layer", "default_folder", "output_stem",
           "split_window_options", "Route", "choose_path", "existing_outputs", "LazyOutput",
           "add_lazy_layers", "OutOfCorePanel", "OutOfCoreRuns", "STORE_KEY", "LAZY_TIP"]

#: ``metadata[STORE_KEY]`` of a lazy output layer: the store it reads.
STORE_KEY = "napari_vessel_store"

#: The threshold slider's tooltip while the current result was written out of core.
LAZY_TIP = ("the current result was written out of core and is read lazily from disk: "
            "redrawing it at another threshold would read and rewrite the whole map, so the "
            "slider and the minimum size set the next run only (press Segment to apply them)")


def default_budget_gb() -> float:
    """Half of the memory available now, in GB (8 GB when the system does not tell)."""
    try:
        import psutil

        available = float(psutil.virtual_memory().available)
    except (ImportError, OSError, AttributeError):
        return 8.0
    return max(0.1, round(available / 2e9, 1))


def is_lazy_layer(layer: Any) -> bool:
    """True for a multiscale layer or one whose data is not an in-memory NumPy array (dask, Zarr):
    the data stays on disk, so the dock does not load it to segment it."""
    if layer is None:
        return False
    return bool(getattr(layer, "multiscale", False)) or is_lazy(layer.data)


def split_window_options(run: dict[str, Any]) -> tuple[WindowOptions, dict[str, Any]]:
    """A run's keywords as the sliding window's settings and the rest.

    Parameters
    ----------
    run : dict
        Keyword arguments of a run as the dock reads them (``overlap``, ``tta``, ``device``,
        ``threshold``, ``min_size``, ...).

    Returns
    -------
    options : WindowOptions
        The window settings among them (checked by
        :func:`~napari_vessel.inference.options.window_options`).
    rest : dict
        The other keywords, unchanged.
    """
    names = {f.name for f in fields(WindowOptions)}
    options = window_options(**{k: v for k, v in run.items() if k in names})
    return options, {k: v for k, v in run.items() if k not in names}


def output_stem(source: RunInput) -> str:
    """The outputs' name: the image file's name without its ending, else the layer name made
    safe for a file name."""
    if source.image_path:
        return file_stem(source.image_path)
    return re.sub(r"[^\w.+-]+", "_", source.name).strip("._") or "stack"


def default_folder(source: RunInput) -> Path | None:
    """``STEM_segmentation`` next to the image file, or None when the layer has no file."""
    if not source.image_path:
        return None
    path = Path(source.image_path)
    return path.parent / f"{output_stem(source)}_segmentation"


@dataclass(frozen=True)
class Route:
    """Which path a run takes and why (for the dock's status)."""

    out_of_core: bool
    reason: str


def _gb(voxels: int) -> str:
    return f"{voxels * BYTES_PER_VOXEL / 1e9:.3g} GB"


def choose_path(shape: Any, lazy: bool, spec: Any, budget_gb: float) -> Route:
    """Out of core when segmenting ``shape`` in memory needs more than ``budget_gb``, or when
    the layer is ``lazy`` and the model is a network (a classical model needs the whole stack in
    memory: a lazy stack within the budget is then loaded).

    Parameters
    ----------
    shape : tuple of int
        The stack's shape (z, y, x).
    lazy : bool
        The layer's data stays on disk (see :func:`is_lazy_layer`).
    spec : ModelSpec or None
        The model (None: not known yet, taken as a network).
    budget_gb : float
        The dock's memory budget.

    Returns
    -------
    Route

    Raises
    ------
    InputError
        The stack is over the budget and the model is classical (it cannot run out of core).
    """
    voxels = int(np.prod(shape))
    network = spec is None or spec.is_network
    if needs_out_of_core(shape, budget_gb):
        reason = f"{_gb(voxels)} to segment in memory > {budget_gb:g} GB budget"
        if not network:
            raise InputError(f"{reason}, and {spec.name} is a classical model that needs the "
                             "whole stack in memory: choose a network model or raise the memory "
                             "budget")
        return Route(True, reason)
    if lazy and network:
        return Route(True, "the image is read lazily from disk (multiscale or Zarr)")
    return Route(False, f"{_gb(voxels)} ≤ {budget_gb:g} GB budget"
                 + (" (classical model: the lazy image is loaded)" if lazy else ""))


def existing_outputs(stem: str, folder: Path) -> list[Path]:
    """The outputs of ``stem`` already in ``folder`` (a run would replace them)."""
    return [p for p in output_paths(stem, folder, zarr=True).values() if p.exists()]


@dataclass
class LazyOutput:
    """One out-of-core run's layers (read lazily from ``folder``) and its manifest."""

    source: RunInput
    model: str
    folder: Path
    manifest: RunManifest
    prob_layer: Any
    labels_layer: Any


def _read(path: str) -> tuple[Any, dict]:
    """A store's data (a lazy array, or a list of them for a pyramid) and layer attributes, as
    the plugin's reader opens it."""
    from napari_vessel._napari.reader import read_stack

    data, attributes, _kind = read_stack(path)[0]
    return data, attributes


def add_lazy_layers(viewer: Any, manifest: RunManifest, source: RunInput, threshold: float,
                    min_size: int) -> tuple[LazyOutput, list[str]]:
    """Add the probability and labels of an out-of-core run as lazy layers read from its stores.

    Layers of an earlier run that read the same stores (just replaced, with consent) are removed
    first. Both layers are added or neither.

    Returns
    -------
    output : LazyOutput
    removed : list of str
        Names of the earlier layers removed.
    """
    model = manifest.model.name
    stores = {role: str(manifest.outputs[role]) for role in ("prob", "labels")}
    read = {role: _read(path) for role, path in stores.items()}  # before touching the viewer
    layers = viewer.layers
    removed = [layer.name for layer in list(layers) if layer.metadata.get(STORE_KEY)
               in stores.values()]
    for name in removed:
        layers.remove(name)
    common = {"source_layer": source.name, "model": model, "manifest": manifest,
              "out_of_core": True, "threshold": float(threshold), "min_size": int(min_size)}
    if source.image_path:
        common["image_path"] = source.image_path
    grid = {"scale": source.scale, "translate": source.translate}
    made: list[Any] = []
    try:
        for role, suffix in (("prob", f"probability ({model})"), ("labels", f"vessels ({model})")):
            data, attributes = read[role]
            metadata = {**attributes["metadata"], **common, **name_metadata(source.name, suffix),
                        ROLE_KEY: "probability" if role == "prob" else "labels",
                        STORE_KEY: stores[role]}
            kwargs = {"name": output_name(source.name, suffix, layers), "metadata": metadata,
                      "multiscale": bool(attributes.get("multiscale")), **grid}
            if role == "prob":
                made.append(viewer.add_image(data, colormap="magma", blending="additive",
                                             contrast_limits=(0.0, 1.0), visible=False,
                                             **kwargs))
            else:
                made.append(viewer.add_labels(data, opacity=0.6, **kwargs))
    except Exception:
        for layer in made:  # nothing half-added
            if layer in layers:
                layers.remove(layer)
        raise
    return LazyOutput(source, model, Path(stores["prob"]).parent, manifest, *made), removed


class OutOfCorePanel(Container):
    """The dock's *Output* group: the memory budget, the output folder, and the path of the next
    run with its reason.

    Attributes
    ----------
    budget : FloatSpinBox
        GB a run may hold in memory; a larger stack is segmented out of core.
    folder : FileEdit
        Where out-of-core runs write (default next to the image file).
    route : Label
        Which path the next run takes and why.
    """

    def __init__(self) -> None:
        self.budget = FloatSpinBox(label="memory budget", min=0.001, max=100000.0, step=1.0)
        self.budget.native.setDecimals(3)
        self.budget.native.setSuffix(" GB")
        self.budget.value = default_budget_gb()
        self.budget.tooltip = (
            "the most memory a segmentation may use (default: half of what was free at start); "
            f"segmenting in memory needs about {BYTES_PER_VOXEL} bytes per voxel, so a larger "
            "stack, or an image read lazily from disk, is written block by block to OME-Zarr in "
            "the output folder instead")
        self.folder = FileEdit(label="output folder", mode="d")
        self.folder.line_edit.value = ""
        self.folder.tooltip = ("where an out-of-core run writes NAME_prob.zarr, NAME_labels.zarr "
                               "and NAME_manifest.json (default: a folder next to the image file)")
        self.route = Label(label="", value="")
        self.route.native.setWordWrap(True)
        super().__init__(widgets=[self.budget, self.folder, self.route], labels=True)
        self._auto = ""  # the folder last filled in here (replaced when the image changes)

    def folder_path(self) -> Path | None:
        """The chosen folder, or None when the field is empty."""
        text = str(self.folder.line_edit.value).strip()
        return Path(text).expanduser() if text else None

    def set_default_folder(self, source: RunInput | None) -> None:
        """Fill the folder from the image's file unless the user typed or chose one."""
        text = str(self.folder.line_edit.value).strip()
        if text and text != self._auto:
            return
        default = default_folder(source) if source is not None else None
        self._auto = str(default) if default is not None else ""
        self.folder.line_edit.value = self._auto

    def out_folder(self, source: RunInput) -> Path:
        """The folder an out-of-core run writes to, checked (InputError: say what to do)."""
        folder = self.folder_path()
        if folder is None:
            raise InputError(f"'{source.name}' needs an out-of-core run, which writes to disk: "
                             "choose an output folder in the Output group (the layer has no "
                             "file to put the results next to); nothing was run")
        check_writable(folder, "output folder")
        return folder


class OutOfCoreRuns:
    """The Segment dock's out-of-core runs (a mixin of
    :class:`~napari_vessel._qt.segment_widget.SegmentWidget`, which owns the attributes used here).

    Attributes
    ----------
    lazy : LazyOutput or None
        The latest result when it was written out of core (its layers read the stores lazily).
    pyramid_smallest : int or None
        Passed to ``segment_to_zarr`` (None: its default, 256 voxels).
    """

    lazy: LazyOutput | None = None
    pyramid_smallest: int | None = None

    def _route(self, volume: Volume, spec: ModelSpec | None) -> Route:
        """Which path a run of ``volume`` with ``spec`` takes (InputError: it cannot run)."""
        return choose_path(volume.shape, is_lazy_layer(self.layer_combo.value), spec,
                           float(self.output.budget.value))

    def _update_route(self) -> None:
        """Say in the Output group which path the next run takes and why."""
        if not hasattr(self, "output"):
            return
        try:
            volume, _ = layer_volume(self.layer_combo.value)
            route = self._route(volume, self._current_spec())
        except InputError as err:
            self.output.route.value = f"next run: not possible ({err})" if (
                self.layer_combo.value is not None) else ""
            return
        where = ("out of core, to OME-Zarr in the output folder" if route.out_of_core
                 else "in memory")
        self.output.route.value = f"next run: {where} ({route.reason})"

    def _segment_out_of_core(self, volume: Volume, source: RunInput, spec: ModelSpec,
                             options: dict, run: dict, route: Route) -> Any:
        """Start ``segment_to_zarr`` into the output folder; the job, or None when the user
        declined to replace existing outputs (InputError: no folder, not writable)."""
        folder = self.output.out_folder(source)
        stem = output_stem(source)
        existing = existing_outputs(stem, folder)
        if existing and not self.confirm_overwrite(folder, existing):
            self.progress_text.value = (
                f"not started: {', '.join(p.name for p in existing)} already in {folder} and you "
                "chose to keep them; choose another output folder")
            return None
        smallest, where = self.pyramid_smallest, f"{route.reason}: writing to {folder} as OME-Zarr"
        window, rest = split_window_options(run)

        def work(progress: Any, cancel: Any) -> Any:
            def told(fraction: float, message: str = "") -> None:
                progress(fraction, f"{where}\n{message}")

            return segment_to_zarr(volume, folder, spec.name, name=stem, overwrite=bool(existing),
                                   pyramid_smallest=smallest, progress=told, cancel=cancel,
                                   options=window, **rest)

        started, own = time.perf_counter(), run.get("threshold") is None
        return self.runner.start(
            work, lambda result: self._written(result, source, options, started, own=own),
            starting=f"{where}…")

    def confirm_overwrite(self, folder: Any, existing: list) -> bool:
        """Ask before a run replaces earlier outputs in ``folder`` (True: replace them).

        Parameters
        ----------
        folder : Path
            The output folder.
        existing : list of Path
            The outputs of this stack already there.
        """
        from qtpy.QtWidgets import QMessageBox

        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self.native, "napari-vessel",
            f"{', '.join(p.name for p in existing)} already exist in {folder}.\n\nReplace them "
            "with the results of this run? Layers that show them are replaced too.",
            buttons.Yes | buttons.No, buttons.No)
        return answer == buttons.Yes

    def _written(self, manifest: Any, source: RunInput, options: dict, started: float, *,
                 own: bool = False) -> None:
        """The run's end (main thread): lazy layers from its stores, the status, the message.

        With the model's own post-processing the slider shows the level used (``own``; the
        dock's ``_follow_level``)."""
        level = self._follow_level(manifest, options["threshold"], own)
        output, removed = add_lazy_layers(self.viewer, manifest, source, level,
                                          options["min_size"])
        self.lazy = output
        self.results.current = None  # the slider no longer redraws an earlier in-memory result
        seconds = time.perf_counter() - started
        self.progress_text.value = (
            f"{manifest.model.name} on {manifest.device}: written out of core to {output.folder} "
            f"in {seconds:.1f} s{level_text(manifest, ', ')}; the layers read it lazily from disk")
        self._info(f"added '{output.prob_layer.name}' and '{output.labels_layer.name}' (read from "
                   f"{output.folder})" + (f"; removed {', '.join(map(repr, removed))}, whose "
                                          "stores were replaced" if removed else ""))
        self.previews.remove()
        self._update_target()

    def _lazy_current(self) -> LazyOutput | None:
        """The out-of-core result, while it is the latest one and its labels are shown."""
        lazy = self.lazy
        if (lazy is None or self.results.current is not None
                or lazy.labels_layer not in self.viewer.layers):
            return None
        return lazy
