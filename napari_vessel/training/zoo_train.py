"""Which registry models ``napari-vessel train`` can train, and composing the cascade ensemble.

Every supervised network of the registry trains with :func:`napari_vessel.training.train.train`
(its paper's loss when it has one, see :mod:`napari_vessel.training.zoo_losses`). Classical
methods have nothing to learn, and UMIS learns without labels (``napari-vessel finetune``); both
are refused with the reason.

The cascade ensemble of paper 003 is two cascades trained separately and fused (section II.C):
:func:`compose_ensemble` builds it from a trained DBAC and DDMAC and only chooses the threshold of
the fused probability on the training volumes. (It can also be trained as one model: the sum of
the two losses trains each cascade as on its own, on the same patches.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.models import registry

__all__ = ["trainable_names", "zoo_training_spec", "describe_loss", "has_paper_loss",
           "compose_ensemble"]

_LOSSES = {
    "vcnet": "soft Dice + 0.2 x soft Dice of the sliding MIPs (paper 002, eq. 3-4) "
             "[+ cldice x soft-clDice]",
    "dbac": "BCE of the U-Net++ output + BCE of the attention map W (paper 003) "
            "[+ cldice x soft-clDice]",
    "ddmac": "BCE of the U-Net++ output + MSE of Q against the dilated probability map, k=20 "
             "(paper 003, eq. 3-5) [+ cldice x soft-clDice]",
    "cascade-ensemble": "DBAC loss + DDMAC loss (paper 003; the cascades share no weights)",
}
_RECIPE = ("2 x balanced BCE (beta clipped to [1e-3, 0.999]) + tv/16 x TV(Sobel) + dice x soft "
           "Dice + cldice x soft-clDice; AdamW weight decay")


def trainable_names() -> list[str]:
    """Names of the built-in supervised networks that can be trained from scratch."""
    return [s.name for s in registry.list_models() if s.is_network and s.kind == "supervised"
            and s.trainable and s.source == "builtin"]


def zoo_training_spec(name: str) -> registry.ModelSpec:
    """The spec of a built-in supervised model that ``napari-vessel train`` can train from scratch.

    (Fine-tuning has its own check, :func:`napari_vessel.training.finetune_loss.trainable_spec`,
    which also admits user models and UMIS.)

    Raises
    ------
    InputError
        Unknown name, a classical method, an unsupervised model, a user model or a model marked
        not trainable; the message says why and lists the trainable names.
    """
    choices = ", ".join(trainable_names())
    try:
        spec = registry.get(name)
    except InputError as err:
        raise InputError(f"unknown model {name!r}; trainable models: {choices}") from err
    if spec.kind == "classical":
        raise InputError(f"{spec.name!r} is a classical method with nothing to learn; trainable "
                         f"models: {choices}")
    if spec.kind == "unsupervised":
        raise InputError(f"{spec.name!r} learns without labels, with its own loop: "
                         f"'napari-vessel train --model {spec.name}' (or adapt it to your data "
                         f"with 'napari-vessel finetune --model {spec.name}'); supervised "
                         f"trainable models: {choices}")
    if spec.source != "builtin" or not spec.trainable:
        raise InputError(f"{spec.name!r} cannot be trained from scratch here (a user model: "
                         f"fine-tune it with 'napari-vessel finetune'); trainable models: "
                         f"{choices}")
    return spec


def has_paper_loss(spec: registry.ModelSpec) -> bool:
    """Whether the model trains with its paper's own loss rather than the TV-Net recipe."""
    return spec.architecture in _LOSSES


def describe_loss(spec: registry.ModelSpec, *, balance: bool = True) -> str:
    """The loss a model trains with, in words, for its card (``balance``: the recipe's BCE)."""
    if has_paper_loss(spec):
        return _LOSSES[spec.architecture]
    return _RECIPE if balance else _RECIPE.replace(
        "2 x balanced BCE (beta clipped to [1e-3, 0.999])", "plain BCE")


def compose_ensemble(model: Any, members: Sequence[str | Path], pairs: list,
                     spec: registry.ModelSpec) -> tuple[Any, dict]:
    """Load a trained DBAC and DDMAC into a cascade ensemble and choose its threshold.

    Parameters
    ----------
    model : CascadeEnsemble
        A freshly built ensemble (its widths must match the members').
    members : (path, path)
        The DBAC and the DDMAC weights (``NAME``, ``NAME.safetensors`` or ``NAME.json``).
    pairs : list of Pair
        Volumes on which the threshold of the fused probability is chosen.
    spec : ModelSpec
        The ensemble's spec.

    Returns
    -------
    result : TrainResult
        No steps; the threshold and training-volume F1 of the fused probability.
    composed_from : dict
        Each member's card name, SHA-256 and training command, for the card.
    """
    from napari_vessel.models.weights import load_weights
    from napari_vessel.training.train import TrainResult, choose_threshold, predict_volume

    start = time.monotonic()
    composed: dict[str, Any] = {}
    for part, path in zip(("dbac", "ddmac"), members, strict=True):
        card = load_weights(path)[1]
        if card.architecture != part:
            raise InputError(f"--members: {path} is a {card.architecture!r} model, not "
                             f"{part!r}; give the DBAC first, then the DDMAC")
        load_weights(path, model=getattr(model, part))
        composed[part] = {"name": card.name, "sha256": card.sha256,
                          "command": card.training.get("command"),
                          "trained_on": list(card.trained_on)}
    model.eval()
    probs = [predict_volume(model, p.image, spec=spec) for p in pairs]
    threshold, scores = choose_threshold(probs, [p.labels for p in pairs])
    result = TrainResult(model, 0, (time.monotonic() - start) / 60, [], threshold,
                         {p.name: s for p, s in zip(pairs, scores, strict=True)},
                         {p.name: prob for p, prob in zip(pairs, probs, strict=True)})
    return result, composed
