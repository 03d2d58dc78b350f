"""Autosave: background saves, atomic files, recovery lookup, and a process killed mid-edit."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.refine.autosave import (
    ENV_VAR,
    AutoSaver,
    check_folder_writable,
    default_recovery_folder,
    discard_recovery,
    find_recovery,
    load_recovery,
    recovery_path,
)

REPO = Path(__file__).resolve().parents[1]


def _wait_for(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "mouse1.ome.tif"
    path.parent.mkdir()
    path.write_bytes(b"")
    return path


def test_recovery_paths(image_path, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert recovery_path(image_path) == image_path.parent / "mouse1.vessel-recovery.npz"
    assert recovery_path(image_path, "vessels: edited").name == "mouse1.vessels_edited.vessel-recovery.npz"
    assert recovery_path(None).parent == Path("~/.napari-vessel/recovery").expanduser()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "rec"))
    assert default_recovery_folder(image_path) == tmp_path / "rec"
    assert recovery_path(image_path, folder=tmp_path / "x").parent == tmp_path / "x"


def test_save_find_load_discard(image_path, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    labels = np.zeros((4, 16, 16), dtype=np.int32)
    labels[1, 2:5, 3] = 7
    path = recovery_path(image_path, "vessels")
    saver = AutoSaver(labels, path, layer_name="vessels", image_path=image_path,
                      metadata={"scale": [2.0, 1.0, 1.0]})
    assert not saver.dirty and find_recovery(image_path) == []
    saver.mark_dirty()
    assert saver.save_now() and not saver.dirty
    (image_path.parent / "other.vessel-recovery.npz").write_bytes(b"not an archive")
    found = find_recovery(image_path)
    assert [f.path for f in found] == [path]
    assert found[0].layer_name == "vessels" and found[0].shape == (4, 16, 16)
    assert found[0].dtype == "int32" and found[0].metadata["scale"] == [2.0, 1.0, 1.0]
    restored, info = load_recovery(path)
    np.testing.assert_array_equal(restored, labels)
    assert info.image_path == str(image_path.resolve()) and len(info.saved_at_text) == 19
    assert not list(path.parent.glob("*.tmp"))
    assert not list(path.parent.glob(".*.partial*"))  # no temporary file is left
    discard_recovery(path)
    discard_recovery(path)  # already gone: fine
    assert find_recovery(image_path) == []
    with pytest.raises(InputError, match="does not exist"):
        load_recovery(path)
    with pytest.raises(InputError, match="cannot be read"):
        load_recovery(image_path.parent / "other.vessel-recovery.npz")
    saver.save_now()
    truncated = image_path.parent / "cut.vessel-recovery.npz"
    truncated.write_bytes(path.read_bytes()[:100])  # a zip cut short
    with pytest.raises(InputError, match="cannot be read"):
        load_recovery(truncated)


def test_background_saves_respect_interval(tmp_path):
    labels = np.zeros((2, 8, 8), dtype=np.uint8)
    saved = []
    saver = AutoSaver(labels, tmp_path / "a.vessel-recovery.npz", interval_s=0.25,
                      on_saved=saved.append)
    with saver:
        time.sleep(0.15)
        assert saved == []  # nothing to save until marked dirty
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            with saver.editing():
                labels[0, 0, 0] += 1
            time.sleep(0.005)
        assert _wait_for(lambda: not saver.dirty)
    assert 2 <= len(saved) <= 6  # about every 0.25 s over ~1 s of painting
    np.testing.assert_array_equal(load_recovery(saved[-1])[0], labels)


def test_full_copy_waits_for_open_edits(tmp_path):
    labels = np.zeros((2, 8, 8), dtype=np.uint8)
    saved = []
    saver = AutoSaver(labels, tmp_path / "b.vessel-recovery.npz", interval_s=0.05,
                      on_saved=saved.append).start()
    saver.begin_edit()  # a brush stroke in progress ...
    labels[0] = 1
    saver.mark_dirty()  # ... and something said "everything changed" (e.g. undo)
    time.sleep(0.3)
    assert saved == []  # no copy while the stroke is open
    labels[1] = 1
    saver.end_edit()
    assert _wait_for(lambda: len(saved) == 1)
    assert load_recovery(saved[0])[0].sum() == 128
    saver.stop()


def test_regions_are_saved_without_a_full_copy(tmp_path):
    labels = np.zeros((3, 20, 20), dtype=np.int32)
    saved = []
    saver = AutoSaver(lambda: labels, tmp_path / "d.vessel-recovery.npz", interval_s=0.05,
                      on_saved=saved.append).start()
    labels[1, 2:5, 3:6] = 4  # a brush stroke, reported as a box ...
    labels[2, [0, 19], [7, 1]] = 9  # ... and scattered voxels (a data_setitem edit)
    saver.mark_dirty([(slice(1, 2), slice(2, 5), slice(3, 6)),
                      (np.array([2, 2]), np.array([0, 19]), np.array([7, 1]))])
    labels[0, 0, 0] = 5  # not reported: not in the file
    assert _wait_for(lambda: saved)
    saver.stop(flush=False)
    restored = load_recovery(saved[-1])[0]
    assert restored[1].sum() == 36 and restored[2].sum() == 18 and restored[0, 0, 0] == 0
    with pytest.raises(InputError, match="not understood"):
        saver.mark_dirty((slice(0, 1),))
    saver.mark_dirty((np.array([5]), np.array([0]), np.array([0])))  # not in the labels (any more)
    assert saver._journal[-1][1] is None  # -> the next save copies everything


def test_mark_dirty_never_waits_for_a_save(tmp_path):
    labels = np.zeros((40, 512, 512), dtype=np.uint8)
    labels[:, ::8] = 1  # mostly background, like real labels
    saver = AutoSaver(labels, tmp_path / "c.vessel-recovery.npz", interval_s=0.01)
    begin = time.perf_counter()
    saver.save_now()
    save_time = time.perf_counter() - begin
    saver.start()
    stroke = (slice(3, 4), slice(100, 121), slice(200, 221))
    latencies = []
    end = time.perf_counter() + max(1.0, 4 * save_time)
    while time.perf_counter() < end:  # paint strokes while saves run back to back
        begin = time.perf_counter()
        with saver.editing(stroke):
            labels[stroke] += 1
        latencies.append(time.perf_counter() - begin)
        time.sleep(0.0005)
    saver.stop(flush=False)
    assert saver.saves >= 3
    assert np.percentile(latencies, 99) < 0.005  # a region copy and a counter
    assert max(latencies) < save_time / 2  # at worst a few thread switches, never a save


def test_flush_on_stop_and_unwritable_folder(tmp_path):
    labels = np.ones((2, 4, 4), dtype=np.uint8)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    errors = []
    saver = AutoSaver(labels, blocker / "x.vessel-recovery.npz", interval_s=0.05,
                      on_error=errors.append).start()
    saver.mark_dirty()
    assert _wait_for(lambda: errors, 2.0)
    time.sleep(0.2)
    assert len(errors) == 1  # reported once, not on every retry
    assert "file is in the way" in str(errors[0]) and "Choose another recovery folder" in str(errors[0])
    assert saver.dirty  # nothing was silently written elsewhere
    saver.set_path(tmp_path / "ok" / "x.vessel-recovery.npz")
    saver.stop(flush=True)
    assert (tmp_path / "ok" / "x.vessel-recovery.npz").exists() and not saver.dirty
    with pytest.raises(InputError, match="file is in the way"):
        check_folder_writable(blocker / "sub")
    assert check_folder_writable(tmp_path / "new") == tmp_path / "new"


def test_read_only_folder_is_reported(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    saver = AutoSaver(np.zeros((1, 2, 2), np.uint8), tmp_path / "r.vessel-recovery.npz")
    saver.mark_dirty()
    with pytest.warns(UserWarning, match="read-only"):
        assert not saver.save_now()
    assert not list(tmp_path.iterdir())  # the temporary file is cleaned up
    with pytest.raises(InputError, match="positive"):
        AutoSaver(np.zeros((1, 2, 2)), tmp_path / "r.npz", interval_s=0)


PAINTER = """
import sys, time
import numpy as np
from napari_vessel.refine.autosave import AutoSaver

labels = np.zeros((16, 256, 256), dtype=np.uint8)
saver = AutoSaver(labels, sys.argv[1], interval_s=0.02, layer_name="vessels",
                  image_path=sys.argv[2], on_saved=lambda p: print("saved", flush=True))
saver.start()
k = 0
while True:  # each stroke adds 1 to one whole slice, in turn, a band at a time
    with saver.editing((slice(k % 16, k % 16 + 1), slice(None), slice(None))):
        for row in range(0, 256, 32):
            labels[k % 16, row : row + 32] += 1
            time.sleep(0.0002)
    k += 1
"""


def test_killed_while_painting_leaves_a_consistent_recovery(image_path):
    path = recovery_path(image_path, "vessels", folder=image_path.parent)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PAINTER), str(path), str(image_path)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    timer = threading.Timer(30, process.kill)
    timer.start()
    try:
        saves = 0
        while saves < 5:
            line = process.stdout.readline()
            assert line, "the painting process ended before saving"
            saves += line.startswith("saved")
        os.kill(process.pid, signal.SIGKILL)  # mid-edit, maybe mid-save
        process.wait(10)
    finally:
        timer.cancel()
        process.kill()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    [info] = find_recovery(image_path, folder=image_path.parent)
    labels, info = load_recovery(info.path)
    assert info.layer_name == "vessels" and labels.shape == (16, 256, 256)
    # A consistent state after k steps: slice i was painted ceil((k - i) / 16) times, so every
    # slice is uniform, and the counts never rise with i and differ by at most 1.
    per_slice = labels.reshape(16, -1)
    assert np.all(per_slice == per_slice[:, :1]), "a slice was saved half-painted"
    counts = per_slice[:, 0].astype(int)
    assert counts[0] >= 1 and np.all(np.diff(counts) <= 0) and counts[0] - counts[-1] <= 1


def test_a_mark_after_a_save_is_written_within_the_throttle(tmp_path):
    labels = np.zeros((2, 8, 8), dtype=np.uint8)
    saved = []
    saver = AutoSaver(labels, tmp_path / "t.vessel-recovery.npz", on_saved=saved.append)
    assert saver.interval_s == 1.0  # the default throttle (it was 10 s)
    with saver:
        with saver.editing():
            labels[0, 0, 0] = 1
        assert _wait_for(lambda: len(saved) == 1)
        with saver.editing((slice(1, 2), slice(0, 1), slice(0, 1))):  # right after that save
            labels[1, 0, 0] = 2
        start = time.monotonic()
        assert _wait_for(lambda: not saver.dirty)
        assert time.monotonic() - start < saver.gap_s + 1.0
    assert load_recovery(saved[-1])[0][1, 0, 0] == 2


def test_a_long_save_stretches_the_gap(tmp_path):
    saver = AutoSaver(np.zeros((1, 2, 2)), tmp_path / "g.vessel-recovery.npz", interval_s=1.0,
                      max_busy=0.25)
    assert saver.gap_s == 1.0
    saver.write_s = 2.0  # a save of very large labels took 2 s: write at most 1/4 of the time
    assert saver.gap_s == 8.0
    with pytest.raises(InputError, match="max_busy"):
        AutoSaver(np.zeros((1, 2, 2)), tmp_path / "r.npz", max_busy=0)
