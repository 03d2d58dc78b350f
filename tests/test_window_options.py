"""WindowOptions: the sliding window's settings as one checked value, and its keywords."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.inference.run import predict
from napari_vessel.models.umis import build_umis

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}


def test_defaults_and_normalised_values():
    options = WindowOptions()
    assert (options.patch_size, options.overlap, options.blending, options.batch_size,
            options.tta, options.device, options.runtime, options.threads) == \
        (None, 0.25, "gaussian", None, False, None, "auto", None)
    options = WindowOptions(patch_size=[4.0, 16, 16], overlap="0.5", batch_size=2.0,
                            runtime="ONNX", threads=3)
    assert options.patch_size == (4, 16, 16) and isinstance(options.patch_size[0], int)
    assert options.overlap == 0.5 and options.batch_size == 2 and options.runtime == "onnx"


@pytest.mark.parametrize("overlap", [1.0, -0.1, 2, "much", None, float("nan")])
def test_a_bad_overlap_says_what_to_give(overlap):
    with pytest.raises(InputError, match=r"overlap must be in \[0, 1\).*0\.25 is a good start"):
        WindowOptions(overlap=overlap)


def test_a_bad_blending_names_the_choices():
    with pytest.raises(InputError, match="blending must be 'gaussian' or 'constant', not 'linear'"):
        WindowOptions(blending="linear")


def test_a_bad_runtime_names_the_choices():
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'; choose one of auto, "):
        WindowOptions(runtime="tensorrt")


@pytest.mark.parametrize("name, value, message", [
    ("batch_size", 0, "batch size must be a whole number of at least 1, not 0; give 1 or more"),
    ("batch_size", -2, "batch size must be a whole number of at least 1, not -2"),
    ("batch_size", 1.5, "batch size must be a whole number of at least 1, not 1.5"),
    ("batch_size", True, "batch size must be a whole number of at least 1, not True"),
    ("threads", 0, "threads must be a whole number of at least 1, not 0; give the number of CPU"),
    ("patch_size", (0, 16, 16), "each patch size must be a whole number of at least 1, not 0; "
                                "give three numbers"),
    ("patch_size", (4, -16, 16), "each patch size must be a whole number of at least 1, not -16"),
    ("patch_size", (4, 16), "must be three positive numbers"),
    ("patch_size", 16, "must be three positive numbers"),
])
def test_non_positive_whole_numbers_are_refused(name, value, message):
    with pytest.raises(InputError) as err:
        WindowOptions(**{name: value})
    assert message in str(err.value)


def test_tta_must_be_a_bool():
    with pytest.raises(InputError, match="tta='yes' must be true or false"):
        WindowOptions(tta="yes")


def test_keywords_given_with_options_replace_them():
    options = WindowOptions(patch_size=(4, 16, 16), overlap=0.5, blending="constant",
                            batch_size=2, tta=True, device="cpu", runtime="torch", threads=2)
    assert window_options(options) is options
    assert window_options(options, overlap=None, threads=None) is options  # None: not given
    merged = window_options(options, overlap=0.0, batch_size=5, runtime="onnx")
    assert (merged.overlap, merged.batch_size, merged.runtime) == (0.0, 5, "onnx")
    assert (merged.patch_size, merged.blending, merged.tta, merged.device, merged.threads) == \
        ((4, 16, 16), "constant", True, "cpu", 2)
    assert window_options(overlap=0.1) == WindowOptions(overlap=0.1)
    with pytest.raises(InputError, match="overlap must be in"):  # a replacement is checked too
        window_options(options, overlap=1.5)
    with pytest.raises(InputError, match="options must be a WindowOptions, not dict"):
        window_options({"overlap": 0.5})
    with pytest.raises(TypeError, match="unknown window option"):
        window_options(options, stride=2)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_umis(**TINY).eval()


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).random((9, 37, 30)).astype(np.float32)


def test_predict_with_options_equals_predict_with_keywords(tiny_net, volume):
    settings = {"patch_size": (4, 16, 16), "overlap": 0.5, "blending": "constant",
                "batch_size": 2, "tta": True, "device": "cpu", "runtime": "torch",
                "threads": 1}
    by_keywords = predict(tiny_net, volume, **settings)
    by_options = predict(tiny_net, volume, options=WindowOptions(**settings))
    np.testing.assert_array_equal(by_options, by_keywords)
    # a keyword beside options replaces that one setting
    other = {**settings, "overlap": 0.0, "blending": "gaussian"}
    mixed = predict(tiny_net, volume, options=WindowOptions(**settings), overlap=0.0,
                    blending="gaussian")
    np.testing.assert_array_equal(mixed, predict(tiny_net, volume, **other))
    assert not np.array_equal(mixed, by_keywords)


def test_zero_threads_or_batch_size_means_automatic_as_before():
    options = window_options(threads=0, batch_size=0)
    assert options.threads is None and options.batch_size is None
    with pytest.raises(InputError, match="threads"):
        WindowOptions(threads=0)  # the typed value itself stays strict
