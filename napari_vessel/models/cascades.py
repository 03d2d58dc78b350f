"""DBAC and DDMAC: the two 2D cascades for confocal vessel images, and their ensemble (paper 003).

Both cascades are a U-Net whose output guides a U-Net++ (section II.B); every convolution layer is
a residual block. They run on 2D images: the multi-focus fused image of a confocal stack
(:func:`napari_vessel.preprocess.fusion.fuse_focus`, then CLAHE), or, for a 3D result, every slice
of the stack (``dims=2``: the inference engine applies them slice by slice).

DBAC (deep binary attention cascade, Fig. 3)
    The U-Net predicts a 1-channel map ``W`` (trained against the binary vessel mask, positive =
    vessel); ``P = max(0, W)`` (eq. 1) and the U-Net++ sees ``M = I * P`` (eq. 2). Two shortcuts
    concatenate U-Net decoder features into the U-Net++ decoder at the same levels.
DDMAC (deep distance-map attention cascade, Fig. 4)
    The U-Net predicts a 3-channel map, soft-maxed over channels (eq. 6) and multiplied by the
    image (eq. 7), and a 1-channel *dilated probability* ``Q`` regressed onto
    ``1 - min(dist, k) / max`` with k = 20 (eq. 3-5, :mod:`napari_vessel.training.zoo_losses`);
    the U-Net++ sees ``M' = concat(W', Q)`` (eq. 8).
Ensemble (section II.C)
    The two probability maps are fused by their average (eq. 9) or maximum (eq. 10). The paper then
    thresholds by hysteresis (low 0.45, high 0.95) and cleans up with morphology; the cards say
    so (``postprocessing``).

Widths: the paper's 32-64-128-256-512 are the ``-full`` variants (for GPUs); the slim default
8-16-32-64 keeps CPU inference fast. The paper counts about 80 M parameters per cascade
(Table I); its exact block layout is not given, and these residual blocks give fewer.
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

__all__ = ["DBAC", "DDMAC", "CascadeEnsemble", "DBACOutput", "DDMACOutput", "EnsembleOutput",
           "build_dbac", "build_ddmac", "build_ensemble", "confocal_preprocessing", "paper_labels",
           "SLIM_WIDTHS", "FULL_WIDTHS", "HYSTERESIS"]

#: Channels per level of both sub-networks: slim default (CPU) and the paper's (GPU).
SLIM_WIDTHS = (8, 16, 32, 64)
FULL_WIDTHS = (32, 64, 128, 256, 512)

#: The paper's post-processing: hysteresis thresholds, then morphological clean-up.
HYSTERESIS = {"method": "hysteresis", "low": 0.45, "high": 0.95, "min_size": 64,
              "fill_holes": True, "max_hole": 64,
              "function": "napari_vessel.models.cascades.paper_labels"}


class DBACOutput(NamedTuple):
    """What :class:`DBAC` returns.

    Attributes
    ----------
    seg : Tensor, shape (N, 1, H, W)
        Vessel logits of the U-Net++ (the prediction).
    attention : Tensor, shape (N, 1, H, W)
        Logits ``W`` of the binary attention map (eq. 1), trained against the vessel mask.
    """

    seg: torch.Tensor
    attention: torch.Tensor


class DDMACOutput(NamedTuple):
    """What :class:`DDMAC` returns.

    Attributes
    ----------
    seg : Tensor, shape (N, 1, H, W)
        Vessel logits of the U-Net++ (the prediction).
    distance : Tensor, shape (N, 1, H, W)
        The dilated probability ``Q`` in [0, 1], regressed onto the map of eq. 3-5.
    """

    seg: torch.Tensor
    distance: torch.Tensor


class EnsembleOutput(NamedTuple):
    """What :class:`CascadeEnsemble` returns: fused probability and both members' outputs."""

    seg: torch.Tensor
    dbac: DBACOutput
    ddmac: DDMACOutput


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', not {kind!r}")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with normalisation and a (1x1 when needed) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        bias = norm == "none"
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class UNet2d(nn.Module):
    """Residual U-Net; returns the decoder feature map of every level (full resolution first)."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            ResidualBlock(in_channels if i == 0 else widths[i - 1], w, norm)
            for i, w in enumerate(widths))
        self.decoder = nn.ModuleList(ResidualBlock(widths[i] + widths[i + 1], widths[i], norm)
                                     for i in range(len(widths) - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        levels = [x]
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([_up(x), skips[i]], dim=1))
            levels.insert(0, x)
        return levels


class UNetPlusPlus2d(nn.Module):
    """Residual U-Net++ (nested skip paths); returns the top node ``X[0][L-1]``.

    ``extra`` maps a level ``i`` to the channels of a feature map that is concatenated into the
    input of that level's last decoder node ``X[i][L-1-i]`` (the DBAC shortcuts).
    """

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str,
                 extra: dict[int, int] | None = None) -> None:
        super().__init__()
        depth = len(widths)
        extra = extra or {}
        self.depth = depth
        self.nodes = nn.ModuleDict()
        for i in range(depth):
            cin = in_channels if i == 0 else widths[i - 1]
            self.nodes[f"{i}_0"] = ResidualBlock(cin, widths[i], norm)
            for j in range(1, depth - i):
                cin = j * widths[i] + widths[i + 1]
                if j == depth - 1 - i:
                    cin += extra.get(i, 0)
                self.nodes[f"{i}_{j}"] = ResidualBlock(cin, widths[i], norm)

    def forward(self, x: torch.Tensor, extra: dict[int, torch.Tensor] | None = None
                ) -> torch.Tensor:
        extra = extra or {}
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(self.depth):
            grid[i, 0] = self.nodes[f"{i}_0"](F.max_pool2d(grid[i - 1, 0], 2) if i else x)
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                parts = [grid[i, k] for k in range(j)] + [_up(grid[i + 1, j - 1])]
                if j == self.depth - 1 - i and i in extra:
                    parts.append(extra[i])
                grid[i, j] = self.nodes[f"{i}_{j}"](torch.cat(parts, dim=1))
        return grid[0, self.depth - 1]


def _check_input(x: torch.Tensor, multiple: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"{what} is a 2D model: it needs images as (N, 1, H, W), got shape "
                         f"{tuple(x.shape)}; 3D stacks are segmented slice by slice")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise InputError(f"{what} input height and width must be multiples of {multiple}; got "
                         f"{tuple(x.shape[2:])}")


class DBAC(nn.Module):
    """Deep binary attention cascade (paper 003, Fig. 3, eq. 1-2).

    Parameters
    ----------
    widths : sequence of int
        Channels per level of the U-Net and the U-Net++ (paper: 32, 64, 128, 256, 512).
    shortcut_levels : sequence of int
        Levels (0 = full resolution) whose U-Net decoder features feed the U-Net++ decoder.
    norm : {"batch", "instance", "none"}
    """

    def __init__(self, widths: Sequence[int] = SLIM_WIDTHS, shortcut_levels: Sequence[int] = (1, 2),
                 norm: str = "batch") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError("a cascade needs at least two levels of positive width")
        self.shortcut_levels = tuple(int(v) for v in shortcut_levels)
        if any(not 0 <= v < len(widths) - 1 for v in self.shortcut_levels):
            raise ValueError(f"shortcut levels must be in 0..{len(widths) - 2}")
        self.first = UNet2d(1, widths, norm)
        self.attention_head = nn.Conv2d(widths[0], 1, 1)
        self.second = UNetPlusPlus2d(1, widths, norm, {v: widths[v] for v in self.shortcut_levels})
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.input_multiple = (1, 2 ** (len(widths) - 1), 2 ** (len(widths) - 1))
        self.dims = 2

    def forward(self, x: torch.Tensor) -> DBACOutput:
        _check_input(x, self.input_multiple[-1], "DBAC")
        levels = self.first(x)
        w = self.attention_head(levels[0])
        m = x * torch.relu(w)  # eq. 1 (P = max(0, W)) and eq. 2 (M = I x P)
        y = self.second(m, {v: levels[v] for v in self.shortcut_levels})
        return DBACOutput(self.head(y), w)


class DDMAC(nn.Module):
    """Deep distance-map attention cascade (paper 003, Fig. 4, eq. 6-8).

    Parameters
    ----------
    widths : sequence of int
        Channels per level of both sub-networks.
    attention_channels : int
        k of eq. 6, channels of the soft-maxed attention (paper: 3).
    shortcut_levels : sequence of int
        As in :class:`DBAC`; the paper describes the shortcuts for DBAC only (default none).
    norm : {"batch", "instance", "none"}
    """

    def __init__(self, widths: Sequence[int] = SLIM_WIDTHS, attention_channels: int = 3,
                 shortcut_levels: Sequence[int] = (), norm: str = "batch") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1 or attention_channels < 1:
            raise ValueError("a cascade needs at least two levels of positive width")
        self.shortcut_levels = tuple(int(v) for v in shortcut_levels)
        self.first = UNet2d(1, widths, norm)
        self.attention_head = nn.Conv2d(widths[0], attention_channels, 1)
        self.distance_head = nn.Conv2d(widths[0], 1, 1)
        self.second = UNetPlusPlus2d(attention_channels + 1, widths, norm,
                                     {v: widths[v] for v in self.shortcut_levels})
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.input_multiple = (1, 2 ** (len(widths) - 1), 2 ** (len(widths) - 1))
        self.dims = 2

    def forward(self, x: torch.Tensor) -> DDMACOutput:
        _check_input(x, self.input_multiple[-1], "DDMAC")
        levels = self.first(x)
        attention = torch.softmax(self.attention_head(levels[0]), dim=1)  # eq. 6
        q = torch.sigmoid(self.distance_head(levels[0]))  # dilated probability, eq. 3-5
        m = torch.cat([attention * x, q], dim=1)  # eq. 7-8
        y = self.second(m, {v: levels[v] for v in self.shortcut_levels})
        return DDMACOutput(self.head(y), q)


class CascadeEnsemble(nn.Module):
    """Late fusion of a DBAC and a DDMAC (paper 003, section II.C, eq. 9-10).

    Parameters
    ----------
    widths : sequence of int
        Channels per level of both cascades.
    fusion : {"average", "maximum"}
        Eq. 9 or eq. 10 (the paper's best is "average").
    dbac_scale : int
        Up-sample the DBAC input by this factor (the paper's best: 2, 1024 x 1024 inputs for
        512 x 512 images, to keep thin vessels); its outputs are brought back to the input size.
    norm : {"batch", "instance", "none"}
    """

    def __init__(self, widths: Sequence[int] = SLIM_WIDTHS, fusion: str = "average",
                 dbac_scale: int = 1, norm: str = "batch") -> None:
        super().__init__()
        if fusion not in ("average", "maximum"):
            raise ValueError(f"fusion must be 'average' or 'maximum', not {fusion!r}")
        if int(dbac_scale) < 1:
            raise ValueError("dbac_scale must be at least 1")
        self.fusion, self.dbac_scale = fusion, int(dbac_scale)
        self.dbac = DBAC(widths, norm=norm)
        self.ddmac = DDMAC(widths, norm=norm)
        self.input_multiple = self.ddmac.input_multiple
        self.dims = 2

    def forward(self, x: torch.Tensor) -> EnsembleOutput:
        _check_input(x, self.input_multiple[-1], "the cascade ensemble")
        if self.dbac_scale > 1:
            big = F.interpolate(x, scale_factor=float(self.dbac_scale), mode="bilinear",
                                align_corners=False)
            out = self.dbac(big)
            dbac = DBACOutput(*(F.avg_pool2d(t, self.dbac_scale) for t in out))
        else:
            dbac = self.dbac(x)
        ddmac = self.ddmac(x)
        first, second = torch.sigmoid(dbac.seg), torch.sigmoid(ddmac.seg)
        fused = (first + second) / 2 if self.fusion == "average" else torch.maximum(first, second)
        return EnsembleOutput(fused, dbac, ddmac)  # eq. 9 / eq. 10


def paper_labels(prob: Any, *, low: float = 0.45, high: float = 0.95, min_size: int = 64,
                 fill_holes: bool = True, max_hole: int | None = 64,
                 connectivity: int | None = None) -> Any:
    """Vessel labels as in paper 003: hysteresis thresholds, then morphological clean-up.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Fused probability map (the ensemble's output).
    low, high : float
        Hysteresis thresholds (paper: 0.45 and 0.95).
    min_size : int
        Remove vessel pieces of fewer pixels ("remove small fragments").
    fill_holes : bool
        Fill holes closed within each slice ("fill small gaps").
    max_hole : int, optional
        Only holes up to this many pixels are filled.
    connectivity : int, optional
        Neighbourhood joining pixels of one piece; None: the full one for ``prob.ndim``.

    Returns
    -------
    ndarray of uint8, shape of ``prob``
    """
    from napari_vessel.postprocess import labels as postprocess

    labels = postprocess.hysteresis(prob, low, high, connectivity=connectivity)
    if min_size:
        labels = postprocess.remove_small(labels, min_size, connectivity=connectivity)
    if fill_holes:
        labels = postprocess.fill_holes(labels, per_slice=labels.ndim == 3, max_size=max_hole)
    return labels.astype("uint8", copy=False)


def build_dbac(**config: Any) -> DBAC:
    """Build a :class:`DBAC` from card-style keyword arguments."""
    return DBAC(**config)


def build_ddmac(**config: Any) -> DDMAC:
    """Build a :class:`DDMAC` from card-style keyword arguments."""
    return DDMAC(**config)


def build_ensemble(**config: Any) -> CascadeEnsemble:
    """Build a :class:`CascadeEnsemble` from card-style keyword arguments."""
    return CascadeEnsemble(**config)


def confocal_preprocessing() -> dict:
    """The paper's confocal preprocessing as a pipeline (JSON form): multi-focus fusion, CLAHE.

    Slice by slice, every slice is sharpened from its 5 neighbours (sliding-window fusion)
    before the per-slice CLAHE (section II.A).
    """
    from napari_vessel.preprocess import Clahe, FocusStack, Pipeline

    return Pipeline((FocusStack(depth_window=5), Clahe(mode="2d"))).to_dict()


_CARD = {
    "paper": "Wang, Glinskii, Bunyak, Palaniappan, ensemble of deep learning cascades (paper 003)",
    "postprocessing": HYSTERESIS,
    "recommended_preprocessing": confocal_preprocessing(),
    "notes": "2D model: a 3D stack is segmented slice by slice; for one all-in-focus image, fuse "
             "the stack first (fuse_focus) and segment it as a one-slice stack.",
}

_KINDS = (("dbac", build_dbac, {}, "DBAC cascade (U-Net -> U-Net++, binary attention)"),
          ("ddmac", build_ddmac, {}, "DDMAC cascade (distance-map attention, k=20)"),
          ("cascade-ensemble", build_ensemble, {"fusion": "average", "dbac_scale": 1},
           "DBAC + DDMAC averaged, hysteresis 0.45/0.95"))
_VARIANTS = [(f"{arch}{suffix}", builder, {"widths": list(widths), **extra}, arch,
              f"{text}, {size}; 2D, slice by slice")
             for arch, builder, extra, text in _KINDS
             for suffix, widths, size in (("", SLIM_WIDTHS, "slim (8-64 channels)"),
                                          ("-full", FULL_WIDTHS, "paper's widths (32-512): GPUs"))]

for _name, _builder, _config, _architecture, _description in _VARIANTS:
    _weights = shipped_weights(_name)
    _multiple = 2 ** (len(_config["widths"]) - 1)
    register(ModelSpec(
        name=_name,
        kind="supervised",
        description=_description,
        builder=_builder,
        config=_config,
        weights=_weights,
        card={} if _weights else _CARD,
        postprocessing=HYSTERESIS,  # also when a trained card does not repeat it
        patch_size_zyx=(1, 256, 256),
        input_multiple_zyx=(1, _multiple, _multiple),
        dims=2,
        architecture=_architecture,
        output="probability" if _architecture == "cascade-ensemble" else "logits",
    ))
