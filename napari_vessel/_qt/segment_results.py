"""The output layers of the Segment dock: adding them, reusing them, and never losing edits.

A run gives a probability Image layer and a Labels layer. The labels are redrawn from the stored
probability when the threshold or the minimum size changes (no model rerun), but only while the
user has not edited them. An edit is noticed two ways:

- events: ``paint`` (a finished stroke, fill or ``data_setitem``), ``labels_update`` (each step of
  a drag) and ``data`` (the array replaced) that this module did not cause set
  ``metadata["edited"] = True``. (``set_data`` is not used: napari sends it for every slider move.)
- content: a digest of the labels as last written; an edit made without events (``layer.data[...]
  = 1`` in the console) still changes it.

Edited labels are never overwritten: a new threshold then goes to a new labels layer, and a new
run of the same model on the same image makes new layers too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_vessel._qt._common import name_metadata, output_name
from napari_vessel.manifest import RunManifest
from napari_vessel.postprocess.labels import Postprocessing
from napari_vessel.postprocess.level import LevelRule

__all__ = ["ROLE_KEY", "RunInput", "LabelsTracker", "SegmentOutput", "SegmentResults",
           "level_text"]

#: ``metadata[ROLE_KEY]`` of the output layers: "probability" or "labels".
ROLE_KEY = "napari_vessel_segment"


def _digest(data: Any) -> str:
    array = np.ascontiguousarray(np.asarray(data))
    return hashlib.blake2b(array.view(np.uint8).ravel(), digest_size=16).hexdigest() + str(
        array.shape) + str(array.dtype)


def level_text(manifest: RunManifest, prefix: str = "") -> str:
    """How a model card's level rule chose the run's level, e.g. ``"level 0.43 from the vessel
    fraction (20.1 % above 0.5)"`` (after ``prefix``); "" when no rule chose it."""
    note = (manifest.parameters.postprocessing or {}).get("level_from")
    if not isinstance(note, dict):
        return ""
    rule = note.get("rule") or {}
    fraction = float(note["fraction"])
    held = "; held at the fitted range's end" if rule and LevelRule.from_dict(rule).held(
        fraction) else ""
    whose = "this slab's" if getattr(manifest, "preview", None) is not None else "the"
    return (f"{prefix}level {float(manifest.parameters.threshold):.2f} from {whose} vessel "
            f"fraction ({100 * fraction:.1f} % above {float(rule.get('probe', 0.5)):g}{held})")


@dataclass(frozen=True)
class RunInput:
    """Where a run's input came from, so its outputs can be placed on the same grid.

    Parameters
    ----------
    name : str
        The image layer's name (output names start with it).
    scale, translate : tuple of 3 float
        The image layer's scale (the voxel size) and translation.
    image_path : str, optional
        The file the image was read from, when known.
    """

    name: str
    scale: tuple
    translate: tuple
    image_path: str | None = None


class LabelsTracker:
    """Watches a Labels layer and writes to it only while nobody else has.

    Parameters
    ----------
    layer : napari.layers.Labels
        The output labels; ``metadata["edited"]`` is set to False here.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._writing = False
        self._digest = _digest(layer.data)
        layer.metadata["edited"] = False
        events = layer.events
        for event in (events.paint, events.labels_update, events.data):
            event.connect(self._changed)

    def close(self) -> None:
        """Stop watching (the layer keeps its ``edited`` flag)."""
        events = self.layer.events
        for event in (events.paint, events.labels_update, events.data):
            event.disconnect(self._changed)

    def _changed(self, _event: Any = None) -> None:
        if not self._writing:
            self.layer.metadata["edited"] = True

    @property
    def edited(self) -> bool:
        """True when the labels differ from what was last written here, or edit events came."""
        if self.layer.metadata.get("edited"):
            return True
        if _digest(self.layer.data) != self._digest:
            self.layer.metadata["edited"] = True
            return True
        return False

    def write(self, labels: np.ndarray) -> None:
        """Replace the layer's data (not counted as an edit)."""
        self._writing = True
        try:
            self.layer.data = labels
        finally:
            self._writing = False
        self._digest = _digest(labels)
        self.layer.metadata["edited"] = False


@dataclass
class SegmentOutput:
    """One run's layers and what is needed to redraw its labels."""

    source: RunInput
    model: str
    prob: np.ndarray
    prob_layer: Any
    tracker: LabelsTracker
    manifest: RunManifest
    threshold: float
    min_size: int
    replaced: list = field(default_factory=list)
    recipe: Postprocessing | None = None  # the post-processing of the last redraw

    @property
    def labels_layer(self) -> Any:
        """The labels layer the threshold currently acts on."""
        return self.tracker.layer


def _labels_metadata(output: SegmentOutput) -> dict:
    changes = {} if output.recipe is None else {"postprocessing": output.recipe.to_dict()}
    manifest = replace(output.manifest, parameters=replace(
        output.manifest.parameters, threshold=output.threshold, min_size=output.min_size,
        **changes))
    metadata = {ROLE_KEY: "labels", "source_layer": output.source.name, "model": output.model,
                "threshold": output.threshold, "min_size": output.min_size,
                "manifest": manifest}
    if output.source.image_path:
        metadata["image_path"] = output.source.image_path
    return metadata


class SegmentResults:
    """The outputs of one Segment dock, by (image name, model).

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers go.

    Attributes
    ----------
    current : SegmentOutput or None
        The latest output: the threshold slider acts on its labels.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.outputs: dict[tuple[str, str], SegmentOutput] = {}
        self.current: SegmentOutput | None = None

    def _alive(self, layer: Any) -> bool:
        return layer is not None and layer in self.viewer.layers

    def show(self, prob: np.ndarray, labels: np.ndarray, manifest: RunManifest,
             source: RunInput, threshold: float, min_size: int) -> tuple[SegmentOutput, bool]:
        """Put a run's result in the viewer.

        The previous output of the same model on the same image is updated in place when both
        its layers are still there and its labels are unedited; otherwise new layers are added
        (both or neither).

        Returns
        -------
        output : SegmentOutput
        reused : bool
            True when existing layers were updated.
        """
        model = manifest.model.name
        key = (source.name, model)
        old = self.outputs.get(key)
        if (old is not None and self._alive(old.prob_layer) and self._alive(old.labels_layer)
                and not old.tracker.edited):
            old.prob, old.manifest, old.source = prob, manifest, source
            old.threshold, old.min_size = float(threshold), int(min_size)
            for layer in (old.prob_layer, old.labels_layer):
                layer.scale, layer.translate = source.scale, source.translate
            old.prob_layer.data = prob
            old.prob_layer.metadata.update(manifest=manifest)
            old.tracker.write(labels)
            old.labels_layer.metadata.update(_labels_metadata(old))
            self.current = old
            return old, True
        output = self._add_layers(prob, labels, manifest, source, model, threshold, min_size)
        self.outputs[key] = output
        self.current = output
        return output, False

    def _add_layers(self, prob: np.ndarray, labels: np.ndarray, manifest: RunManifest,
                    source: RunInput, model: str, threshold: float,
                    min_size: int) -> SegmentOutput:
        grid = {"scale": source.scale, "translate": source.translate}
        layers = self.viewer.layers
        prob_layer = None
        try:
            prob_layer = self.viewer.add_image(
                prob, name=output_name(source.name, f"probability ({model})", layers),
                colormap="magma", blending="additive", contrast_limits=(0.0, 1.0),
                visible=False, metadata={ROLE_KEY: "probability", "source_layer": source.name,
                                         "model": model, "manifest": manifest,
                                         **name_metadata(source.name, f"probability ({model})")},
                **grid)
            labels_layer = self.viewer.add_labels(
                labels, name=output_name(source.name, f"vessels ({model})", layers),
                opacity=0.6, metadata=name_metadata(source.name, f"vessels ({model})"), **grid)
        except Exception:
            if prob_layer is not None and prob_layer in layers:  # nothing half-added
                layers.remove(prob_layer)
            raise
        output = SegmentOutput(source, model, prob, prob_layer, LabelsTracker(labels_layer),
                               manifest, float(threshold), int(min_size))
        labels_layer.metadata.update(_labels_metadata(output))
        return output

    def relabel(self, threshold: float, min_size: int) -> tuple[str, Any] | None:
        """Redraw the current labels from the stored probability.

        Parameters
        ----------
        threshold : float
            Voxels with probability above it are vessel.
        min_size : int
            Vessel pieces with fewer voxels are removed.

        Returns
        -------
        None when nothing was done (no output, its labels layer was deleted, same values);
        else ``("updated", layer)`` or, when the labels had been edited (they are kept as they
        are), ``("new", layer)`` with the new labels layer that now follows the slider.
        """
        output = self.current
        if output is None or not self._alive(output.labels_layer):
            return None
        if float(threshold) == output.threshold and int(min_size) == output.min_size:
            return None
        # the run's own post-processing (e.g. hysteresis) at the new threshold
        recipe = Postprocessing.from_dict(output.manifest.parameters.postprocessing).rethreshold(
            float(threshold), int(min_size) or None)  # 0: the run's own min size (as segment)
        labels = recipe.apply(output.prob)
        output.threshold, output.min_size = float(threshold), int(min_size)
        output.recipe = recipe
        if not output.tracker.edited:
            output.tracker.write(labels)
            output.labels_layer.metadata.update(_labels_metadata(output))
            return "updated", output.labels_layer
        edited = output.labels_layer
        layer = self.viewer.add_labels(
            labels, name=output_name(output.source.name, f"vessels ({output.model})",
                                     self.viewer.layers),
            scale=output.source.scale, translate=output.source.translate, opacity=0.6,
            metadata=name_metadata(output.source.name, f"vessels ({output.model})"))
        output.tracker.close()
        output.replaced.append(edited)
        output.tracker = LabelsTracker(layer)
        layer.metadata.update(_labels_metadata(output))
        return "new", layer
