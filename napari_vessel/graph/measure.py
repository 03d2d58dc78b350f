"""Measurements of a clean graph: segment length, radii, tortuosity, direction, border contact,
and the whole-volume :class:`~napari_vessel.graph.types.Morphometrics`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.graph.params import SHORT_SEGMENT_UM
from napari_vessel.graph.types import Morphometrics, Node, Segment

__all__ = ["smoothed", "measure_segment", "near_border", "morphometrics"]


def smoothed(points_um: np.ndarray, sigma_um: float) -> np.ndarray:
    """Gaussian smoothing of a polyline along its length, ends fixed.

    The sigma in points is ``sigma_um`` over the mean step. Beyond each end the curve is
    continued by point reflection (``2 p0 - p_k``), so a straight line stays straight up to its
    ends and the ends do not move.
    """
    n = len(points_um)
    if sigma_um <= 0 or n < 3:
        return points_um
    step = float(np.linalg.norm(np.diff(points_um, axis=0), axis=1).mean())
    sigma = sigma_um / max(step, 1e-9)
    pad = int(min(math.ceil(4 * sigma), 4 * n))
    if pad < n:  # one reflection: what np.pad(mode="reflect", reflect_type="odd") computes
        padded = np.concatenate([2 * points_um[:1] - points_um[pad:0:-1], points_um,
                                 2 * points_um[-1:] - points_um[-2:-pad - 2:-1]])
    else:
        padded = np.pad(points_um, ((pad, pad), (0, 0)), mode="reflect", reflect_type="odd")
    out = ndi.gaussian_filter1d(padded, sigma, axis=0, mode="nearest")[pad:pad + n]
    out[0], out[-1] = points_um[0], points_um[-1]
    return out


def near_border(points_vox: np.ndarray, radii_um: np.ndarray, shape: Sequence[int],
                spacing: Sequence[float]) -> np.ndarray:
    """True for points whose vessel (radius plus one voxel) reaches a face of the volume."""
    spacing = np.asarray(spacing, dtype=float)
    to_face = np.minimum(points_vox, np.asarray(shape) - 1 - points_vox) * spacing
    return np.any(to_face <= radii_um[:, None] + spacing, axis=1)


def measure_segment(seg_id: int, start: int, end: int, points_vox: np.ndarray, radii: np.ndarray,
                    shape: Sequence[int], spacing: Sequence[float], smooth_um: float) -> Segment:
    """A :class:`Segment` from its centreline (input voxel coordinates) and radii (µm)."""
    points_um = smoothed(points_vox * np.asarray(spacing), smooth_um)
    length = float(np.linalg.norm(np.diff(points_um, axis=0), axis=1).sum())
    chord_vec = points_um[-1] - points_um[0]
    chord = float(np.linalg.norm(chord_vec))
    if start == end or chord < 1e-9:
        tortuosity, direction = math.nan, (math.nan,) * 3
    else:
        tortuosity, direction = max(length / chord, 1.0), tuple(chord_vec / chord)
    inner = radii[1:-1] if len(radii) > 2 else radii
    return Segment(id=seg_id, node_start=start, node_end=end, path=points_vox,
                   length_um=length, radius_mean_um=float(inner.mean()),
                   radius_min_um=float(inner.min()), radius_max_um=float(inner.max()),
                   tortuosity=tortuosity, direction=direction,
                   touches_border=bool(near_border(points_vox, radii, shape, spacing).any()))


def morphometrics(nodes: Sequence[Node], segments: Sequence[Segment], point_radii: np.ndarray,
                  shape: Sequence[int], spacing: Sequence[float], vessel_voxels: int,
                  note: str = "", filled: tuple[int, int] = (0, 0)) -> Morphometrics:
    """Whole-volume numbers (see :class:`Morphometrics`).

    Parameters
    ----------
    nodes, segments
        The graph.
    point_radii : ndarray of float
        Radius (µm) at every centreline point of the working grid (for the diameters).
    shape, spacing
        Shape and voxel size (µm) of the labels.
    vessel_voxels : int
        Number of vessel voxels in the labels.
    note : str
        Said when there is nothing to measure (e.g. no vessel).
    filled : (int, int)
        Enclosed cavities filled before thinning and their voxels.
    """
    n_voxels = math.prod(int(n) for n in shape)
    volume_mm3 = n_voxels * math.prod(float(s) for s in spacing) * 1e-9
    total_um = float(sum(s.length_um for s in segments))
    kind = {n.id: n for n in nodes}
    junctions = [n for n in nodes if n.kind == "junction"]
    free = [[kind[e] for e in (s.node_start, s.node_end) if kind[e].kind == "end"]
            for s in segments]
    diameters = 2.0 * np.asarray(point_radii, dtype=float)
    if diameters.size:
        mean_d = float(diameters.mean())
        p10, p50, p90 = (float(v) for v in np.percentile(diameters, [10, 50, 90]))
    else:
        mean_d = p10 = p50 = p90 = math.nan
    return Morphometrics(
        stack_volume_mm3=volume_mm3,
        vessel_voxels=int(vessel_voxels),
        vessel_volume_fraction=vessel_voxels / n_voxels,
        total_length_um=total_um,
        length_density_mm_per_mm3=total_um * 1e-3 / volume_mm3,
        n_segments=len(segments),
        n_junctions=len(junctions),
        n_end_points=sum(n.kind == "end" for n in nodes),
        n_loops=sum(s.is_loop for s in segments),
        branch_point_density_per_mm3=len(junctions) / volume_mm3,
        mean_diameter_um=mean_d, diameter_p10_um=p10, diameter_p50_um=p50, diameter_p90_um=p90,
        n_dangling=sum(bool(ends) for ends in free),
        n_dangling_interior=sum(any(not e.touches_border for e in ends) for ends in free),
        n_short=sum(s.length_um < SHORT_SEGMENT_UM for s in segments),
        n_incorrect_bifurcations=sum(n.degree > 3 for n in junctions),
        note=note,
        n_filled_cavities=int(filled[0]),
        n_filled_cavity_voxels=int(filled[1]),
    )
