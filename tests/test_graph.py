"""The vessel graph: hand-built tubes with known answers, phantoms against their truth, exports, CLI.

Tubes are drawn as in the phantoms (:func:`napari_vessel.data.tubes.draw_tubes`): a voxel is vessel when
its centre lies within the radius of a segment (a capsule), with voxel ``(k, j, i)`` centred at
``(k dz, j dy, i dx)`` µm, so the same tube in µm can be drawn at any voxel size.
"""

from __future__ import annotations

import csv
import json
import math

import networkx as nx
import numpy as np
import pytest

from napari_vessel import cli
from napari_vessel.data.phantom import make_phantom
from napari_vessel.data.tubes import draw_tubes
from napari_vessel.errors import Cancelled, InputError
from napari_vessel.graph import (
    OUTPUT_FILES,
    PAPER_METRICS,
    GraphParams,
    compare_graphs,
    length_correlation,
    vessel_graph,
    write_graph,
)
from napari_vessel.io.stacks import save_volume
from napari_vessel.progress import CancelToken

Y_ARMS = [((20, 40, 10), (20, 40, 40), 4), ((20, 40, 40), (20, 10, 70), 3),
          ((20, 40, 40), (20, 70, 70), 3)]
CROSS = [((20, 40, 10), (20, 40, 70), 4), ((20, 10, 40), (20, 70, 40), 4)]
TUBE = [((20, 20, 10), (20, 20, 70), 4)]


def tubes(extent_um, segments, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Label volume (uint8) covering ``extent_um`` with capsules ((start, end, radius), µm)."""
    shape = tuple(int(round(e / s)) + 1 for e, s in zip(extent_um, spacing, strict=True))
    rows = np.array([[*a, *b, r] for a, b, r in segments], dtype=float)
    return draw_tubes(shape, rows, np.asarray(spacing, float))[0].astype(np.uint8)


def ring(spacing=(1.0, 1.0, 1.0), big_r=25.0, r=3.0) -> np.ndarray:
    """A torus of centre-line radius ``big_r`` in the plane z = 10 µm."""
    axes = [np.arange(int(round(e / s)) + 1) * s for e, s in zip((20, 80, 80), spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (np.hypot(np.hypot(y - 40, x - 40) - big_r, z - 10) <= r).astype(np.uint8)


@pytest.fixture(scope="module")
def y_graph():
    return vessel_graph(tubes((40, 80, 80), Y_ARMS), (1, 1, 1))


# --- hand-built cases -------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", [(1, 1, 1), (3, 1, 1)])
def test_straight_tube(spacing):
    """One segment, two ends. The capsule's axis is 60 µm; thinning stops about a voxel inside
    each cap, so the length is within 3 µm (5 %); radius 4 µm within 0.5 µm at 1 µm voxels and
    within 25 % at 3 µm z steps (the nearest background voxel is then a diagonal one)."""
    graph = vessel_graph(tubes((40, 40, 80), TUBE, spacing), spacing)
    assert len(graph.segments) == 1 and [n.kind for n in graph.nodes] == ["end", "end"]
    seg = graph.segments[0]
    assert seg.length_um == pytest.approx(60, abs=3)
    assert seg.radius_mean_um == pytest.approx(4, abs=0.5 if spacing[0] == 1 else 1.0)
    assert seg.tortuosity == pytest.approx(1, abs=0.01)
    assert np.allclose(np.abs(seg.direction), (0, 0, 1), atol=0.02)
    assert not seg.touches_border and graph.summary.n_dangling == 1


@pytest.mark.parametrize("spacing", [(2, 1, 1), (3, 1, 1), (5, 1, 1), (3, 2, 2)])
def test_oblique_tube_same_length_at_anisotropic_spacing(spacing):
    """A tube rising through z: the length at coarse z steps (resampled to near-isotropic voxels
    before thinning) is within 3 % of the length at 1 µm voxels and of the axis (73.5 µm); the
    radius (3 µm) within 0.5 µm."""
    a, b = (10, 20, 10), (40, 50, 70)
    iso = vessel_graph(tubes((50, 70, 80), [(a, b, 3)]), (1, 1, 1)).segments[0]
    seg = vessel_graph(tubes((50, 70, 80), [(a, b, 3)], spacing), spacing).segments
    assert len(seg) == 1
    assert seg[0].length_um == pytest.approx(iso.length_um, rel=0.03)
    assert seg[0].length_um == pytest.approx(math.dist(a, b), rel=0.03)
    assert seg[0].radius_mean_um == pytest.approx(3, abs=0.5)


@pytest.mark.parametrize("spacing", [(1, 1, 1), (3, 1, 1)])
def test_y_has_one_junction_of_degree_three(spacing):
    """Arms of 30, 42.4 and 42.4 µm from the branch point, each within 2 µm."""
    graph = vessel_graph(tubes((40, 80, 80), Y_ARMS, spacing), spacing)
    junctions = [n for n in graph.nodes if n.kind == "junction"]
    assert len(junctions) == 1 and junctions[0].degree == 3
    assert junctions[0].position_um == pytest.approx((20, 40, 40), abs=2)
    lengths = sorted(s.length_um for s in graph.segments)
    assert lengths == pytest.approx([30, 42.43, 42.43], abs=2)
    s = graph.summary
    assert (s.n_segments, s.n_dangling, s.n_incorrect_bifurcations, s.n_end_points) == (3, 3, 0, 3)


@pytest.mark.parametrize("spacing", [(1, 1, 1), (3, 1, 1)])
def test_ring_is_one_closed_loop(spacing):
    """A torus: one segment from its loop node back to it, length 2 pi 25 µm within 1 %."""
    graph = vessel_graph(ring(spacing), spacing)
    assert len(graph.segments) == 1 and graph.segments[0].is_loop
    assert [(n.kind, n.degree) for n in graph.nodes] == [("loop", 2)]
    seg = graph.segments[0]
    assert seg.length_um == pytest.approx(2 * math.pi * 25, rel=0.01)
    assert seg.radius_mean_um == pytest.approx(3, abs=0.5)
    assert math.isnan(seg.tortuosity) and all(math.isnan(v) for v in seg.direction)
    assert graph.summary.n_loops == 1 and graph.summary.n_dangling == 0


@pytest.mark.parametrize("spacing", [(1, 1, 1), (3, 1, 1)])
def test_crossing_tubes_make_an_incorrect_bifurcation(spacing):
    """Two tubes crossing: one node of degree 4, four arms of about 30 µm (within 2 µm)."""
    graph = vessel_graph(tubes((40, 80, 80), CROSS, spacing), spacing)
    junctions = [n for n in graph.nodes if n.kind == "junction"]
    assert [n.degree for n in junctions] == [4]
    assert graph.summary.n_incorrect_bifurcations == 1 and len(graph.segments) == 4
    assert [s.length_um for s in graph.segments] == pytest.approx([30] * 4, abs=2)


def test_spur_pruning_and_short_branches():
    """A 5 µm stub on a 3 µm tube reaches 2 µm beyond the wall: pruned by default (it must
    reach prune_um = 3 µm beyond), kept without pruning; a 12 µm side branch is kept."""
    stub = [((20, 20, 10), (20, 20, 70), 3), ((20, 20, 40), (20, 25, 40), 2)]
    assert len(vessel_graph(tubes((40, 40, 80), stub), (1, 1, 1)).segments) == 1
    keep = GraphParams(prune_um=0, prune_radius_factor=0)
    kept = vessel_graph(tubes((40, 40, 80), stub), (1, 1, 1), keep)
    assert len(kept.segments) == 3 and kept.summary.n_short == 1
    branch = [stub[0], ((20, 20, 40), (20, 32, 40), 2)]
    assert len(vessel_graph(tubes((40, 40, 80), branch), (1, 1, 1)).segments) == 3


def test_border_small_pieces_and_label_values():
    """A tube cut by the volume's faces touches the border (its ends are not interior danglers);
    pieces below min_object_voxels are dropped; every label > 0 is vessel."""
    labels = tubes((40, 40, 80), [((20, 20, -5), (20, 20, 85), 4)]).astype(np.int16)
    labels[labels > 0] = 7
    labels[2:4, 2:4, 2:4] = 3  # 8 voxels: below the default 10
    labels[0, 0, 0] = -1
    graph = vessel_graph(labels, (1, 1, 1))
    assert len(graph.segments) == 1 and graph.segments[0].touches_border
    assert graph.summary.n_dangling == 1 and graph.summary.n_dangling_interior == 0
    assert graph.summary.vessel_voxels == np.count_nonzero(labels > 0)


def test_empty_and_tiny_labels_give_an_empty_graph():
    graph = vessel_graph(np.zeros((4, 8, 8), np.uint8), (2, 1, 1))
    assert graph.segments == () and graph.nodes == ()
    assert "no vessel" in graph.summary.note and graph.summary.total_length_um == 0
    assert math.isnan(graph.summary.mean_diameter_um)
    assert graph.summary.to_dict()["mean_diameter_um"] is None
    one = np.zeros((4, 8, 8), np.uint8)
    one[2, 4, 4] = 1
    assert "min_object_voxels" in vessel_graph(one, (1, 1, 1)).summary.note
    single = vessel_graph(one, (1, 1, 1), GraphParams(min_object_voxels=0))
    assert single.segments == () and "no centreline" in single.summary.note


def _ball(shape, centre_um, radius_um, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels (bool) whose centre lies within ``radius_um`` of ``centre_um``."""
    axes = [np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre_um, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return z * z + y * y + x * x <= radius_um ** 2


THICK = [((20, 20, 10), (20, 20, 70), 7)]


def test_an_enclosed_cavity_is_filled_before_thinning():
    """A 7 µm tube with a 33 µm³ hole in its middle (like a darker lumen): thinning keeps the hole
    as a shell, so without filling there are many segments; filled (the default), one segment of
    60 µm whose radius does not see the hole."""
    labels = tubes((40, 40, 80), THICK)
    labels[_ball(labels.shape, (20, 20, 40), 2)] = 0
    off = vessel_graph(labels, (1, 1, 1), GraphParams(fill_cavities_um3=0))
    assert len(off.segments) > 3 and off.summary.n_filled_cavities == 0
    graph = vessel_graph(labels, (1, 1, 1))
    assert GraphParams().fill_cavities_um3 == 1000
    assert len(graph.segments) == 1 and not graph.segments[0].is_loop
    assert graph.segments[0].length_um == pytest.approx(60, abs=3)
    assert graph.segments[0].radius_min_um > 5
    s = graph.summary
    assert (s.n_filled_cavities, s.n_filled_cavity_voxels) == (1, 33)
    assert s.vessel_voxels == np.count_nonzero(labels)  # the labels as given
    assert s.to_dict()["n_filled_cavities"] == 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_a_cavity_larger_than_the_limit_stays(spacing):
    """The limit is in µm³ (voxels x voxel volume): a cavity of exactly the limit is filled,
    one voxel's volume less leaves it, with its extra segments."""
    labels = tubes((40, 40, 80), THICK, spacing)
    hole = _ball(labels.shape, (20, 20, 40), 3, spacing)
    labels[hole] = 0
    volume = np.count_nonzero(hole) * math.prod(spacing)
    kept = vessel_graph(labels, spacing, GraphParams(fill_cavities_um3=volume - 0.5))
    assert kept.summary.n_filled_cavities == 0 and len(kept.segments) > 1
    filled = vessel_graph(labels, spacing, GraphParams(fill_cavities_um3=volume))
    assert filled.summary.n_filled_cavities == 1 and len(filled.segments) == 1
    assert filled.summary.n_filled_cavity_voxels == np.count_nonzero(hole)


def test_a_pocket_that_touches_a_face_is_never_filled():
    """A tube cut by the stack's faces with a pocket at its cut end: open to the outside of the
    stack, so never filled, however large the limit; one voxel further in it is enclosed."""
    big = GraphParams(fill_cavities_um3=1e6)
    for centre_x, enclosed in ((0, False), (2, False), (3, True)):
        labels = tubes((40, 40, 80), [((20, 20, -5), (20, 20, 85), 7)])
        labels[_ball(labels.shape, (20, 20, centre_x), 2)] = 0
        graph = vessel_graph(labels, (1, 1, 1), big)
        assert graph.summary.n_filled_cavities == int(enclosed), centre_x
        assert len(graph.segments) == 1


def test_a_ring_whose_hole_reaches_the_faces_stays_a_loop():
    """A thick-walled pipe through the whole stack (a ring in every slice): its hole, 170 µm³,
    is below the limit but open at the top and bottom faces, so the loop stays. The torus of
    ``ring`` is kept too (its hole is a tunnel, not a cavity)."""
    z, y, x = np.ogrid[:8, :41, :41]
    r = np.hypot(y - 20, x - 20)
    pipe = np.broadcast_to((r >= 2.5) & (r <= 8), (8, 41, 41)).astype(np.uint8)
    for labels in (pipe, ring()):
        graph = vessel_graph(labels, (1, 1, 1), GraphParams(fill_cavities_um3=1e6))
        assert graph.summary.n_filled_cavities == 0
        assert len(graph.segments) == 1 and graph.segments[0].is_loop


def test_cavities_use_the_thinning_connectivity():
    """Background is 6-connected (the vessel 26-connected): a hole joined to the outside by a
    face-connected tunnel is not a cavity; one that meets the outside only at an edge is."""
    from napari_vessel.graph.grid import fill_cavities

    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    cube[3, 3, 3] = False
    out, n, voxels = fill_cavities(cube, (1, 1, 1), 1)
    assert (n, voxels) == (1, 1) and out[1:6, 1:6, 1:6].all() and not out[0].any()
    assert fill_cavities(cube, (1, 1, 1), 0.9)[1:] == (0, 0)  # smaller than one voxel: off
    tunnel = cube.copy()
    tunnel[3, 3, 4:6] = False
    assert fill_cavities(tunnel, (1, 1, 1), 1e6)[1:] == (0, 0)
    edge = np.ones((5, 5, 5), bool)
    edge[2, 2, 2] = edge[1, 1, 2] = False  # meets [2, 2, 2] at an edge only
    edge[0, 1, 2] = False  # and it reaches the face
    out, n, voxels = fill_cavities(edge, (1, 1, 1), 1e6)
    assert (n, voxels) == (1, 1) and out[2, 2, 2] and not out[1, 1, 2]


# --- phantoms against their truth ------------------------------------------------------------

def _inside_length(rows: np.ndarray, box_um: np.ndarray) -> float:
    """Total length of the segments ``rows`` inside [0, box_um] (Liang-Barsky clipping)."""
    total = 0.0
    for row in rows:
        a, d = row[0:3], row[3:6] - row[0:3]
        t0, t1 = 0.0, 1.0
        for k in range(3):
            for p, q in ((-d[k], a[k]), (d[k], box_um[k] - a[k])):
                if p == 0 and q < 0:
                    t0, t1 = 1.0, 0.0
                elif p != 0:
                    t0, t1 = (max(t0, q / p), t1) if p < 0 else (t0, min(t1, q / p))
        total += max(t1 - t0, 0.0) * float(np.linalg.norm(d))
    return total


def _nearest_radius(point_um: np.ndarray, rows: np.ndarray) -> float:
    a, d = rows[:, 0:3], rows[:, 3:6] - rows[:, 0:3]
    t = np.clip(np.einsum("ij,ij->i", point_um - a, d) / np.maximum((d * d).sum(1), 1e-12), 0, 1)
    return float(rows[np.argmin(np.linalg.norm(point_um - a - t[:, None] * d, axis=1)), 6])


@pytest.fixture(scope="module")
def phantom_graphs():
    extent = np.array([60.0, 160.0, 160.0])
    out = {}
    for spacing in ((1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (3.0, 1.0, 1.0)):
        shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing, strict=True))
        ph = make_phantom(shape, seed=4, spacing_zyx=spacing, radius_range=(2.0, 7.0),
                          noise=False, density=0.5)
        out[spacing] = (ph, vessel_graph(ph.labels, spacing))
    return out


def test_phantom_length_and_radii_match_the_truth(phantom_graphs):
    """Phantom (radii 2-7 µm) at 1 x 1 x 1, 2 x 1 x 1 and 3 x 1 x 1 µm: total centreline length
    within 5 % of the true tube axes inside the stack (measured: -2.2 %, +0.5 %, -0.2 %); the
    median relative error of segment mean radii (segments >= 10 µm, against the nearest true
    tube) within 10 % (measured -5.6 %, +0.7 %, -2.2 %); the spacings agree on total length
    within 3 % and on the number of junctions within 20 %."""
    totals, junctions = [], []
    for spacing, (ph, graph) in phantom_graphs.items():
        box = (np.array(ph.labels.shape) - 1) * np.array(spacing)
        truth = _inside_length(ph.segments, box)
        assert graph.summary.total_length_um == pytest.approx(truth, rel=0.05), spacing
        errors = [s.radius_mean_um / _nearest_radius(s.path[len(s.path) // 2] * spacing,
                                                     ph.segments) - 1
                  for s in graph.segments if s.length_um >= 10]
        assert len(errors) >= 20 and abs(float(np.median(errors))) < 0.10, spacing
        totals.append(graph.summary.total_length_um)
        junctions.append(graph.summary.n_junctions)
    assert max(totals) / min(totals) < 1.03
    assert max(junctions) / min(junctions) <= 1.2


def test_phantom_summary_is_consistent(phantom_graphs):
    ph, graph = phantom_graphs[(2.0, 1.0, 1.0)]
    s = graph.summary
    assert s.vessel_volume_fraction == pytest.approx(ph.vessel_fraction)
    volume_mm3 = ph.labels.size * 2.0 * 1e-9
    assert s.length_density_mm_per_mm3 == pytest.approx(s.total_length_um * 1e-3 / volume_mm3)
    assert s.branch_point_density_per_mm3 == pytest.approx(s.n_junctions / volume_mm3)
    assert 4.0 <= s.diameter_p10_um <= s.diameter_p50_um <= s.diameter_p90_um <= 14.5
    assert s.n_segments == len(graph.segments)
    assert s.n_end_points == sum(n.kind == "end" for n in graph.nodes)
    for seg in graph.segments:
        assert seg.radius_min_um <= seg.radius_mean_um <= seg.radius_max_um
        assert seg.path.min() >= 0 and np.all(seg.path.max(axis=0) <= np.array(ph.labels.shape) - 1)
        assert not seg.path.flags.writeable


# --- comparison (LC of paper 001) ----------------------------------------------------------

def test_compare_graphs_and_length_correlation(y_graph):
    labels = tubes((40, 80, 80), Y_ARMS)
    same = compare_graphs(y_graph, y_graph, labels, labels)
    assert same.lc == 1.0 and all(v == 0 for v in same.differences.values())
    half = labels.copy()
    half[:, :, 41:] = 0  # the prediction misses the two diagonal arms
    half_graph = vessel_graph(half, (1, 1, 1))
    result = compare_graphs(half_graph, y_graph, half, labels)
    assert 0.2 < result.lc < 0.5  # about 30 of 115 µm of centreline agree
    assert result.differences["n_segments"] == -2
    assert result.differences["total_length_um"] == pytest.approx(
        half_graph.summary.total_length_um - y_graph.summary.total_length_um)
    other = tubes((40, 80, 80), [((5, 5, 5), (5, 5, 70), 2)])
    assert length_correlation(vessel_graph(other, (1, 1, 1)), y_graph, other, labels) == 0.0
    empty = np.zeros_like(labels)
    nothing = vessel_graph(empty, (1, 1, 1))
    assert length_correlation(nothing, nothing, empty, empty) == 1.0
    assert json.dumps(result.to_dict())


def test_compare_refuses_mismatched_graphs(y_graph):
    labels = tubes((40, 80, 80), Y_ARMS)
    other = vessel_graph(labels, (2, 1, 1))
    with pytest.raises(InputError, match="voxel sizes differ"):
        compare_graphs(other, y_graph, labels, labels)
    with pytest.raises(InputError, match="labels"):
        compare_graphs(y_graph, y_graph, labels[:-1], labels)


# --- exports ----------------------------------------------------------------------------------

def test_graphml_csv_json_round_trip(tmp_path, y_graph):
    loop = vessel_graph(ring(), (1, 1, 1))
    for name, graph in (("y", y_graph), ("ring", loop)):
        paths = write_graph(graph, tmp_path / name, {"input": "test.tif"})
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(OUTPUT_FILES)
        back = nx.read_graphml(paths["graph.graphml"], force_multigraph=True)
        assert back.number_of_nodes() == len(graph.nodes)
        assert back.number_of_edges() == len(graph.segments)
        assert back.graph["spacing_z_um"] == 1.0 and back.graph["units"] == "um"
        lengths = sorted(d["length_um"] for *_, d in back.edges(data=True))
        assert lengths == pytest.approx(sorted(s.length_um for s in graph.segments))
        with open(paths["segments.csv"], newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == len(graph.segments) and rows[0]["spacing_x_um"] == "1.0"
        summary = json.loads(paths["summary.json"].read_text())
        assert summary["voxel_size_um"] == [1.0, 1.0, 1.0]
        assert set(summary["paper_001_graph_metrics"]) == set(PAPER_METRICS)
        assert summary["manifest"] == {"input": "test.tif"}
        assert summary["params"] == graph.params.to_dict()
    assert nx.number_of_selfloops(nx.read_graphml(tmp_path / "ring" / "graph.graphml",
                                                  force_multigraph=True)) == 1


def test_write_graph_refuses_to_overwrite_and_keeps_other_files(tmp_path, y_graph):
    (tmp_path / "notes.txt").write_text("mine")
    write_graph(y_graph, tmp_path, {})
    with pytest.raises(InputError, match="overwrite"):
        write_graph(y_graph, tmp_path, {})
    empty = vessel_graph(np.zeros((4, 8, 8), np.uint8), (1, 1, 1))
    write_graph(empty, tmp_path, {}, overwrite=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["summary"]["n_segments"] == 0 and summary["summary"]["mean_diameter_um"] is None
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*partial*"))
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(InputError, match="JSON"):
        write_graph(y_graph, tmp_path / "new", circular)
    assert not (tmp_path / "new").exists()


def test_a_failed_write_leaves_the_earlier_set(tmp_path, y_graph, monkeypatch):
    write_graph(y_graph, tmp_path, {"run": 1})
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUT_FILES}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nx, "write_graphml", disk_full)
    with pytest.raises(OSError):
        write_graph(vessel_graph(ring(), (1, 1, 1)), tmp_path, {"run": 2}, overwrite=True)
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUT_FILES} == before
    assert not list(tmp_path.glob(".*partial*"))


def test_networkx_attributes_are_scalars(y_graph):
    graph = y_graph.to_networkx()
    assert isinstance(graph, nx.MultiGraph) and graph.number_of_edges() == 3
    for _, data in graph.nodes(data=True):
        assert all(isinstance(v, (int, float, bool, str)) for v in data.values())
    for *_, data in graph.edges(data=True):
        assert all(isinstance(v, (int, float, bool, str)) for v in data.values())


# --- bad input, progress, cancel --------------------------------------------------------------

@pytest.mark.parametrize("labels, spacing, match", [
    (np.zeros((8, 8), np.uint8), (1, 1, 1), "2D"),
    (np.zeros((2, 4, 8, 8), np.uint8), (1, 1, 1), "axes"),
    (np.zeros((4, 8, 8), np.uint8), (0, 1, 1), "positive"),
    (np.zeros((4, 8, 8), np.uint8), (float("nan"), 1, 1), "positive"),
    (np.zeros((4, 8, 8), np.uint8), (1, 1), "3 values|has 2"),
    (np.full((4, 8, 8), np.nan, np.float32), (1, 1, 1), "NaN"),
    (np.full((4, 8, 8), 0.3, np.float32), (1, 1, 1), "probability"),
    (np.zeros((4, 8, 8), np.complex64), (1, 1, 1), "integer or boolean"),
])
def test_bad_input_is_refused(labels, spacing, match):
    with pytest.raises(InputError, match=match):
        vessel_graph(labels, spacing)


@pytest.mark.parametrize("changes, match", [
    ({"prune_um": -1}, "prune_um"), ({"min_object_voxels": 2.5}, "whole"),
    ({"isotropic": "yes"}, "True or False"), ({"max_radius_um": 0.1}, "max_radius_um"),
    ({"smooth_um": float("inf")}, "smooth_um"),
    ({"fill_cavities_um3": -1}, "fill_cavities_um3=-1 must be a finite number >= 0 .*µm³"),
    ({"fill_cavities_um3": float("nan")}, "fill_cavities_um3"),
    ({"fill_cavities_um3": "lots"}, "fill_cavities_um3"),
    ({"fill_cavities_um3": None}, "fill_cavities_um3"),
    ({"fill_cavities_um3": True}, "fill_cavities_um3"),
])
def test_params_are_validated(changes, match):
    with pytest.raises(InputError, match=match):
        GraphParams(**changes)
    assert GraphParams(**GraphParams().to_dict()) == GraphParams()
    assert GraphParams(fill_cavities_um3=0).fill_cavities_um3 == 0.0


def test_too_large_a_working_grid_is_refused_before_work():
    labels = tubes((40, 40, 80), TUBE, (3, 1, 1))
    with pytest.raises(InputError, match="max_voxels"):
        vessel_graph(labels, (3, 1, 1), GraphParams(max_voxels=1000))
    with pytest.raises(InputError, match="GraphParams"):
        vessel_graph(labels, (3, 1, 1), {"prune_um": 1})


def test_float_and_dask_labels():
    import dask.array as da

    labels = tubes((40, 80, 80), Y_ARMS)
    reference = vessel_graph(labels, (1, 1, 1))
    for same in (labels.astype(np.float32), da.from_array(labels, chunks=(16, 40, 40))):
        assert vessel_graph(same, (1, 1, 1)).summary == reference.summary


def test_progress_and_cancel():
    labels = tubes((40, 80, 80), Y_ARMS, (3, 1, 1))
    seen = []
    vessel_graph(labels, (3, 1, 1), progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    token = CancelToken()

    def stop_midway(fraction, message):
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        vessel_graph(labels, (3, 1, 1), progress=stop_midway, cancel=token)


# --- command line -----------------------------------------------------------------------------

def test_cli_writes_the_files(tmp_path, capsys):
    path = save_volume(tmp_path / "y_labels.tif", tubes((39, 80, 80), Y_ARMS, (3, 1, 1)),
                       (3, 1, 1), kind="labels")
    out = tmp_path / "graph"
    assert cli.main(["graph", str(path), "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voxel_size_um"] == [3.0, 1.0, 1.0] and summary["manifest"]["spacing_known"]
    assert summary["summary"]["n_segments"] == 3 and summary["params"]["prune_um"] == 3.0
    assert "3 segments, 1 junctions" in capsys.readouterr().out
    assert cli.main(["graph", str(path), "-o", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["graph", str(path), "-o", str(out), "--quiet", "--overwrite",
                     "--spacing", "2", "1", "1", "--prune-um", "5", "--fill-cavities-um3", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voxel_size_um"] == [2.0, 1.0, 1.0] and summary["params"]["prune_um"] == 5.0
    assert summary["params"]["fill_cavities_um3"] == 0.0
    assert "graph" in cli.COMMANDS and "graph" in cli.build_parser().format_help()


def test_cli_warns_without_voxel_size_and_refuses_bad_input(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", tubes((40, 40, 80), TUBE), metadata=None)
    assert cli.main(["graph", str(tmp_path / "plain.tif"), "-o", str(tmp_path / "a"),
                     "--quiet"]) == 0
    assert "does not give its voxel size" in capsys.readouterr().err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["manifest"]["spacing_known"] is False
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8))
    assert cli.main(["graph", str(tmp_path / "flat.tif"), "-o", str(tmp_path / "b")]) == 2
    assert "2D" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert cli.main(["graph", str(tmp_path / "plain.tif"), "-o", str(tmp_path / "c"),
                     "--prune-um", "-1"]) == 2
    assert "prune_um" in capsys.readouterr().err
