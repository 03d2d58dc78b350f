"""atomic_path / atomic_replace: the one home of "write under a temporary name, then move"."""

from __future__ import annotations

import os

import pytest

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_path, atomic_replace


def test_replace_writes_a_new_file_and_replaces_an_old_one(tmp_path):
    target = tmp_path / "cache.json"
    seen = []
    for text in ("old", "new"):
        with atomic_replace(target) as tmp:
            seen.append(tmp)
            assert not tmp.exists() and tmp.parent == tmp_path and tmp.suffix == ".json"
            tmp.write_text(text)
        assert target.read_text() == text
    assert seen[0] != seen[1]  # a unique name each time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_a_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_replace(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_a_folder_replaces_a_folder(tmp_path):
    target = tmp_path / "store.zarr"
    (target / "old").mkdir(parents=True)
    with atomic_replace(target) as tmp:
        (tmp / "new").mkdir(parents=True)
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]


def test_a_file_follows_the_umask_whatever_its_writer_chose(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_replace(tmp_path / "private.bin") as tmp:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_path_refuses_an_existing_target_unless_told(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_text("old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(InputError, match="does not exist; create it first"):
        with atomic_path(tmp_path / "missing" / "labels.tif"):
            pass
