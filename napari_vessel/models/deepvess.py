"""DeepVess baseline (Haft-Javaherian et al., PLoS ONE 2019), made fully convolutional.

DeepVess is a 3D patch classifier for multiphoton angiograms; the UMIS paper (000, Tables 1-3)
re-implemented it as its strongest supervised baseline. As published, it reads a 7 x 33 x 33
(z, y, x) window and labels the 1 x 5 x 5 voxels at its centre (the UMIS re-implementation keeps
the layers and labels 1 x 4 x 4):

=====  ==========================================  ===============================
#      layer                                       size after (valid convolutions)
=====  ==========================================  ===============================
1-3    three 3x3x3 convolutions, 32 channels, ReLU  1 x 27 x 27
pool   max pooling 1x2x2, step 2                    1 x 14 x 14
4-5    two 1x3x3 convolutions, 64 channels, ReLU    1 x 10 x 10
pool   max pooling 1x2x2, step 2                    1 x 5 x 5
fc1    fully connected, 1024, ReLU, dropout
fc2    fully connected to 2 classes per centre voxel
=====  ==========================================  ===============================

This module builds the same network as a *dense* predictor, so it runs with the sliding window
like every other model: the convolutions are zero-padded ("same"), each max pooling keeps step 1
and dilates every later kernel by its factor instead (filter rarefaction, the classic
shift-and-stitch equivalent), fc1 becomes a 1x5x5 convolution dilated by 4 (it sees the 5 x 5
grid of the pooled map) and fc2 a 1x1x1 convolution with one vessel logit. Each output voxel then
sees a 7 x 34 x 34 window, like one output of the original, and the layer weights correspond one
to one. Stacks thinner than 7 slices work (zero padding in z), as for the original with its
symmetric padding.

Widths: the paper's (32, 64, 1024) are ``deepvess-full``; fc1 at 1024 channels per voxel is
heavy on a CPU, so the default ``deepvess`` uses (16, 32, 128).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.registry import ModelSpec, register
from napari_vessel.models.weights import shipped_weights

__all__ = ["DeepVess", "SameConv3d", "MaxFilter3d", "build_deepvess", "SLIM_CONFIG",
           "FULL_CONFIG"]

#: CPU default: (16, 32, 128) channels.
SLIM_CONFIG: dict[str, Any] = {"widths": [16, 32, 128], "dropout": 0.2}

#: The published widths: 32 (layers 1-3), 64 (layers 4-5), 1024 (fc1); dropout 0.5.
FULL_CONFIG: dict[str, Any] = {"widths": [32, 64, 1024], "dropout": 0.5}


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> list[int]:
    """``F.pad`` amounts (x first) that keep the size; the extra voxel of even kernels goes last."""
    pads: list[int] = []
    for k, d in zip(reversed(kernel), reversed(dilation), strict=True):
        total = (k - 1) * d
        pads += [total // 2, total - total // 2]
    return pads


class SameConv3d(nn.Module):
    """3D convolution with stride 1 and zero padding that keeps the size (odd or even kernels).

    Parameters
    ----------
    cin, cout : int
    kernel, dilation : (int, int, int)
    """

    def __init__(self, cin: int, cout: int, kernel: Sequence[int],
                 dilation: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, tuple(kernel), dilation=tuple(dilation))
        self.pads = _same_padding(kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pads) if any(self.pads) else x)


class MaxFilter3d(nn.Module):
    """Max pooling with step 1 (a max filter) that keeps the size; borders replicate.

    Parameters
    ----------
    kernel, dilation : (int, int, int)
        Window and its spacing (the product of the earlier poolings' factors).
    """

    def __init__(self, kernel: Sequence[int], dilation: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.kernel, self.dilation = tuple(kernel), tuple(dilation)
        self.pads = _same_padding(kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pads, mode="replicate")
        return F.max_pool3d(x, self.kernel, stride=1, dilation=self.dilation)


class DeepVess(nn.Module):
    """DeepVess as a dense 3D network (see the module docstring for the layer table).

    Parameters
    ----------
    widths : (int, int, int)
        Channels of layers 1-3, layers 4-5 and fc1 (published: 32, 64, 1024).
    dropout : float
        Dropout after fc1 during training (published keep probability 0.5).

    Notes
    -----
    Input ``(N, 1, D, H, W)`` of any size; output vessel logits of the same shape.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 128), dropout: float = 0.2) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError("DeepVess needs three positive widths (conv1, conv2, fc1)")
        w1, w2, w3 = (int(w) for w in widths)
        relu = nn.ReLU(inplace=True)
        self.features = nn.Sequential(
            SameConv3d(1, w1, (3, 3, 3)), relu,
            SameConv3d(w1, w1, (3, 3, 3)), relu,
            SameConv3d(w1, w1, (3, 3, 3)), relu,
            MaxFilter3d((1, 2, 2)),
            SameConv3d(w1, w2, (1, 3, 3), (1, 2, 2)), relu,
            SameConv3d(w2, w2, (1, 3, 3), (1, 2, 2)), relu,
            MaxFilter3d((1, 2, 2), (1, 2, 2)),
            SameConv3d(w2, w3, (1, 5, 5), (1, 4, 4)), relu,  # fc1
            nn.Dropout(float(dropout)),
        )
        self.head = nn.Conv3d(w3, 1, 1)  # fc2: one vessel logit per voxel
        self.input_multiple = (1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"DeepVess needs a 3D stack as (N, 1, D, H, W); got shape "
                             f"{tuple(x.shape)}")
        return self.head(self.features(x))


def build_deepvess(**config: Any) -> DeepVess:
    """Build a :class:`DeepVess` from card-style keyword arguments."""
    return DeepVess(**config)


_CARD = {
    "paper": "Haft-Javaherian et al., DeepVess, PLoS ONE 2019 (baseline of paper 000)",
    "receptive_field_zyx": [7, 34, 34],
    "notes": "Patch classifier made dense (same padding, step-1 pooling, dilated later layers).",
}

for _name, _config, _patch, _description in (
    ("deepvess", SLIM_CONFIG, (16, 96, 96),
     "DeepVess baseline (UMIS tables), slim (16/32/128), dense 3D"),
    ("deepvess-full", FULL_CONFIG, (8, 64, 64),
     "DeepVess baseline with the published widths (32/64/1024): slow on a CPU"),
):
    _weights = shipped_weights(_name)
    register(ModelSpec(
        name=_name,
        kind="supervised",
        description=_description,
        builder=build_deepvess,
        config=_config,
        weights=_weights,
        card={} if _weights else _CARD,
        patch_size_zyx=_patch,
        input_multiple_zyx=(1, 1, 1),
        architecture="deepvess",
        output="logits",
    ))
