"""Pictures without a viewer: the MIP of an image with the MIP of its labels drawn over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["overlay_rgb", "save_png"]


def _stretch(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def overlay_rgb(
    image: Any,
    labels: Any | None = None,
    *,
    axis: int = 0,
    color: tuple[float, float, float] = (1.0, 0.2, 0.8),
    opacity: float = 0.45,
    reference: Any | None = None,
    side_by_side: bool = True,
) -> np.ndarray:
    """RGB picture of an image's MIP, with the MIP of its labels blended over it.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X)
        The stack.
    labels : array-like, shape (Z, Y, X), optional
        Segmentation; any value > 0 is drawn in ``color``.
    axis : int
        Projection axis.
    color : tuple of 3 float
        Overlay colour (RGB in [0, 1]).
    opacity : float
        Overlay opacity in [0, 1].
    reference : array-like, shape (Z, Y, X), optional
        Ground truth; its MIP outline is drawn in green.
    side_by_side : bool
        Put the plain MIP to the left of the overlay.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3) or (H, 2 W + gap, 3)
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"the overlay needs a 3D stack; got shape {image.shape}")
    gray = _stretch(image.max(axis=axis))
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    plain = rgb.copy()
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise InputError(f"labels shape {labels.shape} differs from the image shape {image.shape}")
        mask = (labels > 0).any(axis=axis)
        rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.asarray(color, dtype=np.float32)
    if reference is not None:
        from scipy.ndimage import binary_erosion

        ref = (np.asarray(reference) > 0).any(axis=axis)
        outline = ref & ~binary_erosion(ref)
        rgb[outline] = (0.1, 1.0, 0.2)
    out = rgb
    if side_by_side:
        gap = np.ones((rgb.shape[0], 8, 3), dtype=np.float32)
        out = np.concatenate([plain, gap, rgb], axis=1)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG file."""
    import imageio.v3 as iio

    path = Path(path)
    iio.imwrite(path, rgb)
    return path
