"""The one training loop decides when to stop the same way for every trainer."""

from __future__ import annotations

import pytest
import torch

from napari_vessel.errors import Cancelled
from napari_vessel.progress import CancelToken
from napari_vessel.training.loop import optimise, run_steps


def test_runs_to_the_count_from_the_first_index():
    seen: list[int] = []
    assert run_steps(seen.append, first=3, total=7) == 7
    assert seen == [3, 4, 5, 6]
    assert run_steps(seen.append, first=7, total=7) == 7 and seen == [3, 4, 5, 6]  # resumed, done


def test_a_step_that_says_stop_counts():
    seen: list[int] = []
    assert run_steps(lambda i: seen.append(i) or i < 2, total=10) == 3
    assert seen == [0, 1, 2]


def test_cancel_is_checked_before_every_step():
    token, seen = CancelToken(), []

    def step(i: int) -> None:
        seen.append(i)
        if i == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        run_steps(step, total=10, cancel=token)
    assert seen == [0, 1]


def test_time_budget_with_the_expected_next_step_and_free_steps():
    # a budget already spent: no step, unless some are free
    assert run_steps(lambda i: None, total=5, minutes=1e-9) == 0
    assert run_steps(lambda i: None, total=5, minutes=1e-9, free_steps=2) == 2
    # the next step would end past the budget: stop before it
    assert run_steps(lambda i: None, total=5, minutes=1.0, next_step_s=lambda: 120.0) == 0
    assert run_steps(lambda i: None, total=5, minutes=1.0, next_step_s=lambda: 0.0) == 5


def test_needs_a_count_or_a_budget():
    with pytest.raises(ValueError, match="step count"):
        run_steps(lambda i: None)


def test_optimise_takes_one_gradient_step():
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    opt = torch.optim.SGD([weight], lr=0.5)
    value = optimise(opt, (weight ** 2).sum())
    assert value == pytest.approx(4.0)
    assert weight.item() == pytest.approx(2.0 - 0.5 * 4.0)  # d/dw w^2 = 2w = 4
    optimise(opt, (weight ** 2).sum())  # the old gradient is cleared, not accumulated
    assert weight.item() == pytest.approx(0.0 - 0.5 * 0.0)
