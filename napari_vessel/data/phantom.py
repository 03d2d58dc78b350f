"""Synthetic two-photon and confocal vessel volumes with exact ground truth.

A phantom is a tree of straight tube segments (capsules) grown in micrometres: pial vessels run
along the surface (z = 0 is the top of the stack), penetrating vessels dive from them, and
capillaries branch off both. Radii shrink at branch points by Murray's law (r0^3 = r1^3 + r2^3)
down to the smallest radius. Tubes are round in µm, so with anisotropic voxels they cover fewer
slices than pixels. The ground truth is exact: a voxel is vessel when the distance from its
centre to a segment is at most that segment's radius.

The image then goes through a simple microscope: point-spread blur, depth attenuation, a smooth
background haze, shadows under pial vessels, Poisson-Gaussian noise, and a detector response
(gamma, gain, bit depth). The confocal kind also blurs each slice with light from the slices
around it (defocus), so multi-focus fusion has something to recover.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft
from scipy import ndimage as ndi

from napari_vessel.data.tubes import CAPILLARY, PIAL, centerline_mask, draw_tubes, grow_trees
from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_spacing

__all__ = ["Phantom", "make_phantom", "shifted", "draw_tubes", "poisson_gaussian",
           "visible_labels", "KINDS"]

#: The kinds of microscope a phantom can imitate.
KINDS = ("2pm", "confocal")
#: Output dtypes and the value that an intensity of 1.0 maps to (uint16 holds a 12-bit detector).
_FULL_SCALE = {"uint8": 255.0, "uint16": 4095.0, "float32": 1.0}
#: Parameters that change only how the vessels are imaged, never where they are.
_IMAGING = ("kind", "depth_attenuation", "haze", "background", "noise", "photons", "read_noise",
            "pial_shadow", "contrast", "gamma", "dtype", "psf_um", "focus_um", "defocus",
            "noise_seed", "dimmest", "texture", "texture_um")


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic volume and its exact ground truth.

    Attributes
    ----------
    image : ndarray, shape (Z, Y, X)
        The rendered stack, in the requested dtype.
    labels : ndarray of uint8, shape (Z, Y, X)
        1 inside the tubes (distance to a segment <= its radius), 0 elsewhere.
    centerlines : ndarray of uint8, shape (Z, Y, X)
        1 on the voxels nearest to each segment's axis that also lie inside ``labels``.
    radius : ndarray of float32, shape (Z, Y, X)
        Tube radius in µm on the centreline voxels (largest one where tubes cross), 0 elsewhere.
    segments : ndarray of float64, shape (N, 9)
        One row per segment: start z, y, x and end z, y, x in µm, radius in µm, index of the
        parent segment (-1 for a root), and kind (0 pial, 1 penetrating, 2 capillary).
    spacing_zyx : tuple of 3 float
        Voxel size in µm.
    params : dict
        JSON-serialisable arguments of :func:`make_phantom`; ``make_phantom(**params)`` gives the
        same phantom again.
    in_focus : ndarray of float32, shape (Y, X), or None
        Confocal only: the all-in-focus reference, the maximum projection of the sharp stack
        without noise, in the same intensity units as ``image``.
    vessel_signal, clean_signal : ndarray of float32, shape (Z, Y, X), or None
        With ``make_phantom(..., keep_signals=True)``: the vessels' own light and the whole
        signal, both without noise and before the detector (the units of ``photons``); see
        :func:`visible_labels`.
    """

    image: np.ndarray
    labels: np.ndarray
    centerlines: np.ndarray
    radius: np.ndarray
    segments: np.ndarray
    spacing_zyx: tuple[float, float, float]
    params: dict
    in_focus: np.ndarray | None = None
    vessel_signal: np.ndarray | None = None
    clean_signal: np.ndarray | None = None

    @property
    def vessel_fraction(self) -> float:
        """Fraction of voxels inside the vessels."""
        return float(self.labels.mean())


def _number(value: Any, name: str, low: float = 0.0, high: float = math.inf,
            *, open_low: bool = False, open_high: bool = False) -> float:
    """Return ``value`` as a float in the given range or raise :class:`InputError`."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={value!r} is not a number") from err
    too_low = number <= low if open_low else number < low
    too_high = number >= high if open_high else number > high
    if not math.isfinite(number) or too_low or too_high:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise InputError(f"{name}={value!r} is out of range; give a number in {lo}{low}, {high}{hi}")
    return number


def _whole(value: Any, name: str) -> int:
    """Return ``value`` as an int >= 0 or raise :class:`InputError`."""
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={value!r} must be a whole number >= 0")
    return int(value)


def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
        ok = len(dims) == 3 and all(d == s for d, s in zip(dims, shape, strict=False))
    except (TypeError, ValueError):
        ok = False
    if not ok or min(dims) < 1:
        raise InputError(f"shape {shape!r} is not three positive whole numbers (z, y, x), "
                         "e.g. (64, 256, 256)")
    if math.prod(dims) > 2**30:
        raise InputError(f"shape {dims} has more than 2**30 voxels; make a smaller phantom")
    return dims


def _check_tubes(tubes: Any) -> list[list]:
    out = []
    for i, tube in enumerate(tubes):
        try:
            start, end, radius = tube
            start, end = [float(v) for v in start], [float(v) for v in end]
            ok = len(start) == 3 and len(end) == 3 and all(map(math.isfinite, start + end))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"tube {i} is {tube!r}; give ((z0, y0, x0), (z1, y1, x1), radius) in µm")
        out.append([start, end, _number(radius, f"radius of tube {i}", open_low=True)])
    return out


def smooth_field(shape: tuple, spacing: np.ndarray, rng: np.random.Generator,
                  scale_um: float) -> np.ndarray:
    """A smooth random field in [0, 1]: Gaussian bumps on a coarse grid, built axis by axis."""
    mats = []
    for n, s in zip(shape, spacing, strict=True):
        k = max(2, math.ceil(n * s / scale_um) + 1)
        centres = np.linspace(-0.5 * scale_um, n * s + 0.5 * scale_um, k)
        m = np.exp(-0.5 * ((np.arange(n)[:, None] * s - centres) / (centres[1] - centres[0])) ** 2)
        mats.append((m / m.sum(axis=1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal(tuple(m.shape[1] for m in mats)).astype(np.float32)
    field = np.einsum("ia,jb,kc,abc->ijk", *mats, coarse, optimize=True)
    span = float(field.max() - field.min())
    return (field - field.min()) / span if span > 0 else np.zeros(shape, np.float32)


def _defocus(sharp: np.ndarray, spacing: np.ndarray, focus_um: float,
             defocus: float) -> np.ndarray:
    """Slice k = sum over j of w(|j-k|) * Gaussian blur of slice j, sigma = defocus * |j-k| dz.

    Weights fall as exp(-(dz |j-k| / focus_um)^2 / 2) and sum to one over a full window. The blur
    is applied in Fourier space per slice (transfer function exp(-2 pi^2 sigma^2 f^2)).
    """
    nz, ny, nx = sharp.shape
    reach = int(min(nz - 1, math.ceil(3 * focus_um / spacing[0])))
    dist = np.arange(reach + 1) * spacing[0]
    weight = np.exp(-0.5 * (dist / focus_um) ** 2)
    weight /= weight[0] + 2 * weight[1:].sum()
    sigma = defocus * dist
    pad = int(math.ceil(3 * sigma[-1] / spacing[1:].min()))
    padded = np.pad(sharp, ((0, 0), (pad, pad), (pad, pad)), mode="reflect") if pad else sharp
    py, px = padded.shape[1:]
    f2 = fft.fftfreq(py, spacing[1])[:, None] ** 2 + fft.rfftfreq(px, spacing[2])[None, :] ** 2
    spectrum = fft.rfft2(padded, axes=(1, 2))
    out = np.zeros_like(spectrum)
    for d in range(reach + 1):
        h = (weight[d] * np.exp(-2 * math.pi**2 * sigma[d] ** 2 * f2)).astype(np.float32)
        if d == 0:
            out += h * spectrum
        else:
            out[d:] += h * spectrum[:-d]
            out[:-d] += h * spectrum[d:]
    blurred = fft.irfft2(out, s=(py, px), axes=(1, 2))[:, pad:pad + ny, pad:pad + nx]
    return np.clip(blurred, 0, None).astype(np.float32)


def poisson_gaussian(signal: np.ndarray, photons: float | None, read_noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Detector noise: Poisson shot noise at ``photons`` per unit intensity (None: none), then
    Gaussian read noise of standard deviation ``read_noise``; float32, same shape."""
    out = np.asarray(signal, dtype=np.float32)
    if photons is not None:
        out = rng.poisson(np.clip(out, 0, None) * photons).astype(np.float32)
        out /= np.float32(photons)
    if read_noise > 0:
        out = out + np.float32(read_noise) * rng.standard_normal(out.shape, dtype=np.float32)
    return out


def _detector(signal: np.ndarray, gamma: float, contrast: float, dtype: str) -> np.ndarray:
    """Detector response: clip at 0, gamma, gain, scale to the dtype's full range (not rounded)."""
    out = np.clip(signal, 0, None, dtype=np.float32)
    if gamma != 1:
        out **= np.float32(gamma)
    out *= np.float32(contrast * _FULL_SCALE[dtype])
    return out


def make_phantom(shape: Sequence[int] = (64, 256, 256), *, kind: str = "2pm", seed: int | None = 0,
                 spacing_zyx: Sequence[float] = (2.0, 1.0, 1.0), n_trees: int | None = None,
                 radius_range: Sequence[float] = (1.5, 12.0), density: float = 0.8,
                 tubes: Sequence | None = None, depth_attenuation: float | None = None,
                 haze: float = 0.1, background: float = 0.05, noise: bool = True,
                 photons: float | None = 40.0, read_noise: float = 0.02,
                 pial_shadow: bool | float = True, contrast: float = 1.0, gamma: float = 1.0,
                 dtype: Any = np.uint8, psf_um: Sequence[float] = (1.0, 0.3, 0.3),
                 focus_um: float = 3.0, defocus: float = 0.5,
                 noise_seed: int | None = None, dimmest: float = 0.7, texture: float = 0.25,
                 texture_um: float = 20.0, keep_signals: bool = False) -> Phantom:
    """Make a synthetic vessel stack with exact ground truth.

    Parameters
    ----------
    shape : tuple of 3 int
        Shape (Z, Y, X) in voxels; z = 0 is the brain surface.
    kind : {"2pm", "confocal"}
        Two-photon (every slice sharp) or confocal (each slice sharp only near its plane).
    seed : int or None
        Seeds geometry, appearance and noise. None draws one (recorded in ``params``).
    spacing_zyx : tuple of 3 float
        Voxel size in µm (z, y, x). Tubes are round in µm, so a capillary thinner than half the
        z spacing that runs between two slices is absent from ``labels`` there (as sampled).
    n_trees : int, optional
        Number of vessel trees, each rooted in a pial vessel entering from the side. Default:
        about one per 128 µm of lateral extent.
    radius_range : (float, float)
        Radius in µm of the thinnest capillaries and of the thickest pial vessel.
    density : float
        Capillary length budget in µm per 1000 µm³ of tissue (cortex: about 0.5 to 1).
    tubes : sequence of ((z0, y0, x0), (z1, y1, x1), radius), optional
        Explicit tubes in µm instead of random trees (e.g. one vessel at a known place); they
        count as capillaries, so they cast no pial shadow.
    depth_attenuation : float in [0, 1), optional
        Fraction of the signal lost, exponentially, from the first to the last slice. Default 0.6
        for 2PM, 0.3 for confocal.
    haze : float
        Amplitude of the smooth background field (intensity units; vessels are about 0.7-1).
    background : float
        Constant tissue background (intensity units).
    noise : bool
        False renders the noise-free image (``photons`` and ``read_noise`` are then unused).
    photons : float or None
        Photons per unit intensity for Poisson noise (fewer is noisier); None for no shot noise.
    read_noise : float
        Standard deviation of the Gaussian read noise (intensity units).
    pial_shadow : bool or float
        Fraction of light lost under the centre of the thickest pial vessel (True means 0.5).
    contrast, gamma : float
        Detector response: intensity ``contrast * signal ** gamma``; change them (or call
        :func:`shifted`) to imitate another microscope.
    dtype : {uint8, uint16, float32}
        Output type. Intensity 1 maps to 255 (uint8), 4095 (uint16, a 12-bit detector) or 1.0;
        integers saturate.
    psf_um : tuple of 3 float
        Gaussian sigma of the point-spread function in µm (z, y, x); zeros for none.
    focus_um, defocus : float
        Confocal only: depth of field (sigma of the slice weights, µm) and blur growth (µm of
        Gaussian sigma per µm out of focus).
    noise_seed : int, optional
        Seed of the noise alone (defaults to one derived from ``seed``).
    dimmest : float
        Brightness of the dimmest branch relative to the brightest (0 < dimmest <= 1; each
        branch draws its own between it and 1). Labels do not depend on it.
    texture, texture_um : float
        Depth (0 to 1) and scale (µm) of the mottling inside the vessels (red blood cells and flow
        streaks darken the dyed plasma unevenly; large vessels look grainy inside).
    keep_signals : bool
        Also return the noise-free vessel light and whole signal (``Phantom.vessel_signal``,
        ``Phantom.clean_signal``) for :func:`visible_labels`; not part of ``params``.

    Returns
    -------
    Phantom
        The image, exact labels, centrelines, radii, segments and the parameters used.

    Examples
    --------
    >>> ph = make_phantom((16, 64, 64), seed=1)
    >>> ph.image.shape, ph.labels.dtype
    ((16, 64, 64), dtype('uint8'))
    """
    dims = _check_shape(shape)
    kind_key = str(kind).lower()
    if kind_key not in KINDS:
        close = difflib.get_close_matches(kind_key, KINDS, n=1, cutoff=0.3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown phantom kind {kind!r}: choose one of {', '.join(KINDS)}{hint}")
    spacing = np.asarray(check_spacing(spacing_zyx, 3))
    try:
        r_min, r_max = (float(v) for v in radius_range)
    except (TypeError, ValueError) as err:
        raise InputError(f"radius_range {radius_range!r} is not two numbers (min, max) in µm") from err
    if not (0 < r_min <= r_max < math.inf):
        raise InputError(f"radius_range {radius_range!r} must be 0 < min <= max, in µm")
    try:
        dtype_name = np.dtype(dtype).name
    except TypeError:
        dtype_name = str(dtype)
    if dtype_name not in _FULL_SCALE:
        raise InputError(f"dtype {dtype!r} is not supported; choose uint8, uint16 or float32")
    extent = np.array(dims) * spacing
    if n_trees is None:
        n_trees = max(1, round(math.sqrt(extent[1] * extent[2]) / 128))
    n_trees = _whole(n_trees, "n_trees")
    if depth_attenuation is None:
        depth_attenuation = 0.6 if kind_key == "2pm" else 0.3
    shadow = 0.5 if pial_shadow is True else pial_shadow or 0.0
    shadow = _number(shadow, "pial_shadow", 0.0, 1.0, open_high=True)
    numbers = dict(density=_number(density, "density"),
                   depth_attenuation=_number(depth_attenuation, "depth_attenuation", 0, 1,
                                             open_high=True),
                   haze=_number(haze, "haze"), background=_number(background, "background"),
                   photons=None if photons is None else _number(photons, "photons", open_low=True),
                   read_noise=_number(read_noise, "read_noise"),
                   contrast=_number(contrast, "contrast", open_low=True),
                   gamma=_number(gamma, "gamma", open_low=True),
                   focus_um=_number(focus_um, "focus_um", open_low=True),
                   defocus=_number(defocus, "defocus"),
                   dimmest=_number(dimmest, "dimmest", 0.0, 1.0, open_low=True),
                   texture=_number(texture, "texture", 0.0, 1.0),
                   texture_um=_number(texture_um, "texture_um", open_low=True))
    psf = [_number(s, "psf_um") for s in psf_um]
    if len(psf) != 3:
        raise InputError(f"psf_um {psf_um!r} must be three sigmas in µm (z, y, x)")
    tube_list = None if tubes is None else _check_tubes(tubes)
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else _whole(seed, "seed")
    noise_seed = None if noise_seed is None else _whole(noise_seed, "noise_seed")
    params = dict(shape=list(dims), kind=kind_key, seed=seed, spacing_zyx=spacing.tolist(),
                  n_trees=n_trees, radius_range=[r_min, r_max], tubes=tube_list,
                  noise=bool(noise), pial_shadow=shadow, dtype=dtype_name, psf_um=psf,
                  noise_seed=noise_seed, **numbers)
    geometry_rng, look_rng, noise_rng = (np.random.default_rng(s) for s in
                                         np.random.SeedSequence(seed).spawn(3))
    if noise_seed is not None:
        noise_rng = np.random.default_rng(noise_seed)

    # Geometry and exact ground truth.
    if tube_list is None:
        budget = numbers["density"] * float(np.prod(extent)) / 1000.0
        segments, shade = grow_trees(geometry_rng, extent, n_trees, r_min, r_max, budget,
                                     numbers["dimmest"])
    else:
        segments = np.array([[*a, *b, r, -1, CAPILLARY] for a, b, r in tube_list]).reshape(-1, 9)
        shade = np.ones(len(segments), dtype=np.float32)
    labels, vessels, pial = draw_tubes(dims, segments, spacing, shade,
                                       kinds_for_mask=(PIAL,) if shadow > 0 else ())
    centerlines, radius = centerline_mask(dims, segments, spacing, labels)

    # Optics: texture, point-spread blur, haze, depth attenuation, pial shadows.
    vessels *= 1.0 - numbers["texture"] * smooth_field(dims, spacing, look_rng,
                                                       numbers["texture_um"])
    if any(psf):
        sigma_px = [s / d for s, d in zip(psf, spacing, strict=True)]
        vessels = ndi.gaussian_filter(vessels, sigma_px, truncate=3.0)
    own = vessels.copy() if keep_signals else None  # the vessels' own light, followed to the end
    signal = vessels + np.float32(numbers["background"])
    if numbers["haze"] > 0:
        signal += np.float32(numbers["haze"]) * smooth_field(dims, spacing, look_rng, 60.0)
    depth = np.arange(dims[0]) / max(dims[0] - 1, 1)
    falloff = np.exp(math.log1p(-numbers["depth_attenuation"]) * depth).astype(np.float32)
    signal *= falloff[:, None, None]
    if shadow > 0 and pial.any():
        mu = -math.log1p(-shadow) / (2 * r_max)  # Beer-Lambert through the pial vessel
        above = np.cumsum(pial, axis=0, dtype=np.float32) - pial  # pial voxels above, exclusive
        transmission = np.exp(-mu * spacing[0] * above)
        transmission = ndi.gaussian_filter(transmission, (0, 2 / spacing[1], 2 / spacing[2]))
        signal *= transmission
        if own is not None:
            own *= transmission
    if own is not None:
        own *= falloff[:, None, None]
    in_focus = None
    if kind_key == "confocal":
        in_focus = _detector(signal.max(axis=0), numbers["gamma"], numbers["contrast"], dtype_name)
        signal = _defocus(signal, spacing, numbers["focus_um"], numbers["defocus"])
        if own is not None:
            own = _defocus(own, spacing, numbers["focus_um"], numbers["defocus"])
    clean = signal.copy() if keep_signals else None

    # Detection: Poisson-Gaussian noise, gamma, gain, quantisation.
    if noise:
        signal = poisson_gaussian(signal, numbers["photons"], numbers["read_noise"], noise_rng)
    image = _detector(signal, numbers["gamma"], numbers["contrast"], dtype_name)
    if dtype_name != "float32":
        image = np.clip(np.rint(image), 0, np.iinfo(dtype_name).max).astype(dtype_name)
    return Phantom(image=image, labels=labels.astype(np.uint8), centerlines=centerlines,
                   radius=radius, segments=segments, spacing_zyx=tuple(spacing.tolist()),
                   params=params, in_focus=in_focus, vessel_signal=own, clean_signal=clean)


def visible_labels(labels: np.ndarray, vessel_signal: np.ndarray, clean_signal: np.ndarray,
                   spacing_zyx: Sequence[float], psf_um: Sequence[float], photons: float | None,
                   read_noise: float, *, snr: float = 3.0) -> np.ndarray:
    """Labels as a person would paint them: the vessels' visible extent, where they can be seen.

    Exact labels stop at each tube's radius and include branches lost in the noise. A person
    paints what stands out: the blurred vessel out to half its local peak (wider than the tube
    along the blurred axis), and only where the vessel's own light beats the noise. A voxel is
    kept when (a) it is inside a tube or its vessel light is at least half the highest vessel
    light within the blur's reach, and (b) the vessel light summed over the 5 x 5 pixels around
    it in its slice is at least ``snr`` times the noise of that sum (the Rose criterion: an
    object is seen when its signal over its area is 3-5 noise units; the noise of one voxel is
    ``sqrt(clean / photons + read_noise**2)``). Holes of up to two voxels that this leaves
    inside a tube (dark mottling) are filled.

    Parameters
    ----------
    labels : ndarray
        Exact labels (non-zero inside the tubes).
    vessel_signal, clean_signal : ndarray of float
        The vessels' own light and the whole signal, noise-free, in the units of ``photons``
        (:attr:`Phantom.vessel_signal`, :attr:`Phantom.clean_signal`), same shape as ``labels``.
    spacing_zyx, psf_um : three floats
        Voxel size and point-spread sigma in µm.
    photons : float or None
        Photons per unit signal (None: no shot noise).
    read_noise : float
        Gaussian read noise, same units as the signal.
    snr : float
        Vessel light over noise needed over a 5 x 5 patch (> 0; default 3).

    Returns
    -------
    ndarray of uint8
        1 where a person would paint vessel.
    """
    shapes = {np.shape(labels), np.shape(vessel_signal), np.shape(clean_signal)}
    if len(shapes) != 1 or len(np.shape(labels)) != 3:
        raise InputError(f"labels and signals must be 3-D arrays of one shape, got {sorted(shapes)}")
    spacing = [_number(s, "spacing_zyx", open_low=True) for s in spacing_zyx]
    psf = [_number(s, "psf_um") for s in psf_um]
    snr = _number(snr, "snr", open_low=True)
    own = np.asarray(vessel_signal, dtype=np.float32)
    variance = np.float32(_number(read_noise, "read_noise") ** 2)
    if photons is not None:
        variance = np.clip(np.asarray(clean_signal, np.float32), 0, None) / np.float32(
            _number(photons, "photons", open_low=True)) + variance
    patch = (1, 5, 5)  # sums over the patch: light 25 x mean, noise sqrt(25 x mean variance)
    seen = 5.0 * ndi.uniform_filter(own, patch) >= np.float32(snr) * np.sqrt(
        ndi.uniform_filter(np.broadcast_to(variance, own.shape).astype(np.float32), patch))
    reach = [2 * math.ceil((3 * p + 2.0) / d) + 1 for p, d in zip(psf, spacing, strict=True)]
    extent = (labels > 0) | (own >= 0.5 * ndi.maximum_filter(own, size=reach))
    painted = extent & seen & (own > 0)
    closed = ndi.binary_closing(painted, ndi.generate_binary_structure(3, 1), iterations=2)
    return (painted | (closed & (labels > 0))).astype(np.uint8)


def shifted(phantom: Phantom, *, seed: int = 1, strength: float = 1.0, **changes: Any) -> Phantom:
    """The same vessels seen through another microscope (for fine-tuning benchmarks).

    Geometry and labels stay identical; gain, gamma, photon count, read noise, background, haze
    and depth attenuation are drawn at random around the original values.

    Parameters
    ----------
    phantom : Phantom
        The phantom to re-image.
    seed : int
        Seed of the new microscope (its settings and its noise).
    strength : float
        How far the settings move (0 keeps them; 1 is a typical change of microscope).
    **changes
        Imaging parameters of :func:`make_phantom` to set instead of drawing them.

    Returns
    -------
    Phantom
        Same ``labels``, new ``image``; ``params`` holds the new settings.
    """
    unknown = sorted(set(changes) - set(_IMAGING))
    if unknown:
        raise InputError(f"shifted() cannot change {', '.join(unknown)}: only imaging parameters "
                         f"({', '.join(_IMAGING)}) keep the same vessels")
    s = _number(strength, "strength")
    rng = np.random.default_rng(seed)
    p = dict(phantom.params)
    drawn = dict(
        contrast=p["contrast"] * float(np.exp(rng.normal(0, 0.5 * s))),
        gamma=p["gamma"] * float(np.exp(rng.normal(0, 0.25 * s))),
        photons=None if p["photons"] is None else p["photons"] * float(np.exp(rng.normal(0, 0.7 * s))),
        read_noise=p["read_noise"] * float(np.exp(rng.normal(0, 0.5 * s))),
        background=p["background"] * float(np.exp(rng.normal(0, 0.5 * s))),
        haze=p["haze"] * float(np.exp(rng.normal(0, 0.5 * s))),
        depth_attenuation=float(np.clip(p["depth_attenuation"] + rng.normal(0, 0.15 * s), 0, 0.9)),
        noise_seed=int(rng.integers(2**31)),
    )
    return make_phantom(**{**p, **drawn, **changes})
