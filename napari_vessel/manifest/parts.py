"""The typed parts of a run manifest: model, input, parameters, CPU, versions, timing, and what out
of core, a batch or a preview add (see :class:`~napari_vessel.manifest.RunManifest`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from napari_vessel.manifest._checks import (
    _bad,
    _bool,
    _float,
    _int,
    _ints,
    _mapping,
    _Section,
    _seq,
    _str,
    _strs,
)

__all__ = ["ModelInfo", "InputInfo", "RunParameters", "CpuInfo", "Versions", "Timing",
           "OutOfCoreInfo", "BatchInfo", "PreviewInfo"]


@dataclass(frozen=True, kw_only=True)
class ModelInfo(_Section):
    """The model: registry name, kind, architecture, where it came from, weights hash, parent
    (a fine-tuned model's) and, for a network, its free-form constructor ``config``."""

    name: str
    kind: str
    architecture: str
    source: str
    weights_sha256: str | None
    parent: str | None
    config: dict[str, Any] | None
    _where: ClassVar[str] = "the manifest's model"

    def __post_init__(self) -> None:
        for name in ("name", "kind", "architecture", "source"):
            object.__setattr__(self, name, _str(getattr(self, name), f"model.{name}"))
        if not self.name:
            raise _bad("model.name", "a model name", self.name)
        for name in ("weights_sha256", "parent"):
            object.__setattr__(self, name, _str(getattr(self, name), f"model.{name}", True))
        object.__setattr__(self, "config", _mapping(self.config, "model.config", True))


@dataclass(frozen=True, kw_only=True)
class InputInfo(_Section):
    """The input stack: its file (None for an array), shape (z, y, x), data type, voxel size in
    µm and whether the voxel size was known (else it is the 1 µm default)."""

    source: str | None
    shape: tuple[int, int, int]
    dtype: str
    spacing_zyx: tuple[float, float, float]
    spacing_known: bool
    _where: ClassVar[str] = "the manifest's input"

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _str(self.source, "input.source", True))
        object.__setattr__(self, "shape", _ints(self.shape, "input.shape", 3))
        object.__setattr__(self, "dtype", _str(self.dtype, "input.dtype"))
        spacing = tuple(_float(s, "input.spacing_zyx", 0.0)
                        for s in _seq(self.spacing_zyx, "input.spacing_zyx", 3))
        if min(spacing) <= 0:
            raise _bad("input.spacing_zyx", "three positive voxel sizes", self.spacing_zyx)
        object.__setattr__(self, "spacing_zyx", spacing)
        object.__setattr__(self, "spacing_known", _bool(self.spacing_known, "input.spacing_known"))


@dataclass(frozen=True, kw_only=True)
class RunParameters(_Section):
    """How the map was made and turned into labels.

    ``threshold`` is the plain threshold's level (a hysteresis' low level), ``min_size`` the
    smallest vessel piece kept, ``postprocessing`` the free-form recipe as
    :class:`~napari_vessel.postprocess.labels.Postprocessing` reads it; the rest are the sliding
    window's settings as :func:`~napari_vessel.inference.run.predict` takes them, and whether the
    model's preprocessing was applied.
    """

    threshold: float
    min_size: int
    postprocessing: dict[str, Any]
    overlap: float
    blending: str
    tta: bool
    patch_size_zyx: tuple[int, ...]
    batch_size: int | None
    preprocess: bool
    _where: ClassVar[str] = "the manifest's parameters"

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _float(self.threshold, "parameters.threshold",
                                                     0.0, 1.0))
        object.__setattr__(self, "min_size", _int(self.min_size, "parameters.min_size"))
        object.__setattr__(self, "postprocessing", _mapping(self.postprocessing,
                                                            "parameters.postprocessing"))
        object.__setattr__(self, "overlap", _float(self.overlap, "parameters.overlap", 0.0, 1.0))
        object.__setattr__(self, "blending", _str(self.blending, "parameters.blending"))
        object.__setattr__(self, "tta", _bool(self.tta, "parameters.tta"))
        object.__setattr__(self, "patch_size_zyx", _ints(self.patch_size_zyx,
                                                         "parameters.patch_size_zyx", low=1))
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", _int(self.batch_size,
                                                        "parameters.batch_size", 1))
        object.__setattr__(self, "preprocess", _bool(self.preprocess, "parameters.preprocess"))


@dataclass(frozen=True, kw_only=True)
class CpuInfo(_Section):
    """The CPU's name and the vector instruction sets the runtimes could use."""

    name: str
    instructions: tuple[str, ...]
    _where: ClassVar[str] = "the manifest's cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _str(self.name, "cpu.name"))
        object.__setattr__(self, "instructions", _strs(self.instructions, "cpu.instructions"))


@dataclass(frozen=True, kw_only=True)
class Versions(_Section):
    """Versions of the software that made the result (None: not installed)."""

    napari_vessel: str | None
    python: str | None
    torch: str | None
    numpy: str | None
    scipy: str | None
    scikit_image: str | None
    platform: str | None
    _where: ClassVar[str] = "the manifest's versions"

    def __post_init__(self) -> None:
        for f in fields(self):
            _str(getattr(self, f.name), f"versions.{f.name}", True)


@dataclass(frozen=True, kw_only=True)
class Timing(_Section):
    """Seconds spent on each stage (``pyramid_s``: out of core, when pyramids were written)."""

    preprocess_s: float
    predict_s: float
    postprocess_s: float
    pyramid_s: float | None = None
    _omit_none: ClassVar[tuple[str, ...]] = ("pyramid_s",)
    _where: ClassVar[str] = "the manifest's timing"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or f.name not in self._omit_none:
                object.__setattr__(self, f.name, _float(value, f"timing.{f.name}"))

    @property
    def total_s(self) -> float:
        """Seconds of all the stages together."""
        return sum(v for v in (self.preprocess_s, self.predict_s, self.postprocess_s,
                               self.pyramid_s) if v is not None)


@dataclass(frozen=True, kw_only=True)
class OutOfCoreInfo(_Section):
    """What :func:`~napari_vessel.inference.out_of_core.segment_to_zarr` did block by block: the block size,
    blocks per axis, patches, network calls per patch, post-processing steps done and skipped,
    the pyramid's level shapes and the methods that made them (by store role) and, when the
    blocks ran as tasks on a dask cluster, how many ``workers`` ran them and how many
    ``block_tasks`` there were (absent from a run in one process, and from older manifests)."""

    block_shape_zyx: tuple[int, int, int]
    blocks: tuple[int, int, int]
    patches: int
    patch_predictions_per_patch: float
    postprocessing_steps: tuple[str, ...]
    postprocessing_skipped: tuple[str, ...]
    pyramid_levels_zyx: tuple[tuple[int, int, int], ...]
    pyramid_methods: dict[str, str]
    workers: int | None = None
    block_tasks: int | None = None
    _omit_none: ClassVar[tuple[str, ...]] = ("workers", "block_tasks")
    _where: ClassVar[str] = "the manifest's out_of_core"

    def __post_init__(self) -> None:
        where = "out_of_core."
        object.__setattr__(self, "block_shape_zyx", _ints(self.block_shape_zyx,
                                                          where + "block_shape_zyx", 3, 1))
        object.__setattr__(self, "blocks", _ints(self.blocks, where + "blocks", 3))
        object.__setattr__(self, "patches", _int(self.patches, where + "patches"))
        object.__setattr__(self, "patch_predictions_per_patch", _float(
            self.patch_predictions_per_patch, where + "patch_predictions_per_patch"))
        for name in ("postprocessing_steps", "postprocessing_skipped"):
            object.__setattr__(self, name, _strs(getattr(self, name), where + name))
        object.__setattr__(self, "pyramid_levels_zyx", tuple(
            _ints(s, where + "pyramid_levels_zyx", 3)
            for s in _seq(self.pyramid_levels_zyx, where + "pyramid_levels_zyx")))
        methods = _mapping(self.pyramid_methods, where + "pyramid_methods")
        for value in methods.values():
            _str(value, where + "pyramid_methods")
        object.__setattr__(self, "pyramid_methods", methods)
        for name in ("workers", "block_tasks"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _int(getattr(self, name), where + name, 1))


@dataclass(frozen=True, kw_only=True)
class BatchInfo(_Section):
    """How ``napari-vessel batch`` ran the stack: its ``settings`` (free-form, as
    :meth:`~napari_vessel.batch.BatchConfig.settings` gives them: a stack done with other
    settings is not reused), the worker, its threads, the voxels and, where known, the seconds,
    the vessel fraction, whether the model came from the worker's cache, and out of core."""

    settings: dict[str, Any]
    worker: str
    threads: int
    seconds: float | None = None
    voxels: int
    vessel_fraction: float | None = None
    model_from_cache: bool | None = None
    out_of_core: bool | None = None
    _omit_none: ClassVar[tuple[str, ...]] = ("seconds", "vessel_fraction", "model_from_cache",
                                             "out_of_core")
    _where: ClassVar[str] = "the manifest's batch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _mapping(self.settings, "batch.settings"))
        object.__setattr__(self, "worker", _str(self.worker, "batch.worker"))
        object.__setattr__(self, "threads", _int(self.threads, "batch.threads", 1))
        object.__setattr__(self, "voxels", _int(self.voxels, "batch.voxels"))
        for name, high in (("seconds", float("inf")), ("vessel_fraction", 1.0)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _float(getattr(self, name), f"batch.{name}",
                                                      0.0, high))
        for name in ("model_from_cache", "out_of_core"):
            _bool(getattr(self, name), f"batch.{name}", True)


@dataclass(frozen=True, kw_only=True)
class PreviewInfo(_Section):
    """A slice preview: the slice ``z`` and the half-open (start, stop) voxel ranges along z, y
    and x that were segmented (``read_zyx``) and shown (``shown_zyx``)."""

    z: int
    read_zyx: tuple[tuple[int, int], ...]
    shown_zyx: tuple[tuple[int, int], ...]
    _where: ClassVar[str] = "the manifest's preview"

    def __post_init__(self) -> None:
        object.__setattr__(self, "z", _int(self.z, "preview.z"))
        for name in ("read_zyx", "shown_zyx"):
            ranges = tuple(_ints(r, f"preview.{name}", 2) for r in
                           _seq(getattr(self, name), f"preview.{name}", 3))
            if any(a > b for a, b in ranges):
                raise _bad(f"preview.{name}", "(start, stop) ranges with start <= stop", ranges)
            object.__setattr__(self, name, ranges)
