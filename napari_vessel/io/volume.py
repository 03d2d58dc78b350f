"""The :class:`Volume`: one 3D stack with its voxel size and where it came from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["Volume", "check_spacing", "check_3d"]


def check_spacing(spacing: Any, ndim: int = 3) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of positive floats, or raise :class:`InputError`.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size per axis, in micrometres, in the array's axis order (z, y, x).
    ndim : int
        Number of axes expected.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"voxel size {spacing!r} is not a list of numbers; give {ndim} numbers in µm, "
            "e.g. 5 1 1 for z y x"
        ) from err
    if len(values) != ndim:
        raise InputError(
            f"voxel size {values} has {len(values)} values but the image has {ndim} axes; "
            f"give {ndim} numbers (z y x) in µm"
        )
    bad = [v for v in values if not math.isfinite(v) or v <= 0]
    if bad:
        raise InputError(
            f"voxel size {values} contains {bad[0]}: every value must be a positive, finite "
            "number of µm"
        )
    return values


def check_3d(data: Any, what: str = "image") -> None:
    """Raise :class:`InputError` unless ``data`` is a single-channel 3D (z, y, x) array."""
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) == 3 and min(shape) > 0:
        return
    if len(shape) == 2:
        raise InputError(
            f"the {what} is 2D {shape}; this needs a 3D stack (z, y, x). For a single slice, "
            "add an axis first (e.g. image[None])."
        )
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape) > 0:  # pragma: no cover - guarded
        return
    if len(shape) > 3:
        raise InputError(
            f"the {what} has shape {shape} ({len(shape)} axes); choose one channel and one time "
            "point to get a 3D stack (z, y, x)"
        )
    raise InputError(f"the {what} has shape {shape}; a 3D stack (z, y, x) with no empty axis is needed")


@dataclass(frozen=True)
class Volume:
    """A 3D stack (z, y, x) with its voxel size.

    Parameters
    ----------
    data : ndarray or dask array, shape (Z, Y, X)
        The voxels. Dask arrays stay lazy until an operation needs them.
    spacing_zyx : tuple of 3 float
        Voxel size in µm along z, y, x. ``(1.0, 1.0, 1.0)`` when the file gave none.
    source : str, optional
        Path (or description) of where the data came from.
    spacing_known : bool
        False when the file carried no voxel size and the default was used.
    metadata : dict
        Anything else worth keeping (channel/frame chosen, original axes, file metadata).
    """

    data: Any
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str | None = None
    spacing_known: bool = True
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_3d(self.data, "volume")
        object.__setattr__(self, "spacing_zyx", check_spacing(self.spacing_zyx, 3))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (Z, Y, X)."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the voxels."""
        return np.dtype(self.data.dtype)

    @property
    def is_lazy(self) -> bool:
        """True when the data is a dask array (not loaded into memory)."""
        return type(self.data).__module__.startswith("dask")

    def with_data(self, data: Any, **changes: Any) -> Volume:
        """A copy with new voxels (same voxel size and provenance unless changed)."""
        return replace(self, data=data, **changes)

    def with_spacing(self, spacing_zyx: Any) -> Volume:
        """A copy with another voxel size (checked)."""
        return replace(self, spacing_zyx=check_spacing(spacing_zyx, 3), spacing_known=True)

    def to_numpy(self) -> np.ndarray:
        """The voxels as a NumPy array (computes a dask array)."""
        return np.asarray(self.data)
