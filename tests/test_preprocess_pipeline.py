"""The pipeline: JSON round trip, NumPy == dask, preview, progress/cancel and bad input."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.io.volume import Volume
from napari_vessel.preprocess import (
    DEFAULT_2PM,
    DEFAULT_CONFOCAL,
    STEPS,
    Clahe,
    DepthCorrect,
    FocusStack,
    HistogramScale,
    Median3D,
    MedianSubtract,
    Normalize,
    Pipeline,
    ZScore,
    compute,
    make_step,
)
from napari_vessel.progress import CancelToken

ALL_STEPS = (HistogramScale(factor=16.0), MedianSubtract(), Median3D(), DepthCorrect(smooth=3),
             FocusStack(depth_window=3, window=5), Clahe(kernel_size=12),
             Clahe(kernel_size=8, mode="3d", clip_limit=0.02), ZScore(), Normalize(low=2, high=99))


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.poisson(20.0, (14, 40, 36)).astype(np.uint16)
    image[:, 12:16, :] += (600 * np.exp(-np.arange(14) / 8.0)).astype(np.uint16)[:, None, None]
    return image


def test_json_round_trip_of_every_step():
    pipeline = Pipeline(ALL_STEPS + (HistogramScale.from_reference(
        {"percentiles": [1, 50, 99.9], "values": [1.0, 20.0, 900.0]}, method="percentiles"),))
    assert {s.name for s in pipeline.steps} == set(STEPS)
    text = pipeline.to_json()
    again = Pipeline.from_json(text)
    assert again == pipeline and again.to_json() == text
    assert json.loads(text)["version"] == 1


def test_save_load(tmp_path):
    path = DEFAULT_2PM.save(tmp_path / "p.json")
    assert Pipeline.load(path) == DEFAULT_2PM


@pytest.mark.parametrize("chunks", [(3, 40, 36), (5, 20, 18), (14, 40, 36)])
def test_dask_equals_numpy(stack, chunks):
    pipeline = Pipeline(ALL_STEPS)
    expected = pipeline.apply(stack, spacing_zyx=(3.0, 1.0, 1.0))
    lazy = pipeline.apply(da.from_array(stack, chunks=chunks), spacing_zyx=(3.0, 1.0, 1.0))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(compute(lazy), expected)


@pytest.mark.parametrize("pipeline", [DEFAULT_2PM, DEFAULT_CONFOCAL])
def test_defaults_numpy_and_dask(stack, pipeline):
    out = pipeline.apply(stack)
    assert out.dtype == np.float32 and out.shape == stack.shape
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(np.asarray(pipeline.apply(da.from_array(stack, chunks=4))), out)


def test_input_never_modified(stack):
    for data in (stack.copy(), stack.astype(np.float32)):
        before = data.copy()
        Pipeline(ALL_STEPS).apply(data)
        np.testing.assert_array_equal(data, before)
    image = stack.astype(np.float32)
    out = Pipeline(()).apply(image)
    assert out is not image and np.array_equal(out, image)


def test_volume_in_volume_out(stack):
    volume = Volume(stack, (2.0, 1.0, 1.0))
    result = DEFAULT_2PM.apply(volume)
    assert isinstance(result, Volume) and result.spacing_zyx == (2.0, 1.0, 1.0)
    assert Pipeline.from_dict(result.metadata["preprocess"]) == DEFAULT_2PM


def test_progress_and_cancel(stack):
    seen = []
    DEFAULT_2PM.apply(stack, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1][0] == 1.0 and [m for _, m in seen[:3]] == list(DEFAULT_2PM.names)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        DEFAULT_2PM.apply(stack, cancel=token)
    lazy = DEFAULT_2PM.apply(da.from_array(stack, chunks=4))
    with pytest.raises(Cancelled):
        compute(lazy, cancel=token)
    steps = []
    compute(lazy, progress=lambda f, m: steps.append(f))
    assert steps[-1] == 1.0 and len(steps) == 4


def test_preview_and_preview_plane(stack):
    pipeline = Pipeline(ALL_STEPS)
    plane = pipeline.preview(stack[5])
    assert plane.shape == stack.shape[1:] and plane.dtype == np.float32
    exact = Pipeline((MedianSubtract(), Median3D(), FocusStack(depth_window=3)))  # no global stats
    np.testing.assert_array_equal(exact.preview_plane(stack, 5), exact.apply(stack)[5])
    for z in (0, 13):
        assert pipeline.preview_plane(stack, z, spacing_zyx=(3, 1, 1)).shape == stack.shape[1:]


def test_2d_input(stack):
    plane = stack[3]
    assert Pipeline((MedianSubtract(), Clahe(), Normalize())).apply(plane).shape == plane.shape
    for step in (Median3D(), DepthCorrect(), FocusStack(), Clahe(mode="3d")):
        with pytest.raises(InputError, match="needs a 3D stack"):
            Pipeline((step,)).apply(plane)


def test_from_names_and_settings():
    pipeline = Pipeline.from_names(["median_subtract", "clahe", "normalize"],
                                   {"clahe.clip_limit": 0.02, "normalize.high": "99.5"})
    assert pipeline.steps[1] == Clahe(clip_limit=0.02)
    assert pipeline.steps[2].high == 99.5
    assert pipeline.with_settings({"0.clip": False}).steps[0] == MedianSubtract(clip=False)
    with pytest.raises(InputError, match="did you mean 'clip_limit'"):
        pipeline.with_settings({"clahe.clip_limt": 0.1})
    with pytest.raises(InputError, match="no step 'median3d'"):
        pipeline.with_settings({"median3d.size": 5})
    with pytest.raises(InputError, match="did you mean 'median3d'"):
        Pipeline.from_names(["median3"])
    scaled = Pipeline.from_names(["histogram_scale", "normalize"], {"histogram_scale.factor": 16})
    assert scaled.steps[0] == HistogramScale(factor=16.0)
    with pytest.raises(InputError, match="no step 'clahe'"):
        Pipeline.from_names(["normalize"], {"clahe.clip_limit": 0.1})


def test_bad_json():
    good = DEFAULT_2PM.to_dict()
    newer = {**good, "version": 2}
    with pytest.raises(InputError, match="newer napari-vessel.*[Uu]pgrade"):
        Pipeline.from_json(json.dumps(newer))
    unknown = {**good, "steps": [{"name": "median_substract"}]}
    with pytest.raises(InputError, match="did you mean 'median_subtract'"):
        Pipeline.from_json(json.dumps(unknown))
    with pytest.raises(InputError, match="not valid JSON"):
        Pipeline.from_json("{steps: [")
    with pytest.raises(InputError, match="version"):
        Pipeline.from_json(json.dumps({"steps": []}))
    with pytest.raises(InputError, match="needs a 'name'"):
        Pipeline.from_json(json.dumps({**good, "steps": [{"size": 3}]}))
    with pytest.raises(InputError, match="odd"):
        Pipeline.from_json(json.dumps({**good, "steps": [{"name": "median3d", "size": 4}]}))


@pytest.mark.parametrize(("name", "params", "match"), [
    ("histogram_scale", {"factor": 0}, "out of range"),
    ("histogram_scale", {"factor": -3}, "out of range"),
    ("histogram_scale", {}, "needs a factor or a reference"),
    ("clahe", {"mode": "4d"}, "must be one of"),
    ("clahe", {"clip_limit": "lots"}, "must be a number"),
    ("median_subtract", {"clip": "maybe"}, "true or false"),
    ("normalize", {"low": 90, "high": 10}, "above the low"),
])
def test_bad_step_parameters(name, params, match):
    with pytest.raises(InputError, match=match):
        make_step(name, **params)


@pytest.mark.parametrize("bad", ["nan", "inf", "constant", "empty"])
def test_bad_volumes(bad):
    image = np.ones((4, 8, 8), np.float32)
    if bad == "nan":
        image[1, 2, 3] = np.nan
    elif bad == "inf":
        image[1, 2, 3] = np.inf
    elif bad == "empty":
        image = np.ones((0, 8, 8), np.float32)
    match = {"nan": "NaN", "inf": "NaN or infinite", "constant": "constant", "empty": "empty"}[bad]
    with pytest.raises(InputError, match=match):
        DEFAULT_2PM.apply(image)
    if bad in ("nan", "inf", "constant"):
        with pytest.raises(InputError, match=match):
            compute(DEFAULT_2PM.apply(da.from_array(image, chunks=2)))


def test_uint16_near_max_scaled_stays_float(stack):
    image = np.full((3, 8, 8), 65000, np.uint16)
    image[:, :4] = 65535
    out = Pipeline((HistogramScale(factor=16),)).apply(image)
    assert out.dtype == np.float32 and out.max() == 65535 * 16 and out.min() == 65000 * 16
    with pytest.raises(InputError, match="float32 range"):
        Pipeline((HistogramScale(factor=1e36),)).apply(image)


def test_kernel_larger_than_volume():
    with pytest.raises(InputError, match="larger than the image"):
        Pipeline((Clahe(kernel_size=50),)).apply(np.random.default_rng(0).random((3, 20, 20)))
    with pytest.raises(InputError, match="larger than the image"):
        Pipeline((Median3D(size=5),)).apply(np.random.default_rng(0).random((3, 20, 20)))


@pytest.mark.parametrize("z", [0, 1, 4, 6, 7])
def test_preview_plane_with_wide_median_at_the_stack_ends(z):
    """A 5-wide 3D median near the first/last slice must equal the full result."""
    rng = np.random.default_rng(5)
    stack = rng.random((8, 20, 20)).astype(np.float32)
    pipeline = Pipeline([make_step("median3d", size=5)])
    full = pipeline.apply(stack)
    np.testing.assert_allclose(pipeline.preview_plane(stack, z), full[z], rtol=1e-6)
