"""``napari_vessel.evaluation.comparison`` and ``napari-vessel benchmark`` on a tiny folder of phantoms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch

from napari_vessel import cli
from napari_vessel.data.phantom import make_phantom
from napari_vessel.errors import Cancelled, InputError
from napari_vessel.evaluation import metrics
from napari_vessel.evaluation.comparison import (
    PeakMemory,
    choose_models,
    compare,
    format_markdown,
    load_folder,
    to_json,
)
from napari_vessel.inference.run import segment
from napari_vessel.io.stacks import load_volume
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.progress import CancelToken

MODELS = ["frangi", "morph-acwe", "tvnet"]


@pytest.fixture(autouse=True)
def _one_thread_no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "no-user-models"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantoms():
    """Two small phantoms, made once."""
    return [make_phantom((8, 48, 48), seed=seed) for seed in (0, 1)]


@pytest.fixture
def folder(tmp_path, phantoms):
    """The phantoms as images/ and labels/ TIFFs (no voxel size in the files)."""
    root = tmp_path / "pairs"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for seed, phantom in enumerate(phantoms):
        tifffile.imwrite(root / "images" / f"ph{seed}.tif", phantom.image)
        tifffile.imwrite(root / "labels" / f"ph{seed}.tif", phantom.labels.astype(np.uint8) * 255)
    return root


@pytest.fixture
def unweighted():
    """A network registered without weights."""
    spec = registry.ModelSpec(name="test-unweighted", kind="supervised", description="test",
                              builder=build_tvnet, config={"widths": [2, 4]})
    registry.register(spec, replace_existing=True)
    yield spec.name
    registry.unregister(spec.name)


def test_scores_equal_metrics_of_segment_labels(folder):
    result = compare(folder, MODELS, device="cpu")
    assert [row["model"] for row in result.means] == MODELS
    assert len(result.rows) == 2 * len(MODELS) and not result.skipped
    assert result.hd95_unit == "voxels"  # the TIFFs give no voxel size
    for row in result.rows:  # independent check: segment, then the metrics module
        volume = load_volume(folder / "images" / f"{row['volume']}.tif")
        reference = load_volume(folder / "labels" / f"{row['volume']}.tif").to_numpy() > 0
        prob, labels, _ = segment(volume, row["model"], device="cpu")
        expected = metrics.evaluate(labels, reference, prob)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-9), (row["model"], key)
        assert row["seconds"] > 0 and row["voxels_per_s"] == pytest.approx(
            8 * 48 * 48 / row["seconds"])
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] >= 0
    for mean in result.means:
        mine = [r for r in result.rows if r["model"] == mean["model"]]
        for key in ("ap", "dice", "sensitivity", "specificity", "jaccard", "mcc", "cldice",
                    "hd95"):
            assert mean[key] == pytest.approx(np.mean([r[key] for r in mine]))
        assert mean["volumes"] == 2
    tvnet = result.means[MODELS.index("tvnet")]
    spec = registry.get("tvnet")
    if spec.postprocessing and spec.postprocessing.get("level_rule"):  # the level it chose
        assert tvnet["labels_by"].startswith("threshold ") and "level rule" in tvnet["labels_by"]
    else:
        assert tvnet["labels_by"].startswith(f"threshold {spec.card.threshold:.3g}")

    table = format_markdown(result)
    lines = table.splitlines()
    header = lines[0]
    for title in ("AP", "F1", "Sens", "Spec", "Jaccard", "MCC", "clDice", "HD95 (voxels)",
                  "s/volume", "voxels/s", "peak RSS MB"):
        assert f" {title} " in header
    body = [line for line in lines[2:] if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in body] == MODELS  # one row per model
    assert f"{result.means[0]['dice']:.3f}" in body[0]
    assert "| ph0" not in table
    assert table.count("| ph0") == 0 and format_markdown(result, per_volume=True).count(
        "| ph0") == len(MODELS)


def test_spacing_and_pairs_given_as_arrays():
    phantom = make_phantom((6, 32, 32), seed=2)
    pairs = [("a", phantom.image, phantom.labels)]
    result = compare(pairs, ["frangi"], spacing_zyx=phantom.spacing_zyx)
    assert result.hd95_unit == "µm" and "HD95 (µm)" in format_markdown(result)
    assert result.rows[0]["volume"] == "a"


def test_models_without_weights_are_skipped_with_reason(folder, unweighted):
    runnable, skipped = choose_models()
    names = {spec.name for spec in runnable}
    assert {"frangi", "morph-acwe", "tvnet"} <= names
    assert all(spec.usable for spec in runnable)
    reasons = {item["model"]: item["reason"] for item in skipped}
    assert "no trained weights" in reasons[unweighted]
    assert set(reasons) == {s.name for s in registry.list_models() if not s.usable}

    result = compare(folder, ["frangi", unweighted])
    assert [row["model"] for row in result.means] == ["frangi"]
    assert result.skipped == [{"model": unweighted, "reason": reasons[unweighted]}]
    note = [line for line in format_markdown(result).splitlines() if "skipped" in line]
    assert len(note) == 1 and "no trained weights" in note[0] and unweighted in note[0]
    with pytest.raises(InputError, match="none of the models can run"):
        compare(folder, [unweighted])


def test_bad_folder_and_unknown_model(tmp_path, folder):
    with pytest.raises(InputError, match="not a folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="labels/"):
        load_folder(tmp_path / "empty")
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(InputError, match="no image/label pairs"):
        load_folder(tmp_path / "empty")
    (folder / "labels" / "ph1.tif").unlink()
    with pytest.raises(InputError, match="no labels for ph1.tif"):
        load_folder(folder)
    with pytest.raises(InputError, match="did you mean 'frangi'"):
        compare(folder, ["frangy"])


def test_cli_writes_markdown_and_json(tmp_path, folder, capsys):
    out, rows = tmp_path / "table.md", tmp_path / "rows.json"
    code = cli.main(["benchmark", "--data", str(folder), "--models", "frangi", "morph-acwe",
                     "--device", "cpu", "--per-volume", "--out", str(out), "--json", str(rows),
                     "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert printed == text and "| frangi " in text and "| morph-acwe | ph1" in text
    data = json.loads(rows.read_text(encoding="utf-8"))
    assert [m["model"] for m in data["means"]] == ["frangi", "morph-acwe"]
    assert len(data["rows"]) == 4 and data["hd95_unit"] == "voxels"
    assert all(isinstance(r["dice"], float) and not math.isnan(r["dice"]) for r in data["rows"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "{missing}"], "is not a folder"),
    (["--data", "{empty}"], "needs 'images/' and 'labels/'"),
    (["--data", "{folder}", "--models", "frangy"], "did you mean 'frangi'"),
])
def test_cli_errors(tmp_path, folder, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "folder": folder}
    argv = [a.format(**paths) for a in argv]
    assert cli.main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-vessel benchmark: error:") and message in err


def test_to_json_and_peak_memory():
    with PeakMemory(interval=0.001) as memory:
        block = np.ones(5_000_000)
        block += 1
    assert memory.mb is None or memory.mb > 20
    result = compare([("a", make_phantom((6, 32, 32), seed=3).image,
                       np.zeros((6, 32, 32), bool))], ["frangi"])
    data = to_json(result)
    assert data["rows"][0]["ap"] is None  # nan (no vessel in the reference) becomes null
    json.dumps(data, allow_nan=False)


def test_failing_model_is_skipped_and_cancel_stops(folder):
    def broken(volume, spacing, **_):
        raise InputError("this stack is too thin")

    spec = registry.ModelSpec(name="test-broken", kind="classical", description="test",
                              predict=broken, patch_size_zyx=(1, 1, 1))
    registry.register(spec, replace_existing=True)
    try:
        result = compare(folder, ["test-broken", "frangi"])
    finally:
        registry.unregister(spec.name)
    assert [row["model"] for row in result.means] == ["frangi"]
    assert result.skipped == [{"model": "test-broken",
                               "reason": "failed on ph0: this stack is too thin"}]
    assert "skipped test-broken: failed on ph0" in format_markdown(result)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        compare(folder, ["frangi"], cancel=token)


def test_graph_columns_equal_the_graph_comparison_of_the_same_labels(folder, capsys):
    from napari_vessel.graph import GRAPH_COLUMNS, compare_graphs, vessel_graph

    result = compare(folder, ["frangi"], device="cpu", graph=True)
    for row in result.rows:  # independent route: segment, two graphs, compare_graphs
        volume = load_volume(folder / "images" / f"{row['volume']}.tif")
        reference = load_volume(folder / "labels" / f"{row['volume']}.tif").to_numpy() > 0
        _, labels, _ = segment(volume, "frangi", device="cpu")
        spacing = volume.spacing_zyx
        expected = compare_graphs(vessel_graph(labels, spacing), vessel_graph(reference, spacing),
                                  labels, reference)
        assert row["lc"] == pytest.approx(expected.lc)
        assert row["d_n_segments"] == int(expected.differences["n_segments"])
        assert row["d_total_length_um"] == pytest.approx(expected.differences["total_length_um"])
    mean = result.means[0]
    assert set(GRAPH_COLUMNS) <= set(mean)
    assert mean["lc"] == pytest.approx(np.mean([r["lc"] for r in result.rows]))
    header = format_markdown(result).splitlines()[0]
    assert " LC " in header and " Δ segments " in header
    plain = format_markdown(compare(folder, ["frangi"], device="cpu")).splitlines()[0]
    assert " LC " not in plain  # only when asked
    assert cli.main(["benchmark", "--data", str(folder), "--models", "frangi", "--device", "cpu",
                     "--graph", "--quiet"]) == 0
    assert " LC " in capsys.readouterr().out
