"""VC-Net: volume-composition network for sparse, noisy vessel volumes (paper 002, section 3.1).

Two streams share one input patch ``V`` of ``D`` slices (Fig. 2):

1. a 3D U-Net on ``V`` itself (the volume stream);
2. a 2D U-Net of half the usual width on the *sliding MIPs* of ``V``: MIP ``k`` covers slices
   ``k*t .. k*t + s - 1`` and there are ``m = floor((D - s) / t) + 1`` of them (eq. 1, s = 5, t = 2).
   The m MIPs are tiled into one 2D image of ``ceil(m / c)`` rows by ``c`` columns (the paper's
   ``0.5 m K1 x 2 K2`` layout is c = 2) so the 2D convolutions run over one plane, and the slice
   each MIP pixel came from (its argmax depth) is recorded.

The last feature map of the 2D stream is cut back into its m MIPs and *unprojected*: every MIP
pixel's feature vector goes back to the voxel its maximum came from; where several MIPs overlap,
the element-wise maximum over them is kept (eq. 2); voxels no MIP picked get 0. The unprojected 2D
features and the 3D features are concatenated and a 1x1x1 convolution (the joint head) gives the
vessel logits. A 1x1 head on the 2D stream gives MIP logits for the MIP Dice term of the loss
(eq. 3-4, :func:`napari_vessel.training.zoo_losses.vcnet_loss`).

Input depth: a patch needs at least ``s`` slices, else there is no slab to project. Fewer slices
raise :class:`~napari_vessel.errors.InputError` (no padding: reflected copies of 2-4 slices would
invent vessels that the MIP stream then sees as real). Both registered variants pool z only twice
(input multiple 4 in z), so the sliding window gives any stack of 5 or more slices a patch of at
least 8 slices, and a stack of 4 or fewer slices a 4-slice patch, which raises.

Departures from the paper: down-sampling is per level and per axis (``strides``; z is halved only
at the deeper levels, for thin 10-30 slice stacks); the slim variant uses batch normalisation
(the paper uses none, as does the full variant here) because it trains faster on small data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.registry import ModelSpec, register
from napari_vessel.models.weights import shipped_weights

__all__ = ["VCNet", "VCNetOutput", "build_vcnet", "sliding_mips", "tile_mips", "untile_mips",
           "unproject", "SLIM_CONFIG", "FULL_CONFIG"]

#: Default for CPUs: 8-64 channels in both streams, four levels, z halved twice.
SLIM_CONFIG: dict[str, Any] = {
    "width": 8,
    "mip_width": 8,
    "strides": [[1, 2, 2], [2, 2, 2], [2, 2, 2]],
    "slab": 5,
    "step": 2,
    "columns": 2,
    "norm": "batch",
}

#: The paper's widths: a 32-512 3D U-Net and a 32-512 2D U-Net (half the 64-1024 of the
#: original 2D U-Net), five levels, no normalisation; z halved at the two deepest levels only.
FULL_CONFIG: dict[str, Any] = {
    "width": 32,
    "mip_width": 32,
    "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    "slab": 5,
    "step": 2,
    "columns": 2,
    "norm": "none",
}


class VCNetOutput(NamedTuple):
    """What :class:`VCNet` returns.

    Attributes
    ----------
    seg : Tensor, shape (N, 1, D, H, W)
        Vessel logits of the joint head (the model's prediction).
    mip : Tensor, shape (N, 1, m, H, W)
        Logits of the 2D stream, one plane per sliding MIP (for the MIP Dice of eq. 3).
    depth : Tensor of int64, shape (N, 1, m, H, W)
        For every MIP pixel, the slice of ``V`` its maximum came from.
    """

    seg: torch.Tensor
    mip: torch.Tensor
    depth: torch.Tensor


def sliding_mips(volume: torch.Tensor, slab: int = 5, step: int = 2
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding MIPs of ``slab`` slices every ``step`` slices and their argmax depths (eq. 1).

    The torch twin of :func:`napari_vessel.projection.sliding_mips`, batched and differentiable
    with respect to the MIP values.

    Parameters
    ----------
    volume : Tensor, shape (N, C, D, H, W)
    slab, step : int
        s and t of the paper (5 and 2).

    Returns
    -------
    mips : Tensor, shape (N, C, m, H, W)
        ``m = floor((D - slab) / step) + 1`` MIPs.
    depth : Tensor of int64, shape (N, C, m, H, W)
        Slice index in ``volume`` (0 .. D-1) of each maximum (the first one on ties).
    """
    if volume.ndim != 5:
        raise InputError(f"sliding MIPs need (N, C, D, H, W), got shape {tuple(volume.shape)}")
    depth_size = volume.shape[2]
    if not 1 <= slab <= depth_size or step < 1:
        raise InputError(
            f"a stack of {depth_size} slices has no slab of {slab} slices; VC-Net needs at least "
            f"{slab} slices (use a 2D or another 3D model for thinner stacks)"
        )
    # a max pooling along z is the sliding MIP; its indices (first maximum on ties, like argmax)
    # count over D*H*W. Written so, the network exports to ONNX with any input size
    height, width = volume.shape[3], volume.shape[4]
    mips, index = F.max_pool3d(volume, (slab, 1, 1), (step, 1, 1), return_indices=True)
    return mips, torch.div(index, height * width, rounding_mode="floor")


def tile_mips(mips: torch.Tensor, columns: int = 2) -> torch.Tensor:
    """Tile m MIPs into one plane: ``(N, C, m, H, W) -> (N, C, rows*H, columns*W)``.

    MIP ``k`` goes to row ``k // columns``, column ``k % columns``; missing tiles are zeros.
    """
    n, c, m, h, w = mips.shape
    rows = (m + columns - 1) // columns  # integer arithmetic on sizes: exports with any depth
    mips = F.pad(mips, (0, 0, 0, 0, 0, rows * columns - m))
    tiles = mips.reshape(n, c, rows, columns, h, w).permute(0, 1, 2, 4, 3, 5)
    return tiles.reshape(n, c, rows * h, columns * w)


def untile_mips(plane: torch.Tensor, m: int, columns: int = 2) -> torch.Tensor:
    """Inverse of :func:`tile_mips`: ``(N, C, rows*H, columns*W) -> (N, C, m, H, W)``."""
    n, c, height, width = plane.shape
    rows = (m + columns - 1) // columns
    h, w = height // rows, width // columns
    tiles = plane.reshape(n, c, rows, h, columns, w).permute(0, 1, 2, 4, 3, 5)
    return tiles.reshape(n, c, rows * columns, h, w)[:, :, :m]


def unproject(features: torch.Tensor, depth: torch.Tensor, depth_size: int) -> torch.Tensor:
    """Put MIP pixel features back at their argmax voxels; max over overlapping MIPs (eq. 2).

    Parameters
    ----------
    features : Tensor, shape (N, C, m, H, W)
        Feature vector of every pixel of every MIP.
    depth : Tensor of int64, shape (N, 1, m, H, W) or (N, C, m, H, W)
        Source slice of each MIP pixel (from :func:`sliding_mips`).
    depth_size : int
        D, the number of slices of the volume.

    Returns
    -------
    Tensor, shape (N, C, D, H, W)
        ``F_Sn[i] = max over the MIPs that picked slice n of their feature i``; 0 where no MIP
        picked the voxel.
    """
    n, c, m, h, w = features.shape
    index = depth.expand(n, c, m, h, w)
    # start from -inf and keep it in the maximum (ONNX has no include_self=False), then 0
    out = features.new_full((n, c, depth_size, h, w), float("-inf"))
    out = out.scatter_reduce(2, index, features, reduce="amax", include_self=True)
    return torch.where(out == float("-inf"), torch.zeros_like(out), out)


def _norm(kind: str, channels: int, ndim: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm3d if ndim == 3 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d)(channels, affine=True)
    raise ValueError(f"norm must be 'none', 'batch' or 'instance', not {kind!r}")


class DoubleConv(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by normalisation and ReLU (a U-Net level)."""

    def __init__(self, cin: int, cout: int, ndim: int, norm: str) -> None:
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [conv(cin if i == 0 else cout, cout, 3, padding=1, bias=norm == "none"),
                       _norm(norm, cout, ndim), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net feature extractor in 2D or 3D: returns the last full-resolution feature map.

    Parameters
    ----------
    in_channels : int
    widths : sequence of int
        Channels per level, full resolution first.
    strides : sequence of tuple of int
        Max-pooling factor between consecutive levels (``len(widths) - 1`` entries, each with
        ``ndim`` values).
    ndim : {2, 3}
    norm : {"none", "batch", "instance"}
    """

    def __init__(self, in_channels: int, widths: Sequence[int], strides: Sequence[Sequence[int]],
                 ndim: int, norm: str) -> None:
        super().__init__()
        self.strides = [tuple(int(v) for v in s) for s in strides]
        transpose = nn.ConvTranspose3d if ndim == 3 else nn.ConvTranspose2d
        self.pool = F.max_pool3d if ndim == 3 else F.max_pool2d
        self.down = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i], ndim, norm)
            for i in range(len(widths)))
        self.up = nn.ModuleList(
            transpose(widths[i + 1], widths[i], self.strides[i], self.strides[i])
            for i in range(len(widths) - 1))
        self.fuse = nn.ModuleList(DoubleConv(2 * widths[i], widths[i], ndim, norm)
                                  for i in range(len(widths) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.pool(x, self.strides[i - 1], self.strides[i - 1])
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.fuse[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return x


class VCNet(nn.Module):
    """VC-Net (paper 002, Fig. 2-3, eq. 1-2): 3D U-Net + 2D U-Net on sliding MIPs, joint head.

    Parameters
    ----------
    width : int
        Channels of the first level of the 3D U-Net; level ``i`` has ``width * 2**i``.
    mip_width : int
        Same for the 2D U-Net on the tiled MIPs.
    strides : sequence of (int, int, int)
        Down-sampling (z, y, x) between levels; the 2D stream uses the (y, x) parts.
    slab, step : int
        s and t of eq. 1 (paper: 5 and 2).
    columns : int
        MIPs per row of the tiled MIP plane (paper: 2).
    norm : {"none", "batch", "instance"}
        Normalisation after every convolution (paper: none).

    Notes
    -----
    Input ``(N, 1, D, H, W)`` with ``D, H, W`` multiples of :attr:`input_multiple` and
    ``D >= slab``; ``forward`` returns :class:`VCNetOutput` (logits).
    """

    def __init__(self, width: int = 8, mip_width: int = 8,
                 strides: Sequence[Sequence[int]] = ((1, 2, 2), (2, 2, 2), (2, 2, 2)),
                 slab: int = 5, step: int = 2, columns: int = 2, norm: str = "batch") -> None:
        super().__init__()
        strides = [tuple(int(v) for v in s) for s in strides]
        if width < 1 or mip_width < 1 or any(len(s) != 3 for s in strides):
            raise ValueError("widths must be >= 1 and every stride needs (z, y, x)")
        if slab < 1 or step < 1 or columns < 1:
            raise ValueError("slab, step and columns must be at least 1")
        self.slab, self.step, self.columns = int(slab), int(step), int(columns)
        levels = len(strides) + 1
        self.volume_stream = UNet(1, [width * 2**i for i in range(levels)], strides, 3, norm)
        self.mip_stream = UNet(1, [mip_width * 2**i for i in range(levels)],
                               [s[1:] for s in strides], 2, norm)
        self.mip_head = nn.Conv2d(mip_width, 1, 1)
        self.head = nn.Conv3d(width + mip_width, 1, 1)  # the joint 1x1x1 fusion head
        multiple = [1, 1, 1]
        for s in strides:
            multiple = [a * b for a, b in zip(multiple, s, strict=True)]
        self.input_multiple: tuple[int, int, int] = tuple(multiple)

    def forward(self, x: torch.Tensor) -> VCNetOutput:
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"VC-Net needs a 3D stack as (N, 1, D, H, W); got shape "
                             f"{tuple(x.shape)}")
        depth_size = x.shape[2]
        if depth_size < self.slab:
            raise InputError(
                f"the stack has {depth_size} slices, fewer than VC-Net's slab of {self.slab}; "
                "use a stack of at least that many slices, or another model"
            )
        if any(s % m for s, m in zip(x.shape[2:], self.input_multiple, strict=True)):
            raise InputError(f"VC-Net input sizes (D, H, W) must be multiples of "
                             f"{self.input_multiple}; got {tuple(x.shape[2:])}")
        volume_features = self.volume_stream(x)
        mips, depth = sliding_mips(x, self.slab, self.step)  # eq. 1
        m = mips.shape[2]
        plane = self.mip_stream(tile_mips(mips, self.columns))
        mip_logits = untile_mips(self.mip_head(plane), m, self.columns)
        mip_features = unproject(untile_mips(plane, m, self.columns), depth, depth_size)  # eq. 2
        seg = self.head(torch.cat([volume_features, mip_features], dim=1))
        return VCNetOutput(seg, mip_logits, depth)


def build_vcnet(**config: Any) -> VCNet:
    """Build a :class:`VCNet` from card-style keyword arguments (lists accepted for tuples)."""
    return VCNet(**config)


def _multiple(config: dict) -> tuple[int, int, int]:
    out = [1, 1, 1]
    for s in config["strides"]:
        out = [a * b for a, b in zip(out, s, strict=True)]
    return tuple(out)


_CARD = {
    "paper": "Wang et al., VC-Net, IEEE TVCG (paper 002)",
    "loss": "soft Dice + 0.2 x soft Dice of the sliding MIPs (eq. 3-4); "
            "napari_vessel.training.zoo_losses.vcnet_loss",
    "min_slices": 5,
    "notes": "3D model: stacks need at least 5 slices (the MIP slab s).",
}

register(ModelSpec(
    name="vcnet",
    kind="supervised",
    description="VC-Net, slim (8-64 channels): 3D U-Net + 2D U-Net on sliding MIPs (5 slices)",
    builder=build_vcnet,
    config=SLIM_CONFIG,
    min_slices=SLIM_CONFIG.get("slab", 5),
    weights=shipped_weights("vcnet"),
    card={} if shipped_weights("vcnet") else _CARD,
    patch_size_zyx=(16, 128, 128),  # the paper's 128 x 128 x 16 patches
    input_multiple_zyx=_multiple(SLIM_CONFIG),
    architecture="vcnet",
    output="logits",
))

register(ModelSpec(
    name="vcnet-full",
    kind="supervised",
    description="VC-Net with the paper's widths (32-512 channels, no normalisation): for GPUs",
    builder=build_vcnet,
    config=FULL_CONFIG,
    min_slices=FULL_CONFIG.get("slab", 5),
    weights=shipped_weights("vcnet-full"),
    card={} if shipped_weights("vcnet-full") else _CARD,
    patch_size_zyx=(16, 128, 128),
    input_multiple_zyx=_multiple(FULL_CONFIG),
    architecture="vcnet",
    output="logits",
))
