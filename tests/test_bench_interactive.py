"""The simulated user of ``benchmarks/bench_interactive.py``: where its strokes land, its budget."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_interactive import disk_offsets, scores, simulate_strokes  # noqa: E402


def _case() -> tuple[np.ndarray, np.ndarray]:
    """A reference tube and labels with one big false blob and one smaller missed piece."""
    ref = np.zeros((6, 64, 64), bool)
    ref[:, 30:34, 5:60] = True                       # a vessel along x
    labels = ref.copy()
    labels[1:5, 5:25, 5:25] = True                   # false vessel: 4 x 20 x 20 = 1600 voxels
    labels[2:4, 30:34, 40:60] = False                # missed vessel: 2 x 4 x 20 = 160 voxels
    return labels, ref


def test_disk_offsets_are_a_disk():
    dy, dx = disk_offsets(4)
    assert len(dy) == 49 and (dy ** 2 + dx ** 2 <= 16).all()
    assert len(disk_offsets(0)[0]) == 1


def test_strokes_hit_the_largest_error_first_and_respect_the_budget():
    labels, ref = _case()
    new, strokes = simulate_strokes(labels, ref, strokes=3, radius=4)
    assert len(strokes) == 3
    assert all(s["kind"] == "erase" for s in strokes)  # the false blob stays the largest
    wrong = labels != ref
    for s in strokes:
        assert wrong[s["z"], s["y"], s["x"]]  # every stroke is centred on an error voxel
        assert new[s["z"], s["y"], s["x"]]
    assert {int(z) for z in np.nonzero(new.any(axis=(1, 2)))[0]} == {s["z"] for s in strokes}
    assert new.sum() <= 3 * 49  # one disk per stroke, on one slice each


def test_strokes_reach_the_missed_piece_and_stop_when_nothing_is_wrong():
    labels, ref = _case()
    new, strokes = simulate_strokes(labels, ref, strokes=1000, radius=6)
    assert {"erase", "paint"} == {s["kind"] for s in strokes}
    assert len(strokes) < 1000
    assert not ((labels != ref) & ~new).any()  # every error voxel got a stroke
    none, no_strokes = simulate_strokes(ref, ref, strokes=5)
    assert not none.any() and no_strokes == []


def test_touched_voxels_are_never_targets_and_untouched_scores_exclude_them():
    labels, ref = _case()
    first, _ = simulate_strokes(labels, ref, strokes=4, radius=4)
    user = labels.copy()
    user[first] = ref[first]
    second, strokes = simulate_strokes(user, ref, first, strokes=4, radius=4)
    assert len(strokes) == 4
    assert all(not first[s["z"], s["y"], s["x"]] for s in strokes)
    touched = first | second
    assert touched.sum() > first.sum()
    keep = ~touched
    got = scores(labels, ref, keep)
    assert got["voxels"] == int(keep.sum())
    tp = np.count_nonzero(labels[keep] & ref[keep])
    assert got["f1"] == pytest.approx(2 * tp / (labels[keep].sum() + ref[keep].sum()))


def test_a_per_piece_limit_spreads_the_strokes_over_the_pieces():
    labels, ref = _case()
    greedy = simulate_strokes(labels, ref, strokes=3, radius=4)[1]
    assert all(s["kind"] == "erase" for s in greedy)  # all on the one large false blob
    spread = simulate_strokes(labels, ref, strokes=3, radius=4, per_piece=1)[1]
    assert {s["kind"] for s in spread} == {"erase", "paint"}  # the next piece gets its turn
    assert sum(s["kind"] == "erase" for s in spread) == 1
    with pytest.raises(ValueError, match="per_piece"):
        simulate_strokes(labels, ref, strokes=3, per_piece=0)
