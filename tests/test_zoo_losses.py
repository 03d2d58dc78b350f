"""Losses of VC-Net (eq. 3-4 of paper 002) and of the cascades (paper 003, eq. 3-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.models.cascades import DBACOutput, build_dbac, build_ddmac, build_ensemble
from napari_vessel.models.vcnet import VCNetOutput, build_vcnet
from napari_vessel.training import zoo_losses
from napari_vessel.training.losses import soft_dice_loss
from napari_vessel.training.zoo_losses import (
    as_slices,
    dbac_loss,
    ddmac_loss,
    dilated_probability_map,
    label_mips,
    model_loss,
    vcnet_loss,
)

TINY_VCNET = {"width": 2, "mip_width": 2, "strides": [[1, 2, 2], [2, 2, 2]], "norm": "batch"}
TINY = [2, 2, 4, 4]


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: tiny tensors gain nothing from more, and a busy machine makes them slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sparse_labels(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.9).float()


def test_label_mips_mark_a_slab_with_any_vessel():
    target = torch.zeros(1, 1, 9, 1, 2)
    target[0, 0, 1, 0, 0] = 1  # in slab 0 only (slices 0-4)
    target[0, 0, 6, 0, 1] = 1  # in slabs 1 (2-6) and 2 (4-8)
    mips = label_mips(target, 5, 2)
    assert mips[0, 0, :, 0, 0].tolist() == [1, 0, 0]
    assert mips[0, 0, :, 0, 1].tolist() == [0, 1, 1]
    with pytest.raises(InputError, match="D >= 5"):
        label_mips(torch.zeros(1, 1, 4, 2, 2))


def test_vcnet_loss_is_dice_plus_a_fifth_of_the_mip_dice():
    target = sparse_labels((2, 1, 8, 8, 8))
    seg = torch.randn(2, 1, 8, 8, 8)
    mip = torch.randn(2, 1, 2, 8, 8)
    output = VCNetOutput(seg, mip, torch.zeros(2, 1, 2, 8, 8, dtype=torch.long))
    expected = (soft_dice_loss(torch.sigmoid(seg), target)
                + 0.2 * soft_dice_loss(torch.sigmoid(mip), label_mips(target)))
    assert torch.isclose(vcnet_loss(output, target), expected)
    perfect = VCNetOutput(30 * (2 * target - 1), 30 * (2 * label_mips(target) - 1), output.depth)
    assert float(vcnet_loss(perfect, target)) < 1e-3
    with pytest.raises(InputError, match="slab and step"):
        vcnet_loss(output, target, slab=3, step=1)
    assert vcnet_loss(output, target, cldice_weight=0.5) > vcnet_loss(output, target)


def test_vcnet_loss_trains_both_streams():
    torch.manual_seed(0)
    model = build_vcnet(**TINY_VCNET)
    target = sparse_labels((1, 1, 8, 16, 16))
    model_loss(model(torch.rand(1, 1, 8, 16, 16)), target).backward()
    assert model.mip_head.weight.grad.abs().sum() > 0
    assert model.volume_stream.down[0][0].weight.grad.abs().sum() > 0


def test_dilated_probability_map_of_one_vessel_pixel():
    labels = np.zeros((41, 41), dtype=bool)
    labels[20, 20] = True
    target = dilated_probability_map(labels, k=20)
    assert target.dtype == torch.float32 and target.shape == (41, 41)
    assert target[20, 20] == 1.0  # the vessel (distance 0)
    assert torch.isclose(target[20, 30], torch.tensor(0.5))  # 10 pixels away: 1 - 10/20
    assert target[20, 0] == 0.0 and target[0, 0] == 0.0  # 20 or more away (eq. 4 clips at k)
    batch = torch.zeros(3, 1, 8, 8)
    batch[1] = 1.0
    batch[2, 0, 0, 0] = 1.0
    maps = dilated_probability_map(batch, k=20)
    assert not maps[0].any()  # no vessel: nothing to attend to
    assert (maps[1] == 1).all()  # all vessel
    assert maps[2, 0, 7, 7] == 0 and maps[2, 0, 0, 0] == 1  # farthest pixel 0 (eq. 5: / max)
    with pytest.raises(InputError, match="positive"):
        dilated_probability_map(labels, k=0)


def test_cascade_losses_reach_both_sub_networks():
    torch.manual_seed(0)
    x, target = torch.rand(2, 1, 16, 16), sparse_labels((2, 1, 16, 16))
    for model in (build_dbac(widths=TINY), build_ddmac(widths=TINY), build_ensemble(widths=TINY)):
        loss = model_loss(model(x), target, balanced=True)
        assert torch.isfinite(loss)
        loss.backward()
        firsts = ([model.dbac.first, model.ddmac.first] if hasattr(model, "dbac")
                  else [model.first])
        for first in firsts:  # the attention targets train the first sub-network directly
            assert first.encoder[0].body[0].weight.grad.abs().sum() > 0


def test_dbac_and_ddmac_loss_terms():
    target = sparse_labels((1, 1, 8, 8))
    seg = torch.randn(1, 1, 8, 8)
    out = DBACOutput(seg, torch.zeros(1, 1, 8, 8))
    no_attention = dbac_loss(out, target, attention_weight=0.0)
    assert torch.isclose(dbac_loss(out, target), no_attention + np.log(2), atol=1e-6)
    model = build_ddmac(widths=TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 8, 8))
    mse = torch.mean((out.distance - dilated_probability_map(target)) ** 2)
    assert torch.isclose(ddmac_loss(out, target) - ddmac_loss(out, target, attention_weight=0),
                         mse, atol=1e-6)


def test_model_loss_needs_a_zoo_output():
    assert zoo_losses.has_own_loss(DBACOutput(torch.zeros(1), torch.zeros(1)))
    assert not zoo_losses.has_own_loss(torch.zeros(1))
    with pytest.raises(InputError, match="standard supervised loss"):
        model_loss(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(InputError, match="differ in shape"):
        dbac_loss(DBACOutput(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)),
                  torch.zeros(1, 1, 4, 8))


def test_as_slices_turns_patches_into_images():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 1, 3, 4, 5)
    images, targets = as_slices(image, image + 1)
    assert images.shape == targets.shape == (6, 1, 4, 5)
    assert torch.equal(images[4, 0], image[1, 0, 1])  # patch 1, slice 1
    with pytest.raises(InputError, match="one shape"):
        as_slices(image, image[:, :, :2])
