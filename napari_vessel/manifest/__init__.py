"""The run manifest of a segmentation as typed data: what ran, on what, how, with what, how long.

:func:`~napari_vessel.inference.run.segment`, :func:`~napari_vessel.inference.out_of_core.segment_to_zarr` and
:func:`~napari_vessel.inference.preview.segment_slice` build a :class:`RunManifest`; the commands, the batch
and the docks read its attributes, and the output sets hold :meth:`RunManifest.to_dict` as
``STEM_manifest.json``. The JSON is the one every release wrote (the field names below are its
keys); :meth:`RunManifest.from_dict` and :func:`read_manifest` read it back, with an
:class:`~napari_vessel.errors.InputError` that names a missing or bad field.

Free-form parts stay plain JSON objects: the network's own ``config``, the card's preprocessing
pipeline (``preprocessing``, as the pipeline writes it), the post-processing recipe (as
:class:`~napari_vessel.postprocess.labels.Postprocessing` reads it), a batch's ``settings`` and the
top-level entries a caller adds (:attr:`RunManifest.extra`: e.g. the command line, the demo's
scores). The package reads none of them by key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.manifest._checks import _bad, _int, _mapping, _plain, _section, _str
from napari_vessel.manifest.parts import (
    BatchInfo,
    CpuInfo,
    InputInfo,
    ModelInfo,
    OutOfCoreInfo,
    PreviewInfo,
    RunParameters,
    Timing,
    Versions,
)
from napari_vessel.runtime import RuntimeInfo

__all__ = ["RunManifest", "ModelInfo", "InputInfo", "RunParameters", "CpuInfo", "Versions",
           "Timing", "OutOfCoreInfo", "BatchInfo", "PreviewInfo", "read_manifest"]


#: Keys every manifest has, in the order they are written.
_CORE = ("model", "input", "preprocessing", "parameters", "device", "runtime", "cpu", "versions",
         "timing", "created")
#: Typed keys only some manifests have (written after the core ones when set).
_OPTIONAL = ("out_of_core", "outputs", "batch", "preview")


def _runtime(value: Any) -> RuntimeInfo | None:
    if value is None or isinstance(value, RuntimeInfo):
        return value
    if not isinstance(value, Mapping) or set(value) != {"name", "reason", "precision", "threads"}:
        raise _bad("runtime", "null or an object with name, reason, precision and threads", value)
    threads = value["threads"]
    return RuntimeInfo(_str(value["name"], "runtime.name"), _str(value["reason"],
                                                                  "runtime.reason"),
                       _str(value["precision"], "runtime.precision"),
                       None if threads is None else _int(threads, "runtime.threads", 1))


@dataclass(frozen=True, kw_only=True)
class RunManifest:
    """Everything needed to repeat a segmentation, and what it cost.

    Attributes
    ----------
    model : ModelInfo
    input : InputInfo
    preprocessing : dict or None
        The model's preprocessing as its pipeline writes it (free-form: ``{"steps": [...]}``), or
        None when none was applied.
    parameters : RunParameters
    device : str
        Where the model ran, e.g. ``"cpu"`` or ``"cuda:0"``.
    runtime : RuntimeInfo or None
        The runtime that ran a network on a CPU and why (None: PyTorch on a GPU, classical).
    cpu : CpuInfo or None
        The CPU when the model ran on one.
    versions : Versions
    timing : Timing
    created : str
        Local time of the run, ISO 8601 with its UTC offset.
    out_of_core : OutOfCoreInfo or None
        Set by :func:`~napari_vessel.inference.out_of_core.segment_to_zarr`.
    outputs : dict of str to str, or None
        The written files by role (``"labels"``, ``"prob"``, ``"manifest"``, ...).
    batch : BatchInfo or None
        Set by ``napari-vessel batch``.
    preview : PreviewInfo or None
        Set by :func:`~napari_vessel.inference.preview.segment_slice`.
    extra : dict
        More top-level entries, free-form and written as they are (e.g. ``command``, the demo's
        ``scores_vs_ground_truth``); none may reuse a typed field's name.
    """

    model: ModelInfo
    input: InputInfo
    preprocessing: dict[str, Any] | None
    parameters: RunParameters
    device: str
    runtime: RuntimeInfo | None
    cpu: CpuInfo | None
    versions: Versions
    timing: Timing
    created: str
    out_of_core: OutOfCoreInfo | None = None
    outputs: dict[str, str] | None = None
    batch: BatchInfo | None = None
    preview: PreviewInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelInfo), ("input", InputInfo),
                          ("parameters", RunParameters), ("versions", Versions),
                          ("timing", Timing)):
            object.__setattr__(self, name, _section(cls, getattr(self, name)))
        for name, cls in (("cpu", CpuInfo), ("out_of_core", OutOfCoreInfo), ("batch", BatchInfo),
                          ("preview", PreviewInfo)):
            object.__setattr__(self, name, _section(cls, getattr(self, name), True))
        object.__setattr__(self, "runtime", _runtime(self.runtime))
        object.__setattr__(self, "preprocessing", _mapping(self.preprocessing, "preprocessing",
                                                           True))
        object.__setattr__(self, "device", _str(self.device, "device"))
        object.__setattr__(self, "created", _str(self.created, "created"))
        outputs = _mapping(self.outputs, "outputs", True)
        for path in (outputs or {}).values():
            _str(path, "outputs")
        object.__setattr__(self, "outputs", outputs)
        extra = _mapping(self.extra, "extra")
        taken = sorted(set(extra) & {*_CORE, *_OPTIONAL})
        if taken:
            raise InputError(f"extra manifest entries {', '.join(taken)} are typed fields of the "
                             "manifest: set them as attributes (dataclasses.replace)")
        object.__setattr__(self, "extra", extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written as ``STEM_manifest.json``: the core keys, the optional ones that
        are set, then :attr:`extra`'s entries."""
        out = {name: _plain(getattr(self, name)) for name in _CORE}
        out.update({name: _plain(getattr(self, name)) for name in _OPTIONAL
                    if getattr(self, name) is not None})
        out.update(_plain(self.extra))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunManifest:
        """Read a manifest's JSON form (unknown top-level keys go to :attr:`extra`).

        Raises
        ------
        InputError
            Not a JSON object, a missing or bad field.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a run manifest must be a JSON object, not {type(data).__name__}")
        missing = [name for name in _CORE if name not in data]
        if missing:
            raise InputError(f"not a napari-vessel run manifest: missing field(s) "
                             f"{', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in _CORE or k in _OPTIONAL}
        return cls(**known, extra={k: v for k, v in data.items() if k not in known})

    def updated(self, entries: Mapping[str, Any]) -> RunManifest:
        """A copy with top-level ``entries`` set: typed fields (as objects or their JSON form) by
        name, any other key into :attr:`extra`."""
        typed = {k: v for k, v in entries.items() if k in _CORE or k in _OPTIONAL}
        return replace(self, **typed, extra={**self.extra, **{k: v for k, v in entries.items()
                                                              if k not in typed}})


def read_manifest(path: str | os.PathLike) -> RunManifest:
    """Read a ``STEM_manifest.json`` written by ``segment``, ``batch`` or the docks.

    Raises
    ------
    InputError
        The file cannot be read, is not JSON, or is not a run manifest (the message names the
        file and the field).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the run manifest {path}: {err}") from err
    try:
        return RunManifest.from_dict(data)
    except InputError as err:
        raise InputError(f"{path}: {err}") from err
