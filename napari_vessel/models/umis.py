"""UMIS: unsupervised microvascular image segmentation network (paper 000, section 4.1, Fig. 2).

A 3D ResNet-style encoder ``E`` feeds two decoders with skip connections: ``D_seg`` gives the
segmentation before smoothing ``S_bar = D_seg(E(I))`` (eq. 11), which the morphological pooling
layers smooth into ``S = (SI o IS)^mu (S_bar)`` with mu = 3 (eq. 12); ``D_rec`` reconstructs the
input ``I_bar = D_rec(E(I))`` (eq. 13) and serves only the reconstruction loss during training.

Width and depth are configurable. :data:`FULL_CONFIG` is the paper's ResNet34 layout (64-512
channels, 3/4/6/3 basic blocks; about 63 M parameters in the encoder) for GPUs; :data:`SLIM_CONFIG`
(8-64 channels, one block per stage, about 0.4 M parameters with both decoders) is the default,
fast on a 2-core laptop CPU.

Departures from the paper, for thin anisotropic two-photon stacks (10-25 slices of ~5 µm, pixels of
~1 µm): down-sampling is set per stage and per axis (``strides``), halving z only at the deeper
stages; the stem keeps full resolution in the slim model (thin capillaries are 2-3 pixels wide);
and the decoders climb back to full resolution through every stage (U-Net style), where the paper
stops its three up-sampling blocks at the resolution of C2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from napari_vessel.models.layers import morph_smooth
from napari_vessel.models.registry import ModelSpec, register
from napari_vessel.models.weights import shipped_weights

__all__ = ["UMIS", "UMISOutput", "build_umis", "SLIM_CONFIG", "FULL_CONFIG"]

#: Default for CPUs: 8-16-32-64 channels, z halved only in the two deepest stages.
SLIM_CONFIG: dict[str, Any] = {
    "width": 8,
    "blocks": [1, 1, 1, 1],
    "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    "stem_kernel": [3, 3, 3],
    "stem_stride": [1, 1, 1],
    "morph_iterations": 3,
    "norm": "batch",
}

#: The paper's ResNet34 encoder (section 4.1): 64-512 channels, 3/4/6/3 basic blocks; the
#: stem's stride and ResNet's max-pool become (1, 2, 2) steps so a 32-slice patch keeps depth.
FULL_CONFIG: dict[str, Any] = {
    "width": 64,
    "blocks": [3, 4, 6, 3],
    "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    "stem_kernel": [3, 7, 7],
    "stem_stride": [1, 2, 2],
    "morph_iterations": 3,
    "norm": "batch",
}


class UMISOutput(NamedTuple):
    """What :class:`UMIS` returns.

    Attributes
    ----------
    seg : Tensor, shape (N, 1, D, H, W)
        Smoothed segmentation ``S`` in [0, 1] (eq. 12); the model's prediction.
    seg_raw : Tensor, shape (N, 1, D, H, W)
        Segmentation before smoothing ``S_bar`` (eq. 11), needed by the loss of eq. 18.
    recon : Tensor or None, shape (N, 1, D, H, W)
        Reconstructed input ``I_bar`` in [0, 1] (eq. 13); None when not asked for.
    """

    seg: torch.Tensor
    seg_raw: torch.Tensor
    recon: torch.Tensor | None


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 4), channels)
    raise ValueError(f"norm must be 'batch', 'instance' or 'group', not {kind!r}")


def _conv_norm_relu(cin: int, cout: int, norm: str, kernel: Sequence[int] = (3, 3, 3),
                    stride: Sequence[int] = (1, 1, 1)) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(cin, cout, tuple(kernel), tuple(stride), padding, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block in 3D: two 3x3x3 convolutions and an identity (or 1x1x1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: Sequence[int], norm: str) -> None:
        super().__init__()
        stride = tuple(stride)
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride, bias=False), _norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class UpBlock(nn.Module):
    """Transposed convolution + BN + ReLU (appendix A, "ConvT3D-BR"), skip concat, 3x3x3 conv."""

    def __init__(self, cin: int, cskip: int, cout: int, stride: Sequence[int], norm: str) -> None:
        super().__init__()
        stride = tuple(stride)
        self.up = nn.Sequential(
            nn.ConvTranspose3d(cin, cout, stride, stride, bias=False),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )
        self.fuse = _conv_norm_relu(cout + cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    """Climbs from the deepest encoder stage to full resolution, one :class:`UpBlock` per stage."""

    def __init__(self, channels: Sequence[int], strides: Sequence[Sequence[int]],
                 stem_stride: Sequence[int], norm: str) -> None:
        super().__init__()
        # channels[0] is the stem, channels[i + 1] stage i (which down-sampled by strides[i])
        self.blocks = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], strides[i], norm)
            for i in reversed(range(len(strides)))
        )
        self.final: nn.Module | None = None
        if any(s != 1 for s in stem_stride):
            self.final = nn.Sequential(
                nn.ConvTranspose3d(channels[0], channels[0], tuple(stem_stride),
                                   tuple(stem_stride), bias=False),
                _norm(norm, channels[0]),
                nn.ReLU(inplace=True),
                _conv_norm_relu(channels[0], channels[0], norm),
            )
        self.head = nn.Conv3d(channels[0], 1, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            x = block(x, skip)
        if self.final is not None:
            x = self.final(x)
        return self.head(x)


class UMIS(nn.Module):
    """UMIS segmentation network (paper 000, Fig. 2, eq. 11-13).

    Parameters
    ----------
    width : int
        Channels of the stem and the first stage; stage ``i`` has ``width * 2**i``.
    blocks : sequence of int
        Basic blocks per encoder stage (ResNet34: 3, 4, 6, 3).
    strides : sequence of (int, int, int)
        Down-sampling (z, y, x) at the first block of each stage.
    stem_kernel, stem_stride : (int, int, int)
        The first convolution.
    morph_iterations : int
        mu of eq. 12 (paper: 3); 0 turns the smoothing off.
    norm : {"batch", "instance", "group"}
        Normalisation after each convolution (paper: batch).
    in_channels : int
        Input channels (1 for a single intensity channel).

    Notes
    -----
    Input ``(N, C, D, H, W)`` with ``D, H, W`` multiples of :attr:`input_multiple`, intensities in
    [0, 1]. ``forward(x, reconstruct=None)`` returns :class:`UMISOutput`; the reconstruction
    decoder runs in training mode (or when ``reconstruct=True``) and is skipped at inference.
    """

    def __init__(self, width: int = 8, blocks: Sequence[int] = (1, 1, 1, 1),
                 strides: Sequence[Sequence[int]] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
                 stem_kernel: Sequence[int] = (3, 3, 3), stem_stride: Sequence[int] = (1, 1, 1),
                 morph_iterations: int = 3, norm: str = "batch", in_channels: int = 1) -> None:
        super().__init__()
        if len(blocks) != len(strides) or not blocks or min(blocks) < 1 or width < 1:
            raise ValueError("blocks and strides need one entry per stage; blocks and width >= 1")
        strides = [tuple(int(v) for v in s) for s in strides]
        stem_stride = tuple(int(v) for v in stem_stride)
        self.morph_iterations = int(morph_iterations)
        channels = [width] + [width * 2**i for i in range(len(blocks))]
        self.stem = _conv_norm_relu(in_channels, width, norm, stem_kernel, stem_stride)
        stages = []
        for i, (n, stride) in enumerate(zip(blocks, strides, strict=True)):
            layers = [BasicBlock(channels[i], channels[i + 1], stride, norm)]
            layers += [BasicBlock(channels[i + 1], channels[i + 1], (1, 1, 1), norm)
                       for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.seg_decoder = Decoder(channels, strides, stem_stride, norm)
        self.rec_decoder = Decoder(channels, strides, stem_stride, norm)
        multiple = list(stem_stride)
        for s in strides:
            multiple = [m * v for m, v in zip(multiple, s, strict=True)]
        self.input_multiple: tuple[int, int, int] = tuple(multiple)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``E(I)``: the stem output and every stage's output (C1 ... C4), full to coarse."""
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features

    def forward(self, x: torch.Tensor, reconstruct: bool | None = None) -> UMISOutput:
        if x.ndim != 5 or any(s % m for s, m in zip(x.shape[2:], self.input_multiple, strict=True)):
            raise ValueError(
                f"UMIS input must be (N, C, D, H, W) with D, H, W multiples of "
                f"{self.input_multiple}; got {tuple(x.shape)}"
            )
        features = self.encode(x)
        seg_raw = torch.sigmoid(self.seg_decoder(features))  # eq. 11
        mu = self.morph_iterations
        seg = morph_smooth(seg_raw, mu) if mu else seg_raw  # eq. 12
        if reconstruct is None:
            reconstruct = self.training
        recon = torch.sigmoid(self.rec_decoder(features)) if reconstruct else None  # eq. 13
        return UMISOutput(seg, seg_raw, recon)


def build_umis(**config: Any) -> UMIS:
    """Build a :class:`UMIS` from card-style keyword arguments (lists are accepted for tuples)."""
    return UMIS(**config)


def _multiple(config: dict) -> tuple[int, int, int]:
    out = list(config["stem_stride"])
    for s in config["strides"]:
        out = [a * b for a, b in zip(out, s, strict=True)]
    return tuple(out)


register(ModelSpec(
    name="umis",
    kind="unsupervised",
    description="UMIS, slim (8-64 channels, ~0.4 M parameters): unsupervised, fast on a CPU",
    builder=build_umis,
    config=SLIM_CONFIG,
    weights=shipped_weights("umis"),
    patch_size_zyx=(32, 128, 128),  # z shrinks to the stack: one patch deep for 10-32 slices
    input_multiple_zyx=_multiple(SLIM_CONFIG),
    architecture="umis",
))

register(ModelSpec(
    name="umis-full",
    kind="unsupervised",
    description="UMIS with the paper's ResNet34 encoder (64-512 channels): for GPUs",
    builder=build_umis,
    config=FULL_CONFIG,
    weights=shipped_weights("umis-full"),
    patch_size_zyx=(32, 128, 128),
    input_multiple_zyx=_multiple(FULL_CONFIG),
    architecture="umis",
))
