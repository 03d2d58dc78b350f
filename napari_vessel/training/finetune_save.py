"""Save a fine-tuned network as a new user model (see :mod:`napari_vessel.training.finetune`).

The model goes into the user models folder (:func:`~napari_vessel.models.registry.user_models_dir`)
as ``NAME.safetensors`` + ``NAME.json`` (the card, written by
:func:`~napari_vessel.models.weights.save_weights`) + ``NAME.manifest.json`` (the run manifest:
settings, loss curve, timings, versions). Every file is written under a temporary name and renamed;
if any write fails (disk full, read-only folder) the files already written are removed, so nothing
half-written remains. The folder of the shipped weights is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace
from napari_vessel.io.volume import Volume

__all__ = ["check_new_name", "check_name_syntax", "save_finetuned", "MANIFEST_SUFFIX"]

#: Suffix of the run manifest written beside the card.
MANIFEST_SUFFIX = ".manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


_UNSUPERVISED_LOSS = {
    "selftrain": "self-training on a mean teacher's confident pseudo-labels with intensity "
                 "jitter, anchored to the parent, vessel size kept",
    "tent": "entropy minimisation of the normalisation layers (TENT), anchored to the parent, "
            "vessel size kept",
    "umis": "UMIS compound loss, paper 000 eq. 17-26",
    "adabn": "batch-norm statistics re-estimated on the volume (AdaBN); no gradient step",
    "synthetic": "2 x balanced BCE + 0.5 x soft Dice on synthetic vessel volumes drawn at the "
                 "volume's voxel size and given its intensity histogram (exact labels)",
}


def models_folder(folder: Any) -> Path:
    """Where fine-tuned models are saved: ``folder`` or the user models folder; never the
    shipped weights folder (an InputError)."""
    from napari_vessel.models.registry import user_models_dir
    from napari_vessel.models.weights import SHIPPED_DIR

    path = Path(folder).expanduser() if folder is not None else user_models_dir()
    if path.resolve() == SHIPPED_DIR.resolve():
        raise InputError(f"{path} holds the shipped weights, which are never modified; save "
                         "fine-tuned models in the user models folder")
    return path


def _taken(name: str, folder: Path) -> bool:
    from napari_vessel.models import registry

    names = {s.name.lower() for s in registry.list_models()}
    files = [folder / f"{name}{suffix}" for suffix in (".json", ".safetensors", MANIFEST_SUFFIX)]
    return name.lower() in names or any(f.exists() for f in files)


def check_name_syntax(name: Any) -> str:
    """Return ``name`` stripped if it can name a model file (no folder part), else raise.

    A name is 1-64 letters, digits, ``-``, ``_`` or ``.`` starting with a letter or digit, so
    it can never point outside the folder it is saved in.
    """
    name = str(name).strip()
    if not _NAME.match(name) or name.endswith((".json", ".safetensors")):
        raise InputError(f"{name!r} cannot name a model: use 1-64 letters, digits, '-', '_' or "
                         "'.', starting with a letter or digit (e.g. umis-my-scope)")
    return name


def check_new_name(name: str, folder: Any = None) -> str:
    """Return ``name`` if it can name a new model in ``folder``, else raise :class:`InputError`.

    A name is 1-64 letters, digits, ``-``, ``_`` or ``.`` starting with a letter or digit, and
    must differ from every registered model and from the files already in the folder; the error
    suggests a free name.
    """
    name = check_name_syntax(name)
    path = models_folder(folder)
    if _taken(name, path):
        free = next(f"{name}-{i}" for i in range(2, 10_000) if not _taken(f"{name}-{i}", path))
        raise InputError(f"a model named {name!r} already exists; choose another name, e.g. "
                         f"{free!r}")
    return name


def _source_info(result: Any, volume_source: Any) -> dict:
    info = dict(result.volume or {})
    if isinstance(volume_source, Volume):
        from napari_vessel.training.finetune_data import volume_fingerprint

        info = volume_fingerprint(volume_source)
    elif volume_source is not None:
        info["source"] = str(volume_source)
    return info


def _atomic_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (a temporary file moved into place)."""
    with atomic_replace(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_finetuned(result: Any, name: str, *, parent: str | None = None,
                   volume_source: Any = None, folder: Any = None,
                   extra: dict | None = None) -> Path:
    """Write a fine-tuned model as a new user model, atomically.

    Parameters
    ----------
    result : FinetuneResult
        From :func:`~napari_vessel.training.finetune.finetune`.
    name : str
        The new model's name (see :func:`check_new_name`).
    parent : str, optional
        The model it started from; default ``result.parent``.
    volume_source : str, Path or Volume, optional
        The volume it was fine-tuned on: a path (kept with the shape and SHA-256 measured during
        the run) or the Volume itself (measured again); default what the run recorded.
    folder : str or Path, optional
        Where to write; default the user models folder, where :func:`list_models` finds it.
    extra : dict, optional
        More JSON-ready entries for the run manifest (e.g. the command line).

    Returns
    -------
    Path
        The ``.safetensors`` file; ``NAME.json`` (card) and ``NAME.manifest.json`` lie beside it.

    Raises
    ------
    InputError
        No step was run; invalid or taken name; the folder of the shipped weights; a full or
        read-only disk (nothing half-written remains).
    """
    from napari_vessel.inference.run import versions
    from napari_vessel.models import registry
    from napari_vessel.models.weights import ModelCard, save_weights

    if result.steps == 0:
        raise InputError("the fine-tune stopped before its first step, so the model equals its "
                         "parent; nothing to save (run it for longer)")
    name = check_new_name(name, folder)
    path = models_folder(folder)
    parent_name = parent or result.parent
    base = registry.get(parent_name)
    if base.architecture != registry.get(result.parent).architecture:
        raise InputError(f"the result was fine-tuned from {result.parent!r}, whose architecture "
                         f"differs from {parent_name!r}'s; leave parent= out")
    summary = result.summary()
    summary["volume"] = _source_info(result, volume_source)
    cfg = result.config
    kind = "supervised" if cfg.mode == "supervised" else base.kind
    volume_name = Path(str(summary["volume"].get("source") or "an unnamed volume")).name
    parent_card = base.card
    card = ModelCard(
        name=name, architecture=base.architecture, config=dict(base.config),
        kind=kind, parent=parent_name,
        description=f"{parent_name} fine-tuned ({cfg.mode}) on {volume_name}",
        trained_on=(list(parent_card.trained_on) if parent_card else []) + [summary["volume"]],
        training={"mode": cfg.mode, "steps": result.steps, "best_step": result.best_step,
                  "seconds": summary["seconds"], "minutes": round(result.seconds / 60, 3),
                  "stopped_early": result.stopped_early, "kept_parent": result.kept_parent,
                  "config": cfg.to_dict(),
                  "parent_sha256": parent_card.sha256 if parent_card else None,
                  "loss": (_UNSUPERVISED_LOSS[cfg.method] if cfg.mode == "unsupervised"
                           else "balanced BCE + TV (paper 001 eq. 1-2) + soft-clDice "
                           "(paper 004) on the edited voxels")},
        scores={}, preprocessing=base.preprocessing
        or (parent_card.preprocessing if parent_card else None),
        intensity_profile=base.intensity_profile, patch_size_zyx=list(base.patch_size_zyx),
        # the level the run worked at (a parent's level rule resolved on this volume): the
        # child is calibrated there; a paper's hysteresis recipe passes on, a level rule not
        threshold=(round(result.level, 6) if result.level is not None
                   else parent_card.threshold if parent_card else None),
        postprocessing=registry.inherited_postprocessing(base.postprocessing),
        extra={"finetuned_on": summary["volume"]},
    )
    manifest = {"model": name, **summary, "losses": [round(v, 6) for v in result.losses],
                "smoothed": [round(v, 6) for v in result.smoothed], "versions": versions(),
                **(extra or {})}
    manifest_path = path / f"{name}{MANIFEST_SUFFIX}"
    try:
        text = json.dumps(manifest, indent=2, default=str)
    except (TypeError, ValueError) as err:  # pragma: no cover - extra is the caller's
        raise InputError(f"the run manifest cannot be saved as JSON: {err}") from err
    weights = save_weights(result.state_dict, path / name, card)
    try:
        _atomic_text(manifest_path, text + "\n")
    except OSError as err:
        for leftover in (weights.with_suffix(".json"), weights, manifest_path):
            leftover.unlink(missing_ok=True)
        raise InputError(f"could not save the model to {path}: {err.strerror or err}; free some "
                         "disk space or choose a folder you can write to") from err
    return weights


def remove_finetuned(weights: Any) -> list[Path]:
    """Delete a fine-tuned model: its weights, card and run manifest (the dock's Revert).

    Parameters
    ----------
    weights : path-like
        The model's ``.safetensors`` file, as :func:`save_finetuned` returned it.

    Returns
    -------
    list of Path
        The files deleted.

    Raises
    ------
    InputError
        The file is not a fine-tuned model (its card names no parent), or it lies among the
        shipped weights.
    """
    from napari_vessel.models.weights import SHIPPED_DIR, read_card

    path = Path(weights)
    card_path = path.with_suffix(".json")
    if path.parent.resolve() == SHIPPED_DIR.resolve():
        raise InputError(f"{path} is a shipped model; shipped weights are never deleted")
    try:
        json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{card_path} cannot be read ({err}); nothing was deleted") from err
    try:
        parent = read_card(card_path).parent
    except InputError:  # JSON, but not a valid card: not one a fine-tune wrote
        parent = None
    if not parent:
        raise InputError(f"{path.name} is not a fine-tuned model (its card names no parent); "
                         "nothing was deleted")
    removed = []
    for target in (path.with_name(path.stem + MANIFEST_SUFFIX), card_path, path):
        if target.exists():
            target.unlink()
            removed.append(target)
    return removed


def segment_finetuned(volume: Any, name: str, weights: Any = None, *, device: Any = None,
                      progress: Any = None, cancel: Any = None) -> tuple:
    """Segment ``volume`` with a saved fine-tuned model, as ``segment`` does with any model.

    The model is looked up in the registry by ``name`` (the user models folder); when it was
    saved elsewhere (``napari-vessel finetune --models-dir``), its spec is made from the card
    next to ``weights`` the same way. Its card's post-processing applies (e.g. a cascade's
    hysteresis), as for the parent.

    Parameters
    ----------
    volume : Volume or array-like, shape (Z, Y, X)
    name : str
        The saved model's name.
    weights : str or Path, optional
        Its ``.safetensors`` file (:func:`save_finetuned`'s answer), for a model outside the
        user models folder.
    device, progress, cancel
        As for :func:`~napari_vessel.inference.run.segment`.

    Returns
    -------
    prob, labels, manifest
        As :func:`~napari_vessel.inference.run.segment` returns them.
    """
    from dataclasses import replace

    from napari_vessel.inference.run import segment
    from napari_vessel.models import registry
    from napari_vessel.models.weights import read_card

    spec: Any = name
    if weights is not None and name not in {s.name for s in registry.list_models()}:
        card = read_card(Path(weights))
        base = registry.get(card.parent)
        spec = replace(base, name=name, weights=Path(weights), card=card, source="user",
                       kind=card.kind or base.kind,
                       postprocessing=card.postprocessing
                       or registry.inherited_postprocessing(base.postprocessing))
    return segment(volume, spec, device=device, progress=progress, cancel=cancel)
