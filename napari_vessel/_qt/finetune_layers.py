"""Layers of the Fine-tune dock: which labels the user edited, and the live preview layer.

:class:`EditTracker` listens to a Labels layer's ``paint`` events and marks every voxel a brush
stroke, fill, polygon or ``data_setitem`` changed (napari's history atoms carry the exact mask or
indices). The Review dock's tools and prompts (click to add, click to erase, bridge, painting on
the MIP) write with ``data_setitem`` inside ``block_history`` (``review_sync.apply_edit_to_layer``),
which napari reports as one ``paint`` event listing the changed voxels, so they count exactly like
brush strokes. Undo leaves the marks: the user looked at those voxels. Edits made before the tracker started
are not known to it; the dock can then find them as the difference with the model's prediction.

:class:`PreviewLayer` keeps one 2D image layer showing the probability of the slice being
previewed, placed on the image's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from napari_vessel._qt._common import OUTPUT_KEY

__all__ = ["EditTracker", "PreviewLayer"]


def _mark(edited: np.ndarray, atom: Any) -> None:
    key = getattr(atom, "slice_key", None)
    if key is not None:
        key = tuple(key)[-edited.ndim:]
        mask = getattr(atom, "mask", None)
        if mask is None:
            edited[key] = True
        else:
            region = edited[key]
            region |= np.asarray(mask, bool).reshape(region.shape)
    elif isinstance(atom, tuple) and len(atom) == 3 and isinstance(atom[0], tuple):
        edited[tuple(np.asarray(i) for i in atom[0][-edited.ndim:])] = True


class EditTracker:
    """The voxels of a Labels layer painted or erased since the tracker started.

    Parameters
    ----------
    layer : napari.layers.Labels
        A 3D labels layer.
    on_change : callable, optional
        Called (without arguments) after each edit was marked, e.g. to show the new count.

    Attributes
    ----------
    layer : napari.layers.Labels
    edited : ndarray of bool or None
        The marked voxels (allocated at the first edit).
    checked : set of int
        Z indices of slices the user confirmed whole.
    unknown : bool
        True once the array was replaced or an edit came in an unknown form.
    """

    def __init__(self, layer: Any, on_change: Callable[[], None] | None = None) -> None:
        self.layer = layer
        self.on_change = on_change
        self.edited: np.ndarray | None = None
        self.checked: set[int] = set()
        self.unknown = False
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)

    def close(self) -> None:
        """Stop listening to the layer."""
        self.layer.events.paint.disconnect(self._on_paint)
        self.layer.events.data.disconnect(self._on_data)

    @property
    def count(self) -> int:
        """Number of marked voxels."""
        return 0 if self.edited is None else int(self.edited.sum())

    def _on_paint(self, event: Any) -> None:
        shape = tuple(self.layer.data.shape)
        if self.edited is None or self.edited.shape != shape:
            self.edited = np.zeros(shape, bool)
        for atom in event.value:
            try:
                _mark(self.edited, atom)
            except (IndexError, ValueError, TypeError):
                self.unknown = True  # an atom of another form: the edits are not all known
        if self.on_change is not None:
            self.on_change()

    def _on_data(self, _event: Any = None) -> None:
        self.unknown = True  # the whole array was replaced: which voxels changed is unknown
        if self.on_change is not None:
            self.on_change()

    def mask(self) -> np.ndarray | None:
        """A copy of the marked voxels (None when nothing was painted)."""
        if self.edited is None or self.edited.shape != tuple(self.layer.data.shape):
            return None
        return self.edited.copy()


class PreviewLayer:
    """One 2D probability layer that follows the fine-tune's live preview.

    Parameters
    ----------
    viewer : napari.Viewer
    name : str
        Name of the layer when it is added.
    scale, translate : tuple of 3 float
        The image's grid (z, y, x); the preview uses its y and x.
    metadata : dict, optional
        More metadata of the layer (e.g. its full name).
    """

    def __init__(self, viewer: Any, name: str, scale: tuple, translate: tuple,
                 metadata: dict | None = None) -> None:
        self.viewer, self.name = viewer, name
        self.metadata = dict(metadata or {})
        self.scale, self.translate = tuple(scale), tuple(translate)
        self.layer: Any = None
        self.updates = 0

    def show(self, preview: np.ndarray, origin_yx: tuple | None, z: int | None) -> Any:
        """Show ``preview`` (shape (H, W), probabilities) at ``origin_yx`` of the image slice."""
        oy, ox = origin_yx or (0, 0)
        scale = self.scale[-2:]
        translate = (self.translate[-2] + oy * scale[0], self.translate[-1] + ox * scale[1])
        data = np.asarray(preview, np.float32)
        if self.layer is None or self.layer not in self.viewer.layers:
            self.layer = self.viewer.add_image(
                data, name=self.name, colormap="magma", blending="additive",
                contrast_limits=(0.0, 1.0), scale=scale, translate=translate,
                metadata={**self.metadata, OUTPUT_KEY: "finetune-preview"})
        else:
            self.layer.data = data
            self.layer.translate = translate
        self.layer.metadata["preview_z"] = z
        self.updates += 1
        return self.layer

    def remove(self) -> None:
        """Remove the layer (when the run failed: the viewer is left as it was)."""
        if self.layer is not None and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
        self.layer = None
