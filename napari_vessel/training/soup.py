"""Weight averaging of runs of one network (a "model soup").

Runs fine-tuned from the same pretrained weights usually stay in one basin of the loss, where the
average of their weights is itself a good network, often better than each run and steadier on
data none of them saw (Wortsman et al., *Model soups*, ICML 2022). The average costs nothing at
inference: the soup is one network of the same size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from napari_vessel.errors import InputError

__all__ = ["average_weights"]


def average_weights(states: Sequence[dict[str, torch.Tensor]],
                    names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The element-wise mean of several state dicts of one network.

    Floating-point tensors (weights, biases, batch-norm running statistics) are averaged;
    integer tensors (e.g. ``num_batches_tracked``) are taken from the first state.

    Parameters
    ----------
    states : sequence of dict
        State dicts with the same keys and shapes (at least one).
    names : sequence of str, optional
        Where each came from, for the error messages.

    Returns
    -------
    dict
        The averaged state dict (new tensors).

    Raises
    ------
    InputError
        No states, or states of different networks (keys, shapes or dtypes differ).
    """
    if not states:
        raise InputError("nothing to average: give at least one set of weights")
    names = list(names) if names is not None else [f"weights {i + 1}" for i in range(len(states))]
    first = states[0]
    for other, name in zip(states[1:], names[1:], strict=False):
        if other.keys() != first.keys():
            missing = sorted(first.keys() ^ other.keys())[0]
            raise InputError(f"{name} holds weights of another network than {names[0]} "
                             f"({missing!r} is in only one of them); average only runs of the "
                             "same model and widths")
        for key, value in other.items():
            if value.shape != first[key].shape or value.dtype != first[key].dtype:
                raise InputError(f"{name} holds weights of another network than {names[0]} "
                                 f"({key}: {tuple(value.shape)} against "
                                 f"{tuple(first[key].shape)}); average only runs of the same "
                                 "model and widths")
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            out[key] = torch.stack([s[key].to(torch.float64) for s in states]).mean(0).to(
                value.dtype).contiguous()
        else:
            out[key] = value.clone()
    return out
