"""The named, documented parameters of the vessel graph (:class:`GraphParams`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from napari_vessel.errors import InputError

__all__ = ["GraphParams", "SHORT_SEGMENT_UM", "NEAR_ISOTROPIC"]

#: Segments shorter than this are "short" in paper 001's graph metrics (section 2.4: < 6 µm).
SHORT_SEGMENT_UM = 6.0
#: An axis is resampled before thinning when its voxel is more than this many times the finest one.
NEAR_ISOTROPIC = 1.2


def _number(value: Any, name: str, *, low: float = 0.0, whole: bool = False,
            hint: str = "") -> float:
    """``value`` as a finite number >= ``low`` (a whole one when ``whole``), else InputError
    (its message ends with ``hint``)."""
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value)) and float(value) >= low
        ok = ok and (not whole or float(value).is_integer())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        kind = "a whole number" if whole else "a finite number"
        raise InputError(f"{name}={value!r} must be {kind} >= {low:g}{hint}")
    return float(value)


@dataclass(frozen=True)
class GraphParams:
    """How labels become a vessel graph; saved with every result.

    Parameters
    ----------
    prune_um : float
        Spur pruning, fixed part (µm, default 3). A terminal segment (a junction at one end, a
        free end at the other) is removed when its length is below
        ``prune_um + prune_radius_factor * r``, where ``r`` is the vessel radius at its junction:
        it must reach at least ``prune_um`` beyond the wall of the vessel it leaves. Thinning
        grows such spurs from bumps in the mask; a real branch is longer. 0 with
        ``prune_radius_factor=0`` keeps every spur.
    prune_radius_factor : float
        Spur pruning, part proportional to the local radius (default 1, see ``prune_um``).
    merge_radius_factor : float
        Junctions joined by a segment shorter than this many times the larger of their two radii
        (default 1: one lies inside the other's vessel) are merged into one node at their
        centroid; adjacent junction voxels always merge. This turns the clusters that thinning
        leaves where vessels meet or cross into one branch point of the right degree.
    min_object_voxels : int
        Connected vessel pieces (26-connected) with fewer voxels than this are dropped before
        thinning (default 10); 0 keeps every piece.
    isotropic : bool
        Resample near-isotropic before thinning (default True): every axis whose voxel is more
        than :data:`NEAR_ISOTROPIC` times the finest one is brought to the finest size by
        shape-based interpolation (linear interpolation of each slice's signed distance map),
        so thinning, lengths and radii follow the vessels in µm. False thins the voxel grid as
        it is (only sensible for isotropic voxels).
    smooth_um : float
        Gaussian smoothing (sigma, µm) of each centreline before its length, chord and
        direction are measured (default 2); removes the staircase of voxel paths (which
        lengthens a ring by about 6 %) while bending a 25 µm radius by under 0.5 %. 0 measures
        the raw voxel path.
    max_radius_um : float
        Reach of the radius search (default 30 µm): radii up to this are exact (the distance
        transform's values), larger ones are reported as this value. Bounds the work per
        centreline point and the size of the search table.
    max_voxels : int
        Largest working grid (the labels' bounding box after isotropic resampling, default
        1e9 voxels; the peak memory is about 3 bytes a working voxel plus 25 bytes a vessel
        voxel on top of the labels, so 3-6 GB). A larger one raises :class:`InputError` before
        any work: crop the stack.
    fill_cavities_um3 : float
        Enclosed background cavities up to this volume (µm³, default 1000: a ball of 6 µm
        radius) are filled before thinning: 6-connected pieces of background that touch no face
        of the stack, such as the darker lumen of a thick thresholded vessel. Thinning keeps a
        cavity as a closed shell, which becomes loops and many short segments. The volume is
        the voxel count times the voxel volume. 0 fills none.
    """

    prune_um: float = 3.0
    prune_radius_factor: float = 1.0
    merge_radius_factor: float = 1.0
    min_object_voxels: int = 10
    isotropic: bool = True
    smooth_um: float = 2.0
    max_radius_um: float = 30.0
    max_voxels: int = 1_000_000_000
    fill_cavities_um3: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("prune_um", "prune_radius_factor", "merge_radius_factor", "smooth_um"):
            object.__setattr__(self, name, _number(getattr(self, name), name))
        object.__setattr__(self, "fill_cavities_um3", _number(
            self.fill_cavities_um3, "fill_cavities_um3",
            hint=" (the largest enclosed cavity filled, in µm³; 0 fills none)"))
        object.__setattr__(self, "max_radius_um",
                           _number(self.max_radius_um, "max_radius_um", low=0.5))
        for name, low in (("min_object_voxels", 0), ("max_voxels", 1)):
            object.__setattr__(self, name, int(_number(getattr(self, name), name, low=low,
                                                       whole=True)))
        if not isinstance(self.isotropic, bool):
            raise InputError(f"isotropic={self.isotropic!r} must be True or False")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-able dict; ``GraphParams(**d)`` gives them back."""
        return asdict(self)
