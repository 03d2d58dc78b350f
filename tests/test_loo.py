"""The one leave-one-volume-out protocol of ``train --loo`` and the LOO benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.training.data import Pair
from napari_vessel.training.loo import leave_one_out


def _pairs(*names: str) -> list[Pair]:
    return [Pair(n, np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), bool)) for n in names]


def test_each_volume_is_held_out_once_and_trains_on_the_others_in_order():
    pairs = _pairs("a", "b", "c")
    folds = [(held.name, [p.name for p in training]) for held, training in leave_one_out(pairs)]
    assert folds == [("a", ["b", "c"]), ("b", ["a", "c"]), ("c", ["a", "b"])]


def test_only_some_folds():
    folds = list(leave_one_out(_pairs("a", "b", "c"), only=["c", "a"]))
    assert [(h.name, [p.name for p in t]) for h, t in folds] == [("a", ["b", "c"]),
                                                                 ("c", ["a", "b"])]


@pytest.mark.parametrize(("pairs", "only", "match"), [
    (_pairs("a"), None, "at least two"),
    (_pairs(), None, "at least two"),
    (_pairs("a", "b", "a"), None, "unique"),
    (_pairs("a", "b"), ["z"], "'z' is not one of the volumes"),
])
def test_bad_inputs_are_refused_before_the_first_fold(pairs, only, match):
    with pytest.raises(InputError, match=match):
        next(leave_one_out(pairs, only=only))


def test_train_loo_refuses_a_single_volume(tmp_path):
    import argparse

    from napari_vessel.commands.train import _folds

    args = argparse.Namespace(loo=True, leave_out=[], data=str(tmp_path))
    with pytest.raises(InputError, match="at least two"):
        _folds(args, _pairs("only"))
    args = argparse.Namespace(loo=False, leave_out=["b"], data=str(tmp_path))
    assert [([h.name for h in held], [p.name for p in t])
            for held, t in _folds(args, _pairs("a", "b", "c"))] == [(["b"], ["a", "c"])]
