"""Losses, model checks and previews of fine-tuning (see :mod:`napari_vessel.training.finetune`).

:func:`make_loss` returns ``loss(model, image, valid, target, mask) -> (total, terms)`` for a mode:

- unsupervised: the UMIS compound loss of paper 000, eq. 17-26, on ``S = (SI o IS)^3 (S_bar)``
  (eq. 12). UMIS computes S itself; for any other network the morphological pooling is applied to
  its probability output here, and L_rec (eq. 23) is left out when there is no reconstruction;
- supervised: balanced BCE (paper 001, eq. 1) + ``tv_weight`` x TV (eq. 2) + ``dice_weight`` x
  soft Dice + ``cldice_weight`` x soft-clDice (paper 004), all counted on the edited voxels only.
  Outside the mask the target is replaced by the model's own (detached) decision, so labels there
  cannot change the loss, even through the skeletons of soft-clDice.

An optional ``consistency`` term (not from the papers) adds the mean squared difference to the
parent network's prediction, on unedited voxels in the supervised mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.layers import morph_smooth
from napari_vessel.training.finetune_data import preview_window
from napari_vessel.training.losses import balanced_bce, soft_cldice_loss, soft_dice_loss, tv_loss_3d
from napari_vessel.training.umis_loss import UMISLoss

__all__ = ["ProbabilityNet", "trainable_spec", "forward_parts", "make_loss", "probe_loss",
           "run_preview"]

#: mu of eq. 12 when the morphological pooling is added to a network that has none.
MORPH_ITERATIONS = 3

Loss = Callable[..., tuple[torch.Tensor, dict]]


def trainable_spec(name: Any, trainable: Callable[[], list[str]]):
    """The registry spec of ``name`` if fine-tuning can start from it, else :class:`InputError`."""
    from napari_vessel.models import registry

    spec = registry.get(name)
    problem = None
    if not spec.is_network:
        problem = f"{spec.name!r} is a classical method, not a network: it has nothing to learn"
    elif not spec.trainable:
        problem = f"{spec.name!r} is marked as not trainable"
    elif not spec.has_weights:
        problem = f"{spec.name!r} has no trained weights yet to start from"
    elif spec.dims != 3:
        problem = f"{spec.name!r} is a 2D network; fine-tuning supports 3D networks"
    if problem:
        names = trainable()
        choice = f"models that can be fine-tuned: {', '.join(names)}" if names else \
            "no model can be fine-tuned yet (train one with 'napari-vessel train')"
        raise InputError(f"{problem}; {choice}")
    return spec


def forward_parts(model: nn.Module, x: torch.Tensor, spec: Any, *, reconstruct: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                             torch.Tensor | None]:
    """Run the network; return ``(S, S_bar, I_bar, logits)`` (missing parts are None).

    ``S`` is the probability the model predicts, ``S_bar`` the one before the UMIS smoothing
    (eq. 11-12), ``I_bar`` the reconstruction (eq. 13), ``logits`` the pre-sigmoid output of a
    network that gives logits.
    """
    out = model(x, reconstruct=reconstruct) if _has_reconstruction(model) else model(x)
    if hasattr(out, "seg"):
        return out.seg, getattr(out, "seg_raw", None), getattr(out, "recon", None), None
    if isinstance(out, tuple | list):
        out = out[0]
    if spec.output == "logits":
        return torch.sigmoid(out), None, None, out
    return out, None, None, None


def _has_reconstruction(model: nn.Module) -> bool:
    return hasattr(model, "rec_decoder")


class ProbabilityNet(nn.Module):
    """A registered network whose output is always the vessel probability (for the engine)."""

    def __init__(self, model: nn.Module, spec: Any) -> None:
        super().__init__()
        self.net, self.spec = model, spec
        self.input_multiple = tuple(spec.input_multiple_zyx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_parts(self.net, x, self.spec, reconstruct=False)[0]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2 * weights).sum() / weights.sum().clamp_min(1e-8)


def make_loss(cfg: Any, spec: Any, parent: nn.Module | None = None, *,
              leash: Callable[..., torch.Tensor] | None = None, level: float = 0.5) -> Loss:
    """The loss of one mode as ``loss(model, x, valid, target, mask) -> (total, terms)``.

    Parameters
    ----------
    cfg : FinetuneConfig
    spec : ModelSpec
        The network's spec (its output kind).
    parent : nn.Module, optional
        Frozen copy of the parent, for the ``consistency`` term.
    leash : callable(prob, x, valid, terms) -> Tensor, optional
        An extra term keeping the model near its parent (:class:`.adapt.Leash`); supervised, on
        the unedited voxels only (the edits must be free to change the model).
    level : float
        Supervised: the threshold of the model's own decision on unedited voxels (the run's
        level, e.g. the one the parent's level rule chose for the volume).
    """
    umis = UMISLoss(cfg.alpha, cfg.beta, dict(cfg.lambdas))

    def consistency(model_prob: torch.Tensor, x: torch.Tensor, weights: torch.Tensor,
                    terms: dict) -> torch.Tensor:
        if parent is None or cfg.consistency <= 0:
            return model_prob.new_zeros(())
        with torch.no_grad():
            reference = forward_parts(parent, x, spec, reconstruct=False)[0]
        value = _masked_mse(model_prob, reference, weights)
        terms["consistency"] = float(value.detach())
        return cfg.consistency * value

    def unsupervised(model, x, valid, target=None, mask=None, *, probe=False):
        seg, raw, recon, _ = forward_parts(model, x, spec, reconstruct=not probe)
        if raw is None:  # no morphological pooling in the network: add it (eq. 12)
            seg, raw = morph_smooth(seg, MORPH_ITERATIONS), seg
        total, terms = umis(seg, x, raw=raw, recon=recon, mask=valid)  # eq. 17
        if not probe:
            total = total + consistency(seg, x, valid, terms)
            if leash is not None:
                total = total + leash(seg, x, valid, terms)
            terms["total"] = float(total.detach())
        return total, terms

    def supervised(model, x, valid, target, mask, *, probe=False):
        prob, _, _, logits = forward_parts(model, x, spec, reconstruct=False)
        # unedited voxels are not truth: there the target is the model's own decision
        target = torch.where(mask > 0, target, (prob.detach() > level).to(prob.dtype))
        terms = {"bce": balanced_bce(logits if logits is not None else prob, target, mask,
                                     logits=logits is not None, clip=cfg.beta_clip),  # eq. 1
                 "tv": tv_loss_3d(prob, mask)}  # paper 001, eq. 2
        total = terms["bce"] + cfg.tv_weight * terms["tv"]
        if cfg.dice_weight > 0:
            terms["dice"] = soft_dice_loss(prob, target, mask)
            total = total + cfg.dice_weight * terms["dice"]
        if cfg.cldice_weight > 0:
            terms["cldice"] = soft_cldice_loss(prob, target, mask=mask)  # paper 004
            total = total + cfg.cldice_weight * terms["cldice"]
        report = {k: float(v.detach()) for k, v in terms.items()}
        if not probe:
            total = total + consistency(prob, x, valid * (1 - mask), report)
            if leash is not None:  # the parent's sure decisions where nobody edited
                total = total + leash(prob, x, valid * (1 - mask), report)
        report["total"] = float(total.detach())
        return total, report

    return supervised if cfg.mode == "supervised" else unsupervised


def probe_loss(loss: Loss, model: nn.Module, probes: list | None) -> float | None:
    """Loss on fixed patches in eval mode, without the consistency term (None without probes)."""
    if probes is None:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total, _ = loss(model, *probes, probe=True)
    finally:
        model.train(was_training)
    return float(total)


def run_preview(model: nn.Module, spec: Any, image: np.ndarray, z: int, size: int | None,
                device: Any) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Vessel probability of one slice (or a centred square of it), in eval mode, cheaply.

    The network runs on the few slices around ``z`` its input multiple needs, reflection-padded
    to that multiple.

    Returns
    -------
    preview : ndarray of float32, shape (H, W)
    z : int
        The slice shown (clipped to the volume).
    origin_yx : (int, int)
        Top-left corner of the region in the volume.
    """
    multiple = spec.input_multiple_zyx
    block, z_in, origin = preview_window(image.shape, z, size, multiple)
    region = image[block]
    pads = [(0, (-n) % m) for n, m in zip(region.shape, multiple, strict=True)]
    if any(p[1] for p in pads):
        mode = "reflect" if all(p[1] < n for p, n in zip(pads, region.shape, strict=True)) \
            else "edge"
        region = np.pad(region, pads, mode=mode)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(region))[None, None].to(device)
            prob = forward_parts(model, x, spec, reconstruct=False)[0]
    finally:
        model.train(was_training)
    height, width = block[1].stop - block[1].start, block[2].stop - block[2].start
    out = prob[0, 0, z_in, :height, :width].float().cpu().numpy()
    if out.shape != (height, width):  # pragma: no cover - defensive
        raise InputError("the preview region does not fit the network's output")
    return out, block[0].start + z_in, origin
