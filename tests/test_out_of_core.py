"""Out-of-core segmentation: block by block into OME-Zarr, equal to the in-memory path."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_zarr_pyramid import reference  # the pyramid levels' independent reference

import napari_vessel.inference.out_of_core as ooc
from napari_vessel.commands import segment as segment_cmd
from napari_vessel.data.phantom import make_phantom
from napari_vessel.errors import InputError
from napari_vessel.inference.out_of_core import segment_to_zarr
from napari_vessel.inference.run import segment
from napari_vessel.io.stacks import describe_file, load_volume, save_volume
from napari_vessel.models import registry
from napari_vessel.models.umis import build_umis
from napari_vessel.models.weights import save_weights

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}
PATCH = (8, 32, 32)
BLOCK = (8, 32, 32)  # one patch per block: 2 x 3 x 3 blocks on the stack below


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv(registry.MODELS_ENV, str(folder))
    import torch

    torch.manual_seed(0)  # a random network: the same one every run (its pieces cross blocks)
    save_weights(build_umis(**TINY), folder / "tiny-umis",
                 {"architecture": "umis", "config": TINY, "kind": "unsupervised"})
    yield "tiny-umis"
    mp.undo()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    phantom = make_phantom((12, 80, 72), seed=3)
    path = tmp_path_factory.mktemp("in") / "stack.zarr"
    return save_volume(path, phantom.image, phantom.spacing_zyx)


def _level(prob: np.ndarray, quantile: float) -> float:
    """A threshold near ``quantile`` in the widest gap between voxel values (so float rounding,
    which differs between the two paths by about 1e-7, cannot decide a voxel)."""
    values = np.unique(prob)
    middle = int(quantile * len(values))
    window = values[middle - 200:middle + 200]
    gap = int(np.argmax(np.diff(window)))
    return float(window[gap] + window[gap + 1]) / 2


def _read(path):
    return np.asarray(load_volume(path, lazy=False).data)


def test_equals_in_memory_with_min_size_across_blocks(model, stack, tmp_path):
    volume = load_volume(stack)
    prob, _, _ = segment(load_volume(stack, lazy=False), model, patch_size=PATCH, threads=1)
    level = _level(prob, 0.8)
    mem_prob, mem_labels, _ = segment(load_volume(stack, lazy=False), model, threshold=level,
                                      min_size=40, patch_size=PATCH, threads=1)
    manifest = segment_to_zarr(volume, tmp_path, model, threshold=level, min_size=40,
                               patch_size=PATCH, block_shape=BLOCK, threads=1,
                               pyramid_smallest=32)
    out = manifest.outputs
    np.testing.assert_allclose(_read(out["prob"]), mem_prob, atol=1e-5)
    labels = _read(out["labels"])
    np.testing.assert_array_equal(labels, mem_labels)
    # both stores carry a pyramid: z kept at 2 µm until y/x reach it, mean / max of the level above
    shapes = [[12, 80, 72], [12, 40, 36], [6, 20, 18]]
    assert [list(s) for s in manifest.out_of_core.pyramid_levels_zyx] == shapes
    for role, method in (("prob", "mean"), ("labels", "max")):
        levels = [np.asarray(load_volume(out[role], level=k, lazy=False).data) for k in range(3)]
        assert [list(lv.shape) for lv in levels] == shapes
        for k, factor in ((1, (1, 2, 2)), (2, (2, 2, 2))):
            np.testing.assert_allclose(levels[k], reference(levels[k - 1], factor, method),
                                       rtol=1e-6)
        assert load_volume(out[role], level=2).spacing_zyx == (4.0, 4.0, 4.0)
    assert set(np.unique(levels[2])) <= {0, 1} and levels[2].sum() > 0
    assert manifest.out_of_core.blocks == (2, 3, 3)
    # the removal was global: a piece crossing block borders was kept, small pieces went
    pieces, count = ndi.label(labels, ndi.generate_binary_structure(3, 3))
    spans = [sl for sl in ndi.find_objects(pieces)]
    assert count and any((s[1].start < 32 <= s[1].stop - 1) for s in spans)
    assert mem_labels.sum() < (mem_prob > level).sum()


def test_stores_are_ome_zarr_and_published_with_a_manifest(model, stack, tmp_path):
    manifest = segment_to_zarr(load_volume(stack), tmp_path, model, patch_size=PATCH,
                               block_shape=(8, 64, 64), threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "stack_labels.zarr", "stack_manifest.json", "stack_prob.zarr"]
    for role, kind in (("prob", "image"), ("labels", "labels")):
        info = describe_file(manifest.outputs[role])
        assert info["format"] == "OME-Zarr" and info["kind"] == kind
        assert info["stack_shape"] == (12, 80, 72) and info["voxel_size_um"] == (2.0, 1.0, 1.0)
    attrs = json.loads((tmp_path / "stack_prob.zarr" / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    assert len(attrs["multiscales"][0]["datasets"]) == 1  # 80 x 72 fits the default 256
    labels = json.loads((tmp_path / "stack_labels.zarr" / ".zattrs").read_text())
    assert labels["image-label"]["source"] == {"image": "../stack_prob.zarr"}  # NGFF labels
    assert labels["image-label"]["colors"][0]["label-value"] == 1
    saved = json.loads((tmp_path / "stack_manifest.json").read_text())
    assert saved["out_of_core"]["patch_predictions_per_patch"] == 1.0


def test_cli_zarr_and_bad_input(model, stack, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    segment_cmd.add_arguments(parser)
    argv = [str(stack), "-o", str(tmp_path), "--model", model, "--zarr", "--quiet",
            "--patch-size", *map(str, PATCH), "--block-size", "8", "48", "48", "--threads", "1"]
    assert segment_cmd.run(parser.parse_args(argv)) == 0
    assert (tmp_path / "stack_labels.zarr").is_dir()
    with pytest.raises(InputError, match="--overwrite"):
        segment_cmd.run(parser.parse_args(argv))
    small = argv[:-6] + ["--block-size", "4", "32", "32", "--overwrite"]
    with pytest.raises(InputError, match="smaller than a patch"):
        segment_cmd.run(parser.parse_args(small))
    with pytest.raises(InputError, match="out of core only"):
        segment_cmd.run(parser.parse_args([str(stack), "-o", str(tmp_path / "b"),
                                           "--block-size", "8", "32", "32"]))
    with pytest.raises(InputError, match="classical"):
        segment_to_zarr(load_volume(stack), tmp_path / "c", "frangi")
    with pytest.raises(InputError, match="memory budget"):
        segment_cmd.run(parser.parse_args([str(stack), "-o", str(tmp_path),
                                           "--memory-budget", "0"]))
    assert ooc.needs_out_of_core((256, 2048, 2048), 8) and not ooc.needs_out_of_core((8, 8, 8), 8)


def test_unwritable_output_is_refused(model, stack, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a writable folder"):
        segment_to_zarr(load_volume(stack), blocker / "out", model, patch_size=PATCH)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("where", ["postprocess_blocks", "io_pyramid"])
def test_interrupted_write_leaves_nothing_finished(model, stack, tmp_path, monkeypatch, where):
    from napari_vessel.io import pyramid as io_pyramid
    from napari_vessel.postprocess import blocks as postprocess_blocks

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    real = io_pyramid.downsample

    def crash_in_labels(block, factor, method):  # the probabilities' pyramid is done by then
        return crash() if method == "max" else real(block, factor, method)

    if where == "io_pyramid":
        monkeypatch.setattr(io_pyramid, "downsample", crash_in_labels)
    else:
        monkeypatch.setattr(postprocess_blocks, "postprocess_blocks", crash)
    with pytest.raises(RuntimeError, match="killed"):
        segment_to_zarr(load_volume(stack), tmp_path, model, patch_size=PATCH, threads=1,
                        pyramid_smallest=32)
    assert list(tmp_path.iterdir()) == []  # no store, no manifest, no scratch


def _clear_level(prob: np.ndarray, low: float, high: float) -> float:
    """A level with 6 decimals (as a resolved rule's) between the ``low`` and ``high`` quantiles,
    as far as can be from every voxel value (so float rounding cannot decide a voxel)."""
    values = np.unique(prob)
    candidates = np.unique(np.round(np.linspace(*np.quantile(prob, [low, high]), 4001), 6))
    at = np.clip(np.searchsorted(values, candidates), 1, len(values) - 1)
    room = np.minimum(np.abs(candidates - values[at - 1]), np.abs(values[at] - candidates))
    return float(candidates[int(np.argmax(room))])


def test_level_rule_reads_the_whole_store_like_in_memory(model, stack, tmp_path):
    """A card's level rule: the level comes from the whole probability store's vessel fraction,
    as in memory, and the labels, the manifest and the stores say the level used."""
    import dataclasses

    spec = registry.get(model)
    prob, _, _ = segment(load_volume(stack, lazy=False), spec, patch_size=PATCH, threads=1)
    probe = _clear_level(prob, 0.45, 0.55)  # about half the voxels above it
    fraction = float(np.count_nonzero(prob > probe)) / prob.size
    level, fallback = _clear_level(prob, 0.75, 0.85), _clear_level(prob, 0.2, 0.3)
    slope = -0.5  # a wrong fraction would move the level far
    rule = {"intercept": level - slope * fraction, "slope": slope, "fraction_range": [0.0, 1.0],
            "level_range": [0.0, 1.0], "probe": probe}
    ruled = dataclasses.replace(spec, postprocessing={"method": "threshold", "level": fallback,
                                                      "min_size": 0, "level_rule": rule})
    _, mem_labels, mem = segment(load_volume(stack, lazy=False), ruled, patch_size=PATCH,
                                 threads=1)
    manifest = segment_to_zarr(load_volume(stack), tmp_path, ruled, patch_size=PATCH,
                               block_shape=BLOCK, threads=1, pyramid_smallest=0)
    used = manifest.parameters.threshold
    assert used == mem.parameters.threshold == level != fallback
    note = manifest.parameters.postprocessing["level_from"]
    assert note["fraction"] == pytest.approx(fraction, abs=1e-6)
    assert 0.3 < note["fraction"] < 0.7 and note["fallback_level"] == fallback
    assert "level_rule" not in manifest.parameters.postprocessing
    labels = _read(manifest.outputs["labels"])
    np.testing.assert_array_equal(labels, mem_labels)
    np.testing.assert_array_equal(labels, prob > level)
    assert np.count_nonzero(labels != (prob > fallback)) > 0.3 * prob.size  # the rule mattered
    for role in ("prob", "labels"):
        attrs = json.loads((tmp_path / f"stack_{role}.zarr" / ".zattrs").read_text())
        assert attrs["napari_vessel"]["metadata"]["threshold"] == used


def test_postprocess_blocks_refuses_an_unresolved_level_rule(tmp_path):
    from napari_vessel.postprocess.blocks import postprocess_blocks
    from napari_vessel.postprocess.labels import LevelRule, Postprocessing

    prob = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    labels = np.zeros(prob.shape, np.uint8)
    recipe = Postprocessing(threshold=0.5, rule=LevelRule(0.9, -1.0, (0.0, 1.0)))
    with pytest.raises(InputError, match="resolve it first with Postprocessing.resolve"):
        postprocess_blocks(prob, labels, recipe, block=(4, 8, 8), scratch=tmp_path / "s")
    assert not labels.any()
    steps = postprocess_blocks(prob, labels, recipe.resolve(prob), block=(4, 4, 4),
                               scratch=tmp_path / "s")
    np.testing.assert_array_equal(labels, recipe.apply(prob))
    assert steps == [f"threshold {recipe.resolve(prob).threshold}"]
