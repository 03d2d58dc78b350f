"""``napari-vessel demo`` checks its folder before the work and publishes its six files as one
set (manifest last): a read-only folder or a full disk gives one clear line and no partial set,
and an earlier complete set stays byte-identical."""

from __future__ import annotations

import pytest

import napari_vessel.commands.demo as demo
import napari_vessel.inference.run
import napari_vessel.render
from napari_vessel.cli import main

NAMES = {"image.tif", "ground_truth.tif", "probability.tif", "labels.tif", "manifest.json",
         "mip_overlay.png"}


def _demo(out, *extra):
    return main(["demo", "--out", str(out), "--shape", "12", "48", "48", "--model", "frangi",
                 "--no-view", "--quiet", *extra])


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _no_work(monkeypatch):
    monkeypatch.setattr(napari_vessel.inference.run, "segment",
                        lambda *a, **k: pytest.fail("the work started"))


def test_a_blocked_out_folder_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _demo(blocker / "out") == 2
    err = capsys.readouterr().err
    assert "not a writable folder" in err and "--out" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("where", ["png", "manifest"])
def test_a_full_disk_leaves_the_earlier_set_byte_identical(tmp_path, full_disk, capsys, where):
    out = tmp_path / "out"
    assert _demo(out) == 0
    before = _files(out)
    assert set(before) == NAMES
    if where == "png":  # the fifth file: four TIFFs are already written
        full_disk(napari_vessel.render, "save_png")
    else:  # the manifest, written last
        full_disk(demo, "write_json")
    capsys.readouterr()
    assert _demo(out, "--seed", "1", "--overwrite") == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert _files(out) == before  # same files, same bytes, no temporary leftovers


def test_a_full_disk_on_a_first_run_leaves_no_partial_set(tmp_path, full_disk, capsys):
    out = tmp_path / "out"
    full_disk(napari_vessel.render, "save_png")
    assert _demo(out) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
