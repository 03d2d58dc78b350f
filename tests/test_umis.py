"""The UMIS network: shapes, both decoders, smoothing, widths and parameter counts."""

from __future__ import annotations

import pytest
import torch

from napari_vessel.models import registry
from napari_vessel.models.umis import FULL_CONFIG, SLIM_CONFIG, UMIS, build_umis

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}


def test_forward_shapes_and_ranges():
    torch.manual_seed(0)
    model = build_umis(**TINY)
    assert model.input_multiple == (2, 4, 4)
    x = torch.rand(2, 1, 4, 16, 12)
    model.train()
    out = model(x)
    assert out.seg.shape == out.seg_raw.shape == out.recon.shape == x.shape
    for t in out:
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    (out.seg.mean() + out.recon.mean()).backward()  # both decoders are trainable
    assert model.seg_decoder.head.weight.grad is not None
    assert model.rec_decoder.head.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.recon is None  # the reconstruction decoder is skipped at inference
        assert model(x, reconstruct=True).recon.shape == x.shape


def test_smoothing_off_gives_raw_output():
    model = build_umis(**{**TINY, "morph_iterations": 0}).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 2, 8, 8))
    assert torch.equal(out.seg, out.seg_raw)


def test_rejects_sizes_that_do_not_divide():
    model = build_umis(**TINY).eval()
    with pytest.raises(ValueError, match="multiples"):
        model(torch.rand(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="one entry per stage"):
        UMIS(blocks=[1], strides=[[1, 2, 2], [2, 2, 2]])


def test_slim_default_is_small_and_anisotropic():
    with torch.device("meta"):
        slim = build_umis(**SLIM_CONFIG)
    n = sum(p.numel() for p in slim.parameters())
    assert 200_000 < n < 800_000  # "a few hundred thousand" (419,978)
    assert slim.input_multiple == (4, 16, 16)  # z halved twice only, x/y four times
    assert registry.get("umis").input_multiple_zyx == (4, 16, 16)


def test_full_width_matches_the_paper_resnet34():
    with torch.device("meta"):  # 76 M parameters, never allocated
        full = build_umis(**FULL_CONFIG)
    encoder = sum(p.numel() for m in (full.stem, full.stages) for p in m.parameters())
    total = sum(p.numel() for p in full.parameters())
    assert 62e6 < encoder < 65e6  # 3D ResNet34: ~63 M (paper 000, section 4.1)
    assert total == registry.count_parameters("umis-full")
    assert [len(s) for s in full.stages] == [3, 4, 6, 3]
