"""Losses of the model-zoo networks whose training needs more than one output or target.

VC-Net (paper 002, eq. 3-4)
    ``L = Dice(p, g) + 0.2 * Dice(p_mip, g_mip)``: soft Dice of the joint head, plus soft Dice of
    the 2D stream against the sliding MIPs of the labels (s = 5, t = 2), :func:`vcnet_loss`.
DBAC (paper 003, section II.B.1)
    Binary cross-entropy of the attention map ``W`` against the vessel mask and of the U-Net++
    output, :func:`dbac_loss`.
DDMAC (paper 003, section II.B.2, eq. 3-5)
    Mean squared error of ``Q`` against the dilated probability map
    ``1 - min(dist(1 - V), k) / max`` with k = 20 (:func:`dilated_probability_map`), plus binary
    cross-entropy of the U-Net++ output, :func:`ddmac_loss`.
Ensemble
    The two cascades share no weights, so training the ensemble on the sum of their losses trains
    each as the paper does, :func:`ensemble_loss`.

:func:`model_loss` picks the right one from the type of a model's output; every loss can add the
soft-clDice term of paper 004 on the final probability (``cldice_weight``). 2D models train on the
slices of 3D patches (:func:`as_slices`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_vessel.errors import InputError
from napari_vessel.models.cascades import DBACOutput, DDMACOutput, EnsembleOutput
from napari_vessel.models.vcnet import VCNetOutput
from napari_vessel.training.losses import balanced_bce, soft_cldice_loss, soft_dice_loss

__all__ = ["vcnet_loss", "dbac_loss", "ddmac_loss", "ensemble_loss", "model_loss",
           "has_own_loss", "dilated_probability_map", "label_mips", "as_slices"]

_OUTPUTS = (VCNetOutput, DBACOutput, DDMACOutput, EnsembleOutput)


def _check_target(pred: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    if tuple(pred.shape) != tuple(target.shape):
        raise InputError(f"{what}: prediction {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    return target.to(pred.dtype)


def _bce(logits: torch.Tensor, target: torch.Tensor, balanced: bool) -> torch.Tensor:
    if balanced:
        return balanced_bce(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def _cldice(prob: torch.Tensor, target: torch.Tensor, weight: float, iterations: int):
    if not weight:
        return prob.new_zeros(())
    return weight * soft_cldice_loss(prob, target, iterations)


def label_mips(target: torch.Tensor, slab: int = 5, step: int = 2) -> torch.Tensor:
    """Sliding MIPs of a label patch, the reference of the MIP Dice (paper 002, eq. 1 and 3).

    Parameters
    ----------
    target : Tensor, shape (N, 1, D, H, W)
        Labels in {0, 1}.
    slab, step : int
        s and t of eq. 1.

    Returns
    -------
    Tensor, shape (N, 1, m, H, W)
        The maximum of each slab: 1 where any slice of the slab is vessel.
    """
    if target.ndim != 5 or target.shape[2] < slab:
        raise InputError(f"label MIPs need (N, 1, D, H, W) with D >= {slab}; got "
                         f"{tuple(target.shape)}")
    return target.unfold(2, slab, step).amax(-1)


def vcnet_loss(output: VCNetOutput, target: torch.Tensor, *, mip_weight: float = 0.2,
               slab: int = 5, step: int = 2, smooth: float = 1.0, cldice_weight: float = 0.0,
               cldice_iterations: int = 3) -> torch.Tensor:
    """VC-Net loss ``Dice(p, g) + lambda * Dice(p_mip, g_mip)`` (paper 002, eq. 3-4).

    Parameters
    ----------
    output : VCNetOutput
        ``seg`` logits (N, 1, D, H, W) and ``mip`` logits (N, 1, m, H, W) of the model.
    target : Tensor, shape (N, 1, D, H, W)
        Labels in {0, 1}.
    mip_weight : float
        lambda of eq. 3 (paper: 0.2).
    slab, step : int
        The model's s and t (its ``slab`` and ``step``); they must give the model's m MIPs.
    smooth : float
        delta of eq. 4.
    cldice_weight, cldice_iterations : float, int
        Optional soft-clDice term (paper 004) on the joint probability.

    Returns
    -------
    Tensor, scalar.
    """
    target = _check_target(output.seg, target, "VC-Net loss")
    prob = torch.sigmoid(output.seg)
    target_mips = label_mips(target, slab, step)
    if tuple(target_mips.shape) != tuple(output.mip.shape):
        raise InputError(f"the label MIPs {tuple(target_mips.shape)} do not match the model's "
                         f"{tuple(output.mip.shape)}; pass the model's slab and step")
    loss = soft_dice_loss(prob, target, smooth=smooth)  # eq. 4
    loss = loss + mip_weight * soft_dice_loss(torch.sigmoid(output.mip), target_mips,
                                              smooth=smooth)  # eq. 3
    return loss + _cldice(prob, target, cldice_weight, cldice_iterations)


def dilated_probability_map(labels: Any, k: float = 20.0) -> torch.Tensor:
    """The DDMAC attention target ``1 - min(dist(1 - V), k) / max`` (paper 003, eq. 3-5).

    Each 2D image is done on its own: the Euclidean distance of every background pixel to the
    nearest vessel pixel, clipped at ``k`` (eq. 4), divided by its maximum and subtracted from 1
    (eq. 5). Vessels are 1, pixels ``k`` or more away 0 (when any pixel is that far; otherwise the
    farthest pixel is 0). An image without vessels is all 0; one that is all vessel, all 1.

    Parameters
    ----------
    labels : Tensor or ndarray, shape (N, 1, H, W), (N, H, W) or (H, W)
        Vessel mask (non-zero = vessel).
    k : float
        Upper bound of the distance (paper: 20 pixels).

    Returns
    -------
    Tensor of float32, the shape of ``labels`` (on the device of a tensor input)
    """
    from scipy.ndimage import distance_transform_edt

    if k <= 0:
        raise InputError(f"the distance bound k must be positive, not {k}")
    device = labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu")
    array = (labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor)
             else np.asarray(labels)) != 0
    if array.ndim < 2:
        raise InputError(f"the labels need at least 2 axes (H, W), got shape {array.shape}")
    planes = array.reshape(-1, *array.shape[-2:])
    out = np.zeros(planes.shape, dtype=np.float32)
    for i, vessel in enumerate(planes):
        if not vessel.any():
            continue
        distance = np.minimum(distance_transform_edt(~vessel), k)  # eq. 3-4
        top = float(distance.max())
        out[i] = 1.0 - distance / top if top > 0 else 1.0  # eq. 5
    return torch.from_numpy(out.reshape(array.shape)).to(device)


def dbac_loss(output: DBACOutput, target: torch.Tensor, *, attention_weight: float = 1.0,
              balanced: bool = False, cldice_weight: float = 0.0,
              cldice_iterations: int = 3) -> torch.Tensor:
    """DBAC loss: BCE of the attention logits ``W`` and of the U-Net++ output (paper 003).

    Parameters
    ----------
    output : DBACOutput
    target : Tensor, shape (N, 1, H, W)
        Vessel mask in {0, 1}; it is also the attention map's target.
    attention_weight : float
        Weight of the attention term.
    balanced : bool
        Class-balanced BCE (paper 001, eq. 1) instead of the paper's plain BCE.
    cldice_weight, cldice_iterations
        Optional soft-clDice term on the final probability.

    Returns
    -------
    Tensor, scalar.
    """
    target = _check_target(output.seg, target, "DBAC loss")
    loss = _bce(output.seg, target, balanced)
    loss = loss + attention_weight * _bce(output.attention, target, balanced)
    return loss + _cldice(torch.sigmoid(output.seg), target, cldice_weight, cldice_iterations)


def ddmac_loss(output: DDMACOutput, target: torch.Tensor, *, k: float = 20.0,
               attention_weight: float = 1.0, balanced: bool = False, cldice_weight: float = 0.0,
               cldice_iterations: int = 3) -> torch.Tensor:
    """DDMAC loss: MSE of ``Q`` against the dilated probability map + BCE of the output.

    Parameters
    ----------
    output : DDMACOutput
    target : Tensor, shape (N, 1, H, W)
        Vessel mask in {0, 1}; the distance target is made from it (eq. 3-5).
    k : float
        Distance bound of eq. 4 (paper: 20).
    attention_weight, balanced, cldice_weight, cldice_iterations
        As in :func:`dbac_loss`.

    Returns
    -------
    Tensor, scalar.
    """
    target = _check_target(output.seg, target, "DDMAC loss")
    distance = dilated_probability_map(target, k).to(output.distance.dtype)
    loss = _bce(output.seg, target, balanced)
    loss = loss + attention_weight * F.mse_loss(output.distance, distance)
    return loss + _cldice(torch.sigmoid(output.seg), target, cldice_weight, cldice_iterations)


def ensemble_loss(output: EnsembleOutput, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """Sum of :func:`dbac_loss` and :func:`ddmac_loss` of the two members (``options`` go to
    both; ``k`` to DDMAC only)."""
    k = options.pop("k", 20.0)
    return dbac_loss(output.dbac, target, **options) + ddmac_loss(output.ddmac, target, k=k,
                                                                   **options)


def has_own_loss(output: Any) -> bool:
    """True when a model's output needs :func:`model_loss` (not a plain logits tensor)."""
    return isinstance(output, _OUTPUTS)


def model_loss(output: Any, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """The training loss of a zoo model, chosen by the type of its output.

    Parameters
    ----------
    output : VCNetOutput, DBACOutput, DDMACOutput or EnsembleOutput
        What the model returned in training mode.
    target : Tensor
        Labels in {0, 1}, shaped like the model's ``seg`` output.
    **options
        Keyword options of the specific loss (e.g. ``cldice_weight``, ``mip_weight``).

    Raises
    ------
    InputError
        For a plain tensor (models with one output use the standard supervised loss).
    """
    if isinstance(output, VCNetOutput):
        return vcnet_loss(output, target, **options)
    if isinstance(output, EnsembleOutput):
        return ensemble_loss(output, target, **options)
    if isinstance(output, DBACOutput):
        return dbac_loss(output, target, **options)
    if isinstance(output, DDMACOutput):
        return ddmac_loss(output, target, **options)
    raise InputError(f"no zoo loss for a model output of type {type(output).__name__}; a plain "
                     "logits tensor takes the standard supervised loss")


def as_slices(image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3D patches ``(N, 1, Z, Y, X)`` as 2D images ``(N*Z, 1, Y, X)``, for 2D models."""
    if image.ndim != 5 or image.shape != target.shape:
        raise InputError(f"as_slices needs two (N, 1, Z, Y, X) tensors of one shape; got "
                         f"{tuple(image.shape)} and {tuple(target.shape)}")
    n, c, z, y, x = image.shape
    return (image.transpose(1, 2).reshape(n * z, c, y, x),
            target.transpose(1, 2).reshape(n * z, c, y, x))
