"""Weight averaging (model soup) of runs of one network."""

from __future__ import annotations

import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.training.soup import average_weights

TINY = {"widths": [2, 4], "strides": [[1, 2, 2]], "convs": [1, 1], "norm": "batch"}


def test_the_average_of_one_is_itself_and_of_two_is_the_midpoint():
    torch.manual_seed(0)
    a, b = build_tvnet(**TINY).state_dict(), build_tvnet(**TINY).state_dict()
    b = {k: v + 1 if v.is_floating_point() else v + 5 for k, v in b.items()}
    assert all(torch.equal(v, a[k]) for k, v in average_weights([a]).items())
    mid = average_weights([a, b])
    for key, value in mid.items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key] + b[key]) / 2)
        else:  # counters come from the first
            assert torch.equal(value, a[key])
    net = build_tvnet(**TINY)
    net.load_state_dict(mid)  # a soup loads into the same network
    assert torch.isfinite(net.eval()(torch.rand(1, 1, 4, 16, 16))).all()


def test_weights_of_another_network_or_none_are_refused():
    a = build_tvnet(**TINY).state_dict()
    other = build_tvnet(**{**TINY, "widths": [2, 8]}).state_dict()
    with pytest.raises(InputError, match="another network"):
        average_weights([a, other], ["a.safetensors", "b.safetensors"])
    fewer = dict(list(a.items())[:-1])
    with pytest.raises(InputError, match="b.safetensors holds weights of another network"):
        average_weights([a, fewer], ["a.safetensors", "b.safetensors"])
    with pytest.raises(InputError, match="at least one"):
        average_weights([])
