"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.evaluation import metrics

# 2 x 5 case: TP = 3, FP = 2, FN = 1, TN = 4
PRED = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
REF = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])


def test_confusion_counts():
    assert metrics.confusion(PRED, REF) == (3, 2, 1, 4)
    assert metrics.confusion(PRED.astype(bool), REF * 255) == (3, 2, 1, 4)  # non-zero = vessel


def test_overlap_scores_hand_values():
    assert metrics.dice(PRED, REF) == pytest.approx(6 / 9)
    assert metrics.jaccard(PRED, REF) == pytest.approx(3 / 6)
    assert metrics.precision(PRED, REF) == pytest.approx(3 / 5)
    assert metrics.sensitivity(PRED, REF) == pytest.approx(3 / 4)
    assert metrics.specificity(PRED, REF) == pytest.approx(4 / 6)
    assert metrics.accuracy(PRED, REF) == pytest.approx(7 / 10)
    assert metrics.mcc(PRED, REF) == pytest.approx((3 * 4 - 2 * 1) / math.sqrt(5 * 4 * 6 * 5))
    # F1 = harmonic mean of precision and recall = Dice
    p, r = 3 / 5, 3 / 4
    assert metrics.dice(PRED, REF) == pytest.approx(2 * p * r / (p + r))
    assert metrics.mcc(1 - REF, REF) == pytest.approx(-1)


def test_empty_mask_conventions():
    empty = np.zeros((3, 4))
    full = np.ones((3, 4))
    some = empty.copy()
    some[1, 1] = 1
    for fn in (metrics.dice, metrics.jaccard, metrics.precision, metrics.sensitivity,
               metrics.specificity, metrics.accuracy, metrics.mcc, metrics.cldice):
        assert fn(empty, empty) == 1.0, fn.__name__
    assert metrics.dice(empty, some) == 0 and metrics.dice(some, empty) == 0
    assert metrics.precision(empty, some) == 0  # nothing predicted, something missed
    assert metrics.sensitivity(some, empty) == 0  # nothing to find, something wrongly found
    assert metrics.specificity(full, full) == 1.0
    assert metrics.mcc(empty, some) == 0
    assert metrics.cldice(empty, some) == 0
    assert metrics.hd95(empty, empty) == 0.0
    assert metrics.hd95(empty, some) == math.inf
    assert math.isnan(metrics.average_precision(np.random.default_rng(0).random((3, 4)), empty))


def test_average_precision_hand_values():
    # thresholds .9 .8 .7 .6 -> (P, R) = (1, .5), (.5, .5), (2/3, 1), (.5, 1)
    assert metrics.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3
    )
    # ties form one threshold: .8 -> (.5, .5); .5 -> (2/3, 1); .2 -> (.5, 1)
    assert metrics.average_precision([0.8, 0.8, 0.5, 0.2], [1, 0, 1, 0]) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3
    )
    perfect = np.array([[0.9, 0.1], [0.7, 0.3]])
    assert metrics.average_precision(perfect, perfect > 0.5) == pytest.approx(1.0)
    assert metrics.average_precision(np.full(6, 0.5), [1, 0, 0, 0, 0, 1]) == pytest.approx(1 / 3)


def test_average_precision_matches_sklearn_when_available():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((4, 5, 6)), 2)  # with ties
    ref = rng.random((4, 5, 6)) < scores
    expected = sk.average_precision_score(ref.ravel(), scores.ravel())
    assert metrics.average_precision(scores, ref) == pytest.approx(expected)


def line_volume() -> np.ndarray:
    line = np.zeros((5, 7, 14), dtype=bool)
    line[2, 3, 2:12] = True  # 10 voxels, its own skeleton
    return line


def test_cldice_line_vs_broken_line():
    line = line_volume()
    broken = line.copy()
    broken[2, 3, 6:8] = False
    # skeleton(broken) = the 8 voxels, all inside the line: Tprec = 1;
    # skeleton(line) = 10 voxels, 8 inside the broken line: Tsens = 0.8
    assert metrics.cldice(broken, line) == pytest.approx(2 * 0.8 / 1.8)
    assert metrics.cldice(line, broken) == pytest.approx(2 * 0.8 / 1.8)
    assert metrics.cldice(line, line) == 1.0


def test_cldice_ignores_thickness_unlike_dice():
    line = line_volume()
    thick = np.zeros_like(line)
    thick[1:4, 2:5, 2:12] = True  # 3 x 3 tube around the line, skeleton on the line
    assert metrics.dice(thick, line) == pytest.approx(0.2)
    assert metrics.cldice(thick, line) == 1.0


def test_cldice_2d():
    ref = np.zeros((9, 20), dtype=bool)
    ref[3:6, 2:18] = True
    pred = ref.copy()
    pred[:, 9:11] = False  # a break
    assert metrics.cldice(pred, ref) < metrics.dice(pred, ref) + 0.05
    assert metrics.cldice(ref, ref) == 1.0


def test_hd95_hand_values_and_anisotropic_spacing():
    pred = np.zeros((1, 1, 5), dtype=bool)
    ref = pred.copy()
    pred[0, 0, 0] = True
    ref[0, 0, 3] = True
    assert metrics.hd95(pred, ref) == pytest.approx(3)
    assert metrics.hd95(pred, ref, (1, 1, 2)) == pytest.approx(6)
    pz = np.zeros((3, 1, 1), dtype=bool)
    rz = pz.copy()
    pz[0], rz[2] = True, True
    assert metrics.hd95(pz, rz, (5, 1, 1)) == pytest.approx(10)  # 2 slices of 5 µm
    # pooled distances [0] (pred -> ref) and [0, 4] (ref -> pred): 95th percentile = 3.6
    assert metrics.hd95(np.array([[1, 0, 0, 0, 0]]), np.array([[1, 0, 0, 0, 1]])) == pytest.approx(3.6)
    assert metrics.hd95(REF, REF, (1, 1)) == 0


def test_hd95_uses_surfaces():
    ref = np.zeros((1, 9, 9), dtype=bool)
    ref[0, 2:7, 2:7] = True
    pred = np.zeros_like(ref)
    pred[0, 3:6, 3:6] = True  # one voxel inside on every side
    # 8 + 16 surface voxels; all at distance 1 except the 4 outer corners at sqrt(2), which are
    # the top 4 of the 24 pooled distances (the 95th percentile sits at rank 21.85)
    assert metrics.hd95(pred, ref) == pytest.approx(math.sqrt(2))
    assert metrics.hd95(pred, ref, (1, 1, 3)) == pytest.approx(math.sqrt(10))  # corners: (1, 3)


def test_evaluate_and_table():
    line = line_volume()
    broken = line.copy()
    broken[2, 3, 6:8] = False
    prob = np.where(broken, 0.9, 0.1)
    result = metrics.evaluate(broken, line, prob=prob, spacing_zyx=(2, 1, 1))
    assert list(result) == list(metrics.COLUMNS)
    assert result["dice"] == pytest.approx(16 / 18)
    assert result["cldice"] == pytest.approx(16 / 18)
    assert result["sensitivity"] == pytest.approx(0.8)
    assert result["hd95"] >= 1
    assert "ap" not in metrics.evaluate(broken, line)
    rows = [{"name": "a", **result}, {"name": "b", **result, "hd95": math.inf, "ap": math.nan}]
    mean = metrics.mean_row(rows)
    assert mean["dice"] == pytest.approx(16 / 18) and mean["hd95"] == math.inf
    table = metrics.format_table([*rows, mean]).splitlines()
    assert table[0].split("|")[1].strip() == "name"
    assert "Dice/F1" in table[0] and "clDice" in table[0] and "HD95" in table[0]
    assert set(table[1]) <= {"|", "-"}
    assert len(table) == 5 and "0.889" in table[2] and "inf" in table[3] and "n/a" in table[3]
    assert table[4].split("|")[1].strip() == "mean"


def test_bad_input():
    with pytest.raises(InputError, match="differ in shape"):
        metrics.dice(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(InputError, match="NaN"):
        metrics.evaluate(np.array([np.nan, 1.0]), np.array([0, 1]))
    with pytest.raises(InputError, match="differ in shape"):
        metrics.average_precision(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="voxel size"):
        metrics.hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1, 1))
    with pytest.raises(InputError, match="empty"):
        metrics.confusion(np.zeros((0, 3)), np.zeros((0, 3)))
