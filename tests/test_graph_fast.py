"""The fast paths of the vessel graph give the answers of straightforward reference computations.

Each fast step is compared with a plain one on small volumes: distance searches with full
distance transforms, run-length pieces with :func:`scipy.ndimage.label`, the bitwise simple-point
test with labelled 3 x 3 x 3 cubes, the flagged thinning with a loop that tests every voxel, and
the pixel graph from points with :class:`skan.csr.Skeleton`. The tolerance is zero: the same
voxels, the same paths, radii and lengths equal to 1e-12.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vessel.data.phantom import make_phantom
from napari_vessel.graph import extract, vessel_graph
from napari_vessel.graph.grid import drop_small, fill_cavities, grid_spacing, radii_at, resample
from napari_vessel.graph.thin import _DIRECTIONS, is_simple_end, thin, thin_points
from napari_vessel.graph.topology import point_paths
from napari_vessel.progress import no_progress

SPACINGS = [(2.0, 1.0, 1.0), (3.0, 1.0, 1.0), (1.3, 1.0, 1.0), (5.0, 0.7, 0.7), (1.0, 2.5, 1.0)]


def blobs(shape, seed, level=0.5, sigma=2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), sigma) > level


@pytest.mark.parametrize("spacing", SPACINGS)
def test_resample_matches_the_distance_transforms(spacing):
    mask = blobs((10, 36, 40), seed=1)
    mask[3] = True  # a slice with no background: -1e6 inside
    mask[5] = False  # one with no vessel: clipped outside
    grid = grid_spacing(spacing, True)
    fast = resample(mask, spacing, grid, no_progress, None)
    reference = resample(mask, spacing, grid, no_progress, None, use_transform=True)
    assert fast.any() and np.array_equal(fast, reference)


@pytest.mark.parametrize(("spacing", "cap"), [(s, 2.5) for s in SPACINGS]
                         + [((2.0, 1.0, 1.0), 30.0), ((1.0, 2.5, 1.0), 30.0)])
def test_radii_match_the_distance_transform(spacing, cap):
    mask = blobs((12, 40, 44), seed=2, level=0.45)
    mask[6:, 10:30, 10:34] = True  # deep inside: no background within a small cap
    mask[0, 0, 0] = False
    grid = grid_spacing(spacing, True)
    fine_points = np.argwhere(resample(mask, spacing, grid, no_progress, None))
    points = fine_points * (np.asarray(grid) / np.asarray(spacing))
    points = np.vstack([points, [[0, 0, 0], [11, 39, 43]]])  # background and corner voxels
    fast = radii_at(mask, spacing, points, cap, no_progress, None)
    reference = radii_at(mask, spacing, points, cap, no_progress, None, use_transform=True)
    assert np.array_equal(fast, reference)
    assert fast.min() == 0.0 and fast.max() <= cap
    assert fast.max() == cap or cap > 5


def _label_drop(mask, min_voxels):
    pieces, _ = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    small = np.bincount(pieces.ravel()) < min_voxels
    small[0] = False
    return mask & ~small[pieces], int(small.sum())


def _label_fill(mask, spacing, max_um3):
    pieces, _ = ndi.label(~mask, structure=ndi.generate_binary_structure(3, 1))
    sizes = np.bincount(pieces.ravel())
    fill = sizes * math.prod(spacing) <= max_um3
    fill[0] = False
    for axis, end in itertools.product(range(3), (0, -1)):
        fill[np.take(pieces, end, axis=axis)] = False
    return fill[pieces] | mask, int(fill.sum()), int(sizes[fill].sum())


@pytest.mark.parametrize("seed", range(12))
def test_run_pieces_match_labelled_volumes(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(tuple(rng.integers(3, 15, 3))) < rng.uniform(0.15, 0.85)
    before = mask.copy()
    got, n = drop_small(mask, 4)
    want, n_want = _label_drop(mask, 4)
    assert n == n_want and np.array_equal(got, want)
    got, *counts = fill_cavities(mask, (2.0, 1.0, 1.0), 8.0)
    want, *counts_want = _label_fill(mask, (2.0, 1.0, 1.0), 8.0)
    assert counts == counts_want and np.array_equal(got, want)
    assert np.array_equal(mask, before)  # the input is never written into


_OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
_N18 = np.abs(_OFFSETS).sum(axis=1) <= 2
_N18[13] = False
_FACE = np.abs(_OFFSETS).sum(axis=1) == 1


def _simple_end_by_labels(cube: np.ndarray) -> bool:
    """The definition: more than one object neighbour, one 26-connected object component
    among the 26 neighbours, one 6-connected background component among the 18 neighbours that
    holds a face neighbour."""
    values = cube.ravel().astype(bool)
    values[13] = False
    if values.sum() <= 1:
        return False
    if ndi.label(values.reshape(3, 3, 3), structure=np.ones((3, 3, 3)))[1] != 1:
        return False
    background, _ = ndi.label((~values & _N18).reshape(3, 3, 3),
                              structure=ndi.generate_binary_structure(3, 1))
    return len(set(background.ravel()[_FACE]) - {0}) == 1


def test_bitwise_simple_point_test_matches_the_definition():
    rng = np.random.default_rng(0)
    for density in (0.2, 0.5, 0.8):
        for cube in rng.random((1500, 27)) < density:
            bits = int(sum(1 << i for i in np.flatnonzero(cube)))
            assert bool(is_simple_end(bits)) == _simple_end_by_labels(cube), cube.reshape(3, 3, 3)


def _thin_every_voxel(mask: np.ndarray) -> np.ndarray:
    """Lee's directional thinning as described in :mod:`napari_vessel.graph.thin`, testing every
    object voxel in every sweep (no remembered failures)."""
    img = np.pad(mask, 1).astype(bool)

    def deletable(z, y, x):
        cube = img[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2].ravel()
        return bool(is_simple_end(int(sum(1 << i for i in np.flatnonzero(cube)))))

    while True:
        deleted = 0
        for dz, dy, dx in _DIRECTIONS:
            candidates = [(z, y, x) for z, y, x in np.argwhere(img)
                          if not img[z + dz, y + dy, x + dx] and deletable(z, y, x)]
            for z, y, x in candidates:
                if deletable(z, y, x):
                    img[z, y, x] = False
                    deleted += 1
        if deleted == 0:
            return img[1:-1, 1:-1, 1:-1]


@pytest.mark.parametrize("seed", [0, 1])
def test_flagged_thinning_matches_testing_every_voxel(seed):
    mask = blobs((10, 24, 24), seed=seed, level=0.5, sigma=1.5)
    skeleton = thin(mask)
    assert skeleton.any() and np.array_equal(skeleton, _thin_every_voxel(mask))
    assert np.array_equal(np.argwhere(skeleton), thin_points(mask))
    assert np.array_equal(np.argwhere(skeleton), thin_points(mask.copy(), overwrite=True))


def _skan_paths(skeleton, spacing):
    from skan.csr import Skeleton

    skel = Skeleton(skeleton, spacing=np.asarray(spacing, float), keep_images=False)
    return (np.asarray(skel.coordinates, np.int64), np.asarray(skel.degrees),
            [np.asarray(skel.path(i)) for i in range(skel.n_paths)])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 1.0, 1.0)])
def test_pixel_graph_from_points_matches_skan(spacing):
    labels = make_phantom((16, 128, 128), seed=3).labels > 0
    skeleton = thin(resample(labels, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), no_progress, None))
    coords, degree, paths = point_paths(np.argwhere(skeleton), skeleton.shape, spacing)
    want = _skan_paths(skeleton, spacing)
    assert np.array_equal(coords, want[0]) and np.array_equal(degree, want[1])
    assert len(paths) == len(want[2]) > 10
    assert all(np.array_equal(a, b) for a, b in zip(paths, want[2], strict=True))


def test_vessel_graph_matches_the_reference_pipeline(monkeypatch):
    """End to end on a phantom: segment lengths and radii equal those of the pipeline built
    from the reference steps (full distance transforms, labelled volumes, skan on the image)."""
    labels = make_phantom((20, 160, 160), seed=5).labels
    fast = vessel_graph(labels, (2.0, 1.0, 1.0))
    monkeypatch.setattr(extract, "resample", partial(resample, use_transform=True))
    monkeypatch.setattr(extract, "radii_at", partial(radii_at, use_transform=True))
    monkeypatch.setattr(extract, "drop_small", _label_drop)
    monkeypatch.setattr(extract, "fill_cavities", _label_fill)

    def dense_paths(points, shape, spacing):
        image = np.zeros(shape, bool)
        image[tuple(points.T)] = True
        return _skan_paths(image, spacing)

    monkeypatch.setattr(extract, "point_paths", dense_paths)
    reference = vessel_graph(labels, (2.0, 1.0, 1.0))
    assert len(fast.segments) == len(reference.segments) > 20
    for a, b in zip(fast.segments, reference.segments, strict=True):
        assert a.length_um == pytest.approx(b.length_um, abs=1e-12)
        assert a.radius_mean_um == pytest.approx(b.radius_mean_um, abs=1e-12)
        assert a.radius_max_um == pytest.approx(b.radius_max_um, abs=1e-12)
    assert fast.summary == reference.summary
