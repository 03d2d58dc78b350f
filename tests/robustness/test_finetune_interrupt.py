"""Ctrl-C during ``napari-vessel finetune``: once stops and keeps, twice aborts and saves nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from napari_vessel.data.phantom import make_phantom
from napari_vessel.io.stacks import save_volume


def _start(tmp_path, name: str, *extra: str) -> subprocess.Popen:
    image = tmp_path / "stack.tif"
    if not image.exists():
        save_volume(image, make_phantom((16, 160, 160), seed=3).image, (2.0, 1.0, 1.0))
    env = {**os.environ, "NAPARI_VESSEL_MODELS": str(tmp_path / "models"),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "napari_vessel.cli", "finetune", str(image), "--model", "tvnet",
         "-o", name, "--minutes", "5", "--threads", "1", "--max-drift", "10",
         "--method", "selftrain", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _watch(proc: subprocess.Popen) -> list[str]:
    """Collect stderr (the progress bar) in the background; returns the growing list."""
    seen: list[str] = []

    def read() -> None:
        for chunk in iter(lambda: proc.stderr.read(1), ""):
            seen.append(chunk)

    threading.Thread(target=read, daemon=True).start()
    return seen


def _wait_for_steps(seen: list[str], seconds: float = 120) -> None:
    """Wait until the progress bar reports training steps (the Ctrl-C handler is in place)."""
    end = time.monotonic() + seconds
    while not re.search(r"step \d+,", "".join(seen)):
        assert time.monotonic() < end, "the fine-tune did not start training: " + "".join(seen)
        time.sleep(0.2)


def test_one_ctrl_c_keeps_the_best_state_and_saves(tmp_path):
    proc = _start(tmp_path, "kept")
    seen = _watch(proc)
    _wait_for_steps(seen)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    out = proc.stdout.read()
    assert proc.returncode == 0, "".join(seen)
    assert "stopped by the user" in out and (tmp_path / "models" / "kept.safetensors").is_file()


def test_two_ctrl_c_abort_and_save_nothing(tmp_path):
    proc = _start(tmp_path, "aborted", "--patch-size", "16", "160", "160")  # steps of ~1 s
    seen = _watch(proc)
    _wait_for_steps(seen)
    proc.send_signal(signal.SIGINT)
    end = time.monotonic() + 60  # two signals during one C call arrive as one: wait for the first
    while "Ctrl-C again" not in "".join(seen):
        assert time.monotonic() < end, "".join(seen)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    time.sleep(0.2)  # the reader drains the last lines
    assert proc.returncode == 130 and "interrupted" in "".join(seen)
    folder = tmp_path / "models"
    leftovers = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert leftovers == [], leftovers  # no half-saved model


def test_two_quick_ctrl_c_inside_one_step_abort(tmp_path):
    """Two presses in quick succession, both inside one training step, still abort: the step runs
    in a worker thread, so the main thread handles each signal when it comes (two presses during
    one long computation of the main thread used to arrive as one: the run stopped and saved)."""
    proc = _start(tmp_path, "quick", "--patch-size", "16", "160", "160")  # steps of ~1 s
    seen = _watch(proc)
    _wait_for_steps(seen)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    time.sleep(0.2)
    assert proc.returncode == 130 and "interrupted" in "".join(seen), "".join(seen)
    folder = tmp_path / "models"
    assert not folder.exists() or not any(folder.iterdir())
