"""Pipeline steps: each operation as a frozen dataclass with a ``name`` and typed parameters.

Every step works in three ways:

``step.apply(array, spacing_zyx=None)``
    On a whole NumPy stack (or on a single 2D slice for the steps that allow it).
``step.fit(data, spacing_zyx)`` then ``step.transform(block, state, z0, n_z, spacing_zyx)``
    How :class:`~napari_vessel.preprocess.pipeline.Pipeline` runs it chunk by chunk on dask
    arrays: ``fit`` measures the global statistics once (on the whole stack), ``transform`` maps
    a block of whole slices starting at slice ``z0`` (with ``halo(spacing)`` extra slices on each
    side for filters that look along z). ``apply`` is exactly ``transform(x, fit(x))``.
``step.preview(plane)``
    A fast 2D version for a live preview of one slice or a projection (3D filters use their 2D
    analogue; steps that need the whole stack return the plane unchanged).

Field metadata (``help``, ``min``, ``max``, ``choices``) describes each parameter for forms.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.preprocess import depth as _depth
from napari_vessel.preprocess import fusion as _fusion
from napari_vessel.preprocess import median as _median
from napari_vessel.preprocess import normalize as _norm
from napari_vessel.preprocess import scaling as _scaling
from napari_vessel.preprocess._base import Step, _choice, _flag, _meta
from napari_vessel.preprocess._common import as_image, check_number, plane_map
from napari_vessel.preprocess.clahe import MODES as CLAHE_MODES
from napari_vessel.preprocess.clahe import NR_OF_GRAY, apply_clahe, clahe_kernel, equalize_clahe, fit_clahe

__all__ = ["Step", "MedianSubtract", "Median3D", "DepthCorrect", "HistogramScale", "Clahe",
           "FocusStack", "ZScore", "Normalize", "STEPS", "make_step", "step_from_dict"]


@dataclass(frozen=True)
class MedianSubtract(Step):
    """Subtract each slice's median (paper 001, section 4.2)."""

    name: ClassVar[str] = "median_subtract"
    title: ClassVar[str] = "Subtract slice medians"
    clip: bool = field(default=True, metadata=_meta("set negative values to 0"))

    def __post_init__(self) -> None:
        self._set("clip", _flag(self.clip, "median_subtract.clip"))

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return plane_map(lambda planes: _median._subtract_block(planes, self.clip), block)


@dataclass(frozen=True)
class Median3D(Step):
    """3D median filter (paper 001, section 4.2: size 3)."""

    name: ClassVar[str] = "median3d"
    title: ClassVar[str] = "3D median filter"
    size: int = field(default=3, metadata=_meta("odd kernel width in voxels", min=1, max=15))

    def __post_init__(self) -> None:
        size = int(check_number(self.size, "median3d.size", low=1, integer=True))
        if size % 2 == 0:
            raise InputError(f"median3d.size must be odd (1, 3, 5, ...), not {size}")
        self._set("size", size)

    def needs_3d(self) -> bool:
        return True

    def halo(self, spacing_zyx=None) -> int:
        return self.size // 2

    def fit(self, data, spacing_zyx=None):
        _median._check_size(self.size, tuple(data.shape))

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        if self.size == 1:
            return block.copy()
        if self.size == 3:
            return _median.median3x3x3(block)
        return ndi.median_filter(block, size=self.size, mode="reflect")

    def preview(self, plane, spacing_zyx=None):
        return _median.median_filter2d(plane, self.size)


@dataclass(frozen=True)
class DepthCorrect(Step):
    """Bring every slice's background and foreground levels to a common scale."""

    name: ClassVar[str] = "depth_correct"
    title: ClassVar[str] = "Correct depth attenuation"
    background: float = field(default=5.0, metadata=_meta("background percentile", min=0, max=100))
    foreground: float = field(default=99.5, metadata=_meta("vessel percentile", min=0, max=100))
    smooth: int = field(default=5, metadata=_meta("running median of levels (slices)", min=1))
    max_gain: float = field(default=10.0, metadata=_meta("largest gain of a slice", min=1))

    def __post_init__(self) -> None:
        values = _depth._check_params(self.background, self.foreground, self.smooth,
                                      self.max_gain)
        for name, value in zip(("background", "foreground", "smooth", "max_gain"), values,
                               strict=True):
            self._set(name, value)

    def needs_3d(self) -> bool:
        return True

    def fit(self, data, spacing_zyx=None):
        return _depth.depth_levels(data, background=self.background, foreground=self.foreground,
                                   smooth=self.smooth, max_gain=self.max_gain)

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return _depth.apply_depth_levels(block, state, z0)

    def preview(self, plane, spacing_zyx=None):
        return as_image(plane, ndims=(2,), what="a preview").copy()


@dataclass(frozen=True)
class HistogramScale(Step):
    """Multiply by a factor, given or estimated against a reference intensity profile."""

    name: ClassVar[str] = "histogram_scale"
    title: ClassVar[str] = "Scale intensities to a reference"
    factor: float | None = field(default=None, metadata=_meta("factor (empty: estimate)", min=0))
    reference_percentiles: tuple[float, ...] = field(
        default=(), metadata=_meta("percentile levels of the reference profile"))
    reference_values: tuple[float, ...] = field(
        default=(), metadata=_meta("reference intensities at those levels"))
    method: str = field(default="histogram", metadata=_meta(
        "how to estimate the factor", choices=_scaling.METHODS))

    def __post_init__(self) -> None:
        if self.factor is not None:
            self._set("factor", check_number(self.factor, "histogram_scale.factor", low=0,
                                             low_open=True))
        self._set("method", _choice(self.method, "histogram_scale.method", _scaling.METHODS))
        if self.reference_percentiles or self.reference_values:
            profile = _scaling.check_profile({"percentiles": self.reference_percentiles,
                                              "values": self.reference_values})
            self._set("reference_percentiles", tuple(profile["percentiles"]))
            self._set("reference_values", tuple(profile["values"]))
        elif self.factor is None:
            raise InputError("histogram_scale needs a factor or a reference profile; give "
                             "factor=16, or use HistogramScale.from_reference(image_or_profile)")

    @classmethod
    def from_reference(cls, reference: Any, *, method: str = "histogram",
                       factor: float | None = None) -> HistogramScale:
        """A step that scales to ``reference`` (an image, or a profile dict from a model card)."""
        profile = (_scaling.check_profile(reference) if isinstance(reference, dict)
                   else _scaling.intensity_profile(reference))
        return cls(factor=factor, reference_percentiles=tuple(profile["percentiles"]),
                   reference_values=tuple(profile["values"]), method=method)

    @property
    def profile(self) -> dict | None:
        """The reference intensity profile, or None."""
        if not self.reference_percentiles:
            return None
        return {"percentiles": list(self.reference_percentiles),
                "values": list(self.reference_values)}

    def fit(self, data, spacing_zyx=None) -> float:
        if self.factor is not None:  # the user's override wins
            return self.factor
        return _scaling.estimate_scale_factor(data, self.profile, method=self.method)

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        out = block * np.float32(state)
        if not (np.isfinite(out.max()) and np.isfinite(out.min())):
            raise InputError(f"scaling by {state:g} exceeds the float32 range; use a smaller "
                             "factor")
        return out


@dataclass(frozen=True)
class Clahe(Step):
    """Contrast-limited adaptive histogram equalisation (paper 003, section II.A)."""

    name: ClassVar[str] = "clahe"
    title: ClassVar[str] = "CLAHE (adaptive contrast)"
    kernel_size: int | None = field(default=None, metadata=_meta(
        "tile size in pixels along x (empty: 1/8 of the slice)", min=2))
    clip_limit: float = field(default=0.01, metadata=_meta("contrast limit", min=0, max=1))
    nbins: int = field(default=256, metadata=_meta("grey-level bins", min=2, max=4096))
    mode: str = field(default="2d", metadata=_meta("per slice or whole stack",
                                                   choices=CLAHE_MODES))

    def __post_init__(self) -> None:
        if self.kernel_size is not None:
            self._set("kernel_size", int(check_number(self.kernel_size, "clahe.kernel_size",
                                                      low=1, integer=True)))
        self._set("clip_limit", check_number(self.clip_limit, "clahe.clip_limit", low=0, high=1))
        self._set("nbins", int(check_number(self.nbins, "clahe.nbins", low=2,
                                            high=NR_OF_GRAY, integer=True)))
        self._set("mode", _choice(self.mode, "clahe.mode", CLAHE_MODES))

    def needs_3d(self) -> bool:
        return self.mode == "3d"

    def context(self, shape, spacing_zyx=None) -> int:
        if self.mode == "2d":
            return 0
        return clahe_kernel(tuple(shape), self.kernel_size, "3d", spacing_zyx)[0]

    def fit(self, data, spacing_zyx=None):
        return fit_clahe(data, kernel_size=self.kernel_size, clip_limit=self.clip_limit,
                                nbins=self.nbins, mode=self.mode, spacing_zyx=spacing_zyx)

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return apply_clahe(block, state, z0, n_z)

    def preview(self, plane, spacing_zyx=None):
        return equalize_clahe(plane, kernel_size=self.kernel_size, clip_limit=self.clip_limit,
                            nbins=self.nbins, mode="2d")


@dataclass(frozen=True)
class FocusStack(Step):
    """Sliding-window multi-focus fusion: sharpen every slice from its neighbours (paper 003)."""

    name: ClassVar[str] = "focus_stack"
    title: ClassVar[str] = "Multi-focus sharpening"
    depth_window: int = field(default=5, metadata=_meta("odd number of slices fused", min=1))
    measure: str = field(default="laplacian", metadata=_meta("focus measure",
                                                             choices=_fusion.MEASURES))
    window: int = field(default=9, metadata=_meta("focus window in pixels", min=1))
    smooth: int = field(default=5, metadata=_meta("decision-map median size", min=0))

    def __post_init__(self) -> None:
        depth_window = int(check_number(self.depth_window, "focus_stack.depth_window", low=1,
                                        integer=True))
        if depth_window % 2 == 0:
            raise InputError(f"focus_stack.depth_window must be odd, not {depth_window}")
        self._set("depth_window", depth_window)
        self._set("measure", _choice(self.measure, "focus_stack.measure", _fusion.MEASURES))
        self._set("window", int(check_number(self.window, "focus_stack.window", low=1,
                                             integer=True)))
        self._set("smooth", int(check_number(self.smooth, "focus_stack.smooth", low=0,
                                             integer=True)))

    def needs_3d(self) -> bool:
        return True

    def halo(self, spacing_zyx=None) -> int:
        return self.depth_window // 2

    def fit(self, data, spacing_zyx=None):
        _fusion._check(self.measure, self.window, self.smooth, tuple(data.shape))

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return _fusion.focus_stack_block(block, depth_window=self.depth_window,
                                         measure=self.measure, window=self.window,
                                         smooth=self.smooth)

    def preview(self, plane, spacing_zyx=None):
        return as_image(plane, ndims=(2,), what="a preview").copy()


@dataclass(frozen=True)
class ZScore(Step):
    """Subtract the mean, divide by the standard deviation."""

    name: ClassVar[str] = "zscore"
    title: ClassVar[str] = "Z-score"

    def fit(self, data, spacing_zyx=None):
        return _norm.zscore_stats(data)

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return _norm.apply_zscore(block, *state)


@dataclass(frozen=True)
class Normalize(Step):
    """Stretch the [low, high] percentile range to [0, 1], clipping outside."""

    name: ClassVar[str] = "normalize"
    title: ClassVar[str] = "Percentile normalisation to [0, 1]"
    low: float = field(default=1.0, metadata=_meta("percentile mapped to 0", min=0, max=100))
    high: float = field(default=99.8, metadata=_meta("percentile mapped to 1", min=0, max=100))

    def __post_init__(self) -> None:
        low, high = _norm._check_levels(self.low, self.high)
        self._set("low", low)
        self._set("high", high)

    def fit(self, data, spacing_zyx=None):
        return _norm.stretch_range(data, self.low, self.high)

    def transform(self, block, state, z0=0, n_z=None, spacing_zyx=None):
        return _norm.apply_stretch(block, *state)


#: Every step by name, in the order menus list them.
STEPS: dict[str, type[Step]] = {cls.name: cls for cls in (
    HistogramScale, MedianSubtract, Median3D, DepthCorrect, FocusStack, Clahe, ZScore, Normalize)}


def _suggest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'? " if close else ""


def make_step(name: str, **params: Any) -> Step:
    """Create a step by name, e.g. ``make_step("clahe", clip_limit=0.02)``.

    Raises
    ------
    InputError
        Unknown step or parameter (with the closest valid name), or a bad value.
    """
    if name not in STEPS:
        raise InputError(f"unknown preprocessing step '{name}'; {_suggest(name, STEPS)}"
                         f"available: {', '.join(STEPS)}")
    cls = STEPS[name]
    known = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in known:
            listed = ", ".join(known) if known else "none"
            raise InputError(f"step '{name}' has no parameter '{key}'; {_suggest(key, known)}"
                             f"its parameters: {listed}")
    if "reference_percentiles" in params or "reference_values" in params:
        for key in ("reference_percentiles", "reference_values"):
            params[key] = tuple(params.get(key) or ())
    try:
        return cls(**params)
    except TypeError as err:  # e.g. a list where a number belongs
        raise InputError(f"bad parameters for step '{name}': {err}") from err


def step_from_dict(entry: Any) -> Step:
    """Create a step from ``{"name": ..., parameter: value}`` (as in a pipeline file)."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise InputError(f"every step in a pipeline file needs a 'name', e.g. "
                         f'{{"name": "median3d", "size": 3}}; got {entry!r}')
    params = {k: v for k, v in entry.items() if k != "name"}
    return make_step(str(entry["name"]), **params)
