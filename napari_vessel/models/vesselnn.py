"""VesselNN baseline (Teikari et al., arXiv 1606.02382, 2016), a dense 2D-3D network.

VesselNN segments two-photon vessel stacks with the VD2D3D architecture of Lee et al. (2015),
trained in the ZNN framework, whose network specification was published with the VesselNN
dataset; the UMIS paper (000, Tables 1-3) re-implemented it as a baseline. Its first layers are
planar (1 x k x k), the last ones 3D (2 x 3 x 3):

=======  ================================================  ========
block    layers                                            channels
=======  ================================================  ========
1        1x3x3 ReLU, 1x3x3 ReLU, 1x2x2 tanh; max 1x2x2      24
2        1x3x3 ReLU, 1x3x3 tanh; max 1x2x2                  36
3        1x3x3 ReLU, 1x3x3 tanh; max 2x2x2                  48
4        2x3x3 ReLU, 2x3x3 ReLU, 2x3x3 ReLU; dropout 0.5    60, 60, 100
out      1x1x1 (two classes there; one logit here)          1
=======  ================================================  ========

The tanh is LeCun's scaled ``1.7159 tanh(2/3 x)``. ZNN computes a dense output by max *filtering*
(step 1) and dilating every later kernel by the pooling factor (1, 2, 2) per pooling; this module
does the same with zero "same" padding, so output and input have one size and each voxel sees a
5 x 85 x 85 window. The recursive second input of VesselNN (the output of a first, purely 2D
network VD2D) is left out: this is the single-input VD2D3D stage.

Widths: the published (24, 36, 48, 60, 60, 100) are ``vesselnn-full`` (about 0.29 M parameters);
the default ``vesselnn`` halves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.deepvess import MaxFilter3d, SameConv3d
from napari_vessel.models.registry import ModelSpec, register
from napari_vessel.models.weights import shipped_weights

__all__ = ["VesselNN", "ScaledTanh", "build_vesselnn", "SLIM_CONFIG", "FULL_CONFIG"]

#: CPU default: half the published widths.
SLIM_CONFIG: dict[str, Any] = {"widths": [12, 18, 24, 30, 30, 50], "dropout": 0.5}

#: The published VD2D3D widths.
FULL_CONFIG: dict[str, Any] = {"widths": [24, 36, 48, 60, 60, 100], "dropout": 0.5}


class ScaledTanh(nn.Module):
    """LeCun's scaled hyperbolic tangent ``a * tanh(b * x)`` (a = 1.7159, b = 0.6666)."""

    def __init__(self, a: float = 1.7159, b: float = 0.6666) -> None:
        super().__init__()
        self.a, self.b = float(a), float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * torch.tanh(self.b * x)


class VesselNN(nn.Module):
    """VD2D3D as a dense network (see the module docstring for the layer table).

    Parameters
    ----------
    widths : sequence of 6 int
        Channels of blocks 1, 2, 3 and of the three layers of block 4 (published: 24, 36, 48,
        60, 60, 100).
    dropout : float
        Dropout before the output layer during training (published: 0.5).

    Notes
    -----
    Input ``(N, 1, D, H, W)`` of any size; output vessel logits of the same shape.
    """

    def __init__(self, widths: Sequence[int] = (12, 18, 24, 30, 30, 50),
                 dropout: float = 0.5) -> None:
        super().__init__()
        if len(widths) != 6 or min(widths) < 1:
            raise ValueError("VesselNN needs six positive widths")
        w1, w2, w3, w4a, w4b, w4c = (int(w) for w in widths)
        relu = nn.ReLU(inplace=True)
        d2, d4, d8 = (1, 2, 2), (1, 4, 4), (1, 8, 8)
        self.features = nn.Sequential(
            SameConv3d(1, w1, (1, 3, 3)), relu,
            SameConv3d(w1, w1, (1, 3, 3)), relu,
            SameConv3d(w1, w1, (1, 2, 2)), ScaledTanh(),
            MaxFilter3d((1, 2, 2)),
            SameConv3d(w1, w2, (1, 3, 3), d2), relu,
            SameConv3d(w2, w2, (1, 3, 3), d2), ScaledTanh(),
            MaxFilter3d((1, 2, 2), d2),
            SameConv3d(w2, w3, (1, 3, 3), d4), relu,
            SameConv3d(w3, w3, (1, 3, 3), d4), ScaledTanh(),
            MaxFilter3d((2, 2, 2), d4),
            SameConv3d(w3, w4a, (2, 3, 3), d8), relu,
            SameConv3d(w4a, w4b, (2, 3, 3), d8), relu,
            SameConv3d(w4b, w4c, (2, 3, 3), d8), relu,
            nn.Dropout(float(dropout)),
        )
        self.head = nn.Conv3d(w4c, 1, 1)
        self.input_multiple = (1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"VesselNN needs a 3D stack as (N, 1, D, H, W); got shape "
                             f"{tuple(x.shape)}")
        return self.head(self.features(x))


def build_vesselnn(**config: Any) -> VesselNN:
    """Build a :class:`VesselNN` from card-style keyword arguments."""
    return VesselNN(**config)


_CARD = {
    "paper": "Teikari et al., VesselNN, arXiv 1606.02382 (baseline of paper 000)",
    "receptive_field_zyx": [5, 85, 85],
    "notes": "VD2D3D stage only (no recursive VD2D input); dense via step-1 pooling + dilation.",
}

for _name, _config, _description in (
    ("vesselnn", SLIM_CONFIG, "VesselNN baseline (UMIS tables), slim (half widths), dense 2D-3D"),
    ("vesselnn-full", FULL_CONFIG, "VesselNN baseline with the published VD2D3D widths (24-100)"),
):
    _weights = shipped_weights(_name)
    register(ModelSpec(
        name=_name,
        kind="supervised",
        description=_description,
        builder=build_vesselnn,
        config=_config,
        weights=_weights,
        card={} if _weights else _CARD,
        patch_size_zyx=(16, 128, 128),
        input_multiple_zyx=(1, 1, 1),
        architecture="vesselnn",
        output="logits",
    ))
