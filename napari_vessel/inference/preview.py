"""Segment one slice (or a crop of it) quickly, to choose a model and a threshold before a full run.

:func:`segment_slice` reads a slab of slices around slice ``z`` (the z-context the model needs,
:func:`slab_depth`), optionally only a y/x box of it with a margin of context, and runs it through
:func:`napari_vessel.inference.run.segment`: the same preprocessing, network and post-processing as a
full run, on a small sub-volume. The result keeps the slab's probabilities, so
:meth:`SlicePreview.relabel` redraws the slice at another threshold without running the model
again, with the run's own post-processing at the new threshold
(:meth:`napari_vessel.postprocess.labels.Postprocessing.rethreshold`), as the full run's slider does.

The model's preprocessing is measured on the whole stack, as in a full run (a deep slab normalised
on its own would turn its noise into vessels): the stack is wrapped in dask, each step's global
statistics (percentiles, min and max) are measured in one pass that stores nothing, and only the
slab is then computed. The preview can still differ from the full run a little where patches fall
differently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.inference.run import check_volume_array, prepare_input, resolve_spec, segment
from napari_vessel.io.volume import Volume, check_spacing
from napari_vessel.manifest import PreviewInfo, RunManifest
from napari_vessel.postprocess.labels import Postprocessing
from napari_vessel.progress import CancelToken, Progress

__all__ = ["SlicePreview", "segment_slice", "slab_depth", "preview_region", "prepared_stack",
           "PREVIEW_MARGIN", "CLASSICAL_DEPTH"]

#: Voxels of y/x context read around a crop on each side (the network sees past the crop's edge).
PREVIEW_MARGIN = 16
#: Slices of z-context for a classical filter (its own patch size means nothing).
CLASSICAL_DEPTH = 9


def slab_depth(spec: Any) -> int:
    """Slices a model needs around the previewed slice.

    Parameters
    ----------
    spec : ModelSpec
        The model.

    Returns
    -------
    int
        The patch depth of a 3D network (what it was trained on), 1 for a 2D network (it runs
        slice by slice), :data:`CLASSICAL_DEPTH` for a classical filter.
    """
    if spec.is_network:
        return 1 if spec.dims == 2 else max(1, int(spec.patch_size_zyx[0]))
    return CLASSICAL_DEPTH


def _box(box_yx: Any, shape_yx: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    """The y/x box clipped to the image, as ((y0, y1), (x0, x1)); InputError when empty."""
    if box_yx is None:
        return (0, shape_yx[0]), (0, shape_yx[1])
    try:
        (y0, y1), (x0, x1) = ((int(a), int(b)) for a, b in box_yx)
    except (TypeError, ValueError) as err:
        raise InputError(f"the crop {box_yx!r} must be ((y0, y1), (x0, x1)) in voxels") from err
    y0, y1 = max(y0, 0), min(y1, shape_yx[0])
    x0, x1 = max(x0, 0), min(x1, shape_yx[1])
    if y1 <= y0 or x1 <= x0:
        raise InputError(f"the crop {tuple(box_yx)} lies outside the image (y, x size "
                         f"{shape_yx[0]} × {shape_yx[1]}): pan the view onto the image")
    return (y0, y1), (x0, x1)


def preview_region(shape: Any, z: int, depth: int, *, box_yx: Any = None,
                   margin: int = PREVIEW_MARGIN) -> tuple[tuple, tuple]:
    """Where a preview of slice ``z`` reads the volume, and which part of it it shows.

    Parameters
    ----------
    shape : (int, int, int)
        The volume's shape (Z, Y, X).
    z : int
        The slice to preview, 0 <= z < Z.
    depth : int
        Slices of context (:func:`slab_depth`); the slab is centred on ``z`` and shifted inwards
        at the volume's top and bottom, so an edge slice gets the same depth (all of Z when the
        volume is thinner).
    box_yx : ((int, int), (int, int)), optional
        Half-open y and x ranges of the crop to show, in voxels (clipped to the image); default
        the whole slice.
    margin : int
        Voxels of y/x context read around the crop on each side (clipped to the image).

    Returns
    -------
    read : tuple of 3 slice
        The sub-volume to segment.
    shown : tuple of 3 slice
        The part shown: ``z:z+1`` and the crop, in volume coordinates (inside ``read``).

    Raises
    ------
    InputError
        ``z`` outside the volume, a crop outside the image, a bad depth or margin.

    Examples
    --------
    >>> preview_region((40, 64, 64), 0, 16, box_yx=((10, 20), (0, 64)), margin=4)
    ((slice(0, 16, None), slice(6, 24, None), slice(0, 64, None)), \
(slice(0, 1, None), slice(10, 20, None), slice(0, 64, None)))
    """
    if len(tuple(shape)) != 3:
        raise InputError(f"a preview needs a 3D stack (z, y, x), not shape {tuple(shape)}")
    n_z, n_y, n_x = (int(s) for s in shape)
    if isinstance(z, bool) or not float(z).is_integer() or not 0 <= int(z) < n_z:
        raise InputError(f"slice {z!r} is outside the stack: choose a slice from 0 to {n_z - 1}")
    if int(depth) < 1 or int(margin) < 0:
        raise InputError(f"depth {depth!r} must be >= 1 and margin {margin!r} >= 0")
    z, depth, margin = int(z), min(int(depth), n_z), int(margin)
    z0 = min(max(z - depth // 2, 0), n_z - depth)
    (y0, y1), (x0, x1) = _box(box_yx, (n_y, n_x))
    read = (slice(z0, z0 + depth), slice(max(y0 - margin, 0), min(y1 + margin, n_y)),
            slice(max(x0 - margin, 0), min(x1 + margin, n_x)))
    return read, (slice(z, z + 1), slice(y0, y1), slice(x0, x1))


def _within(inner: tuple, outer: tuple) -> tuple:
    """The slices ``inner`` (volume coordinates) relative to the start of ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer,
                                                                        strict=True))


def prepared_stack(data: Any, spec: Any, spacing_zyx: Any = (1.0, 1.0, 1.0), *,
                   cancel: CancelToken | None = None) -> tuple[Any, Any]:
    """The stack as :func:`~napari_vessel.inference.run.segment` would preprocess it, computed lazily.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        NumPy, dask or Zarr.
    spec : ModelSpec
        The model: its card's pipeline, else a min-max stretch to [0, 1] for a network, else
        nothing (classical filters).
    spacing_zyx : tuple of 3 float
        Voxel size in µm (some steps use it).
    cancel : CancelToken, optional
        Checked before the statistics are measured.

    Returns
    -------
    lazy : dask array (or ``data`` itself when nothing is to be done)
        Global statistics already measured on the whole stack; slicing it computes only the
        slices asked for.
    preprocessing : dict or None
        The preprocessing as a run manifest records it.
    """
    if not spec.preprocessing and not spec.is_network:
        return data, None
    import dask.array as da

    from napari_vessel.io.volume import is_dask

    lazy = data if is_dask(data) else da.from_array(
        data, chunks=(min(8, int(data.shape[0])), -1, -1))
    if cancel is not None:
        cancel.check()
    return prepare_input(lazy, spec, spacing_zyx, cancel=cancel)  # the full run's own road


@dataclass(frozen=True)
class SlicePreview:
    """A preview: the slab's probabilities and the labels of the shown slice.

    Attributes
    ----------
    prob : ndarray of float32, shape of ``read``
        Probabilities of the whole slab (kept, to re-threshold without the model).
    labels : ndarray of uint8, shape (1, h, w)
        Labels of the shown slice (crop), by the run's post-processing.
    read, shown : tuple of 3 slice
        See :func:`preview_region`.
    manifest : RunManifest
        As :func:`~napari_vessel.inference.run.segment` makes it, with
        :attr:`~napari_vessel.manifest.RunManifest.preview` set.
    """

    prob: np.ndarray
    labels: np.ndarray
    read: tuple
    shown: tuple
    manifest: RunManifest

    @property
    def z(self) -> int:
        """The previewed slice."""
        return int(self.shown[0].start)

    @property
    def origin(self) -> tuple[int, int, int]:
        """Voxel (z, y, x) of the shown part's first corner in the volume."""
        return tuple(int(s.start) for s in self.shown)

    @property
    def local(self) -> tuple:
        """The shown part as slices of :attr:`prob`."""
        return _within(self.shown, self.read)

    def relabel(self, threshold: float, min_size: int = 0) -> np.ndarray:
        """Labels of the shown slice at another threshold and minimum size (no model run).

        The run's post-processing (:attr:`recipe`) at them, as a full run's slider redraws.

        Parameters
        ----------
        threshold : float
            Voxels with a probability above it are vessel.
        min_size : int
            Remove vessel pieces with fewer voxels, counted in 3D over the slab as a full run
            counts them over the stack (0 keeps all; then only the shown slice is thresholded).

        Returns
        -------
        ndarray of uint8, shape (1, h, w)
        """
        recipe = self.recipe.rethreshold(threshold, int(min_size) or None)  # 0: the recipe's own
        if recipe.method == "threshold" and recipe.min_size <= 1 and not recipe.fill_holes:
            return recipe.apply(self.prob[self.local])  # voxel-wise: the slice alone will do
        return recipe.apply(self.prob)[self.local]

    @property
    def recipe(self) -> Postprocessing:
        """The run's post-processing (from its manifest)."""
        return Postprocessing.from_dict(self.manifest.parameters.postprocessing)


def segment_slice(volume: Any, z: int, model_name: Any = None, *, box_yx: Any = None,
                  depth: int | None = None, margin: int = PREVIEW_MARGIN,
                  threshold: float | None = None, min_size: int = 0, preprocess: bool = True,
                  spacing_zyx: Any = None, options: WindowOptions | None = None,
                  overlap: float | None = None, tta: bool | None = None,
                  device: Any = None, progress: Progress | None = None,
                  cancel: CancelToken | None = None, runtime: str | None = None,
                  threads: int | None = None) -> SlicePreview:
    """Segment slice ``z`` of a volume (or a crop of it) with the slab of context the model needs.

    Parameters
    ----------
    volume : Volume or array-like, shape (Z, Y, X)
        NumPy, dask or Zarr: only the slab is read.
    z : int
        The slice to preview.
    model_name : str or ModelSpec, optional
        A registered model (default: the recommended one).
    box_yx : ((int, int), (int, int)), optional
        Half-open y and x ranges to show (e.g. the part of the slice on screen); default all.
    depth : int, optional
        Slices of z-context; default :func:`slab_depth` of the model.
    margin : int
        Voxels of y/x context around the crop (:func:`preview_region`).
    threshold, min_size, preprocess, spacing_zyx, options, overlap, tta, device, progress, \
cancel, runtime, threads
        As in :func:`~napari_vessel.inference.run.segment`.

    Returns
    -------
    SlicePreview

    Raises
    ------
    InputError
        A 2D image, ``z`` outside the stack, a crop outside the image, and whatever
        :func:`~napari_vessel.inference.run.segment` refuses (the message says it was the preview).
    Cancelled
        When ``cancel`` was set.
    """
    opts = window_options(options, overlap=overlap, tta=tta, device=device, runtime=runtime,
                          threads=threads)
    if isinstance(volume, Volume):
        data, spacing, source = volume.data, spacing_zyx or volume.spacing_zyx, volume.source
    else:
        data, spacing, source = volume, spacing_zyx or (1.0, 1.0, 1.0), None
    data = check_volume_array(data)
    spacing = check_spacing(spacing, 3)
    spec = resolve_spec(model_name)
    read, shown = preview_region(data.shape, z, slab_depth(spec) if depth is None else depth,
                                 box_yx=box_yx, margin=margin)
    pre_json = None
    try:
        if preprocess:
            if progress is not None:
                progress(0.0, "preprocessing (statistics of the whole stack)")
            data, pre_json = prepared_stack(data, spec, spacing, cancel=cancel)
        slab = np.asarray(data[read])
        prob, labels, manifest = segment(
            Volume(slab, spacing, source=source), spec, threshold=threshold, preprocess=False,
            min_size=min_size, options=opts, progress=progress, cancel=cancel)
    except InputError as err:
        raise InputError(f"preview of slice {z} (slices {read[0].start}-{read[0].stop - 1}): "
                         f"{err}") from err
    manifest = replace(manifest, preprocessing=pre_json,
                       parameters=replace(manifest.parameters, preprocess=bool(preprocess)),
                       preview=PreviewInfo(z=int(z),
                                           read_zyx=tuple((s.start, s.stop) for s in read),
                                           shown_zyx=tuple((s.start, s.stop) for s in shown)))
    return SlicePreview(np.asarray(prob, np.float32),
                        np.asarray(labels, np.uint8)[_within(shown, read)], read, shown, manifest)
