"""Supervised losses: training with labels and fine-tuning from a user's corrections.

All functions take batched tensors of shape ``(N, C, D, H, W)`` (the soft-skeleton ones also
``(N, C, H, W)``) and return a scalar tensor. ``mask`` (optional, broadcastable to the prediction,
values 0/1 or weights in [0, 1]) restricts a loss to some voxels, e.g. the voxels a user edited;
a mask with no voxel gives a loss of 0 that still back-propagates (zero gradient).

:func:`balanced_bce` (paper 001, eq. 1), :func:`tv_loss_3d` (paper 001, eq. 2, Sobel),
:func:`soft_dice_loss`, :func:`soft_cldice_loss` (paper 004, Algorithm 1), :func:`cldice_dice_loss`,
:func:`mip_dice_loss` (VC-Net, paper 002, eq. 3-4). The unsupervised UMIS loss is in
:mod:`napari_vessel.training.umis_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_vessel.errors import InputError
from napari_vessel.models.layers import sobel_gradients_3d, soft_skeleton

__all__ = [
    "balanced_bce",
    "tv_loss_3d",
    "soft_dice_loss",
    "soft_cldice_loss",
    "cldice_dice_loss",
    "mip_dice_loss",
]

_EPS = 1e-8


def _check_pair(pred: torch.Tensor, other: torch.Tensor, what: str = "target") -> None:
    if pred.ndim not in (4, 5):
        raise InputError(f"prediction has shape {tuple(pred.shape)}; expected (N, C, D, H, W)")
    if pred.shape != other.shape:
        raise InputError(
            f"prediction {tuple(pred.shape)} and {what} {tuple(other.shape)} differ in shape"
        )


def _weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The mask as float weights broadcast to ``like`` (all ones when there is no mask)."""
    if mask is None:
        return torch.ones_like(like)
    try:
        return torch.broadcast_to(mask.to(like.dtype), like.shape)
    except RuntimeError as err:
        raise InputError(
            f"mask of shape {tuple(mask.shape)} does not fit the prediction {tuple(like.shape)}"
        ) from err


def _mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean; 0 (with a zero gradient) when the weights sum to 0."""
    return (values * weights).sum() / weights.sum().clamp_min(_EPS)


def _dice(prob: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, smooth: float):
    intersection = (prob * target * weights).sum()
    total = (prob * weights).sum() + (target * weights).sum()
    return 1 - (2 * intersection + smooth) / (total + smooth)


def balanced_bce(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    logits: bool = True,
    clip: float = 0.01,
) -> torch.Tensor:
    """Class-balanced binary cross-entropy (paper 001, eq. 1), averaged over voxels.

    ``E = -beta * sum_{Y+} log p - (1 - beta) * sum_{Y-} log(1 - p)``, with
    ``beta = |Y-| / |Y|`` computed from the (masked) target of the batch, then divided by ``|Y|``.

    Parameters
    ----------
    pred : Tensor, shape (N, C, D, H, W)
        Logits (``logits=True``, numerically stable) or probabilities in [0, 1].
    target : Tensor, same shape
        Reference in {0, 1} (soft values are accepted).
    mask : Tensor, optional
        Voxels that count (e.g. the user's edits); ``beta`` is computed on them only.
    logits : bool
        Whether ``pred`` holds logits.
    clip : float
        ``beta`` is clipped to ``[clip, 1 - clip]`` so that a target with one class only (a user
        who only erased) still gives a gradient; ``clip=0`` is the paper's exact form.

    Returns
    -------
    Tensor, scalar.
    """
    _check_pair(pred, target)
    target = target.to(pred.dtype)
    w = _weights(mask, pred)
    n = w.sum().clamp_min(_EPS)
    beta = ((1 - target) * w).sum() / n
    beta = beta.clamp(clip, 1 - clip).detach()
    if logits:
        log_p, log_not_p = F.logsigmoid(pred), F.logsigmoid(-pred)
    else:
        log_p = torch.log(pred.clamp(min=1e-7))
        log_not_p = torch.log((1 - pred).clamp(min=1e-7))
    per_voxel = -(beta * target * log_p + (1 - beta) * (1 - target) * log_not_p)
    return (per_voxel * w).sum() / n


def tv_loss_3d(prob: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """3D total variation with Sobel derivatives (paper 001, eq. 2), averaged over voxels.

    ``TV = mean_i |G_x P_i| + |G_y P_i| + |G_z P_i|``. The paper sums over voxels; the mean keeps the
    weight ``alpha`` of eq. 3 independent of the patch size when :func:`balanced_bce` is also a mean.

    Parameters
    ----------
    prob : Tensor, shape (N, C, D, H, W)
        Probabilities.
    mask : Tensor, optional

    Returns
    -------
    Tensor, scalar.
    """
    if prob.ndim != 5:
        raise InputError(f"tv_loss_3d needs (N, C, D, H, W), got {tuple(prob.shape)}")
    gz, gy, gx = sobel_gradients_3d(prob)
    return _mean(gx.abs() + gy.abs() + gz.abs(), _weights(mask, prob))


def soft_dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum p t + s) / (sum p + sum t + s)`` over the whole batch.

    Also the VC-Net volume loss (paper 002, eq. 4, with ``s = delta``).

    Parameters
    ----------
    prob, target : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    mask : Tensor, optional
    smooth : float
        The smoothing constant s.

    Returns
    -------
    Tensor, scalar in [0, 1].
    """
    _check_pair(prob, target)
    return _dice(prob, target.to(prob.dtype), _weights(mask, prob), smooth)


def soft_cldice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    iterations: int = 5,
    mask: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``1 - soft-clDice`` (paper 004, Algorithm 1).

    ``Tprec = (|cl_P o L| + s) / (|cl_P| + s)``, ``Tsens = (|cl_L o P| + s) / (|cl_L| + s)`` with the
    soft centrelines of Algorithm 2 (:func:`~napari_vessel.models.layers.soft_skeleton`), and
    ``clDice = 2 Tprec Tsens / (Tprec + Tsens)``.

    Parameters
    ----------
    prob, target : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    iterations : int
        k of Algorithm 2, about the largest vessel radius in voxels.
    mask : Tensor, optional
        Skeletons are computed on the whole arrays; only masked voxels are counted.
    smooth : float
        The epsilon of Algorithm 1.

    Returns
    -------
    Tensor, scalar in [0, 1].
    """
    _check_pair(prob, target)
    target = target.to(prob.dtype)
    w = _weights(mask, prob)
    cl_pred = soft_skeleton(prob, iterations)
    with torch.no_grad():
        cl_target = soft_skeleton(target, iterations)
    t_prec = ((cl_pred * target * w).sum() + smooth) / ((cl_pred * w).sum() + smooth)
    t_sens = ((cl_target * prob * w).sum() + smooth) / ((cl_target * w).sum() + smooth)
    return 1 - 2 * t_prec * t_sens / (t_prec + t_sens)


def cldice_dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    iterations: int = 5,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``(1 - alpha) * soft-Dice loss + alpha * soft-clDice loss`` (paper 004; alpha = 0.5).

    Parameters are those of :func:`soft_cldice_loss`.

    Returns
    -------
    Tensor, scalar in [0, 1].
    """
    dice = soft_dice_loss(prob, target, mask, smooth=smooth)
    cl = soft_cldice_loss(prob, target, iterations, mask, smooth=smooth)
    return (1 - alpha) * dice + alpha * cl


def _slab_mip(x: torch.Tensor, slab: int | None, stride: int | None, reduce: str) -> torch.Tensor:
    """Max (or min) projection along D, whole depth or sliding slabs: (N, C, S, H, W)."""
    depth = x.shape[2]
    if slab is None or slab >= depth:
        return x.amax(2, keepdim=True) if reduce == "max" else x.amin(2, keepdim=True)
    windows = x.unfold(2, slab, stride or slab)  # (N, C, S, H, W, slab)
    return windows.amax(-1) if reduce == "max" else windows.amin(-1)


def mip_dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    slab: int | None = None,
    stride: int | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice between maximum-intensity projections along z (VC-Net, paper 002, eq. 3-4).

    The total VC-Net loss is ``soft_dice_loss(p, g) + 0.2 * mip_dice_loss(p, g)`` (eq. 3).

    Parameters
    ----------
    prob, target : Tensor, shape (N, C, D, H, W)
    mask : Tensor, optional
        A projected pixel counts only if every voxel of its column (within the slab) is masked.
    slab, stride : int, optional
        Project sliding slabs of ``slab`` slices every ``stride`` slices (the paper's s=5, t=2);
        default: the whole depth.
    smooth : float

    Returns
    -------
    Tensor, scalar in [0, 1].
    """
    _check_pair(prob, target)
    if prob.ndim != 5:
        raise InputError(f"mip_dice_loss needs (N, C, D, H, W), got {tuple(prob.shape)}")
    w = _slab_mip(_weights(mask, prob), slab, stride, "min")
    p = _slab_mip(prob, slab, stride, "max")
    t = _slab_mip(target.to(prob.dtype), slab, stride, "max")
    return _dice(p, t, w, smooth)
