"""The unsupervised UMIS loss (paper 000, eq. 17-26).

``L = l1 L_AC + l2 L_rank + l3 L_tight + l4 L_rec + l5 L_MV + l6 L_ME`` (eq. 17): an active-contour
(Chan-Vese) term on the network's own segmentation, a ranking term that makes the inside the
bright region, a reconstruction term for the auxiliary decoder, a minimal-area term and two terms
that push the output towards 0 or 1. It needs only the image, so a network can keep training on
the very volume it must segment (transductive fine-tuning, section 4.4).

All functions take ``(N, C, D, H, W)`` tensors and an optional ``mask`` as in
:mod:`napari_vessel.training.losses`, and return a scalar tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.layers import gradient_l1
from napari_vessel.training.losses import _EPS, _check_pair, _mean, _weights

__all__ = [
    "region_means",
    "active_contour_loss",
    "rank_loss",
    "reconstruction_loss",
    "tightness_loss",
    "max_variance_loss",
    "max_entropy_loss",
    "UMISLoss",
    "UMIS_LAMBDAS",
]

#: Weights of eq. 17 (paper 000, section 4.3).
UMIS_LAMBDAS: dict[str, float] = {
    "ac": 1.0,
    "rank": 1e-2,
    "tight": 1e-3,
    "rec": 1e-3,
    "mv": 1e-3,
    "me": 1e-6,
}


def region_means(
    seg: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean intensity inside ``c1`` and outside ``c2`` the soft segmentation (eq. 19-20).

    Parameters
    ----------
    seg, image : Tensor, shape (N, C, D, H, W)
    mask : Tensor, optional

    Returns
    -------
    c1, c2 : Tensor, shape (N, 1, 1, 1, 1) (one pair per sample)
    """
    _check_pair(seg, image, "image")
    w = _weights(mask, seg)
    dims = tuple(range(1, seg.ndim))
    inside, outside = seg * w, (1 - seg) * w
    c1 = (image * inside).sum(dims, keepdim=True) / (inside.sum(dims, keepdim=True) + _EPS)
    c2 = (image * outside).sum(dims, keepdim=True) / (outside.sum(dims, keepdim=True) + _EPS)
    return c1, c2


def active_contour_loss(
    seg: torch.Tensor,
    image: torch.Tensor,
    raw: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Active-contour (ACWE) loss L_AC (paper 000, eq. 18-21).

    ``Gamma = ||grad S_bar||_1 * (alpha (I - c1)^2 - beta (I - c2)^2)`` (eq. 18): the region force
    of Chan-Vese weighted by the length of the contour (central differences of the segmentation
    before smoothing); the curvature term is the (SI o IS) smoothing that produced ``seg``.
    ``L_AC(p) = exp(Gamma S)`` where ``Gamma <= 0`` (push S to 1) and ``exp(-Gamma (1 - S))``
    elsewhere (push S to 0), eq. 21, averaged over voxels. c1, c2 come from ``seg`` (eq. 19-20).

    Parameters
    ----------
    seg : Tensor, shape (N, 1, D, H, W)
        S, the smoothed segmentation in [0, 1].
    image : Tensor, same shape
        I, the input intensities (normalised to [0, 1]).
    raw : Tensor, optional
        S_bar, the segmentation before smoothing (eq. 11), whose gradient enters Gamma; default
        ``seg``.
    alpha, beta : float
        Inside/outside weights (the paper: 1 and 2).
    mask : Tensor, optional

    Returns
    -------
    Tensor, scalar (>= exp(-max |Gamma|)).
    """
    _check_pair(seg, image, "image")
    if seg.ndim != 5:
        raise InputError(f"active_contour_loss needs (N, C, D, H, W), got {tuple(seg.shape)}")
    raw = seg if raw is None else raw
    _check_pair(seg, raw, "raw segmentation")
    c1, c2 = region_means(seg, image, mask)
    gamma = gradient_l1(raw) * (alpha * (image - c1) ** 2 - beta * (image - c2) ** 2)
    per_voxel = torch.where(gamma <= 0, torch.exp(gamma * seg), torch.exp(-gamma * (1 - seg)))
    return _mean(per_voxel, _weights(mask, seg))


def rank_loss(
    seg: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Ranking loss ``exp(c2 - c1)`` (paper 000, eq. 22): the inside must be the brighter region.

    Returns
    -------
    Tensor, scalar (mean over the batch).
    """
    c1, c2 = region_means(seg, image, mask)
    return torch.exp(c2 - c1).mean()


def reconstruction_loss(
    recon: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reconstruction loss ``E_p[(I_bar - I)^2 + ||grad I_bar||_1]`` (paper 000, eq. 23).

    Parameters
    ----------
    recon : Tensor, shape (N, C, D, H, W)
        I_bar, the output of the reconstruction decoder.
    image : Tensor, same shape

    Returns
    -------
    Tensor, scalar.
    """
    _check_pair(recon, image, "image")
    return _mean((recon - image) ** 2 + gradient_l1(recon), _weights(mask, recon))


def tightness_loss(
    seg: torch.Tensor, mask: torch.Tensor | None = None, *, normalized: bool = True
) -> torch.Tensor:
    """Minimal-segmentation loss ``A(S) = sum_p S(p)`` (paper 000, eq. 24).

    Parameters
    ----------
    seg : Tensor, shape (N, C, D, H, W)
    mask : Tensor, optional
    normalized : bool
        True: divide by the number of (masked) voxels, i.e. the segmented fraction. The literal
        sum of eq. 24 grows with the patch size (5e5 voxels for the paper's 32x128x128 patch), so
        with lambda_3 = 1e-3 it would outweigh L_AC by orders of magnitude; False gives the sum.

    Returns
    -------
    Tensor, scalar (mean over the batch of the per-sample area).
    """
    w = _weights(mask, seg)
    dims = tuple(range(1, seg.ndim))
    area = (seg * w).sum(dims)
    if normalized:
        area = area / w.sum(dims).clamp_min(1.0)
    return area.mean()


def max_variance_loss(seg: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Maximal-variance loss L_MV ``exp(E_p[S^2] - E_p[S]^2)`` (paper 000, eq. 25).

    As printed in the paper (and in the authors' code): note that minimising it lowers the variance
    of S; its weight in eq. 17 is small (1e-3).

    Returns
    -------
    Tensor, scalar (mean over the batch of the per-sample value).
    """
    w = _weights(mask, seg)
    dims = tuple(range(1, seg.ndim))
    n = w.sum(dims).clamp_min(1.0)
    mean = (seg * w).sum(dims) / n
    mean_sq = (seg**2 * w).sum(dims) / n
    return torch.exp(mean_sq - mean**2).mean()


def max_entropy_loss(seg: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy loss L_ME ``E_p[-S log S]`` (paper 000, eq. 26): zero at S = 0 and S = 1.

    Returns
    -------
    Tensor, scalar.
    """
    return _mean(-seg * torch.log(seg.clamp_min(1e-6)), _weights(mask, seg))


class UMISLoss(nn.Module):
    """The UMIS compound loss, eq. 17 of paper 000.

    ``L = l1 L_AC + l2 L_rank + l3 L_tight + l4 L_rec + l5 L_MV + l6 L_ME`` with
    ``(l1..l6) = (1, 1e-2, 1e-3, 1e-3, 1e-3, 1e-6)`` (section 4.3).

    Parameters
    ----------
    alpha, beta : float
        Weights of the inside and outside terms of eq. 18 (1 and 2).
    lambdas : dict, optional
        Overrides of :data:`UMIS_LAMBDAS` (keys ``ac, rank, tight, rec, mv, me``).
    normalized_tightness : bool
        See :func:`tightness_loss`.

    Examples
    --------
    >>> loss_fn = UMISLoss()
    >>> total, terms = loss_fn(seg, image, raw=seg_before_smoothing, recon=reconstruction)
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 2.0,
        lambdas: dict[str, float] | None = None,
        normalized_tightness: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(lambdas or {}) - set(UMIS_LAMBDAS)
        if unknown:
            raise InputError(
                f"unknown UMIS loss term(s) {sorted(unknown)}; the terms are {list(UMIS_LAMBDAS)}"
            )
        self.alpha = alpha
        self.beta = beta
        self.lambdas = {**UMIS_LAMBDAS, **(lambdas or {})}
        self.normalized_tightness = normalized_tightness

    def forward(
        self,
        seg: torch.Tensor,
        image: torch.Tensor,
        raw: torch.Tensor | None = None,
        recon: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss.

        Parameters
        ----------
        seg : Tensor, shape (N, 1, D, H, W)
            S, the segmentation after (SI o IS)^3 smoothing (eq. 12).
        image : Tensor, same shape
            I, the input patch.
        raw : Tensor, optional
            S_bar, before smoothing (for the gradient in eq. 18); default ``seg``.
        recon : Tensor, optional
            I_bar from the reconstruction decoder; without it L_rec is left out.
        mask : Tensor, optional
            Voxels that count (e.g. excluding padding).

        Returns
        -------
        total : Tensor, scalar
        terms : dict of str to float
            The unweighted terms (``ac, rank, tight, rec, mv, me``) and ``total``.
        """
        terms = {
            "ac": active_contour_loss(
                seg, image, raw, alpha=self.alpha, beta=self.beta, mask=mask
            ),
            "rank": rank_loss(seg, image, mask),
            "tight": tightness_loss(seg, mask, normalized=self.normalized_tightness),
            "mv": max_variance_loss(seg, mask),
            "me": max_entropy_loss(seg, mask),
        }
        if recon is not None:
            terms["rec"] = reconstruction_loss(recon, image, mask)
        total = sum(self.lambdas[name] * value for name, value in terms.items())
        report = {name: float(value.detach()) for name, value in terms.items()}
        report["total"] = float(total.detach())
        return total, report
