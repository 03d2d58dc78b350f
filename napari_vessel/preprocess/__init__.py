"""Preprocessing for two-photon and confocal stacks: pure functions and a serialisable pipeline.

Operations (each takes an image first, keyword options after, and returns a new float32 array):

- :func:`subtract_slice_median`, :func:`median_filter3d` (paper 001, section 4.2) and
  :func:`correct_depth_attenuation`;
- :func:`scale_intensity`, :func:`estimate_scale_factor`, :func:`intensity_profile` (histogram
  scaling to a reference, paper 001);
- :func:`equalize_clahe` (CLAHE per slice or in 3D, paper 003);
- :func:`fuse_focus` and :func:`focus_stack` (multi-focus fusion, paper 003);
- :func:`zscore` and :func:`percentile_stretch`.

The same operations as pipeline steps (frozen dataclasses, see :mod:`.steps`) make a
:class:`Pipeline` that runs on NumPy or dask arrays, previews one slice, and saves to JSON.
"""

from napari_vessel.preprocess.clahe import equalize_clahe
from napari_vessel.preprocess.depth import correct_depth_attenuation
from napari_vessel.preprocess.fusion import FusionResult, focus_measure, focus_stack, fuse_focus
from napari_vessel.preprocess.median import median_filter2d, median_filter3d, subtract_slice_median
from napari_vessel.preprocess.normalize import percentile_stretch, zscore
from napari_vessel.preprocess.pipeline import DEFAULT_2PM, DEFAULT_CONFOCAL, FORMAT_VERSION, Pipeline, compute
from napari_vessel.preprocess.scaling import estimate_scale_factor, intensity_profile, scale_intensity
from napari_vessel.preprocess.steps import (
    STEPS,
    Clahe,
    DepthCorrect,
    FocusStack,
    HistogramScale,
    Median3D,
    MedianSubtract,
    Normalize,
    Step,
    ZScore,
    make_step,
)

__all__ = [
    "subtract_slice_median", "median_filter3d", "median_filter2d", "correct_depth_attenuation",
    "scale_intensity", "estimate_scale_factor", "intensity_profile", "equalize_clahe", "fuse_focus",
    "focus_stack", "focus_measure", "FusionResult", "zscore", "percentile_stretch",
    "Pipeline", "compute", "DEFAULT_2PM", "DEFAULT_CONFOCAL", "FORMAT_VERSION",
    "Step", "STEPS", "make_step", "MedianSubtract", "Median3D", "DepthCorrect", "HistogramScale",
    "Clahe", "FocusStack", "ZScore", "Normalize",
]
