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

__all__ = ["choose_hysteresis"]


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
