"""A threshold level that follows the volume: the model card's level rule.

A network trained on synthetic vessels ranks voxels well but its probabilities do not mean the
same on every stack: on the six labelled two-photon volumes the best level of the shipped
``tvnet`` runs from 0.10 (a dense volume, 42 % vessel, whose hand labels include each vessel's
blurred rim) to 0.83 (a sparse one, 3 %). One fixed level cannot serve both. The rule reads
how much of the volume the network itself calls vessel, the fraction ``f`` of voxels with
probability above ``probe`` (0.5), and sets

    level = intercept + slope * f

with ``f`` held to the range of fractions seen when the rule was fitted (no extrapolation) and
the level to ``level_range``. The two numbers are fitted on labelled volumes by
:func:`napari_vessel.training.calibrate.fit_level_rule`; ``napari-vessel train`` does it when it
chooses the threshold (docs/training.md has the leave-one-out figures).

The rule amplifies the network's own view of the volume: where it over-calls a stack (a strong
background it takes for vessel), the fraction rises and the level falls. The run manifest and
the Segment dock therefore show the level used and the fraction it came from, and a threshold
given by the user always wins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["LevelRule", "fraction_above", "LEVEL_RANGE"]

#: Where a rule's level may go by default (and the levels a fit tries).
LEVEL_RANGE = (0.05, 0.95)


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"level rule: {name}={value!r} is not a number") from err
    if not math.isfinite(number) or isinstance(value, bool):
        raise InputError(f"level rule: {name}={value!r} must be a finite number")
    return number


def _pair(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (_number(v, name) for v in value)
    except (TypeError, ValueError) as err:
        raise InputError(f"level rule: {name}={value!r} must be two numbers [low, high]") from err
    if not low <= a <= b <= high:
        raise InputError(f"level rule: {name}={value!r} must satisfy {low} <= low <= high <= "
                         f"{high}")
    return (a, b)


def _steps(length: int, chunk: int, most: int) -> list[tuple[int, int]]:
    step = max(chunk, (max(most, chunk) // chunk) * chunk)  # whole chunks, at most ``most``
    return [(start, min(start + step, length)) for start in range(0, length, step)]


def fraction_above(prob: Any, probe: float = 0.5, *, cancel: Any = None) -> float:
    """Fraction of the voxels of ``prob`` above ``probe``.

    NumPy arrays are counted at once; Zarr and dask arrays block by block along their own
    chunks (about 64 M voxels at a time), so a map larger than memory is never loaded whole.
    ``cancel`` (a :class:`~napari_vessel.progress.CancelToken`) is checked between blocks.

    Raises
    ------
    InputError
        An empty map, or one with NaN values.
    """
    shape = tuple(int(s) for s in prob.shape)
    total = int(np.prod(shape))
    if total == 0:
        raise InputError("the probability map is empty; there is no vessel fraction to read")

    def count(part: np.ndarray) -> int:
        if np.issubdtype(part.dtype, np.floating) and np.isnan(part).any():
            raise InputError("the probability map contains NaN values; replace them (e.g. "
                             "np.nan_to_num) first")
        return int(np.count_nonzero(part > probe))

    if isinstance(prob, np.ndarray):
        return count(prob) / total
    chunks = getattr(prob, "chunksize", None) or getattr(prob, "chunks", None)
    if not chunks or not all(isinstance(c, int | np.integer) for c in chunks):
        chunks = (1,) * len(shape)
    chunks = tuple(int(c) for c in chunks)
    plane = int(np.prod(shape[1:]))
    spans = [_steps(shape[0], chunks[0], max(1, (64 << 20) // max(plane, 1)))]
    spans += [_steps(n, c, 4096) for n, c in zip(shape[1:], chunks[1:], strict=True)]
    counted = 0
    for box in itertools.product(*spans):
        if cancel is not None:
            cancel.check()
        counted += count(np.asarray(prob[tuple(slice(a, b) for a, b in box)]))
    return counted / total


@dataclass(frozen=True)
class LevelRule:
    """``level = intercept + slope * f``, f the fraction of voxels with probability > ``probe``.

    Parameters
    ----------
    intercept, slope : float
        The fitted line (a negative slope: the more the network calls vessel, the lower the
        level).
    fraction_range : (float, float)
        The fractions of the volumes the rule was fitted on; a volume outside is treated as the
        nearest end (the rule does not extrapolate).
    level_range : (float, float)
        The level is clipped to this range, within [0, 1].
    probe : float
        The probability whose exceedance fraction is read, in (0, 1).

    Raises
    ------
    InputError
        A value that is not a finite number, a range out of order or outside [0, 1].

    Examples
    --------
    >>> rule = LevelRule(1.0, -3.0, (0.05, 0.3))
    >>> round(rule.level_for(0.2), 3), round(rule.level_for(0.9), 3)
    (0.4, 0.1)
    """

    intercept: float
    slope: float
    fraction_range: tuple[float, float]
    level_range: tuple[float, float] = LEVEL_RANGE
    probe: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "intercept", _number(self.intercept, "intercept"))
        object.__setattr__(self, "slope", _number(self.slope, "slope"))
        object.__setattr__(self, "fraction_range",
                           _pair(self.fraction_range, "fraction_range", 0.0, 1.0))
        object.__setattr__(self, "level_range", _pair(self.level_range, "level_range", 0.0, 1.0))
        probe = _number(self.probe, "probe")
        if not 0.0 < probe < 1.0:
            raise InputError(f"level rule: probe={self.probe!r} must lie strictly between 0 and 1")
        object.__setattr__(self, "probe", probe)

    def level_for(self, fraction: float) -> float:
        """The level for a volume whose map has ``fraction`` of its voxels above ``probe``."""
        f = _number(fraction, "fraction")
        f = min(max(f, self.fraction_range[0]), self.fraction_range[1])
        low, high = self.level_range
        return float(min(max(self.intercept + self.slope * f, low), high))

    def held(self, fraction: float) -> bool:
        """True when ``fraction`` lies outside the fitted range (the rule used its nearest end)."""
        low, high = self.fraction_range
        return not low <= _number(fraction, "fraction") <= high

    def level(self, prob: Any) -> tuple[float, float]:
        """``(level, fraction)`` for the probability map ``prob`` (any array of probabilities)."""
        fraction = fraction_above(prob, self.probe)
        return self.level_for(fraction), fraction

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a model card's ``postprocessing.level_rule``)."""
        return {"intercept": round(self.intercept, 6), "slope": round(self.slope, 6),
                "fraction_range": [round(v, 6) for v in self.fraction_range],
                "level_range": [round(v, 6) for v in self.level_range], "probe": self.probe}

    @classmethod
    def from_dict(cls, data: Any) -> LevelRule:
        """Read :meth:`to_dict`'s form; unknown keys are refused (a misspelt card)."""
        if not isinstance(data, Mapping):
            raise InputError(f"level rule {data!r} must be a JSON object with intercept, slope "
                             "and fraction_range")
        unknown = set(data) - {"intercept", "slope", "fraction_range", "level_range", "probe"}
        missing = {"intercept", "slope", "fraction_range"} - set(data)
        if unknown or missing:
            raise InputError(f"level rule: unknown keys {sorted(unknown)}, missing keys "
                             f"{sorted(missing)}; it needs intercept, slope and fraction_range")
        return cls(intercept=data["intercept"], slope=data["slope"],
                   fraction_range=tuple(data["fraction_range"]),
                   level_range=tuple(data.get("level_range", LEVEL_RANGE)),
                   probe=data.get("probe", 0.5))
