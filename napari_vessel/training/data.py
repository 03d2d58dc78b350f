"""Training data: real image/label pairs, the intensity normalisation, patch sampling, augmentation.

The normalisation here is the one every supervised model of this package sees at training and at
inference time; it is the project's preprocessing pipeline :data:`TRAINING_PIPELINE`, written into
the model card as ``preprocessing`` so that segmenting applies exactly the same steps:

1. per-slice median subtraction (negative values set to 0), which removes the depth-dependent
   background of two-photon stacks (paper 001, section 4.2);
2. percentile normalisation, the 1st percentile to 0 and the 99.5th to 1, clipped (the
   "histogram scaling" of paper 001, made automatic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_vessel.errors import InputError

__all__ = ["Pair", "normalise", "load_pairs", "synthetic_pairs", "LabelledPatchSampler", "augment",
           "PREPROCESSING", "TRAINING_PIPELINE", "training_pipeline"]


def training_pipeline(depth_correct: bool = False):
    """The training preprocessing: slice-median subtraction, optionally the depth-attenuation
    correction (:class:`~napari_vessel.preprocess.DepthCorrect`, every slice brought to a common
    gain), then percentile normalisation."""
    from napari_vessel.preprocess import DepthCorrect, MedianSubtract, Normalize, Pipeline

    middle = (DepthCorrect(),) if depth_correct else ()
    return Pipeline((MedianSubtract(), *middle, Normalize(low=1.0, high=99.5)))


#: The default preprocessing of every training and test volume.
TRAINING_PIPELINE = training_pipeline()

#: Its JSON form, for model cards.
PREPROCESSING = TRAINING_PIPELINE.to_dict()


@dataclass
class Pair:
    """One training volume: a normalised image and its boolean vessel labels, both (Z, Y, X)."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def normalise(image: np.ndarray, pipeline=None) -> np.ndarray:
    """Apply :data:`TRAINING_PIPELINE` (slice-median subtraction, percentile normalisation).

    Parameters
    ----------
    image : (Z, Y, X) array
        Raw intensities of any numeric dtype.
    pipeline : Pipeline, optional
        Another preprocessing (e.g. ``training_pipeline(depth_correct=True)``).

    Returns
    -------
    (Z, Y, X) float32 array
        In [0, 1]; all zeros for a constant volume.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"expected a 3D (Z, Y, X) volume, got shape {x.shape}")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if float(x.max()) == float(x.min()):
        return np.zeros_like(x)
    return np.asarray((pipeline or TRAINING_PIPELINE).apply(x), dtype=np.float32)


def load_pairs(folder: str | Path, *, names: list[str] | None = None,
               pipeline=None) -> list[Pair]:
    """Read and normalise every ``images/NAME.tif`` with its ``labels/NAME.tif`` in ``folder``.

    Parameters
    ----------
    folder : path
        A folder with ``images/`` and ``labels/`` sub-folders of matching TIFF files.
    names : list of str, optional
        Only these volume names (file stems); all when None.
    pipeline : Pipeline, optional
        The preprocessing (default :data:`TRAINING_PIPELINE`).

    Returns
    -------
    list of Pair
        Sorted by name. Labels are ``label > 0``.
    """
    import tifffile

    folder = Path(folder)
    if not (folder / "images").is_dir() or not (folder / "labels").is_dir():
        raise InputError(f"{folder} needs 'images/' and 'labels/' sub-folders of matching TIFFs")
    pairs = []
    for path in sorted((folder / "images").glob("*.tif*")):
        if names is not None and path.stem not in names:
            continue
        label_path = folder / "labels" / path.name
        if not label_path.exists():
            raise InputError(f"no labels for {path.name}: expected {label_path}")
        image = tifffile.imread(path)
        labels = tifffile.imread(label_path) > 0
        if image.shape != labels.shape:
            raise InputError(f"{path.name}: image {image.shape} and labels {labels.shape} differ")
        pairs.append(Pair(path.stem, normalise(image, pipeline), labels))
    if not pairs:
        raise InputError(f"no image/label pairs found in {folder}")
    return pairs


def synthetic_pairs(n: int, *, seed: int = 0, config=None, pipeline=None, start: int = 0,
                    progress=None) -> list[Pair]:
    """``n`` domain-randomised synthetic volumes (:mod:`napari_vessel.data.synthetic`), normalised.

    Parameters
    ----------
    n : int
        Number of volumes (>= 0).
    seed : int
        The series; volume ``i`` is ``synthetic_volume(start + i, seed=seed)``.
    config : SyntheticConfig, optional
        Ranges of the generator.
    pipeline : Pipeline, optional
        The preprocessing (default :data:`TRAINING_PIPELINE`), as for real volumes.
    start : int
        Index of the first volume (to hold a few volumes out of a series).
    progress : callable(fraction, message), optional
        Called after each volume.

    Returns
    -------
    list of Pair
        Named ``synthetic{seed}-{index}``; labels are exact.
    """
    from napari_vessel.data.synthetic import synthetic_volume

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"the number of synthetic volumes must be a whole number >= 0, not {n!r}")
    pairs = []
    for i in range(start, start + n):
        vol = synthetic_volume(i, seed=seed, config=config)
        pairs.append(Pair(f"synthetic{seed}-{i}", normalise(vol.image, pipeline), vol.labels > 0))
        if progress is not None:
            progress((i - start + 1) / n, f"synthetic volume {i - start + 1}/{n}")
    return pairs


class LabelledPatchSampler:
    """Random (Z, Y, X) patches from a list of labelled pairs, half centred on a vessel voxel.

    For supervised training from scratch (:func:`~napari_vessel.training.train.train`); the
    fine-tuning sampler of one image with a partial mask is
    :class:`napari_vessel.training.finetune_data.PatchSampler`.

    Parameters
    ----------
    pairs : list of Pair
        The training volumes.
    patch_size : (int, int, int)
        Patch shape; volumes smaller than it are reflection-padded.
    foreground_fraction : float
        Probability that a patch is centred on a random vessel voxel.
    weights : list of float, optional
        Sampling probability of each pair (default: equal, so small volumes are not neglected).
    z_subsample : float
        Probability of taking every second slice (a coarser Z step, as on other microscopes)
        when the volume is deep enough.
    """

    def __init__(self, pairs: list[Pair], patch_size: tuple[int, int, int], *,
                 foreground_fraction: float = 0.5, weights: list[float] | None = None,
                 z_subsample: float = 0.0) -> None:
        if not pairs:
            raise InputError("the patch sampler needs at least one volume")
        self.pairs = [_pad_to(p, patch_size) for p in pairs]
        self.patch_size = tuple(int(s) for s in patch_size)
        self.foreground_fraction = foreground_fraction
        self.z_subsample = z_subsample
        w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=float)
        self.weights = w / w.sum()
        self._fg = [np.flatnonzero(p.labels.ravel()) for p in self.pairs]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (image, labels) patch pair, float32 and float32 in {0, 1}."""
        i = int(rng.choice(len(self.pairs), p=self.weights))
        pair, fg = self.pairs[i], self._fg[i]
        shape = pair.image.shape
        size = list(self.patch_size)
        zstep = 1
        if self.z_subsample and shape[0] >= 2 * size[0] and rng.random() < self.z_subsample:
            zstep, size[0] = 2, 2 * size[0] - 1
        if len(fg) and rng.random() < self.foreground_fraction:
            centre = np.unravel_index(int(fg[rng.integers(len(fg))]), shape)
            start = [min(max(c - s // 2, 0), n - s)
                     for c, s, n in zip(centre, size, shape, strict=True)]
        else:
            start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, shape, strict=True)]
        sl = (slice(start[0], start[0] + size[0], zstep),
              *(slice(a, a + s) for a, s in zip(start[1:], size[1:], strict=True)))
        return pair.image[sl], pair.labels[sl].astype(np.float32)


def _pad_to(pair: Pair, size: tuple[int, int, int]) -> Pair:
    pad = [(0, max(0, s - n)) for s, n in zip(size, pair.image.shape, strict=True)]
    if not any(p[1] for p in pad):
        return pair
    return Pair(pair.name, np.pad(pair.image, pad, mode="reflect"),
                np.pad(pair.labels, pad, mode="reflect"))


def augment(image: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, *,
            strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric and intensity augmentation of a batch of patches.

    Geometric (same for image and labels): flips on every axis, rot90 in the XY plane, an XY zoom
    in [0.75, 1.33] (other pixel sizes). Intensity (image only, per patch): a gain and offset
    (contrast, brightness), a gamma curve, a depth ramp (attenuation), Gaussian blur-free noise.

    Parameters
    ----------
    image, labels : (N, 1, Z, Y, X) tensors
        Normalised image and {0, 1} labels.
    generator : torch.Generator
        The only source of randomness (seeded by the caller, for reproducibility).
    strength : float
        Scales the intensity perturbations; 0 keeps only the geometric ones.

    Returns
    -------
    image, labels : tensors of the same shape
    """

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    for axis in (2, 3, 4):
        if rand(1).item() < 0.5:
            image, labels = image.flip(axis), labels.flip(axis)
    k = int(rand(1).item() * 4) % 4
    if k:
        image, labels = torch.rot90(image, k, (3, 4)), torch.rot90(labels, k, (3, 4))
    if rand(1).item() < 0.5:
        zoom = float(torch.exp((rand(1) * 2 - 1) * np.log(1.33)).item())
        image, labels = _zoom_xy(image, labels, zoom)
    if strength <= 0:
        return image, labels
    n = image.shape[0]
    shape = (n, 1, 1, 1, 1)
    gain = torch.exp((rand(*shape) * 2 - 1) * 0.5 * strength)
    offset = (rand(*shape) * 2 - 1) * 0.15 * strength
    gamma = torch.exp((rand(*shape) * 2 - 1) * 0.5 * strength)
    depth = image.shape[2]
    ramp = torch.linspace(0, 1, depth).view(1, 1, depth, 1, 1)
    atten = 1 - (rand(*shape) * 2 - 1).clamp(min=0) * 0.5 * strength * ramp
    x = image.clamp(min=0) ** gamma - image.clamp(max=0)
    x = x * gain * atten + offset
    sigma = rand(*shape) * 0.1 * strength
    x = x + torch.randn(x.shape, generator=generator) * sigma
    return x, labels


def _zoom_xy(image: torch.Tensor, labels: torch.Tensor,
             zoom: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom in Y and X by ``zoom`` then centre-crop or reflect-pad back to the input size."""
    z, y, x = image.shape[-3:]
    size = (z, max(4, round(y * zoom)), max(4, round(x * zoom)))
    image2 = F.interpolate(image, size=size, mode="trilinear", align_corners=False)
    labels2 = (F.interpolate(labels, size=size, mode="trilinear", align_corners=False) > 0.5)
    labels2 = labels2.to(labels.dtype)
    return _fit(image2, (y, x)), _fit(labels2, (y, x))


def _fit(t: torch.Tensor, yx: tuple[int, int]) -> torch.Tensor:
    for axis, target in ((3, yx[0]), (4, yx[1])):
        n = t.shape[axis]
        if n > target:
            start = (n - target) // 2
            t = t.narrow(axis, start, target)
        elif n < target:
            extra = target - n
            pads = [0, 0, 0, 0, 0, 0]
            index = 2 * (4 - axis)
            pads[index], pads[index + 1] = extra // 2, extra - extra // 2
            t = F.pad(t, pads, mode="reflect" if extra < n else "replicate")
    return t
