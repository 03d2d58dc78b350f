"""Model weights on disk: a safetensors file and a JSON model card beside it.

``NAME.safetensors`` holds the tensors (never a pickle, so loading runs no code); ``NAME.json`` is
the card: what the model is, how to rebuild it, what it was trained on, how it scored, and the
SHA-256 of the weights file. Both are written atomically
(:func:`~napari_vessel.io.common.atomic_replace`), the weights first, so a card never names a
half-written file.

Card fields
-----------
format_version : int
    Version of this layout (:data:`FORMAT_VERSION`). A newer one than the code knows is refused.
name, architecture, kind : str
    Model name, registered architecture (builder) and kind (supervised, unsupervised, classical).
config : dict
    Keyword arguments of the architecture's builder.
trained_on : list or str
    Data the model saw (file names, phantom settings).
training : dict
    ``command`` (to reproduce it), ``seed``, ``steps``, ``minutes``, ``loss``.
scores : dict
    Validation scores, e.g. leave-one-volume-out F1 per volume and their mean.
intensity_profile, preprocessing : dict
    Input statistics of the training data and the preprocessing pipeline (JSON form).
parent : str or None
    The model it was fine-tuned from.
created : str
    ISO 8601 time (UTC).
weights_file, sha256 : str
    File name of the weights (beside the card) and its SHA-256.

In memory a card is a :class:`~napari_vessel.models.card.ModelCard` (typed, checked, frozen);
the fields above and the optional ones (``threshold``, ``postprocessing``, ...) are described
there.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace
from napari_vessel.models.card import CARD_FIELDS, FORMAT_VERSION, ModelCard

__all__ = [
    "FORMAT_VERSION",
    "CARD_FIELDS",
    "ModelCard",
    "SHIPPED_DIR",
    "save_weights",
    "load_weights",
    "read_card",
    "file_sha256",
    "check_state_dict",
    "shipped_weights",
]

#: Folder of the weights shipped with the package.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def shipped_weights(name: str) -> Path | None:
    """The shipped ``NAME.safetensors``, or None when it is not (yet) in the package."""
    path = SHIPPED_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights path, card path) from a path with or without suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: Any, path: str | os.PathLike,
                 card: ModelCard | Mapping[str, Any] | None = None) -> Path:
    """Write ``NAME.safetensors`` and its card ``NAME.json`` atomically.

    Parameters
    ----------
    model : torch.nn.Module or dict of tensors
        The network (its ``state_dict`` is saved) or a state dict.
    path : str or Path
        ``folder/NAME`` with or without the ``.safetensors`` suffix.
    card : ModelCard or dict, optional
        The card, or its fields (see the module docstring), checked as a
        :class:`~napari_vessel.models.card.ModelCard`; ``format_version``, ``created``,
        ``weights_file`` and ``sha256`` are filled in here, ``name`` defaults to NAME.

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    InputError
        An invalid card, or a folder that cannot be written (read-only, disk full); nothing
        half-written remains.
    """
    from safetensors.torch import save_file

    weights_path, card_path = _paths(path)
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    # clone: safetensors refuses tensors that share memory; contiguous CPU copies are plain data
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    fields = card.to_dict() if isinstance(card, ModelCard) else {"config": {}, **(card or {})}
    full = ModelCard.from_dict({
        **fields, "format_version": FORMAT_VERSION, "name": fields.get("name") or weights_path.stem,
        "created": fields.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights_file": weights_path.name,
    })
    full.to_json()  # a card JSON cannot hold fails here, before anything is written

    from safetensors import SafetensorError

    try:
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_replace(weights_path) as tmp:
            try:
                save_file(tensors, str(tmp), metadata={"format": "pt", "name": full.name})
            except SafetensorError as err:  # its writer's I/O errors (a full disk): no OSError
                raise OSError(str(err).removeprefix("Error while serializing: ")) from err
        text = replace(full, sha256=file_sha256(weights_path)).to_json()
        with atomic_replace(card_path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    except OSError as err:
        if not card_path.exists():  # no card names these weights: leave no orphan behind
            try:
                weights_path.unlink(missing_ok=True)
            except OSError:
                pass
        raise InputError(
            f"could not save the model to {weights_path.parent}: {err.strerror or err}; "
            "free some disk space or choose a folder you can write to"
        ) from err
    return weights_path


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and check a model card (``NAME``, ``NAME.json`` or ``NAME.safetensors``).

    The one reader of cards on disk (:meth:`ModelCard.read` on ``NAME.json``).

    Returns
    -------
    ModelCard

    Raises
    ------
    InputError
        Missing or unreadable card, a ``format_version`` newer than this code knows, or an
        invalid field.
    """
    _, card_path = _paths(path)
    return ModelCard.read(card_path)


def _card_naming(path: str | os.PathLike) -> Path:
    """The card of ``path``: ``NAME.json`` beside it, else (for a ``.safetensors`` path) the one
    card in its folder whose ``weights_file`` names it (a renamed user card)."""
    weights_path, card_path = _paths(path)
    if card_path.is_file() or Path(path).suffix != ".safetensors" or not weights_path.is_file():
        return card_path
    for other in sorted(weights_path.parent.glob("*.json")):
        if other.name.startswith("."):  # a save's temporary file
            continue
        try:
            card = ModelCard.read(other)
        except InputError:  # another JSON file (a run manifest) or a broken card
            continue
        if card.weights_file == weights_path.name:
            return other
    return card_path


def check_state_dict(model: Any, state: dict) -> None:
    """Raise :class:`InputError` naming the tensors of ``state`` that do not fit ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5
                                                 else "")
                parts.append(f"{label}: {shown}")
        raise InputError(
            "the weights do not match the architecture (" + "; ".join(parts) + "); the card's "
            "architecture or config differs from the weights, or the file is from another model"
        )


def load_weights(path: str | os.PathLike, *, model: Any = None) -> tuple[dict, ModelCard]:
    """Read a weights file and its card, checking the card version and the file's hash.

    Parameters
    ----------
    path : str or Path
        ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
    model : torch.nn.Module, optional
        When given, the tensors are checked against it and loaded into it.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    card : ModelCard

    Raises
    ------
    InputError
        Card newer than the code, weights file missing, hash mismatch, corrupt file, or tensors
        that do not fit ``model`` (the message names them).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card_path = _card_naming(path)
    card = read_card(card_path)
    weights_path = card_path.parent / (card.weights_file or
                                       card_path.with_suffix(".safetensors").name)
    if not weights_path.is_file():
        raise InputError(
            f"model card {card_path} names the weights file {weights_path.name}, which does not "
            "exist; copy it beside the card or remove the card"
        )
    expected_hash = card.sha256
    if expected_hash and file_sha256(weights_path) != expected_hash:
        raise InputError(
            f"weights file {weights_path} does not match the SHA-256 in its card (the file is "
            "damaged or was replaced); restore it or retrain the model"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise InputError(f"weights file {weights_path} is corrupt or not safetensors: {err}") from err
    if model is not None:
        check_state_dict(model, state)
        model.load_state_dict(state)
    return state, card
