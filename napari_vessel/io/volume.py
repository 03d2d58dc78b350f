"""The :class:`Volume`: one 3D stack with its voxel size and where it came from.

Also the checks every consumer of a stack shares: :func:`check_volume_array` (shape, channels,
data type), :func:`check_voxels` (the values) and :func:`as_volume` (any input as a checked
:class:`Volume`); and the two questions asked of an array before touching its voxels:
:func:`is_lazy` (is it held in memory?) and :func:`is_dask` (does it have dask's API?).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["Volume", "check_spacing", "check_3d", "check_volume_array", "check_voxels",
           "constant_error", "as_volume", "is_lazy", "is_dask"]

#: What a constant or empty stack means for a segmentation (the default ``purpose``).
NOTHING_TO_SEGMENT = "there is nothing to segment"


def is_lazy(data: Any) -> bool:
    """Whether ``data`` is not held in memory as a NumPy array.

    True for dask, Zarr, h5py and any other array-like whose voxels are read (or computed) on
    access: reading them all may be slow or not fit in memory, so callers skip whole-stack checks
    and statistics, or work in the background, for such data. False for a NumPy array, including
    a ``numpy.memmap`` (it behaves as one and its pages are read by the operating system).

    Parameters
    ----------
    data : array-like
        The voxels.

    Returns
    -------
    bool
        ``not isinstance(data, numpy.ndarray)``.

    See Also
    --------
    is_dask : the narrower question, for code that calls dask's API.
    """
    return not isinstance(data, np.ndarray)


def is_dask(data: Any) -> bool:
    """Whether ``data`` is a dask array (or another dask collection).

    Asked by code that uses dask's API: ``.compute()``, ``dask.compute`` or the ``chunks`` of a
    dask array. Every dask array is lazy (:func:`is_lazy`), not every lazy array is a dask array
    (a Zarr array is not).

    Parameters
    ----------
    data : Any
        The object to test.

    Returns
    -------
    bool
        True when the type of ``data`` comes from the ``dask`` package.
    """
    return type(data).__module__.split(".")[0] == "dask"


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
        """True when the data is not held in memory as a NumPy array (see :func:`is_lazy`)."""
        return is_lazy(self.data)

    def with_data(self, data: Any, **changes: Any) -> Volume:
        """A copy with new voxels (same voxel size and provenance unless changed)."""
        return replace(self, data=data, **changes)

    def with_spacing(self, spacing_zyx: Any) -> Volume:
        """A copy with another voxel size (checked)."""
        return replace(self, spacing_zyx=check_spacing(spacing_zyx, 3), spacing_known=True)

    def to_numpy(self) -> np.ndarray:
        """The voxels as a NumPy array (computes a dask array)."""
        return np.asarray(self.data)


def check_volume_array(data: Any, what: str = "image") -> Any:
    """Check a volume for the models and return it as (Z, Y, X) (a singleton channel is dropped).

    Raises
    ------
    InputError
        2D image, several channels, too many axes, non-numeric data. (The values are checked by
        :func:`check_voxels`.)
    """
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) == 4 and 1 in shape:
        data = data[(slice(None),) * shape.index(1) + (0,)]
        shape = tuple(data.shape)
    if len(shape) == 4 and min(shape) <= 4:
        axis = shape.index(min(shape))
        raise InputError(
            f"the {what} has shape {shape} with {shape[axis]} channels on axis {axis}; the models "
            "take one channel: choose the vessel channel first (e.g. image[..., 0] or "
            "--channel in 'napari-vessel preprocess')"
        )
    check_3d(data, what)
    kind = np.dtype(getattr(data, "dtype", np.float32)).kind
    if kind not in "biuf":
        raise InputError(f"the {what} has data type {data.dtype}; a numeric image is needed")
    return data


def constant_error(value: float, what: str = "image", purpose: str = NOTHING_TO_SEGMENT
                   ) -> InputError:
    """The error for a stack whose voxels all equal ``value``."""
    kind = "all zero" if value == 0 else f"constant (every voxel is {value:g})"
    return InputError(f"the {what} is {kind}: {purpose}; check the channel and the file")


def check_voxels(data: Any, what: str = "image", *, constant: bool = True,
                 purpose: str = NOTHING_TO_SEGMENT) -> np.ndarray:
    """Check the values of a stack (or a block of one) and return them as a NumPy array.

    Parameters
    ----------
    data : array-like
        The voxels (read into memory).
    what : str
        How the messages call it ("image", "volume", "training volume").
    constant : bool
        Also refuse all-equal values (False for one block of a larger stack: the caller judges
        the whole, e.g. with :func:`constant_error`).
    purpose : str
        Why an empty or constant stack is refused, e.g. "there are no vessels to learn from".

    Returns
    -------
    ndarray
        ``data`` as an array (not copied when it is one).

    Raises
    ------
    InputError
        Non-numeric, empty, NaN or infinite values, or (with ``constant``) all voxels equal.
    """
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise InputError(f"the {what} has data type {array.dtype}; a numeric image is needed")
    if array.size == 0:
        raise InputError(f"the {what} is empty (an axis has length 0): {purpose}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"the {what} contains NaN or infinite values; replace them (e.g. "
                         "np.nan_to_num) or check how the file was made")
    if constant:
        lo, hi = float(array.min()), float(array.max())
        if lo == hi:
            raise constant_error(lo, what, purpose)
    return array


def as_volume(volume: Any, spacing_zyx: Any = None, *, load: bool = False,
              what: str = "image") -> Volume:
    """``volume`` as a checked :class:`Volume` (Z, Y, X).

    Parameters
    ----------
    volume : Volume or array-like
        An array gets ``spacing_zyx`` (1 µm when None); a Volume keeps its own unless
        ``spacing_zyx`` is given.
    spacing_zyx : (float, float, float), optional
        Voxel size in µm.
    load : bool
        Read a lazy (dask) volume into memory.
    what : str
        How error messages call it.

    Raises
    ------
    InputError
        As :func:`check_volume_array`, and bad voxel sizes.
    """
    if not isinstance(volume, Volume):
        volume = Volume(check_volume_array(volume, what), spacing_zyx or (1.0, 1.0, 1.0))
    else:
        if spacing_zyx is not None:
            volume = volume.with_spacing(spacing_zyx)
        check_volume_array(volume.data, what)
    return volume.with_data(np.asarray(volume.data)) if load and volume.is_lazy else volume
