"""Leave-one-volume-out folds: the one protocol behind ``train --loo`` and the LOO benchmarks.

Every fold holds one labelled volume out and trains on all the others, in the order the volumes
were given. ``napari-vessel train --loo``, ``benchmarks/loo_eval.py``, ``benchmarks/zoo_loo.py``
and ``benchmarks/umis_loo.py`` all draw their folds from :func:`leave_one_out`, so they agree on
which volumes a fold trains on and refuse the same bad inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from napari_vessel.errors import InputError

__all__ = ["leave_one_out"]


def leave_one_out(pairs: Sequence[Any], *, only: Iterable[str] | None = None
                  ) -> Iterator[tuple[Any, list[Any]]]:
    """Yield ``(held-out pair, training pairs)`` for each volume in turn.

    Parameters
    ----------
    pairs : sequence of Pair
        The labelled volumes (anything with a ``name``), at least two, with distinct names.
    only : iterable of str, optional
        Names of the volumes to hold out (default: all); every name must be one of ``pairs``.
        The training pairs of a fold are still all the other volumes.

    Yields
    ------
    held : Pair
        The held-out volume.
    training : list of Pair
        Every other volume, in the given order.

    Raises
    ------
    InputError
        Fewer than two volumes, two volumes with one name, or an ``only`` name that is not one
        of the volumes; raised before the first fold, so no fold is trained in vain.
    """
    pairs = list(pairs)
    names = [p.name for p in pairs]
    if len(pairs) < 2:
        raise InputError(f"leave-one-out needs at least two labelled volumes, got {len(pairs)}; "
                         "add volumes to the data folder or train without leave-one-out")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"volume names must be unique for leave-one-out, but {repeated[0]!r} "
                         "occurs more than once; rename the files so each volume has its own name")
    chosen = None if only is None else list(only)
    unknown = [n for n in chosen or [] if n not in names]
    if unknown:
        raise InputError(f"{unknown[0]!r} is not one of the volumes ({', '.join(names)}); give "
                         "the name of a volume to hold out")
    for i, held in enumerate(pairs):
        if chosen is not None and held.name not in chosen:
            continue
        yield held, pairs[:i] + pairs[i + 1:]
