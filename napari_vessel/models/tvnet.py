"""TV-Net: the lightweight V-Net-like 3D network for two-photon angiograms (paper 001).

An encoder-decoder with residual stages, strided-convolution down-sampling, transposed-convolution
up-sampling and skip connections, as in V-Net, slimmed to a few channels per level (4/8/16/32 in
the paper, about 150 k parameters). The paper trains it with balanced binary cross-entropy plus a
3D total-variation (Sobel) penalty and weight decay (eq. 1-3); that recipe lives in
:mod:`napari_vessel.training.train`.

Two choices differ from the paper because the volumes this plugin meets are thin (10-30 slices)
and strongly anisotropic (about 1 µm in X/Y, 2-5 µm in Z):

- the down-sampling factor is set per level and per axis (``strides``), by default ``(1, 2, 2)``
  for the first level so the few slices are not halved too early;
- the normalisation is configurable (``"batch"`` as in the paper, ``"instance"`` or ``"group"``),
  because statistics of a single volume at test time generalise better across microscopes than
  running averages over the training set.

Any input depth and size works: the input is reflection-padded to a multiple of the total stride
and the output cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TVNetConfig", "TVNet", "build_tvnet", "count_parameters", "config_for_widths",
           "FIVE_LEVEL"]


@dataclass(frozen=True)
class TVNetConfig:
    """Typed settings of a :class:`TVNet`.

    Parameters
    ----------
    widths : tuple of int
        Channels per level, from full resolution down (paper: 4, 8, 16, 32).
    strides : tuple of tuple of int
        Down-sampling factor (z, y, x) between consecutive levels; ``len(widths) - 1`` entries.
    convs : tuple of int
        Number of 3x3x3 convolutions in the residual stage of each level.
    norm : str
        ``"batch"``, ``"instance"`` or ``"group"``.
    in_channels : int
        Channels of the input image.
    """

    widths: tuple[int, ...] = (4, 8, 16, 32)
    strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    convs: tuple[int, ...] = (1, 2, 2, 3)
    norm: str = "batch"
    in_channels: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.widths) - 1 or len(self.convs) != len(self.widths):
            raise ValueError("strides needs len(widths) - 1 entries and convs len(widths) entries")
        if self.norm not in ("batch", "instance", "group"):
            raise ValueError(f"norm must be 'batch', 'instance' or 'group', not {self.norm!r}")

    @property
    def total_stride(self) -> tuple[int, int, int]:
        """Product of the strides per axis."""
        out = [1, 1, 1]
        for s in self.strides:
            out = [a * b for a, b in zip(out, s, strict=True)]
        return (out[0], out[1], out[2])

    def to_dict(self) -> dict:
        """JSON-friendly form for a model card."""
        data = asdict(self)
        data["strides"] = [list(s) for s in self.strides]
        data["widths"] = list(self.widths)
        data["convs"] = list(self.convs)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TVNetConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["widths"] = tuple(data.get("widths", cls.widths))
        data["strides"] = tuple(tuple(s) for s in data.get("strides", cls.strides))
        data["convs"] = tuple(data.get("convs", cls.convs))
        return cls(**data)


#: Strides and stage depths of the five-level TV-Net: the in-plane field of view grows 16x
#: (z only 2x, for thin stacks) while the full-resolution level stays as cheap as in the paper.
FIVE_LEVEL = {"strides": ((1, 2, 2), (1, 2, 2), (2, 2, 2), (1, 2, 2)), "convs": (1, 1, 2, 2, 2)}


def config_for_widths(widths: Sequence[int], norm: str | None = None) -> TVNetConfig:
    """A :class:`TVNetConfig` for four (the paper's layout) or five (:data:`FIVE_LEVEL`) widths."""
    widths = tuple(int(w) for w in widths)
    if len(widths) not in (4, 5) or min(widths) < 1 or max(widths) > 512:
        raise ValueError("widths needs four or five channel counts from 1 to 512, e.g. 4,8,16,32")
    extra = FIVE_LEVEL if len(widths) == 5 else {}
    return TVNetConfig(widths=widths, norm=norm or "batch", **extra)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.GroupNorm(max(1, channels // 4), channels)


class _ConvUnit(nn.Sequential):
    """3x3x3 convolution, normalisation, PReLU."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout),
                         nn.PReLU(cout))


class _ResidualStage(nn.Module):
    """``n`` convolution units with an identity shortcut (the V-Net stage)."""

    def __init__(self, channels: int, n: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(*[_ConvUnit(channels, channels, norm) for _ in range(n)])
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class TVNet(nn.Module):
    """The V-Net-like encoder-decoder of paper 001 with configurable widths and strides.

    Parameters
    ----------
    config : TVNetConfig
        Architecture settings.

    Notes
    -----
    ``forward`` takes ``(N, C, Z, Y, X)`` and returns logits of shape ``(N, 1, Z, Y, X)``; apply a
    sigmoid for the vessel probability.
    """

    def __init__(self, config: TVNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TVNetConfig()
        w, norm = config.widths, config.norm
        self.stem = _ConvUnit(config.in_channels, w[0], norm)
        self.encoders = nn.ModuleList(_ResidualStage(w[i], config.convs[i], norm)
                                      for i in range(len(w)))
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv3d(w[i], w[i + 1], s, stride=s, bias=False), _norm(norm, w[i + 1]),
                          nn.PReLU(w[i + 1]))
            for i, s in enumerate(config.strides))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose3d(w[i + 1], w[i], s, stride=s, bias=False),
                          _norm(norm, w[i]), nn.PReLU(w[i]))
            for i, s in enumerate(config.strides))
        self.fuse = nn.ModuleList(_ConvUnit(2 * w[i], w[i], norm) for i in range(len(w) - 1))
        self.decoders = nn.ModuleList(_ResidualStage(w[i], max(1, config.convs[i] - 1), norm)
                                      for i in range(len(w) - 1))
        self.head = nn.Conv3d(w[0], 1, 1)

    @property
    def total_stride(self) -> tuple[int, int, int]:
        """Product of the strides per axis: input sizes are padded to a multiple of this."""
        return self.config.total_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-3:]
        pads: list[int] = []
        for n, m in zip(reversed(size), reversed(self.total_stride), strict=True):
            extra = (-n) % m
            pads += [0, extra]
        if any(pads):
            x = _pad(x, pads)
        skips = []
        h = self.stem(x)
        for i, enc in enumerate(self.encoders):
            h = enc(h)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(len(self.ups))):
            h = self.ups[i](h)
            h = self.decoders[i](self.fuse[i](torch.cat([h, skips[i]], dim=1)))
        out = self.head(h)
        return out[..., : size[0], : size[1], : size[2]]


def _pad(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """Reflection padding that falls back to replication when an axis is too short."""
    dims = x.shape[-3:][::-1]
    ok = all(p < d for p, d in zip(pads[1::2], dims, strict=True))
    return F.pad(x, list(pads), mode="reflect" if ok else "replicate")


def build_tvnet(**config) -> TVNet:
    """Build a :class:`TVNet` from the keyword form of a :class:`TVNetConfig` (see ``to_dict``)."""
    return TVNet(TVNetConfig.from_dict(config))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#: Sliding-window patch (Z, Y, X) of TV-Net inference: whole 512 x 512 slices, 32 deep. The spec
#: registered for ``tvnet`` and the cards of trained TV-Nets (``napari-vessel train``) carry it.
INFERENCE_PATCH_ZYX = (32, 512, 512)


def _register() -> None:
    """Register ``tvnet`` with the shipped weights; the card's config wins when it exists."""
    from napari_vessel.models.registry import ModelSpec, register
    from napari_vessel.models.weights import shipped_weights

    weights = shipped_weights("tvnet")
    config = TVNetConfig().to_dict()
    config.pop("extra", None)
    patch = INFERENCE_PATCH_ZYX
    preprocessing = None
    description = "TV-Net (paper 001), V-Net-like; the shipped weights' card says how they were made"
    if weights is not None:
        from napari_vessel.errors import InputError
        from napari_vessel.models.weights import read_card

        try:
            card = read_card(weights)
            config = dict(card.config or config)
            patch = card.patch_size_zyx or patch
            preprocessing = card.preprocessing
            description = card.description or description
        except InputError:
            pass
    register(ModelSpec(
        name="tvnet",
        kind="supervised",
        description=description,
        builder=build_tvnet,
        config=config,
        weights=weights,
        patch_size_zyx=patch,
        input_multiple_zyx=TVNetConfig.from_dict(config).total_stride,
        architecture="tvnet",
        output="logits",
        preprocessing=preprocessing,
    ), replace_existing=True)


_register()
