"""Fit a model card's hysteresis post-processing to the network as trained.

Paper 003 thresholds its cascades by hysteresis with fixed levels (0.45 and 0.95), which suits a
network as confident as the paper's. A network trained for minutes on a CPU may never reach 0.95,
and the paper's levels then call nothing vessel. The levels are therefore chosen on the training
volumes, like the plain threshold: the low level is the training threshold, the high level the
one (between it and the paper's 0.95) with the best mean F1 over the training volumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["choose_hysteresis", "fit_level_rule", "MIN_RULE_VOLUMES"]

#: A level rule has two numbers; fewer labelled volumes than this cannot tell a slope from noise.
MIN_RULE_VOLUMES = 4


def choose_hysteresis(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], low: float,
                      recipe: Mapping[str, Any],
                      highs: Sequence[float] | None = None) -> tuple[dict, float]:
    """The card's hysteresis recipe with levels fitted to the training volumes.

    Parameters
    ----------
    probs, labels : sequences of (Z, Y, X) arrays
        The model's probability maps of its training volumes and their labels.
    low : float
        The low level (the threshold chosen on the same volumes).
    recipe : mapping
        The paper's recipe (``method`` hysteresis, ``high``, clean-up settings), kept apart from
        the levels.
    highs : sequence of float, optional
        Candidate high levels; default every 0.05 from ``low`` to the recipe's ``high``.

    Returns
    -------
    recipe : dict
        The recipe with ``low`` and ``high`` replaced and ``chosen_on`` saying so.
    f1 : float
        Its mean F1 over the volumes.
    """
    from napari_vessel.postprocess.labels import Postprocessing
    from napari_vessel.training.train import f1_score

    top = float(recipe.get("high", 0.95))
    if highs is None:
        highs = np.unique(np.round(np.append(np.arange(low, top, 0.05), [low, top]), 4))
    best: tuple[float, float] = (-1.0, top)
    for high in highs:
        if high < low:
            continue
        trial = Postprocessing.from_dict({**recipe, "low": float(low), "high": float(high)})
        score = float(np.mean([f1_score(trial.apply(p) > 0, np.asarray(lab) > 0)
                               for p, lab in zip(probs, labels, strict=True)]))
        if score > best[0]:
            best = (score, float(high))
    fitted = {**recipe, "low": round(float(low), 4), "high": round(best[1], 4),
              "chosen_on": "training volumes (low: the training threshold; high: best mean F1)"}
    return fitted, best[0]


def _f1_curves(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], levels: np.ndarray
               ) -> np.ndarray:
    """F1 of ``prob > level`` per volume (rows) and level (columns), from 0.001-wide histograms."""
    edges = np.linspace(0.0, 1.0, 1001)
    rows = []
    for prob, lab in zip(probs, labels, strict=True):
        prob = np.asarray(prob, dtype=np.float32).ravel()
        truth = np.asarray(lab).ravel() > 0
        pos = np.histogram(prob[truth], edges)[0]
        allv = np.histogram(prob, edges)[0]
        # voxels above level t: the bins from the first edge >= t (within one bin of t)
        above_pos = np.concatenate([np.cumsum(pos[::-1])[::-1], [0]])
        above_all = np.concatenate([np.cumsum(allv[::-1])[::-1], [0]])
        index = np.clip(np.searchsorted(edges, levels, side="right"), 0, 1000)
        tp, called = above_pos[index], above_all[index]
        rows.append(2.0 * tp / np.maximum(called + truth.sum(), 1))
    return np.array(rows)


def fit_level_rule(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   fixed: float, probe: float = 0.5) -> tuple[Any, float, float]:
    """Fit a :class:`~napari_vessel.postprocess.level.LevelRule` to labelled volumes.

    The rule's two numbers are the ones with the best mean F1 over the volumes (intercepts
    0-1.5 and slopes -5-0 in steps of 0.01 and 0.05); among equal scores, the flattest rule, so
    that volumes that all want one level give the fixed level back.

    Parameters
    ----------
    probs, labels : sequences of (Z, Y, X) arrays
        The model's probability maps of labelled volumes and their labels; at least
        :data:`MIN_RULE_VOLUMES`.
    fixed : float
        The fixed threshold chosen on the same volumes (the rule is compared with it).
    probe : float
        The probability whose exceedance fraction the rule reads.

    Returns
    -------
    rule : LevelRule
    f1_rule, f1_fixed : float
        Mean F1 over the volumes with the rule and at ``fixed``.

    Raises
    ------
    InputError
        Fewer than :data:`MIN_RULE_VOLUMES` volumes.
    """
    from napari_vessel.errors import InputError
    from napari_vessel.postprocess.level import LEVEL_RANGE, LevelRule, fraction_above

    if len(probs) < MIN_RULE_VOLUMES or len(probs) != len(labels):
        raise InputError(f"a level rule needs at least {MIN_RULE_VOLUMES} labelled volumes (one "
                         f"map and labels each); got {len(probs)} maps and {len(labels)} labels")
    fractions = np.array([fraction_above(np.asarray(p), probe) for p in probs])
    lowest, highest = LEVEL_RANGE
    levels = np.round(np.arange(lowest, highest + 1e-4, 0.005), 4)
    curves = _f1_curves(probs, labels, levels)
    intercepts = np.round(np.arange(0.0, 1.5001, 0.01), 4)
    slopes = np.round(np.arange(-5.0, 0.0001, 0.05), 4)
    # level of every (intercept, slope, volume), then the F1 of the nearest level on the grid
    raw = intercepts[:, None, None] + slopes[None, :, None] * fractions[None, None, :]
    index = np.rint((np.clip(raw, lowest, highest) - lowest) / 0.005).astype(int)
    scores = curves[np.arange(len(probs))[None, None, :], index].mean(axis=2)
    best = scores.max()
    ties = np.argwhere(scores >= best - 1e-9)
    i, j = min(ties, key=lambda ij: (abs(slopes[ij[1]]), abs(intercepts[ij[0]] - fixed)))
    rule = LevelRule(intercept=float(intercepts[i]), slope=float(slopes[j]),
                     fraction_range=(float(fractions.min()), float(fractions.max())),
                     probe=probe)
    fixed_index = int(np.rint((min(max(fixed, lowest), highest) - lowest) / 0.005))
    return rule, float(best), float(curves[:, fixed_index].mean())
