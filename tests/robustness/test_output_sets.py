"""segment publishes its outputs as one set: a failure at any file leaves the earlier set as it
was, a killed run's leftovers are cleaned, and a refused run creates no folder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import napari_vessel.commands.segment as command
from napari_vessel.cli import main


@pytest.fixture()
def stack(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, (np.random.default_rng(0).random((6, 48, 48)) * 200).astype(np.uint8))
    return path


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_disk_full_at_the_labels_leaves_the_earlier_set_untouched(stack, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "out"
    assert main(["segment", str(stack), "-o", str(out), "--quiet", "--threshold", "0.5"]) == 0
    before = _files(out)
    import napari_vessel.io.stacks as io

    real = io.save_volume

    def full_disk(path, data, *args, kind="image", **kwargs):
        if kind == "labels":
            raise OSError(28, "No space left on device")
        return real(path, data, *args, kind=kind, **kwargs)

    monkeypatch.setattr(io, "save_volume", full_disk)
    assert main(["segment", str(stack), "-o", str(out), "--quiet", "--overwrite",
                 "--threshold", "0.9"]) != 0
    assert _files(out) == before  # same files, same bytes, no temporary leftovers


def test_leftovers_of_a_killed_run_are_removed_by_the_next(stack, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".s_prob.tif.deadbeef.partial.tif"
    leftover.write_bytes(b"half a file")
    assert main(["segment", str(stack), "-o", str(out), "--quiet"]) == 0
    assert not leftover.exists()
    assert sorted(p.name for p in out.iterdir()) == ["s_labels.tif", "s_manifest.json",
                                                    "s_prob.tif"]


def test_a_refused_run_creates_no_folder(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((4, 32, 32), 7, np.uint8))
    out = tmp_path / "out"
    assert main(["segment", str(flat), "-o", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_an_unwritable_output_is_refused_before_the_work(stack, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["segment", str(stack), "-o", str(blocker / "out"), "--quiet"]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    assert command.publish_set  # the one publishing function


def test_a_system_error_is_one_clear_line(stack, tmp_path, monkeypatch, capsys):
    import napari_vessel.io.stacks as io

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "save_volume", full_disk)
    assert main(["segment", str(stack), "-o", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_the_manifest_is_readable_by_the_group_like_the_images(stack, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert main(["segment", str(stack), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()}
    assert modes["s_manifest.json"] == 0o644, modes  # was 0600 (mkstemp)
