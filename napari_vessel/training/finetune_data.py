"""Data for fine-tuning on the open volume: checks, preprocessing, edit masks, patches, previews.

Helpers of :mod:`napari_vessel.training.finetune`. Everything here works on NumPy arrays of shape
``(Z, Y, X)``; the training loop turns patches into ``(N, 1, D, H, W)`` tensors.

The *edited mask* of the supervised (human-in-the-loop) mode marks the voxels whose label the user
vouches for: the voxels painted or erased (where the corrected labels differ from the model's own
prediction) and, optionally, whole slices the user checked. Only those voxels enter the loss;
the rest of the labels is not treated as truth (see :func:`edited_mask_from`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.volume import Volume
from napari_vessel.io.volume import as_volume as _as_volume
from napari_vessel.io.volume import check_voxels as _check_voxels
from napari_vessel.progress import CancelToken, Progress

#: Why fine-tuning refuses an empty or constant volume.
NO_VESSELS = "there are no vessels to learn from"

__all__ = [
    "as_volume",
    "check_voxels",
    "prepare_image",
    "volume_fingerprint",
    "check_labels",
    "edited_mask_from",
    "add_checked_slices",
    "fit_patch_size",
    "PatchSampler",
    "preview_window",
]


def as_volume(volume: Any, *, load: bool = True) -> Volume:
    """``volume`` as a checked :class:`~napari_vessel.io.volume.Volume` (arrays are wrapped), in
    memory unless ``load`` is False (:func:`napari_vessel.io.volume.as_volume`)."""
    return _as_volume(volume, load=load, what="volume")


def sample_blocks(volume: Volume, max_voxels: int, seed: int = 0) -> tuple[Volume, str | None]:
    """A volume larger than ``max_voxels`` as a mosaic of random blocks that fits (else as is).

    Blocks of up to 32 x 512 x 512 voxels (smaller in-plane when even one would not fit) are
    read at random positions (seeded; only those blocks are read from a lazy file) and laid side
    by side along Y, as many as ``max_voxels`` allows. Fine-tuning then adapts on the blocks
    instead of loading the whole volume.

    Returns
    -------
    volume : Volume
        The volume itself (loaded) or the mosaic.
    note : str or None
        One sentence saying what was sampled (None: the whole volume is used).
    """
    shape = volume.shape
    total = int(np.prod(shape, dtype=np.int64))
    if total <= max_voxels:
        return as_volume(volume), None
    block = [min(shape[0], 32), min(shape[1], 512), min(shape[2], 512)]
    while int(np.prod(block)) > max_voxels and max(block[1:]) > 32:
        axis = 1 if block[1] >= block[2] else 2
        block[axis] = max(32, block[axis] // 2)
    count = max(1, int(max_voxels // int(np.prod(block))))
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        start = [int(rng.integers(0, n - b + 1)) for n, b in zip(shape, block, strict=True)]
        region = tuple(slice(a, a + b) for a, b in zip(start, block, strict=True))
        pieces.append(np.asarray(volume.data[region]))
    mosaic = np.concatenate(pieces, axis=1)
    size_gb = total * np.dtype(volume.data.dtype).itemsize / 1e9
    note = (f"the volume ({' x '.join(map(str, shape))}, {size_gb:.1f} GB) is larger than the "
            f"adaptation sample ({max_voxels / 1e6:.0f} M voxels): adapted on {count} random "
            f"blocks of {' x '.join(map(str, block))} (seed {seed}), laid side by side")
    return volume.with_data(mosaic), note


def check_voxels(data: np.ndarray) -> None:
    """Raise :class:`InputError` for non-numeric, empty, non-finite or constant voxels
    (:func:`napari_vessel.io.volume.check_voxels`, worded for fine-tuning)."""
    _check_voxels(data, "volume", purpose=NO_VESSELS)


def prepare_image(spec: Any, volume: Volume, *, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> tuple[np.ndarray, Any]:
    """The volume as the model expects its input: :func:`napari_vessel.inference.run.prepare_input`
    (the card's pipeline, else a min-max stretch to [0, 1]) on the voxels in memory, as float32.

    Returns
    -------
    image : ndarray of float32, shape (Z, Y, X)
    preprocessing : dict
        JSON form of what was applied (for the model card and the run manifest).
    """
    from napari_vessel.inference.run import prepare_input

    image, pre_json = prepare_input(np.asarray(volume.data), spec, volume.spacing_zyx,
                                    progress=progress, cancel=cancel, what="volume",
                                    purpose=NO_VESSELS)
    image = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if float(image.max()) == float(image.min()):
        raise InputError("the volume is constant after the model's preprocessing: there are no "
                         "vessels to learn from; check the channel and the file")
    return image, pre_json


def volume_fingerprint(volume: Volume) -> dict:
    """Where the volume came from, its shape, type and the SHA-256 of its voxels (C order)."""
    data = np.ascontiguousarray(np.asarray(volume.data))
    digest = hashlib.sha256(data.view(np.uint8).reshape(-1)).hexdigest()
    return {"source": volume.source, "shape": list(data.shape), "dtype": str(data.dtype),
            "spacing_zyx": list(volume.spacing_zyx), "sha256": digest}


def check_labels(labels: Any, shape: Sequence[int], what: str = "labels") -> np.ndarray:
    """``labels > 0`` as a boolean array, after checking it matches the volume's shape."""
    array = np.asarray(labels)
    if array.dtype.kind not in "biuf":
        raise InputError(f"the {what} have data type {array.dtype}; numbers are needed")
    if array.shape != tuple(shape):
        raise InputError(f"the {what} have shape {array.shape} but the volume has "
                         f"{tuple(shape)}; use a labels layer made on this volume")
    return array > 0


def edited_mask_from(labels: Any, original: Any, *, checked_slices: Sequence[int] = ()
                     ) -> np.ndarray:
    """Voxels the user vouches for: where ``labels`` differ from ``original``, plus checked slices.

    Parameters
    ----------
    labels : array_like, shape (Z, Y, X)
        The corrected labels (non-zero = vessel).
    original : array_like, same shape
        What the user started from, e.g. the model's own thresholded prediction.
    checked_slices : sequence of int
        Z indices of slices the user confirmed as a whole (every voxel counts); negative indices
        count from the end.

    Returns
    -------
    ndarray of bool, shape (Z, Y, X)
    """
    lab = np.asarray(labels) > 0
    orig = check_labels(original, lab.shape, "original labels")
    return add_checked_slices(lab != orig, checked_slices)


def add_checked_slices(mask: np.ndarray, checked_slices: Sequence[int]) -> np.ndarray:
    """A copy of the boolean ``mask`` with every voxel of the ``checked_slices`` (Z indices) set."""
    mask = np.array(mask, dtype=bool)
    for z in checked_slices:
        if not -mask.shape[0] <= int(z) < mask.shape[0]:
            raise InputError(f"checked slice {z} is outside the volume's {mask.shape[0]} slices")
        mask[int(z)] = True
    return mask


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def fit_patch_size(requested: Sequence[int], shape: Sequence[int], multiple: Sequence[int]
                   ) -> tuple[int, int, int]:
    """Patch size rounded up to the network's input multiple and no larger than needed.

    Along an axis shorter than the request, the patch is the axis length rounded up to the
    multiple (the volume is then reflection-padded and the padding left out of the loss).
    """
    if len(requested) != 3 or min(int(r) for r in requested) < 1:
        raise InputError(f"patch size {tuple(requested)} must be three positive numbers (z, y, x)")
    return tuple(min(_round_up(int(r), int(m)), _round_up(int(n), int(m)))
                 for r, n, m in zip(requested, shape, multiple, strict=True))


def _pad(array: np.ndarray, size: Sequence[int], mode: str) -> np.ndarray:
    pad = [(0, max(0, s - n)) for s, n in zip(size, array.shape, strict=True)]
    if not any(p[1] for p in pad):
        return array
    if mode == "reflect" and any(p[1] >= n for p, n in zip(pad, array.shape, strict=True)):
        mode = "symmetric" if all(p[1] <= n for p, n in zip(pad, array.shape, strict=True)) \
            else "edge"
    return np.pad(array, pad, mode=mode)


class PatchSampler:
    """Random patches of one volume (and its targets and edit mask) for fine-tuning.

    Parameters
    ----------
    image : ndarray of float32, shape (Z, Y, X)
        The preprocessed volume.
    patch_size : (int, int, int)
        Patch shape (see :func:`fit_patch_size`); the volume is reflection-padded to it.
    target : ndarray of bool, optional
        Corrected labels (supervised mode).
    mask : ndarray of bool, optional
        Edited voxels (supervised mode): patches are centred on them.

    Notes
    -----
    Unsupervised patches are drawn uniformly, as the crops of paper 000, section 4.3.
    :meth:`sample` returns ``(image, valid, target, mask)`` patches, float32; ``valid`` is 0 on
    padding, ``target`` and ``mask`` are None without targets.
    """

    def __init__(self, image: np.ndarray, patch_size: Sequence[int], *,
                 target: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        self.shape = tuple(image.shape)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.image = _pad(image, self.patch_size, "reflect")
        self.valid = _pad(np.ones(self.shape, np.float32), self.patch_size, "constant")
        self.target = None if target is None else _pad(target.astype(np.float32),
                                                       self.patch_size, "reflect")
        self.mask = None if mask is None else _pad(mask.astype(np.float32), self.patch_size,
                                                   "constant")
        self._centres = None if mask is None else np.flatnonzero(mask.ravel())

    def _start(self, rng: np.random.Generator, uniform: bool = False) -> list[int]:
        full = self.image.shape
        if not uniform and self._centres is not None and len(self._centres):
            centre = np.unravel_index(int(self._centres[rng.integers(len(self._centres))]),
                                      self.shape)
            return [min(max(int(c) - s // 2, 0), n - s)
                    for c, s, n in zip(centre, self.patch_size, full, strict=True)]
        return [int(rng.integers(0, n - s + 1)) for s, n in zip(self.patch_size, full, strict=True)]

    def sample(self, rng: np.random.Generator, uniform: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One patch: ``(image, valid, target, mask)``, each of shape ``patch_size``; centred on
        an edited voxel when there is an edit mask, unless ``uniform``."""
        start = self._start(rng, uniform)
        sl = tuple(slice(a, a + s) for a, s in zip(start, self.patch_size, strict=True))
        target = None if self.target is None else self.target[sl]
        mask = None if self.mask is None else self.mask[sl] * self.valid[sl]
        return self.image[sl], self.valid[sl], target, mask

    def batch(self, rng: np.random.Generator, size: int, uniform: bool = False
              ) -> list[np.ndarray | None]:
        """``size`` patches stacked as ``(N, 1, D, H, W)`` arrays (None where absent)."""
        parts = [self.sample(rng, uniform) for _ in range(size)]
        out: list[np.ndarray | None] = []
        for k in range(4):
            if parts[0][k] is None:
                out.append(None)
            else:
                out.append(np.stack([p[k] for p in parts])[:, None].astype(np.float32))
        return out


def preview_window(shape: Sequence[int], z: int, size: int | None, multiple: Sequence[int]
                   ) -> tuple[tuple[slice, slice, slice], int, tuple[int, int]]:
    """The block around slice ``z`` that the live preview runs the network on.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape.
    z : int
        Slice to preview (clipped to the volume).
    size : int or None
        Side of the square region in Y and X, centred; None for the whole slice.
    multiple : (int, int, int)
        The network's input multiple: the block has at least that many slices.

    Returns
    -------
    block : tuple of 3 slices
        Where to read (before padding to the multiple).
    z_in_block : int
        Index of the previewed slice inside the block.
    origin_yx : (int, int)
        Top-left corner of the previewed region in the volume.
    """
    nz, ny, nx = (int(s) for s in shape)
    z = min(max(int(z), 0), nz - 1)
    depth = min(nz, max(int(multiple[0]), 1))
    z0 = min(max(z - depth // 2, 0), nz - depth)
    if size is None:
        y0, x0, hy, hx = 0, 0, ny, nx
    else:
        hy, hx = min(ny, int(size)), min(nx, int(size))
        y0, x0 = (ny - hy) // 2, (nx - hx) // 2
    block = (slice(z0, z0 + depth), slice(y0, y0 + hy), slice(x0, x0 + hx))
    return block, z - z0, (y0, x0)
