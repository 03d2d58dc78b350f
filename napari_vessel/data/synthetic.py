"""Domain-randomised synthetic vessel volumes with exact labels, for pretraining.

The approach of vessel foundation models (vesselFM): show the network thousands of vessel volumes
whose geometry and imaging are drawn at random from ranges wider than any one microscope, so that
what it learns is "a tube" rather than "the intensity of this microscope's vessels". Each volume is
a :func:`~napari_vessel.data.phantom.make_phantom` tree (pial vessels, penetrating vessels, a capillary
mesh; exact labels) with a random voxel size, radius range, density, point-spread function, depth
attenuation and haze, imaged without noise and then corrupted here by what real stacks add:

- background structures that are *not* vessel: cell bodies (bright or dark blobs), a bright dura
  layer at the surface, dye leaking out of the vessels (a diffuse glow around them);
- uneven illumination (a smooth multiplicative field) and per-slice gain jitter;
- Poisson-Gaussian noise over two orders of magnitude of photon counts;
- a random monotone intensity transfer curve, an offset clipped at zero (many voxels exactly 0, as
  in clipped stacks), saturation of the brightest voxels, and 8-bit quantisation.

All of it flows from one seed: ``synthetic_volume(i, seed=s)`` is the same volume on every machine.
Contrast inversion is available (``invert_probability``) but off by default: the training
preprocessing subtracts each slice's median and clips at zero, which erases dark vessels, so
inverted volumes would only teach the network to call nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.data.phantom import make_phantom, poisson_gaussian, smooth_field, visible_labels
from napari_vessel.errors import InputError

__all__ = ["SyntheticConfig", "SyntheticVolume", "synthetic_volume", "GENERATOR_2", "LABEL_KINDS"]


def _range(value, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={value!r} is not two numbers (min, max)") from err
    if not (math.isfinite(a) and math.isfinite(b) and low <= a <= b <= high):
        raise InputError(f"{name}={value!r} must satisfy {low} <= min <= max <= {high}")
    return a, b


#: The label conventions a synthetic volume can come with (see ``SyntheticConfig.labels``).
LABEL_KINDS = ("exact", "visible")


@dataclass(frozen=True)
class SyntheticConfig:
    """Ranges the synthetic volumes are drawn from (validated on construction).

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Voxels per volume (each axis 4 to 512).
    spacing_z_um, spacing_xy_um : (float, float)
        Voxel size ranges in µm (z from 0.5 to 5 by default: confocal to coarse two-photon).
    radius_um : (float, float)
        Smallest capillary and largest vessel radius in µm (default 1 to 30); each volume draws
        its own range inside it, the largest radius also limited to a sixth (generator 1) or a
        quarter (generator 2) of the lateral extent.
    density : (float, float)
        Capillary length per 1000 µm³ of tissue.
    confocal_probability : float
        Share of volumes imaged with the confocal model (out-of-focus light) instead of 2PM.
    background_structures : float
        Scale of the non-vessel structures (cells, dura, dye leakage); 0 leaves them out.
    invert_probability : float
        Share of volumes whose contrast is inverted (dark vessels); see the module notes.
    dimmest : (float, float)
        Range of each volume's dimmest branch brightness relative to its brightest (dye filling
        and depth differ between vessels). Generator 1 keeps every branch within 0.7-1.
    leak_probability : float
        Share of volumes with dye leaking out of the vessels.
    leak_strength : (float, float)
        Peak of the leaked glow relative to the vessel signal (generator 2: patchy, and it can
        outshine dim vessels, as in a disrupted blood-brain barrier).
    generator : {1, 2}
        1: the generator that made the shipped pretraining (the defaults reproduce it exactly).
        2: session 6's variant: dim branches (``dimmest``), grainy vessel interiors, patchy
        leakage, vessels up to a quarter of the field wide; see :data:`GENERATOR_2` for the
        settings it was run with. Models pretrained on it scored higher on the real volumes but
        lower on the shifted phantoms (docs/training.md, session 6).
    labels : {"exact", "visible"}
        "exact": every voxel inside a tube, however faint. "visible": what a person would paint
        (:func:`napari_vessel.data.phantom.visible_labels`): each vessel's blurred extent, only where
        its light stands above the noise. The images are the same either way.
    """

    shape_zyx: tuple[int, int, int] = (24, 160, 160)
    spacing_z_um: tuple[float, float] = (0.5, 5.0)
    spacing_xy_um: tuple[float, float] = (0.4, 1.6)
    radius_um: tuple[float, float] = (1.0, 30.0)
    density: tuple[float, float] = (0.3, 2.5)
    confocal_probability: float = 0.2
    background_structures: float = 1.0
    invert_probability: float = 0.0
    dimmest: tuple[float, float] = (0.7, 0.7)
    leak_probability: float = 0.4
    leak_strength: tuple[float, float] = (0.0, 0.5)
    generator: int = 1
    labels: str = "exact"

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(s) for s in self.shape_zyx)
            ok = len(shape) == 3 and all(s == v for s, v in zip(shape, self.shape_zyx, strict=True))
        except (TypeError, ValueError):
            ok = False
        if not ok or not all(4 <= s <= 512 for s in shape):
            raise InputError(f"shape_zyx={self.shape_zyx!r} must be three whole numbers from 4 to 512")
        object.__setattr__(self, "shape_zyx", shape)
        for name, low, high in (("spacing_z_um", 0.05, 50.0), ("spacing_xy_um", 0.05, 20.0),
                                ("radius_um", 0.2, 200.0), ("density", 0.0, 50.0),
                                ("dimmest", 0.01, 1.0), ("leak_strength", 0.0, 10.0)):
            object.__setattr__(self, name, _range(getattr(self, name), name, low, high))
        for name in ("confocal_probability", "invert_probability", "leak_probability"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise InputError(f"{name}={value!r} must be a probability in [0, 1]")
        if not (isinstance(self.background_structures, int | float)
                and 0.0 <= self.background_structures <= 10.0):
            raise InputError(f"background_structures={self.background_structures!r} must be a "
                             "number in [0, 10]")
        if self.generator not in (1, 2) or isinstance(self.generator, bool):
            raise InputError(f"generator={self.generator!r} must be 1 or 2")
        if self.labels not in LABEL_KINDS:
            raise InputError(f"labels={self.labels!r} must be one of {', '.join(LABEL_KINDS)}")
        if self.generator == 1 and self.dimmest != (0.7, 0.7):
            raise InputError(f"dimmest={self.dimmest!r} needs generator=2 (generator 1 keeps "
                             "every branch within 0.7-1 of the brightest)")
        xy = self.spacing_xy_um[0] * min(shape[1:])
        if self.radius_um[0] > xy / 4:
            raise InputError(f"the smallest radius {self.radius_um[0]} µm does not fit a volume "
                             f"{xy:.0f} µm wide at the smallest pixel size; make shape_zyx larger "
                             "or radius_um smaller")

    def to_dict(self) -> dict:
        """JSON-friendly form (for model cards)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: The settings of generator 2 as session 6 ran it (``SyntheticConfig(**GENERATOR_2)``).
GENERATOR_2 = {"generator": 2, "confocal_probability": 0.3, "dimmest": (0.15, 0.8),
               "leak_probability": 0.5, "leak_strength": (0.1, 1.2)}


@dataclass(frozen=True, eq=False)
class SyntheticVolume:
    """One synthetic volume: ``image`` (float32, arbitrary units), exact ``labels`` (uint8)."""

    image: np.ndarray
    labels: np.ndarray
    spacing_zyx: tuple[float, float, float]
    params: dict


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def _blobs(shape, spacing, rng, count: int, radius_um: float) -> np.ndarray:
    """``count`` soft round blobs of about ``radius_um`` (cell bodies), peak about 1."""
    field = np.zeros(shape, np.float32)
    if count:
        idx = tuple(rng.integers(0, n, count) for n in shape)
        np.add.at(field, idx, rng.uniform(0.5, 1.0, count).astype(np.float32))
        sigma = [radius_um / s for s in spacing]
        field = ndi.gaussian_filter(field, sigma, truncate=2.5)
        peak = (2 * math.pi) ** -1.5 / float(np.prod(sigma))
        field /= np.float32(max(peak, 1e-6))
    return np.clip(field, 0, 1.5)


def _transfer(x: np.ndarray, rng: np.random.Generator, knots: int = 6) -> np.ndarray:
    """A random monotone transfer curve on [0, 1] (piecewise linear through random steps)."""
    steps = rng.gamma(2.0, 1.0, knots)
    ys = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
    xs = np.linspace(0.0, 1.0, knots + 1)
    return np.interp(x, xs, ys).astype(np.float32)


def synthetic_volume(index: int, *, seed: int = 0,
                     config: SyntheticConfig | None = None) -> SyntheticVolume:
    """The ``index``-th domain-randomised volume of the series ``seed``.

    Parameters
    ----------
    index : int
        Which volume of the series (>= 0).
    seed : int
        The series; with ``index`` it fixes everything (geometry, microscope, noise).
    config : SyntheticConfig, optional
        Ranges to draw from (defaults when None).

    Returns
    -------
    SyntheticVolume
        The image in [0, 1] (float32, 8-bit levels when ``params["quantised"]``), its exact
        labels and the drawn parameters.
    """
    cfg = config or SyntheticConfig()
    for name, value in (("index", index), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"{name}={value!r} must be a whole number >= 0")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x5E55E1]))
    dz = _loguniform(rng, *cfg.spacing_z_um)
    dxy = _loguniform(rng, *cfg.spacing_xy_um)
    spacing = np.array([dz, dxy, dxy])
    extent_xy = dxy * min(cfg.shape_zyx[1:])
    r_lo, r_hi = cfg.radius_um
    r_min = _loguniform(rng, r_lo, max(r_lo, min(3.0, r_hi)))
    v2 = cfg.generator == 2
    top = max(r_min, min(r_hi, extent_xy / (4 if v2 else 6)))
    r_max = _loguniform(rng, min(max(r_min, min(4.0, r_hi)), top), top)
    kind = "confocal" if rng.random() < cfg.confocal_probability else "2pm"
    params = dict(
        kind=kind, spacing_zyx=spacing.tolist(), radius_range=[r_min, r_max],
        density=float(rng.uniform(*cfg.density)),
        n_trees=int(rng.integers(1, 4)),
        psf_um=[_loguniform(rng, 0.5, 4.0), *[_loguniform(rng, 0.15, 1.0)] * 2],
        depth_attenuation=float(rng.uniform(0.0, 0.7)), haze=float(rng.uniform(0.0, 0.3)),
        background=float(rng.uniform(0.0, 0.2)), pial_shadow=float(rng.uniform(0.0, 0.6)),
        focus_um=_loguniform(rng, 1.0, 6.0), defocus=float(rng.uniform(0.2, 0.8)),
    )
    if v2:
        params.update(dimmest=_loguniform(rng, *cfg.dimmest), texture=float(rng.uniform(0.1, 0.7)),
                      texture_um=_loguniform(rng, 2.0, 20.0))
    visible = cfg.labels == "visible"
    phantom = make_phantom(cfg.shape_zyx, seed=int(rng.integers(2**31)), noise=False,
                           dtype="float32", keep_signals=visible, **params)
    signal, labels = phantom.image, phantom.labels
    shape = signal.shape
    b = cfg.background_structures

    # Structures that are not vessel.
    extras = {}
    if b > 0:
        cells = int(rng.poisson(b * 2e-4 * np.prod(shape)))
        cell_r = float(rng.uniform(2.0, 6.0))
        cell_gain = float(rng.uniform(-0.2, 0.5)) * b  # bright somata or dark shadows
        signal = signal + cell_gain * _blobs(shape, spacing, rng, cells, cell_r) * (labels == 0)
        leak = float(rng.uniform(*cfg.leak_strength)) * b \
            if rng.random() < cfg.leak_probability else 0.0
        if leak:
            glow = ndi.gaussian_filter(labels.astype(np.float32),
                                       [_loguniform(rng, 3.0, 15.0) / s for s in spacing])
            if v2:  # patchy, not a uniform halo
                patches = smooth_field(shape, spacing, rng, _loguniform(rng, 20.0, 80.0)) ** 2
                glow *= patches / max(float(patches.max()), 1e-6)
            signal = signal + leak * glow / max(float(glow.max()), 1e-6)
        dura = float(rng.uniform(0.1, 0.5)) * b if rng.random() < 0.15 else 0.0
        if dura:
            depth_um = np.arange(shape[0])[:, None, None] * dz
            sheet = np.exp(-depth_um / _loguniform(rng, 2.0, 15.0)).astype(np.float32)
            signal = signal + dura * sheet * (0.5 + smooth_field(shape, spacing, rng, 30.0))
        extras.update(cells=cells, cell_radius_um=cell_r, cell_gain=cell_gain, leak=leak,
                      dura=dura)

    # Illumination, noise and the detector.
    uneven = float(rng.uniform(0.0, 0.7))
    lit = 1.0 - uneven * smooth_field(shape, spacing, rng, 150.0)
    signal = signal * lit
    jitter = float(rng.uniform(0.0, 0.25))
    slice_gain = np.exp(jitter * rng.standard_normal(shape[0])).astype(np.float32)[:, None, None]
    signal = signal * slice_gain
    photons = _loguniform(rng, 5.0, 300.0)
    read_noise = float(rng.uniform(0.0, 0.08))
    if visible:
        labels = visible_labels(labels, phantom.vessel_signal * lit * slice_gain, np.clip(signal, 0, None),
                                spacing, params["psf_um"], photons, read_noise)
    signal = poisson_gaussian(np.clip(signal, 0, None), photons, read_noise, rng)
    top = float(np.percentile(signal, rng.uniform(99.0, 100.0)))
    x = np.clip(signal / max(top, 1e-6), 0, None)
    gamma = _loguniform(rng, 0.6, 1.7)
    x = _transfer(np.clip(x, 0, 1) ** gamma, rng) if rng.random() < 0.5 else np.clip(x, 0, 1) ** gamma
    offset = float(rng.uniform(0.0, 0.25)) if rng.random() < 0.3 else 0.0
    x = np.clip((x - offset) / (1 - offset), 0, 1)
    saturate = float(rng.uniform(0.75, 1.0))
    x = np.clip(x / saturate, 0, 1)
    inverted = bool(rng.random() < cfg.invert_probability)
    if inverted:
        x = 1.0 - x
    quantised = bool(rng.random() < 0.5)
    if quantised:
        x = np.rint(x * 255) / 255
    params.update(extras, uneven=uneven, slice_jitter=jitter, photons=photons,
                  read_noise=read_noise, gamma=gamma, offset=offset, saturate=saturate,
                  inverted=inverted, quantised=quantised, index=int(index), seed=int(seed))
    return SyntheticVolume(x.astype(np.float32), labels.astype(np.uint8),
                           tuple(spacing.tolist()), params)
