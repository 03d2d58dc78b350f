"""Run a cached ONNX export without importing PyTorch (a *warm* start).

The export cache (:mod:`.export`) is keyed by :func:`~.export.export_key`, which needs the network
built with PyTorch. Importing PyTorch takes about 1.5 s on a 2-core machine, and the registry's
model modules import it too, so every export that was checked against its network also gets an
*index entry* keyed by what can be read without PyTorch: the SHA-256 of the weights file
(hashlib), the builder and its configuration, the dimensionality, and a stamp of the software
(this package's model and runtime code and shipped cards, and the installed torch's version file).
The entry names the export and the runtimes (and their versions) that reproduced the network
when it was built.
A *model entry* records the registry's spec of a model name (as the command line gives it) for
the same stamp and user models folder, so that the name resolves without the model modules.

Nothing is trusted that this code did not write for exactly these inputs: an entry is used only
when every field it was made from is the same now, the export's JSON names the same key, and the
ONNX file's SHA-256 is the recorded one. In every other case (first run, changed weights, code or
user models, a corrupt file) the lookups return None and the caller takes the PyTorch path, which
rebuilds the export, checks it against the network and writes the entries again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from napari_vessel.devices import torch_version_file
from napari_vessel.io.common import atomic_replace
from napari_vessel.models.weights import file_sha256
from napari_vessel.runtime.export import EXPORT_VERSION, cache_dir

__all__ = ["software_stamp", "index_fields", "find_export", "record_export", "resolve_name",
           "remember_name", "runtime_stamp", "LazyBuilder"]

#: Bumped when the entries' layout changes.
ENTRY_VERSION = 1
_PACKAGE = Path(__file__).resolve().parents[1]
_STAMP: list[str] = []
_WEIGHTS_SHA: dict[tuple, str] = {}


def software_stamp() -> str:
    """SHA-256 of this package's version, its model and runtime source files, the shipped model
    cards and the installed torch's version file: whatever decides a spec, a network's graph or
    its export. Computed once per process (a few hundred kB read)."""
    if not _STAMP:
        from napari_vessel import __version__

        digest = hashlib.sha256(f"{__version__}\n{EXPORT_VERSION}\n{ENTRY_VERSION}\n".encode())
        files = [*sorted((_PACKAGE / "models").glob("*.py")),
                 *sorted((_PACKAGE / "models" / "weights").glob("*.json")),
                 *sorted((_PACKAGE / "runtime").glob("*.py")), _PACKAGE / "devices.py",
                 torch_version_file()]
        for path in files:
            if path is None:
                continue
            digest.update(str(path.name).encode())
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"missing")
        _STAMP.append(digest.hexdigest())
    return _STAMP[0]


_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}


def runtime_stamp(runtime: str) -> str:
    """The installed distributions of a runtime's package (``onnxruntime-1.32.0.dist-info``):
    an export checked with one version is checked again after an update."""
    module = _MODULES.get(runtime, runtime)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return ""
    if found is None or not found.submodule_search_locations:
        return ""
    site = Path(list(found.submodule_search_locations)[0]).parent
    try:
        return " ".join(sorted(p.name for p in site.glob(f"{module}*-info")))
    except OSError:
        return ""


def _weights_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _WEIGHTS_SHA:
        _WEIGHTS_SHA[key] = file_sha256(path)
    return _WEIGHTS_SHA[key]


class LazyBuilder:
    """A spec's builder named ``"module:qualname"``, imported only when a network is built (the
    model modules import PyTorch). Only builders of this package's model modules are accepted."""

    def __init__(self, ident: str) -> None:
        module, _, qualname = ident.partition(":")
        if not module.startswith("napari_vessel.models.") or not qualname:
            raise ValueError(f"not a builder of this package: {ident!r}")
        self.ident = ident

    def resolve(self):
        from napari_vessel.models import registry

        registry.list_models()  # the model modules register in order, as without a cache
        module, _, qualname = self.ident.partition(":")
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target

    def __call__(self, **config):
        return self.resolve()(**config)

    def __repr__(self) -> str:
        return f"LazyBuilder({self.ident!r})"


def _builder_id(builder: Any) -> str | None:
    if isinstance(builder, LazyBuilder):
        return builder.ident
    module, qualname = getattr(builder, "__module__", ""), getattr(builder, "__qualname__", "")
    if not module.startswith("napari_vessel.models.") or not qualname or "<" in qualname:
        return None  # a builder from elsewhere: its code is not in the software stamp
    return f"{module}:{qualname}"


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _folder(cache: Path | None, kind: str) -> Path:
    return (cache or cache_dir()) / "onnx" / kind


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict) -> None:
    """Write ``data`` atomically; a cache that cannot be written is left as it is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_replace(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True, default=str)
    except OSError:
        return


def index_fields(spec: Any) -> dict | None:
    """What identifies the network of ``spec`` and its export without PyTorch, or None when it
    cannot be indexed (no weights file, a builder from outside this package)."""
    builder = _builder_id(getattr(spec, "builder", None))
    weights = getattr(spec, "weights", None)
    if builder is None or weights is None or not Path(weights).is_file():
        return None
    try:
        sha = _weights_sha256(Path(weights))
    except OSError:
        return None
    return {"builder": builder, "architecture": spec.architecture,
            "config": json.loads(json.dumps(dict(spec.config), sort_keys=True, default=str)),
            "dims": int(spec.dims), "weights_sha256": sha, "software": software_stamp()}


def find_export(fields: dict | None, cache: Path | None = None) -> tuple[Path | None, Any]:
    """The cached ONNX file for the index ``fields`` and its entry, or (None, why not)."""
    if fields is None:
        return None, "no index"
    entry = _read(_folder(cache, "index") / f"{_digest(fields)[:32]}.json")
    if entry is None:
        return None, "no cached export yet"
    key = entry.get("export_key")
    if entry.get("fields") != fields or not isinstance(key, str) or len(key) < 32:
        return None, "the cached export was made for other weights or software"
    onnx = _folder(cache, "") / f"{key[:32]}.onnx"
    meta = _read(onnx.with_suffix(".json"))
    try:
        intact = meta is not None and meta.get("key") == key and \
            meta.get("sha256") == file_sha256(onnx)
    except OSError:
        intact = False
    if not intact:
        return None, "the cached ONNX export did not match its hash"
    return onnx, entry


def record_export(fields: dict | None, path: Path, *, multiple: tuple[int, ...], runtime: str,
                  diff: float, cache: Path | None = None) -> None:
    """Index the export at ``path`` (checked against its network now: ``runtime`` reproduced it
    within ``diff``) under ``fields``. Exports in a temporary folder are not indexed."""
    if fields is None or path.parent.resolve() != _folder(cache, "").resolve():
        return
    meta = _read(path.with_suffix(".json"))
    key = meta.get("key") if meta else None
    if not isinstance(key, str):
        return
    target = _folder(cache, "index") / f"{_digest(fields)[:32]}.json"
    entry = _read(target) or {}
    verified = entry.get("verified") if entry.get("export_key") == key else None
    verified = dict(verified) if isinstance(verified, dict) else {}
    verified[runtime] = {"diff": float(diff), "runtime": runtime_stamp(runtime)}
    _write(target, {"fields": fields, "export_key": key, "multiple": [int(m) for m in multiple],
                    "verified": verified})


# ---------------------------------------------------------------------------------------------
# model names without the model modules

_SPEC_FIELDS = ("name", "kind", "description", "config", "patch_size_zyx", "input_multiple_zyx",
                "dims", "preprocessing", "postprocessing", "intensity_profile", "trainable",
                "architecture", "source", "output", "min_slices")


def _name_fields(name: str | None) -> dict:
    from napari_vessel.models.registry import user_models_dir

    folder = user_models_dir()
    listing = []
    try:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.suffix in (".json", ".safetensors"):
                stat = path.stat()
                listing.append([path.name, stat.st_size, stat.st_mtime_ns])
    except OSError:
        listing = [["unreadable"]]
    return {"name": name or "", "models_dir": str(folder), "models": listing,
            "software": software_stamp(), "package": str(_PACKAGE)}


def resolve_name(name: str | None, cache: Path | None = None):
    """The spec the registry gave for model ``name`` (None: the default model) the last time,
    when the software and the user models folder are unchanged; else None. PyTorch and the
    model modules are not imported (the builder is a :class:`LazyBuilder`)."""
    from napari_vessel.models.card import ModelCard
    from napari_vessel.models.registry import ModelSpec

    fields = _name_fields(name)
    entry = _read(_folder(cache, "models") / f"{_digest(fields)[:32]}.json")
    if entry is None or entry.get("fields") != fields:
        return None
    try:
        data = entry["spec"]
        if not Path(data["weights"]).is_file():  # moved or deleted since: resolve as usual
            return None
        card = data.get("card")
        return ModelSpec(**{k: data[k] for k in _SPEC_FIELDS},
                         builder=LazyBuilder(data["builder"]), weights=Path(data["weights"]),
                         card=ModelCard.from_dict(card) if card else None)
    except Exception:  # noqa: BLE001 - an entry this code cannot read: resolve as usual
        return None


def remember_name(name: str | None, spec: Any, cache: Path | None = None) -> None:
    """Record ``spec`` as what model ``name`` resolves to (see :func:`resolve_name`): only for a
    network with weights that any fresh process would resolve the same way."""
    from napari_vessel.models import registry

    builder = _builder_id(getattr(spec, "builder", None))
    if builder is None or not spec.has_weights or not registry.is_package_spec(spec):
        return
    data = {k: getattr(spec, k) for k in _SPEC_FIELDS}
    data.update(builder=builder, weights=str(spec.weights),
                card=spec.card.to_dict() if spec.card is not None else None)
    fields = _name_fields(name)
    target = _folder(cache, "models") / f"{_digest(fields)[:32]}.json"
    entry = {"fields": fields, "spec": json.loads(json.dumps(data, default=list))}
    if _read(target) != entry:
        _write(target, entry)


