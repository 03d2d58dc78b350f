"""Contrast-limited adaptive histogram equalisation (CLAHE), per slice or on the whole stack.

Paper 003 (section II.A, "Image preprocessing"): the fused confocal images suffer from uneven
staining, low contrast and out-of-focus clutter, and adaptive histogram equalisation is applied to
improve their contrast. The algorithm follows Zuiderveld (Graphics Gems IV, 1994) with the tile
layout, quantisation and clipping of ``skimage.exposure.equalize_adapthist``, vectorised over all
tiles and slices:

1. intensities are quantised to ``nbins`` grey levels between the stack's minimum and maximum;
2. every tile of ``kernel_size`` voxels gets a histogram, clipped at ``clip_limit`` times the tile
   size with the excess spread over all bins, whose cumulative sum is the tile's mapping;
3. every voxel's value is the multilinear interpolation of the mappings of the nearest tiles (4
   per slice, 8 in 3D), done axis by axis so that only two look-ups per voxel remain.

Differences from scikit-image: the output is the mapping itself in [0, 1] (scikit-image finally
stretches each result to its own minimum and maximum), and the grey-level range is the whole
stack's (not each slice's) in both modes. In 3D the kernel is given in pixels along x and
scaled to the voxel size along y and z, so the contextual region is (nearly) isotropic in µm.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.volume import is_dask
from napari_vessel.preprocess._common import as_image, check_number, workers

__all__ = ["equalize_clahe", "ClaheModel", "fit_clahe", "apply_clahe", "clahe_kernel", "MODES"]

NR_OF_GRAY = 2**14  # grey levels before binning, as in scikit-image
MODES = ("2d", "3d")


def clahe_kernel(shape: tuple[int, ...], kernel_size: Any = None, mode: str = "2d",
                 spacing_zyx: Any = None) -> tuple[int, ...]:
    """Tile size in voxels: (ky, kx) in 2D mode, (kz, ky, kx) in 3D mode.

    ``kernel_size`` is None (1/8 of the slice, as scikit-image), an int (pixels along x; y and, in
    3D, z are scaled by the voxel size) or a tuple of 2 (y, x) or 3 (z, y, x) ints. A z size
    derived from the voxel size is limited to the number of slices; any size given explicitly must
    fit in the image.
    """
    if mode not in MODES:
        raise InputError(f"CLAHE mode must be '2d' (per slice) or '3d' (whole stack), not {mode!r}")
    ndim = 3 if mode == "3d" else 2
    sz, sy, sx = (1.0, 1.0, 1.0) if spacing_zyx is None else (float(s) for s in spacing_zyx)
    dims = tuple(shape[-ndim:])
    if kernel_size is None:
        ky, kx = max(shape[-2] // 8, 1), max(shape[-1] // 8, 1)
        sizes = (ky, kx) if ndim == 2 else (min(max(round(ky * sy / sz), 1), dims[0]), ky, kx)
    elif np.ndim(kernel_size) == 0:
        k = check_number(kernel_size, "CLAHE kernel size", low=1)
        sizes = tuple(max(round(k * sx / s), 1) for s in (sz, sy, sx)[-ndim:])
        if ndim == 3:
            sizes = (min(sizes[0], dims[0]),) + sizes[1:]
    else:
        if len(kernel_size) != ndim:
            raise InputError(f"CLAHE kernel size {tuple(kernel_size)} needs {ndim} values in "
                             f"{mode} mode, or one number")
        sizes = tuple(int(check_number(k, "CLAHE kernel size", low=1, integer=True))
                      for k in kernel_size)
    if any(k > d for k, d in zip(sizes, dims, strict=True)):
        raise InputError(f"CLAHE kernel {sizes} is larger than the image {dims}; use a smaller "
                         "kernel_size (it is in pixels)")
    return tuple(int(k) for k in sizes)


@dataclass(frozen=True)
class ClaheModel:
    """What :func:`fit_clahe` measured: the range and, in 3D, every tile's mapping."""

    low: float
    high: float
    kernel: tuple[int, ...]
    clip_limit: float
    nbins: int
    luts: np.ndarray | None = None  # 3D mode: (tiles z, tiles y, tiles x, nbins) float32


def _quantise(block: np.ndarray, low: float, high: float, nbins: int) -> np.ndarray:
    """Grey-level bin of every voxel, rounded as scikit-image does (16 bit, then 14 bit)."""
    scaled = (block - np.float32(low)) * np.float32(65535 / (high - low))
    np.clip(scaled, 0, 65535, out=scaled)
    np.rint(scaled, out=scaled)
    scaled *= np.float32((NR_OF_GRAY - 1) / 65535)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.int32) // (1 + NR_OF_GRAY // nbins)


def _pad_to_tiles(bins: np.ndarray, kernel: tuple[int, ...]) -> np.ndarray:
    """Mirror the last axes up to a multiple of the kernel (as scikit-image pads)."""
    lead = bins.ndim - len(kernel)
    pad = [(0, 0)] * lead + [(0, (k - s % k) % k) for k, s in zip(kernel, bins.shape[lead:], strict=True)]
    return np.pad(bins, pad, mode="reflect") if any(p[1] for p in pad) else bins


def _clipped_luts(hist: np.ndarray, clip_limit: float, n_pixels: int) -> np.ndarray:
    """Clip histograms (..., nbins), spread the excess, return cumulative mappings in [0, 1]."""
    nbins = hist.shape[-1]
    clim = max(int(clip_limit * n_pixels), 1) if clip_limit > 0 else n_pixels
    h = hist.astype(np.int64)
    excess = np.maximum(h - clim, 0).sum(-1, keepdims=True)
    np.minimum(h, clim, out=h)
    incr = excess // nbins  # same first pass as scikit-image's clip_histogram
    upper = clim - incr
    low = h < upper
    excess = excess - low.sum(-1, keepdims=True) * incr
    h = h + low * incr
    mid = (h >= upper) & (h < clim)
    excess = excess + np.where(mid, h - clim, 0).sum(-1, keepdims=True)
    h = np.where(mid, clim, h)
    h = _spread_remaining(h, excess[..., 0], clim)
    lut = np.cumsum(h, axis=-1) / n_pixels
    return np.minimum(lut, 1.0).astype(np.float32)


def _spread_remaining(h: np.ndarray, remaining: np.ndarray, clim: int) -> np.ndarray:
    """Scikit-image's last redistribution pass, for all histograms at once.

    For each histogram, bins below the limit get one more count at every ``step``-th bin from
    ``index`` on, ``step = n_under // remaining``, until nothing remains or nothing changes.
    """
    shape = h.shape
    h, remaining = h.reshape(-1, shape[-1]).copy(), remaining.reshape(-1).copy()
    position = np.arange(shape[-1])
    live = remaining > 0
    while live.any():
        before = remaining.copy()
        for index in range(shape[-1]):
            under = h < clim
            n_under = under.sum(-1)
            active = live & (remaining > 0) & (n_under > 0)
            if not active.any():
                break
            step = np.maximum(1, n_under // np.maximum(remaining, 1))[:, None]
            add = under & active[:, None] & (position >= index) & ((position - index) % step == 0)
            h += add
            remaining -= add.sum(-1)
        live &= (remaining > 0) & (remaining != before)
    return h.reshape(shape)


def _tile_hist(bins: np.ndarray, kernel: tuple[int, int], nbins: int) -> np.ndarray:
    """Histograms of the (ky, kx) tiles of (n, Y, X) padded bins, summed over n: (ty, tx, nbins)."""
    n, y, x = bins.shape
    ky, kx = kernel
    ty, tx = y // ky, x // kx
    tile = (np.arange(ty)[:, None] * tx + np.arange(tx)[None, :]).repeat(ky, 0).repeat(kx, 1)
    index = (tile[None] * nbins + bins).ravel()
    return np.bincount(index, minlength=ty * tx * nbins).reshape(ty, tx, nbins)


def _weights(n: int, k: int, n_tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For positions 0..n-1: lower tile, upper tile and the upper tile's weight."""
    pos = np.arange(n) + k // 2
    block, rest = pos // k, pos % k
    lower = np.clip(block - 1, 0, n_tiles - 1)
    upper = np.clip(block, 0, n_tiles - 1)
    return lower, upper, (rest / k).astype(np.float32)


@lru_cache(maxsize=8)
def _plane_layout(n_y: int, n_x: int, ky: int, kx: int, ty: int, tx: int, nbins: int) -> tuple:
    """Tile rows, weights and flat look-up bases for one plane shape (cached)."""
    y_lo, y_hi, wy = _weights(n_y, ky, ty)
    x_lo, x_hi, wx = _weights(n_x, kx, tx)
    row_base = (np.arange(n_y, dtype=np.int32) * tx)[:, None]
    base_lo = ((row_base + x_lo[None, :].astype(np.int32)) * nbins).astype(np.int32)
    base_hi = ((row_base + x_hi[None, :].astype(np.int32)) * nbins).astype(np.int32)
    return y_lo, y_hi, wy[:, None, None], base_lo, base_hi, wx[None, :]


def _map_plane(bins: np.ndarray, lut: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """Interpolate a (ty, tx, nbins) mapping over one (Y, X) plane of bins (int32)."""
    ty, tx, nbins = lut.shape
    y_lo, y_hi, wy, base_lo, base_hi, wx = _plane_layout(*bins.shape, *kernel, ty, tx, nbins)
    low = lut[y_lo]
    rows = (lut[y_hi] - low) * wy
    rows += low  # (Y, tx, nbins): the mappings interpolated along y, row by row
    flat = rows.ravel()
    out = np.take(flat, base_lo + bins)
    high = np.take(flat, base_hi + bins)
    high -= out
    high *= wx
    out += high  # and along x
    return out


def fit_clahe(data: Any, *, kernel_size: Any = None, clip_limit: float = 0.01, nbins: int = 256,
              mode: str = "2d", spacing_zyx: Any = None) -> ClaheModel:
    """Measure what CLAHE needs from the whole stack (NumPy or dask): the range and, in 3D, the
    mapping of every tile. See :func:`clahe` for the parameters."""
    clip_limit = check_number(clip_limit, "CLAHE clip limit", low=0)
    nbins = int(check_number(nbins, "CLAHE nbins", low=2, high=NR_OF_GRAY, integer=True))
    kernel = clahe_kernel(tuple(data.shape), kernel_size, mode, spacing_zyx)
    if is_dask(data):
        import dask

        low, high = (float(v) for v in dask.compute(data.min(), data.max()))
    else:
        low, high = float(data.min()), float(data.max())
    if not np.isfinite([low, high]).all():
        raise InputError("the image has NaN or infinite values; replace them first")
    if high <= low:
        raise InputError(f"the image is constant (every value is {low:g}); CLAHE needs some "
                         "contrast - check that the right channel and slices were loaded")
    if mode == "2d":
        return ClaheModel(low, high, kernel, clip_limit, nbins)
    kz = kernel[0]
    n_z = data.shape[0]
    z_index = np.pad(np.arange(n_z), (0, (kz - n_z % kz) % kz), mode="reflect")
    slabs = []
    for start in range(0, len(z_index), kz):
        planes = z_index[start : start + kz]
        slab = np.asarray(data[int(planes.min()) : int(planes.max()) + 1], dtype=np.float32)
        bins = _pad_to_tiles(_quantise(slab[planes - planes.min()], low, high, nbins),
                             kernel[1:])
        slabs.append(_tile_hist(bins, kernel[1:], nbins))
    luts = _clipped_luts(np.stack(slabs), clip_limit, int(np.prod(kernel)))
    return ClaheModel(low, high, kernel, clip_limit, nbins, luts)


def apply_clahe(block: np.ndarray, model: ClaheModel, z0: int = 0, n_z: int | None = None
                ) -> np.ndarray:
    """Equalise slices ``z0 .. z0 + len(block)`` of a stack of ``n_z`` slices (float32 in [0, 1]).

    In 2D mode each slice's tile mappings come from the slice itself; in 3D mode from the model.
    """
    kernel = model.kernel

    def _do(planes: np.ndarray, first: int, out: np.ndarray) -> None:
        if model.luts is not None:
            z_lo, z_hi, wz = _weights(n_z, kernel[0], model.luts.shape[0])
        for i in range(planes.shape[0]):  # one slice at a time keeps the temporaries small
            bins = _quantise(planes[i], model.low, model.high, model.nbins)
            if model.luts is None:
                hist = _tile_hist(_pad_to_tiles(bins[None], kernel), kernel, model.nbins)
                lut = _clipped_luts(hist, model.clip_limit, kernel[0] * kernel[1])
                out[i] = _map_plane(bins, lut, kernel)
            else:
                z = first + i
                lut = model.luts[z_lo[z]] * (1 - wz[z]) + model.luts[z_hi[z]] * wz[z]
                out[i] = _map_plane(bins, lut, kernel[1:])

    if model.luts is not None and n_z is None:
        n_z = block.shape[0]
    out = np.empty(block.shape, dtype=np.float32)
    edges = np.linspace(0, block.shape[0], min(workers(), block.shape[0]) + 1).astype(int)
    parts = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]

    def _part(bounds: tuple[int, int]) -> None:
        a, b = bounds
        _do(block[a:b], z0 + a, out[a:b])

    if len(parts) == 1:
        _part(parts[0])
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(_part, parts))
    return out


def equalize_clahe(image: Any, *, kernel_size: Any = None, clip_limit: float = 0.01,
                   nbins: int = 256, mode: str = "2d", spacing_zyx: Any = None) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a slice or a stack (paper 003, II.A).

    Parameters
    ----------
    image : array-like, shape (Z, Y, X) or (Y, X)
        The stack (``mode="3d"`` needs 3D).
    kernel_size : int or tuple of int, optional
        Tile size in pixels. Default: 1/8 of the slice height and width (as scikit-image). An int
        is the size along x; y and, in 3D, z are scaled by ``spacing_zyx`` so that the tile is
        about as long in µm along every axis. A tuple gives (y, x) or (z, y, x) explicitly.
    clip_limit : float
        Fraction of a tile's voxels allowed in one histogram bin (higher: more contrast; 0: no
        clipping, plain adaptive equalisation).
    nbins : int
        Number of grey-level bins.
    mode : {"2d", "3d"}
        Equalise each slice on its own, or the stack with 3D tiles.
    spacing_zyx : tuple of 3 float, optional
        Voxel size in µm (only used to scale an int ``kernel_size``).

    Returns
    -------
    ndarray of float32 in [0, 1], same shape
        A new array. Close to ``skimage.exposure.equalize_adapthist`` applied slice by slice
        (after stretching each result to [0, 1]), and much faster.

    Raises
    ------
    InputError
        Constant or empty image, kernel larger than the image, bad parameters, NaN or inf values,
        2D input in 3D mode.
    """
    array = as_image(image, ndims=(3,) if mode == "3d" else (2, 3), what="3D CLAHE")
    stack = array if array.ndim == 3 else array[None]
    model = fit_clahe(stack, kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins,
                      mode=mode, spacing_zyx=spacing_zyx)
    out = apply_clahe(stack, model)
    return out if array.ndim == 3 else out[0]
