"""Every loss term against hand-computed values on tiny arrays, and gradient checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.models.layers import gradient_l1
from napari_vessel.training import losses, umis_loss


def t5(values, shape=(1, 1, 1, 2, 2)) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


# ---------------------------------------------------------------- supervised


def test_balanced_bce_hand_values():
    p = t5([0.9, 0.2, 0.6, 0.3])
    y = t5([1, 0, 0, 0])
    beta = 3 / 4  # |Y-| / |Y|
    expected = -(beta * math.log(0.9) + (1 - beta) * (math.log(0.8) + math.log(0.4) + math.log(0.7)))
    expected /= 4
    got = losses.balanced_bce(p, y, logits=False, clip=0)
    assert float(got) == pytest.approx(expected)
    logits = torch.log(p / (1 - p))
    assert float(losses.balanced_bce(logits, y, clip=0)) == pytest.approx(expected)


def test_balanced_bce_mask_and_one_class_targets():
    p = t5([0.9, 0.2, 0.6, 0.3])
    y = t5([1, 0, 0, 0])
    mask = t5([1, 1, 0, 1])
    beta = 2 / 3
    expected = -(beta * math.log(0.9) + (1 - beta) * (math.log(0.8) + math.log(0.7))) / 3
    got = losses.balanced_bce(p, y, mask, logits=False, clip=0)
    assert float(got) == pytest.approx(expected)
    # only background edited: the paper's beta = 1 gives no signal, the clipped beta does
    y0 = torch.zeros_like(y)
    assert float(losses.balanced_bce(p, y0, logits=False, clip=0)) == pytest.approx(0)
    expected0 = 0.01 * -(math.log(0.1) + math.log(0.8) + math.log(0.4) + math.log(0.7)) / 4
    assert float(losses.balanced_bce(p, y0, logits=False)) == pytest.approx(expected0)
    # an empty mask gives 0
    assert float(losses.balanced_bce(p, y, torch.zeros_like(p), logits=False)) == 0


def test_tv_loss_hand_value_and_scipy():
    step = torch.zeros(1, 1, 2, 2, 2, dtype=torch.float64)
    step[..., 1] = 1  # x = 1 plane is on
    # G_x = (x[+1] - x[-1]) with replicated borders = 1 everywhere, times (1 + 2 + 1)^2 smoothing
    assert float(losses.tv_loss_3d(step)) == pytest.approx(16.0)
    u = np.random.default_rng(0).random((3, 4, 5))
    expected = np.mean(sum(np.abs(ndi.sobel(u, axis=a, mode="nearest")) for a in range(3)))
    got = losses.tv_loss_3d(torch.as_tensor(u)[None, None])
    assert float(got) == pytest.approx(expected)
    assert float(losses.tv_loss_3d(torch.ones(1, 1, 3, 3, 3))) == 0


def test_soft_dice_hand_value_and_mask():
    p = t5([0.5, 1, 0, 0.25])
    y = t5([1, 1, 0, 0])
    # intersection 1.5, sums 1.75 and 2, smooth 1
    assert float(losses.soft_dice_loss(p, y)) == pytest.approx(1 - 4 / 4.75)
    mask = t5([1, 0, 1, 1])  # intersection 0.5, sums 0.75 and 1
    assert float(losses.soft_dice_loss(p, y, mask)) == pytest.approx(1 - 2 / 2.75)
    assert float(losses.soft_dice_loss(y, y, smooth=0)) == 0


def bar(value: float = 1.0) -> torch.Tensor:
    """A 3-pixel-thick bar whose soft skeleton is the 3 pixels (2, 2..4) of its centre row."""
    image = torch.zeros(1, 1, 5, 7, dtype=torch.float64)
    image[..., 1:4, 1:6] = value
    return image


def test_soft_cldice_hand_value():
    target = bar()
    assert float(losses.soft_cldice_loss(target, target, iterations=3)) == pytest.approx(0)
    # pred = 0.5 * target: cl_P = 0.5 on the centre row -> Tprec = (1.5 + 1) / (1.5 + 1) = 1,
    # Tsens = (3 * 0.5 + 1) / (3 + 1) = 0.625, clDice = 2 * 0.625 / 1.625
    expected = 1 - 2 * 0.625 / 1.625
    assert float(losses.soft_cldice_loss(bar(0.5), target, iterations=3)) == pytest.approx(expected)
    # the same in 3D (a single slice: outside is ignored by the pools)
    got3d = losses.soft_cldice_loss(bar(0.5)[:, :, None], target[:, :, None], iterations=3)
    assert float(got3d) == pytest.approx(expected)


def test_soft_cldice_penalises_a_break_more_than_dice():
    target = torch.zeros(1, 1, 1, 7, 21, dtype=torch.float64)
    target[..., 2:5, 1:20] = 1
    broken = target.clone()
    broken[..., :, 9:12] = 0
    thin = target.clone()
    thin[..., 2, :] = 0  # same number of voxels lost, no break
    thin[..., 2, 1:4] = 1
    assert float(losses.soft_dice_loss(broken, target)) < float(losses.soft_dice_loss(thin, target))
    assert float(losses.soft_cldice_loss(broken, target, 3)) > float(
        losses.soft_cldice_loss(thin, target, 3)
    )


def test_cldice_dice_is_the_average():
    p = torch.rand(1, 1, 3, 6, 6, dtype=torch.float64)
    y = (torch.rand(1, 1, 3, 6, 6) > 0.5).double()
    mixed = losses.cldice_dice_loss(p, y, iterations=2)
    expected = 0.5 * (losses.soft_dice_loss(p, y) + losses.soft_cldice_loss(p, y, 2))
    assert float(mixed) == pytest.approx(float(expected))


def test_mip_dice_hand_value_and_slabs():
    p = torch.tensor([[[0.2, 0.9], [0.1, 0.4]], [[0.7, 0.3], [0.0, 0.5]]], dtype=torch.float64)
    y = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]]], dtype=torch.float64)
    # MIP(p) = [[.7, .9], [.1, .5]], MIP(y) = [[1, 1], [0, 0]]: intersection 1.6, sums 2.2 and 2
    got = losses.mip_dice_loss(p[None, None], y[None, None])
    assert float(got) == pytest.approx(1 - 4.2 / 5.2)
    rng = np.random.default_rng(1)
    pv, yv = rng.random((5, 3, 3)), (rng.random((5, 3, 3)) > 0.7).astype(float)
    slabs_p = np.stack([pv[0:3].max(0), pv[2:5].max(0)])  # s = 3, t = 2
    slabs_y = np.stack([yv[0:3].max(0), yv[2:5].max(0)])
    expected = 1 - (2 * (slabs_p * slabs_y).sum() + 1) / (slabs_p.sum() + slabs_y.sum() + 1)
    got = losses.mip_dice_loss(
        torch.as_tensor(pv)[None, None], torch.as_tensor(yv)[None, None], slab=3, stride=2
    )
    assert float(got) == pytest.approx(expected)


# ---------------------------------------------------------------- UMIS

SEG = [1.0, 0.5, 0.0, 0.0]
IMAGE = [0.8, 0.6, 0.2, 0.0]


def row(values) -> torch.Tensor:
    return t5(values, (1, 1, 1, 1, 4))


def test_region_means_eq_19_20():
    c1, c2 = umis_loss.region_means(row(SEG), row(IMAGE))
    assert float(c1) == pytest.approx((0.8 + 0.3) / 1.5)
    assert float(c2) == pytest.approx((0.3 + 0.2 + 0.0) / 2.5)


def test_active_contour_loss_eq_18_21():
    s, i = np.array(SEG), np.array(IMAGE)
    c1, c2 = (0.8 + 0.3) / 1.5, 0.5 / 2.5
    padded = np.pad(s, 1, mode="edge")
    grad = np.abs(padded[2:] - padded[:-2]) / 2  # central differences; y and z are flat
    gamma = grad * (1 * (i - c1) ** 2 - 2 * (i - c2) ** 2)
    per_voxel = np.where(gamma <= 0, np.exp(gamma * s), np.exp(-gamma * (1 - s)))
    got = umis_loss.active_contour_loss(row(SEG), row(IMAGE))
    assert float(got) == pytest.approx(per_voxel.mean())
    # the gradient term comes from the raw segmentation when given
    raw = row([0.0, 0.0, 0.0, 0.0])
    assert float(umis_loss.active_contour_loss(row(SEG), row(IMAGE), raw)) == pytest.approx(1.0)


def test_active_contour_loss_pushes_bright_edges_in_and_dark_edges_out():
    image = torch.zeros(1, 1, 4, 6, 6, dtype=torch.float64)
    image[..., 2:4, 2:4] = 1
    seg = (0.3 + 0.4 * image).requires_grad_()  # c1 ~ 0.23 > c2 ~ 0.05
    umis_loss.active_contour_loss(seg, image, raw=image).backward()  # edges where the image has them
    edges = gradient_l1(image) > 0
    assert torch.all(seg.grad[edges & (image > 0)] < 0)  # Gamma < 0: descent raises S (eq. 21)
    assert torch.all(seg.grad[edges & (image == 0)] > 0)  # Gamma > 0: descent lowers S


def test_rank_reconstruction_tightness_variance_entropy():
    seg, image = row(SEG), row(IMAGE)
    c1, c2 = 1.1 / 1.5, 0.5 / 2.5
    assert float(umis_loss.rank_loss(seg, image)) == pytest.approx(math.exp(c2 - c1))
    flat = row([0.5] * 4)
    assert float(umis_loss.reconstruction_loss(flat, image)) == pytest.approx(
        (0.09 + 0.01 + 0.09 + 0.25) / 4
    )
    ramp = row([0.0, 0.2, 0.4, 0.6])  # |grad| = [.1, .2, .2, .1], squared error [.64, .16, .04, .36]
    assert float(umis_loss.reconstruction_loss(ramp, image)) == pytest.approx((1.2 + 0.6) / 4)
    assert float(umis_loss.tightness_loss(seg)) == pytest.approx(1.5 / 4)
    assert float(umis_loss.tightness_loss(seg, normalized=False)) == pytest.approx(1.5)
    variance = (1 + 0.25) / 4 - (1.5 / 4) ** 2
    assert float(umis_loss.max_variance_loss(seg)) == pytest.approx(math.exp(variance))
    assert float(umis_loss.max_entropy_loss(seg)) == pytest.approx(0.5 * math.log(2) / 4)
    assert float(umis_loss.max_entropy_loss(row([0.0, 1.0, 1.0, 0.0]))) == pytest.approx(0, abs=1e-9)


def test_umis_terms_with_mask():
    seg, image = row(SEG), row(IMAGE)
    mask = row([1, 1, 0, 1])
    c1, c2 = umis_loss.region_means(seg, image, mask)
    assert float(c1) == pytest.approx(1.1 / 1.5)
    assert float(c2) == pytest.approx(0.3 / 1.5)
    assert float(umis_loss.tightness_loss(seg, mask)) == pytest.approx(0.5)
    assert float(umis_loss.max_entropy_loss(seg, mask)) == pytest.approx(0.5 * math.log(2) / 3)
    variance = 1.25 / 3 - 0.5**2
    assert float(umis_loss.max_variance_loss(seg, mask)) == pytest.approx(math.exp(variance))


def test_umis_loss_combines_terms_with_paper_lambdas():
    rng = torch.Generator().manual_seed(0)
    seg = torch.rand(2, 1, 3, 5, 5, generator=rng, dtype=torch.float64)
    image = torch.rand(2, 1, 3, 5, 5, generator=rng, dtype=torch.float64)
    recon = torch.rand(2, 1, 3, 5, 5, generator=rng, dtype=torch.float64)
    total, terms = umis_loss.UMISLoss()(seg, image, recon=recon)
    expected = (
        umis_loss.active_contour_loss(seg, image)
        + 1e-2 * umis_loss.rank_loss(seg, image)
        + 1e-3 * umis_loss.tightness_loss(seg)
        + 1e-3 * umis_loss.reconstruction_loss(recon, image)
        + 1e-3 * umis_loss.max_variance_loss(seg)
        + 1e-6 * umis_loss.max_entropy_loss(seg)
    )
    assert float(total) == pytest.approx(float(expected))
    assert set(terms) == {"ac", "rank", "tight", "rec", "mv", "me", "total"}
    assert terms["total"] == pytest.approx(float(total))
    _, without_rec = umis_loss.UMISLoss()(seg, image)
    assert "rec" not in without_rec
    with pytest.raises(InputError, match="unknown"):
        umis_loss.UMISLoss(lambdas={"dice": 1.0})


# ---------------------------------------------------------------- gradients


def _inputs(shape=(1, 1, 2, 3, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    p = (0.05 + 0.9 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    y = (torch.rand(shape, generator=g) > 0.5).double()
    image = torch.rand(shape, generator=g, dtype=torch.float64)
    return p, y, image


@pytest.mark.parametrize(
    "fn",
    [
        lambda p, y, i: losses.balanced_bce(torch.logit(p), y),
        lambda p, y, i: losses.balanced_bce(p, y, logits=False),
        lambda p, y, i: losses.tv_loss_3d(p),
        lambda p, y, i: losses.soft_dice_loss(p, y, y * 0 + 1),
        lambda p, y, i: losses.soft_cldice_loss(p, y, iterations=2),
        lambda p, y, i: losses.cldice_dice_loss(p, y, iterations=1),
        lambda p, y, i: losses.mip_dice_loss(p, y),
        lambda p, y, i: umis_loss.active_contour_loss(p, i),
        lambda p, y, i: umis_loss.active_contour_loss(p ** 2, i, raw=p),
        lambda p, y, i: umis_loss.rank_loss(p, i),
        lambda p, y, i: umis_loss.reconstruction_loss(p, i),
        lambda p, y, i: umis_loss.tightness_loss(p),
        lambda p, y, i: umis_loss.max_variance_loss(p),
        lambda p, y, i: umis_loss.max_entropy_loss(p),
        lambda p, y, i: umis_loss.UMISLoss()(p, i, recon=p * 0.5)[0],
    ],
)
def test_gradcheck(fn):
    p, y, image = _inputs()
    assert torch.autograd.gradcheck(lambda v: fn(v, y, image), (p,))


def test_umis_loss_through_morphological_smoothing_trains():
    from napari_vessel.models.layers import morph_smooth

    image = torch.zeros(1, 1, 4, 8, 8)
    image[..., 2:6, 2:6] = 1
    logits = torch.zeros_like(image, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    loss_fn = umis_loss.UMISLoss()
    for _ in range(30):
        raw = torch.sigmoid(logits)
        total, _ = loss_fn(morph_smooth(raw, 1), image, raw=raw)
        opt.zero_grad()
        total.backward()
        opt.step()
    seg = torch.sigmoid(logits).detach()
    assert float(seg[image > 0].mean()) > float(seg[image == 0].mean()) + 0.2


def test_shape_errors():
    with pytest.raises(InputError, match="differ"):
        losses.soft_dice_loss(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 3))
    with pytest.raises(InputError, match="mask"):
        losses.soft_dice_loss(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2), torch.ones(3))
    with pytest.raises(InputError):
        losses.tv_loss_3d(torch.zeros(1, 1, 4, 4))
