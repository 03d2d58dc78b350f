"""Tests of the TV-Net architecture."""

from __future__ import annotations

import pytest
import torch

from napari_vessel.models.tvnet import TVNet, TVNetConfig, build_tvnet, count_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids thread hand-off costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_size_is_paper_scale():
    # paper 001: 4/8/16/32 channels, about 150 k parameters
    model = build_tvnet()
    assert model.config.widths == (4, 8, 16, 32)
    assert 100_000 < count_parameters(model) < 200_000


@pytest.mark.parametrize("shape", [(1, 8, 16), (5, 13, 17), (10, 32, 24)])
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_any_input_shape_gives_same_output_shape(shape, norm):
    model = build_tvnet(widths=[2, 4, 4, 8], norm=norm).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, *shape))
    assert out.shape == (1, 1, *shape)
    assert torch.isfinite(out).all()


def test_total_stride_and_config_round_trip():
    config = TVNetConfig(widths=(2, 4, 8, 8), strides=((1, 2, 2), (1, 2, 2), (2, 2, 2)))
    model = TVNet(config)
    assert model.total_stride == (2, 8, 8)
    again = TVNetConfig.from_dict(config.to_dict())
    assert again == config


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="strides"):
        TVNetConfig(widths=(4, 8), strides=((1, 2, 2), (2, 2, 2)), convs=(1, 1))
    with pytest.raises(ValueError, match="norm"):
        TVNetConfig(norm="layer")


def test_translation_equivariance_away_from_borders():
    # a fully convolutional network: shifting the input by the total stride shifts the output
    torch.manual_seed(0)
    model = build_tvnet(widths=[2, 2, 4, 4], norm="batch").eval()
    x = torch.zeros(1, 1, 8, 64, 64)
    x[..., 4, 20:24, 20:40] = 1.0
    shifted = torch.roll(x, 8, dims=-1)
    with torch.inference_mode():
        a, b = model(x), model(shifted)
    assert torch.allclose(torch.roll(a, 8, dims=-1)[..., 16:48], b[..., 16:48], atol=1e-5)


def test_registered_in_the_model_registry():
    registry = pytest.importorskip("napari_vessel.models.registry")
    spec = registry.get("tvnet")
    assert spec.kind == "supervised"
    model = spec.builder(**spec.config)
    assert isinstance(model, TVNet)
