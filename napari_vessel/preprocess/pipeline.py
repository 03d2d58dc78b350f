"""An ordered, serialisable list of preprocessing steps that runs on NumPy and dask arrays.

A :class:`Pipeline` is saved as JSON beside every result (and in a layer's metadata), so a run can
be repeated exactly::

    {"format": "napari-vessel-preprocess", "version": 1,
     "steps": [{"name": "median_subtract", "clip": true}, {"name": "median3d", "size": 3},
               {"name": "normalize", "low": 1.0, "high": 99.8}]}

On a dask array the pipeline stays lazy and works chunk by chunk on blocks of whole slices: every
step first measures its global statistics once (:meth:`Step.fit`), then maps each block with
``map_blocks``, or ``map_overlap`` with the z-halo a 3D filter needs. The result equals the NumPy
result exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.volume import Volume, check_spacing, is_dask
from napari_vessel.preprocess._common import as_image, check_finite
from napari_vessel.preprocess.steps import (
    Clahe,
    Median3D,
    MedianSubtract,
    Normalize,
    Step,
    make_step,
    step_from_dict,
)
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = ["Pipeline", "compute", "FORMAT", "FORMAT_VERSION", "DEFAULT_2PM", "DEFAULT_CONFOCAL"]

FORMAT = "napari-vessel-preprocess"
#: Version of the pipeline file format this code writes (and the newest it reads).
FORMAT_VERSION = 1


def _block(block: np.ndarray, step: Step, state: Any, n_z: int, spacing: Any, check: bool,
           block_info: dict | None = None) -> np.ndarray:
    """Run one step on one dask block (``block_info`` gives its first slice)."""
    z0 = block_info[0]["array-location"][0][0] if block_info else 0
    block = np.asarray(block, dtype=np.float32)
    if check:
        check_finite(block)
    return step.transform(block, state, z0, n_z, spacing)


def _halo_block(block: np.ndarray, step: Step, state: Any, n_z: int, spacing: Any,
                check: bool) -> np.ndarray:
    """Run a z-filtering step on a block that carries halo slices (trimmed afterwards)."""
    block = np.asarray(block, dtype=np.float32)
    if check:
        check_finite(block)
    return step.transform(block, state, 0, n_z, spacing)


@dataclass(frozen=True)
class Pipeline:
    """An ordered list of preprocessing steps.

    Parameters
    ----------
    steps : sequence of Step
        E.g. ``(MedianSubtract(), Median3D(size=3), Normalize(low=1, high=99.8))``.

    Examples
    --------
    >>> import numpy as np
    >>> pipe = Pipeline.from_names(["median_subtract", "normalize"])
    >>> pipe.names
    ('median_subtract', 'normalize')
    >>> Pipeline.from_json(pipe.to_json()) == pipe
    True
    """

    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        for step in steps:
            if not isinstance(step, Step):
                raise InputError(f"a pipeline holds steps (e.g. Median3D()), not {step!r}")
        object.__setattr__(self, "steps", steps)

    # ----------------------------------------------------------------------------------- build
    @property
    def names(self) -> tuple[str, ...]:
        """The step names, in order."""
        return tuple(step.name for step in self.steps)

    @classmethod
    def from_names(cls, names: Iterable[str], settings: Mapping[str, Any] | None = None
                   ) -> Pipeline:
        """Build from step names with default parameters, then apply ``settings``.

        ``settings`` maps ``"step.parameter"`` to a value, e.g. ``{"clahe.clip_limit": 0.02}``.
        """
        names = [str(name).strip() for name in names if str(name).strip()]
        targets = {str(key): str(key).partition(".") for key in (settings or {})}
        steps = []
        for i, name in enumerate(names):  # settings go in at creation (a step may need them)
            params = {param: settings[key] for key, (target, dot, param) in targets.items()
                      if dot and target in (name, str(i))}
            steps.append(make_step(name, **params))
        known = set(names) | {str(i) for i in range(len(names))}
        rest = {key: settings[key] for key, (target, dot, _) in targets.items()
                if not dot or target not in known}
        return cls(tuple(steps)).with_settings(rest)

    def with_settings(self, settings: Mapping[str, Any]) -> Pipeline:
        """A copy with parameters changed: ``{"clahe.clip_limit": 0.02, "median3d.size": 5}``.

        The step is found by name (every step of that name is changed) or by position
        (``"2.size"``, counting from 0).
        """
        steps = list(self.steps)
        for key, value in settings.items():
            target, _, param = str(key).partition(".")
            if not param:
                raise InputError(f"setting '{key}' must look like step.parameter, e.g. "
                                 "clahe.clip_limit=0.02")
            hits = ([int(target)] if target.isdigit() and int(target) < len(steps)
                    else [i for i, s in enumerate(steps) if s.name == target])
            if not hits:
                raise InputError(f"setting '{key}': the pipeline has no step '{target}'; its "
                                 f"steps: {', '.join(self.names) or 'none'}")
            for i in hits:
                params = {k: v for k, v in steps[i].to_dict().items() if k != "name"}
                if param not in params:
                    make_step(steps[i].name, **{param: value})  # raises with a suggestion
                params[param] = value
                steps[i] = make_step(steps[i].name, **params)
        return Pipeline(tuple(steps))

    # ------------------------------------------------------------------------------- serialise
    def to_dict(self) -> dict:
        """The JSON-able description (format, version, steps)."""
        return {"format": FORMAT, "version": FORMAT_VERSION,
                "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: Any) -> Pipeline:
        """Rebuild from :meth:`to_dict` output; checks the format version and every step."""
        if not isinstance(data, Mapping) or "steps" not in data:
            raise InputError("not a napari-vessel preprocessing pipeline: expected an object with "
                             "'format', 'version' and 'steps'")
        if data.get("format", FORMAT) != FORMAT:
            raise InputError(f"not a preprocessing pipeline (format {data.get('format')!r}, "
                             f"expected {FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InputError(f"the pipeline has no valid format version ({version!r}); this "
                             f"napari-vessel reads version {FORMAT_VERSION}")
        if version > FORMAT_VERSION:
            raise InputError(f"the pipeline was written by a newer napari-vessel (format version "
                             f"{version}; this one reads up to {FORMAT_VERSION}). Upgrade "
                             "napari-vessel (pip install --upgrade napari-vessel) to use it")
        if not isinstance(data["steps"], list):
            raise InputError("the pipeline's 'steps' must be a list")
        return cls(tuple(step_from_dict(entry) for entry in data["steps"]))

    def to_json(self, indent: int | None = 2) -> str:
        """The pipeline as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        """Rebuild from JSON text (see :meth:`from_dict` for the checks)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"the pipeline is not valid JSON ({err})") from err
        except RecursionError as err:  # e.g. 100,000 nested lists: not a pipeline
            raise InputError("the pipeline JSON is nested too deeply to be a pipeline; a "
                             "pipeline is {\"steps\": [{\"name\": ...}, ...]}") from err
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON to ``path``."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Pipeline:
        """Read a pipeline JSON file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"pipeline file {path} does not exist")
        return cls.from_json(path.read_text(encoding="utf-8"))

    # ----------------------------------------------------------------------------------- run
    def halo(self, spacing_zyx: Any = None) -> int:
        """Largest z-halo any step needs."""
        return max((step.halo(spacing_zyx) for step in self.steps), default=0)

    def apply(self, data: Any, *, spacing_zyx: Any = None, progress: Progress | None = None,
              cancel: CancelToken | None = None) -> Any:
        """Run every step in order.

        Parameters
        ----------
        data : ndarray, dask array or Volume
            A stack (Z, Y, X); a 2D slice works when no step needs 3D (see
            :meth:`Step.needs_3d`; for a live preview use :meth:`preview`).
        spacing_zyx : tuple of 3 float, optional
            Voxel size in µm (default: the Volume's, else 1 µm); used by 3D CLAHE.
        progress : callable, optional
            ``progress(fraction, message)``, called as every step starts and at the end.
        cancel : CancelToken, optional
            Checked before every step; raises :class:`~napari_vessel.errors.Cancelled`.

        Returns
        -------
        ndarray of float32, lazy dask array of float32, or Volume
            Same kind as ``data``: a NumPy input gives a new NumPy array (the input is never
            modified); a dask input gives a lazy dask array (compute it with :func:`compute` for
            progress and cancel); a Volume gives a Volume whose metadata holds this pipeline
            under ``"preprocess"``.
        """
        if isinstance(data, Volume):
            spacing = spacing_zyx if spacing_zyx is not None else data.spacing_zyx
            result = self.apply(data.data, spacing_zyx=spacing, progress=progress, cancel=cancel)
            return data.with_data(result, metadata={**data.metadata, "preprocess": self.to_dict()})
        spacing = None if spacing_zyx is None else check_spacing(spacing_zyx, 3)
        progress = progress or no_progress
        if is_dask(data):
            return self._apply_dask(data, spacing, progress, cancel)
        array = as_image(data, what="preprocessing")
        out = array.copy() if not self.steps else array
        for i, step in enumerate(self.steps):
            if cancel is not None:
                cancel.check()
            progress(i / len(self.steps), step.name)
            out = step.apply_checked(step.check_input(out, finite=False), spacing)
        progress(1.0, "done")
        return out

    def _apply_dask(self, data: Any, spacing: Any, progress: Progress,
                    cancel: CancelToken | None) -> Any:
        if len(data.shape) != 3 or 0 in data.shape:
            raise InputError(f"a lazy (dask) stack must be 3D and non-empty, not {data.shape}")
        if data.dtype.kind not in "biuf":
            raise InputError(f"the stack has dtype {data.dtype}; a real-valued image is needed")
        halo = self.halo(spacing)
        chunks: dict[int, Any] = {1: -1, 2: -1}  # blocks of whole slices
        if min(data.chunks[0]) < halo:  # map_overlap needs blocks at least as deep as the halo
            chunks[0] = max(8, 2 * halo)
        array = data.rechunk(chunks)
        n_z = int(array.shape[0])
        check = array.dtype.kind == "f"
        array = array.astype(np.float32)
        meta = np.empty((0, 0, 0), dtype=np.float32)
        if not self.steps:
            return array
        for i, step in enumerate(self.steps):
            if cancel is not None:
                cancel.check()
            progress(i / len(self.steps), f"{step.name}: measuring")
            state = step.fit(array, spacing)
            depth = step.halo(spacing)
            first = check and i == 0
            if depth:
                func = partial(_halo_block, step=step, state=state, n_z=n_z, spacing=spacing,
                               check=first)
                array = array.map_overlap(func, depth={0: depth, 1: 0, 2: 0}, boundary="none",
                                          dtype=np.float32, meta=meta)
            else:
                func = partial(_block, step=step, state=state, n_z=n_z, spacing=spacing,
                               check=first)
                array = array.map_blocks(func, dtype=np.float32, meta=meta)
        progress(1.0, "ready (lazy)")
        return array

    # ------------------------------------------------------------------------------- preview
    def preview(self, plane: Any, *, spacing_zyx: Any = None) -> np.ndarray:
        """Fast 2D preview on one slice or projection: every step's :meth:`Step.preview`.

        Per-slice steps are exact; 3D filters use their 2D analogue; steps that need the whole
        stack (depth correction, sliding-window fusion) pass the plane through unchanged.
        """
        out = as_image(plane, ndims=(2,), what="a preview")
        for step in self.steps:
            out = step.preview(out, spacing_zyx)
        return out if self.steps else out.copy()

    def preview_plane(self, volume: Any, z: int, *, spacing_zyx: Any = None) -> np.ndarray:
        """Slice ``z`` of the pipeline's result, computed on a slab of slices around it.

        The slab holds the context every step needs (z-halos, 3D CLAHE tiles), so 3D filters are
        exact; statistics that are global for the whole stack (percentiles, scaling factors,
        depth levels) are measured on the slab only, so brightness can differ slightly from
        :meth:`apply`.
        """
        data = volume.data if isinstance(volume, Volume) else volume
        if spacing_zyx is None and isinstance(volume, Volume):
            spacing_zyx = volume.spacing_zyx
        shape = tuple(data.shape)
        if len(shape) != 3:
            raise InputError(f"preview_plane needs a 3D stack, not shape {shape}")
        if not 0 <= int(z) < shape[0]:
            raise InputError(f"slice {z} is outside the stack (0..{shape[0] - 1})")
        reach = sum(step.context(shape, spacing_zyx) for step in self.steps)
        # a slab of the full 2*reach+1 slices (at least 3 for 3D steps), shifted to stay inside the
        # stack near its ends, so a kernel never meets a slab thinner than itself
        needs_3d = any(step.needs_3d() for step in self.steps)
        want = min(shape[0], max(2 * reach + 1, 3 if needs_3d else 1))
        lo = max(0, min(int(z) - reach, shape[0] - want))
        hi = lo + want
        slab = np.asarray(data[lo:hi])
        return self.apply(slab, spacing_zyx=spacing_zyx)[int(z) - lo]


def compute(array: Any, *, out: Any = None, progress: Progress | None = None,
            cancel: CancelToken | None = None) -> Any:
    """Compute a lazy (dask) result slab by slab with progress and cancel.

    Parameters
    ----------
    array : dask array or ndarray, shape (Z, Y, X)
        E.g. the result of :meth:`Pipeline.apply` on a dask stack. NumPy arrays are returned as is.
    out : array-like, optional
        Where to write (a NumPy array, a zarr array, a memory map); default: a new NumPy array.
    progress, cancel
        As in :meth:`Pipeline.apply`; checked between slabs (one dask chunk of slices each).

    Returns
    -------
    The filled ``out``.
    """
    if not is_dask(array):
        return array
    progress = progress or no_progress
    if out is None:
        out = np.empty(array.shape, dtype=array.dtype)
    starts = np.cumsum((0,) + tuple(array.chunks[0]))
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        if cancel is not None:
            cancel.check()
        out[int(a):int(b)] = array[int(a):int(b)].compute()
        progress((i + 1) / max(len(starts) - 1, 1), f"slices {a}-{b - 1}")
    return out


#: Paper 001 (section 4.2) for two-photon stacks: slice medians out, 3D median 3, then [0, 1].
DEFAULT_2PM = Pipeline((MedianSubtract(), Median3D(size=3), Normalize(low=1.0, high=99.8)))
#: Paper 003 (section II.A) for confocal stacks: CLAHE per slice, then [0, 1].
DEFAULT_CONFOCAL = Pipeline((Clahe(mode="2d"), Normalize(low=1.0, high=99.8)))
