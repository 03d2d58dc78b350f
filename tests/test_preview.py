"""The preview of one slice: the slab it reads, the crop it shows, the labels as a full run's."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.inference.preview import CLASSICAL_DEPTH, preview_region, segment_slice, slab_depth
from napari_vessel.inference.run import segment
from napari_vessel.io.volume import Volume
from napari_vessel.manifest import PreviewInfo
from napari_vessel.models import registry
from napari_vessel.models.registry import ModelSpec
from napari_vessel.progress import CancelToken

SHAPE = (20, 40, 50)
SEEN: list[tuple] = []


def _local(volume, spacing_zyx=(1.0, 1.0, 1.0)):
    """A toy model whose answer depends on each voxel only (a crop gives the same values)."""
    SEEN.append(tuple(volume.shape))
    return (np.asarray(volume, np.float32) / 100.0).clip(0.0, 1.0)


@pytest.fixture(autouse=True)
def toy_model(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "user-models"))
    SEEN.clear()
    registry.register(ModelSpec(name="test-local", kind="classical", description="toy",
                                predict=_local, card={"threshold": 0.4}), replace_existing=True)
    yield
    registry.unregister("test-local")


@pytest.fixture
def stack():
    return np.random.default_rng(1).uniform(0, 100, SHAPE).astype(np.float32)


def test_slab_depth_is_what_the_model_needs():
    assert slab_depth(registry.get("tvnet")) == registry.get("tvnet").patch_size_zyx[0]
    assert slab_depth(registry.get("dbac")) == 1  # 2D: slice by slice
    assert slab_depth(registry.get("frangi")) == CLASSICAL_DEPTH


@pytest.mark.parametrize(("z", "z_read"), [(10, (6, 15)), (0, (0, 9)), (19, (11, 20)),
                                           (1, (0, 9))])
def test_the_slab_is_centred_and_shifted_inwards_at_the_edges(z, z_read):
    read, shown = preview_region(SHAPE, z, 9)
    assert (read[0].start, read[0].stop) == z_read and read[0].stop - read[0].start == 9
    assert shown[0] == slice(z, z + 1) and read[1:] == (slice(0, 40), slice(0, 50))


def test_a_thin_stack_is_read_whole_and_a_crop_gets_a_clipped_margin():
    read, shown = preview_region((3, 40, 50), 2, 32, box_yx=((5, 20), (30, 60)), margin=8)
    assert read == (slice(0, 3), slice(0, 28), slice(22, 50))
    assert shown == (slice(2, 3), slice(5, 20), slice(30, 50))  # the crop clipped to the image


@pytest.mark.parametrize(("args", "message"), [
    ((SHAPE, 20, 9), "outside the stack"), ((SHAPE, -1, 9), "outside the stack"),
    ((SHAPE, 2.5, 9), "outside the stack"), (((40, 50), 0, 9), "3D"),
    ((SHAPE, 3, 0), "depth")])
def test_bad_slices_are_refused(args, message):
    with pytest.raises(InputError, match=message):
        preview_region(*args)


def test_a_crop_outside_the_image_is_refused():
    with pytest.raises(InputError, match="outside the image"):
        preview_region(SHAPE, 3, 9, box_yx=((50, 60), (0, 10)))


def test_the_preview_equals_the_full_run_on_its_slice(stack):
    preview = segment_slice(Volume(stack, (2.0, 1.0, 1.0)), 7, "test-local", threshold=0.4,
                            box_yx=((10, 30), (5, 25)), margin=4)
    assert SEEN == [(CLASSICAL_DEPTH, 28, 28)]  # only the slab and the margin ran
    assert preview.origin == (7, 10, 5) and preview.z == 7 and preview.labels.shape == (1, 20, 20)
    prob, labels, _ = segment(stack, "test-local", threshold=0.4)
    np.testing.assert_array_equal(preview.labels, labels[7:8, 10:30, 5:25])
    assert preview.manifest.preview == PreviewInfo(z=7, read_zyx=((3, 12), (6, 34), (1, 29)),
                                                   shown_zyx=((7, 8), (10, 30), (5, 25)))
    assert preview.manifest.to_dict()["preview"] == {
        "z": 7, "read_zyx": [[3, 12], [6, 34], [1, 29]], "shown_zyx": [[7, 8], [10, 30], [5, 25]]}
    assert preview.manifest.input.spacing_zyx == (2.0, 1.0, 1.0)


def test_relabel_rethresholds_without_the_model(stack):
    preview = segment_slice(stack, 0, "test-local", threshold=0.4)
    SEEN.clear()
    slab_prob = _local(stack[0:CLASSICAL_DEPTH])
    SEEN.clear()
    np.testing.assert_array_equal(preview.relabel(0.7), (slab_prob[:1] > 0.7).astype(np.uint8))
    from napari_vessel.postprocess.labels import probability_to_labels

    expected = probability_to_labels(slab_prob, level=0.5, min_size=4)[:1]
    np.testing.assert_array_equal(preview.relabel(0.5, 4), expected)  # pieces counted in 3D
    assert SEEN == []


def test_a_network_gets_its_patch_depth(stack, tmp_path):
    torch = pytest.importorskip("torch")
    from napari_vessel.models.weights import save_weights

    def build(**_config):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.Sigmoid())

    weights = save_weights(build(), tmp_path / "test-net", {"kind": "unsupervised"})
    registry.register(ModelSpec(name="test-net", kind="unsupervised", description="toy",
                                builder=build, weights=weights, patch_size_zyx=(6, 16, 16)),
                      replace_existing=True)
    try:
        preview = segment_slice(stack, 19, "test-net", device="cpu", runtime="torch")
    finally:
        registry.unregister("test-net")
    assert preview.read[0] == slice(14, 20) and preview.labels.shape == (1, 40, 50)
    assert preview.prob.shape == (6, 40, 50) and preview.prob.dtype == np.float32


def test_bad_input_and_cancel(stack):
    with pytest.raises(InputError, match="2D"):
        segment_slice(stack[0], 0, "test-local")
    with pytest.raises(InputError, match="preview of slice 2.*all zero"):
        segment_slice(np.zeros(SHAPE, np.float32), 2, "test-local")
    with pytest.raises(InputError, match="unknown model"):
        segment_slice(stack, 2, "no-such-model")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment_slice(stack, 2, "test-local", cancel=token)


def test_preprocessing_statistics_come_from_the_whole_stack(stack):
    """A deep, dim slab normalised on its own would turn its noise into vessels."""
    dimmed = stack * np.linspace(1.0, 0.05, SHAPE[0], dtype=np.float32)[:, None, None]
    pipeline = registry.get("tvnet").preprocessing
    registry.register(ModelSpec(name="test-norm", kind="classical", description="toy",
                                predict=_local, preprocessing=pipeline), replace_existing=True)
    try:
        _, full, _ = segment(dimmed, "test-norm", threshold=0.0003)
        preview = segment_slice(dimmed, SHAPE[0] - 1, "test-norm", threshold=0.0003)
    finally:
        registry.unregister("test-norm")
    np.testing.assert_array_equal(preview.labels, full[-1:])
    assert [s["name"] for s in preview.manifest.preprocessing["steps"]] == [
        "median_subtract", "normalize"]
