"""Segmentation scores, each a plain NumPy function, and a Markdown table like the papers' tables.

Masks are any arrays of the same shape (2D or 3D); a voxel is vessel where the value is non-zero.

Overlap scores from the confusion counts TP, FP, FN, TN (paper 001, section 4.5):
Dice (= F1) ``2TP / (2TP + FP + FN)``, Jaccard ``TP / (TP + FP + FN)``, precision ``TP / (TP + FP)``,
sensitivity (recall) ``TP / (TP + FN)``, specificity ``TN / (TN + FP)``, accuracy, and MCC
``(TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))``.

Conventions for empty masks (one rule for all ratios): when a denominator is zero, the score is
1.0 if the prediction equals the reference and 0.0 otherwise. So two empty masks score 1 on
everything; an empty prediction against a non-empty reference scores 0. Further:

- :func:`average_precision` is ``nan`` when the reference has no vessel (recall is undefined).
- :func:`hd95` is 0.0 when both masks are empty and ``inf`` when exactly one is.
- :func:`cldice` follows the ratio rule above for each of its two parts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_spacing

__all__ = [
    "Confusion",
    "confusion",
    "dice",
    "jaccard",
    "precision",
    "sensitivity",
    "specificity",
    "accuracy",
    "mcc",
    "average_precision",
    "cldice",
    "hd95",
    "evaluate",
    "mean_row",
    "format_table",
    "COLUMNS",
]

#: Column titles of :func:`format_table`, in the order the metrics are shown.
COLUMNS: dict[str, str] = {
    "ap": "AP",
    "dice": "Dice/F1",
    "jaccard": "Jaccard",
    "precision": "Precision",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "accuracy": "Accuracy",
    "mcc": "MCC",
    "cldice": "clDice",
    "hd95": "HD95",
}


class Confusion(NamedTuple):
    """Voxel counts of a binary prediction against a reference."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def identical(self) -> bool:
        """True when prediction and reference agree on every voxel."""
        return self.fp == 0 and self.fn == 0


def _mask(a: Any, what: str) -> np.ndarray:
    array = np.asarray(a)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"the {what} contains NaN or infinite values; clean or re-export it")
    return array != 0


def _pair(pred: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = _mask(pred, "prediction"), _mask(reference, "reference")
    if p.shape != r.shape:
        raise InputError(
            f"prediction {p.shape} and reference {r.shape} differ in shape; they must cover the "
            "same voxels (crop or resample one of them)"
        )
    if p.size == 0:
        raise InputError("prediction and reference are empty arrays (no voxels)")
    return p, r


def confusion(pred: Any, reference: Any) -> Confusion:
    """Count true/false positives/negatives.

    Parameters
    ----------
    pred, reference : array_like, same shape
        Non-zero means vessel.

    Returns
    -------
    Confusion
        ``(tp, fp, fn, tn)``.
    """
    p, r = _pair(pred, reference)
    tp = int(np.count_nonzero(p & r))
    n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    return Confusion(tp, n_pred - tp, n_ref - tp, p.size - n_pred - n_ref + tp)


def _ratio(num: float, den: float, identical: bool) -> float:
    if den == 0:
        return 1.0 if identical else 0.0
    return float(num / den)


def _scores(c: Confusion) -> dict[str, float]:
    tp, fp, fn, tn = (float(v) for v in c)
    same = c.identical
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, same),
        "jaccard": _ratio(tp, tp + fp + fn, same),
        "precision": _ratio(tp, tp + fp, same),
        "sensitivity": _ratio(tp, tp + fn, same),
        "specificity": _ratio(tn, tn + fp, same),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "mcc": _ratio(tp * tn - fp * fn, math.sqrt(den), same),
    }


def dice(pred: Any, reference: Any) -> float:
    """Dice coefficient = F1 score ``2TP / (2TP + FP + FN)``; 1.0 for two empty masks."""
    return _scores(confusion(pred, reference))["dice"]


def jaccard(pred: Any, reference: Any) -> float:
    """Jaccard index (IoU) ``TP / (TP + FP + FN)``; 1.0 for two empty masks."""
    return _scores(confusion(pred, reference))["jaccard"]


def precision(pred: Any, reference: Any) -> float:
    """Precision ``TP / (TP + FP)``; with no predicted vessel: 1.0 if the reference is empty, else 0."""
    return _scores(confusion(pred, reference))["precision"]


def sensitivity(pred: Any, reference: Any) -> float:
    """Sensitivity (recall) ``TP / (TP + FN)``; with an empty reference: 1.0 if the prediction is too."""
    return _scores(confusion(pred, reference))["sensitivity"]


def specificity(pred: Any, reference: Any) -> float:
    """Specificity ``TN / (TN + FP)``; with no background in the reference: 1.0 if identical."""
    return _scores(confusion(pred, reference))["specificity"]


def accuracy(pred: Any, reference: Any) -> float:
    """Accuracy ``(TP + TN) / all voxels``."""
    return _scores(confusion(pred, reference))["accuracy"]


def mcc(pred: Any, reference: Any) -> float:
    """Matthews correlation coefficient in [-1, 1]; 1.0 if identical when a marginal is empty."""
    return _scores(confusion(pred, reference))["mcc"]


def average_precision(prob: Any, reference: Any) -> float:
    """Area under the precision-recall curve, as step sum ``sum_n (R_n - R_{n-1}) P_n``.

    One operating point per distinct value of ``prob`` (highest first), no interpolation: the same
    definition as scikit-learn's ``average_precision_score``.

    Parameters
    ----------
    prob : array_like
        Vessel probability (or any score where higher means vessel).
    reference : array_like, same shape
        Non-zero means vessel.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when the reference has no vessel.
    """
    scores = np.asarray(prob)
    if scores.dtype.kind not in "biuf":
        raise InputError(f"the probability map has type {scores.dtype}; it must be numeric")
    if scores.dtype.kind == "f" and not np.all(np.isfinite(scores)):
        raise InputError("the probability map contains NaN or infinite values")
    ref = _mask(reference, "reference")
    if scores.shape != ref.shape:
        raise InputError(
            f"probability map {scores.shape} and reference {ref.shape} differ in shape"
        )
    n_pos = int(np.count_nonzero(ref))
    if n_pos == 0:
        return float("nan")
    order = np.argsort(scores, axis=None, kind="stable")[::-1]
    sorted_scores = scores.reshape(-1)[order]
    hits = ref.reshape(-1)[order]
    # last position of each run of equal scores = one threshold
    last = np.flatnonzero(np.diff(sorted_scores)) if sorted_scores.size > 1 else np.array([], int)
    last = np.r_[last, sorted_scores.size - 1]
    tps = np.cumsum(hits, dtype=np.int64)[last]
    precisions = tps / (last + 1)
    recalls = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recalls]) * precisions))


def cldice(pred: Any, reference: Any) -> float:
    """Centreline Dice (paper 004, eq. 2).

    ``Tprec = |S(P) & L| / |S(P)|`` (predicted centreline inside the reference) and
    ``Tsens = |S(L) & P| / |S(L)|`` (reference centreline inside the prediction), where ``S`` is
    :func:`skimage.morphology.skeletonize` (3D thinning for volumes); clDice is their harmonic mean.
    Skeletons are topological, so the voxel size does not enter.

    Parameters
    ----------
    pred, reference : array_like, same shape, 2D or 3D

    Returns
    -------
    float in [0, 1]
    """
    p, r = _pair(pred, reference)
    same = not np.any(p ^ r)
    skel_p, skel_r = skeletonize(p), skeletonize(r)
    t_prec = _ratio(np.count_nonzero(skel_p & r), np.count_nonzero(skel_p), same)
    t_sens = _ratio(np.count_nonzero(skel_r & p), np.count_nonzero(skel_r), same)
    if t_prec + t_sens == 0:
        return 0.0
    return 2 * t_prec * t_sens / (t_prec + t_sens)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face-neighbour outside it (array borders count as outside)."""
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred: Any, reference: Any, spacing_zyx: Sequence[float] | None = None) -> float:
    """95th percentile of the symmetric surface distance (robust Hausdorff distance).

    The distances from every surface voxel of the prediction to the reference surface and from
    every surface voxel of the reference to the prediction surface are pooled; the result is their
    95th percentile. Distances use the voxel size, so anisotropic stacks (z steps of several µm)
    are measured correctly.

    Parameters
    ----------
    pred, reference : array_like, same shape, 2D or 3D
    spacing_zyx : sequence of float, optional
        Voxel size per axis (µm); default 1 (the result is then in voxels).

    Returns
    -------
    float
        0.0 if both masks are empty, ``inf`` if exactly one is.
    """
    p, r = _pair(pred, reference)
    spacing = (1.0,) * p.ndim if spacing_zyx is None else check_spacing(spacing_zyx, p.ndim)
    has_p, has_r = bool(p.any()), bool(r.any())
    if not has_p and not has_r:
        return 0.0
    if has_p != has_r:
        return float("inf")
    surf_p, surf_r = _surface(p), _surface(r)
    to_r = ndi.distance_transform_edt(~surf_r, sampling=spacing)[surf_p]
    to_p = ndi.distance_transform_edt(~surf_p, sampling=spacing)[surf_r]
    return float(np.percentile(np.concatenate([to_r, to_p]), 95))


def evaluate(
    pred_labels: Any,
    reference: Any,
    prob: Any | None = None,
    spacing_zyx: Sequence[float] | None = None,
) -> dict[str, float]:
    """All scores of one prediction.

    Parameters
    ----------
    pred_labels, reference : array_like, same shape
        Non-zero means vessel.
    prob : array_like, optional
        Probability map for ``ap`` (left out without it).
    spacing_zyx : sequence of float, optional
        Voxel size for ``hd95`` (µm); default 1 (voxels).

    Returns
    -------
    dict
        Keys (in :data:`COLUMNS` order): ``ap`` (with ``prob``), ``dice``, ``jaccard``,
        ``precision``, ``sensitivity``, ``specificity``, ``accuracy``, ``mcc``, ``cldice``,
        ``hd95``.
    """
    p, r = _pair(pred_labels, reference)
    result: dict[str, float] = {}
    if prob is not None:
        result["ap"] = average_precision(prob, r)
    result.update(_scores(confusion(p, r)))
    result["cldice"] = cldice(p, r)
    result["hd95"] = hd95(p, r, spacing_zyx)
    return result


def mean_row(rows: Sequence[Mapping[str, Any]], name: str = "mean") -> dict[str, Any]:
    """The mean of every numeric column over ``rows`` (``nan`` and ``inf`` propagate).

    Parameters
    ----------
    rows : sequence of dict
        Rows as returned by :func:`evaluate`, optionally with a ``name``.
    name : str
        Name of the returned row.
    """
    keys = [k for k in _column_order(rows) if k != "name"]
    out: dict[str, Any] = {"name": name}
    for key in keys:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if values:
            out[key] = float(np.mean(values))
    return out


def _column_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    known = [k for k in COLUMNS if k in seen]
    return (["name"] if "name" in seen else []) + known + [
        k for k in seen if k not in COLUMNS and k != "name"
    ]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf"
        return f"{value:.2f}" if key == "hd95" else f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table with one row per mapping (columns: ``name`` first, then :data:`COLUMNS`).

    Parameters
    ----------
    rows : sequence of dict
        E.g. results of :func:`evaluate` with a ``name`` added; missing cells stay blank, ``nan``
        shows as ``n/a``. Scores have 3 decimals, HD95 2.

    Returns
    -------
    str
    """
    keys = _column_order(rows)
    header = [COLUMNS.get(k, k) for k in keys]
    body = [[_cell(k, row.get(k)) for k in keys] for row in rows]
    widths = [max([len(h)] + [len(cells[i]) for cells in body]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])
