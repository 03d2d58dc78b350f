"""start_worker: results, errors and cancel reach the main thread once, without tracebacks."""

from __future__ import annotations

import time

import pytest

from napari_vessel._qt import _common
from napari_vessel.errors import InputError


@pytest.fixture
def captured(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "notify_error", lambda err: messages.append(str(err)))
    monkeypatch.setattr(_common, "show_info", lambda msg: messages.append(f"info: {msg}"))
    return messages


def test_result_and_progress_arrive(qtbot, captured):
    got, progress, finished = [], [], []

    def work(progress, cancel):
        progress(0.5, "half")
        return 42

    _common.start_worker(work, on_progress=lambda f, m: progress.append((f, m)),
                         on_done=got.append, on_finished=lambda: finished.append(1))
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert got == [42]
    assert progress == [(0.5, "half")]
    assert captured == []


def test_input_error_becomes_one_notification(qtbot, captured, monkeypatch):
    from napari.utils.notifications import notification_manager

    received = []
    monkeypatch.setattr(notification_manager, "receive_error", lambda *a: received.append(a))
    finished = []

    def work(progress, cancel):
        raise InputError("the stack is empty; open another file")

    _common.start_worker(work, on_finished=lambda: finished.append(1))
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert captured == ["the stack is empty; open another file"]
    assert received == []  # no traceback notification besides ours


def test_cancel_stops_the_work(qtbot, captured):
    cancelled, finished = [], []

    def work(progress, cancel):
        for _ in range(200):
            cancel.check()
            time.sleep(0.01)
        return "not cancelled"

    job = _common.start_worker(work, on_done=captured.append,
                               on_cancelled=lambda: cancelled.append(1),
                               on_finished=lambda: finished.append(1))
    job.cancel()
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert cancelled == [1]
    assert "not cancelled" not in captured


def test_output_name_is_unique():
    assert _common.output_name("img", "vessels", ["img vessels"]) == "img vessels [2]"
    assert _common.output_name("img", "vessels", []) == "img vessels"


def test_output_names_are_short_unique_and_keep_start_and_end():
    from napari_vessel._qt._common import FULL_NAME_KEY, MAX_NAME, name_metadata, output_name

    assert output_name("stack", "preprocessed") == "stack preprocessed"  # short: as it is
    assert output_name("stack", "preprocessed", ["stack preprocessed"]) == "stack preprocessed [2]"
    long_stem = "mouse3_cortex_2024-05-17_stack_ch1 preprocessed"
    name = output_name(long_stem, "vessels (tvnet)")
    assert len(name) == MAX_NAME and name.startswith("mouse3") and "…" in name
    assert name.endswith("essed vessels (tvnet)")  # the suffix, the part that differs, is whole
    model = "vessel-unet-2pm-finetuned-mouse-cortex-v3"
    probability = output_name(long_stem, f"probability ({model})")
    labels = output_name(long_stem, f"vessels ({model})")
    assert len(probability) <= MAX_NAME and len(labels) <= MAX_NAME and probability != labels
    assert probability.endswith("v3)") and "probability (" in probability
    second = output_name(long_stem, "vessels (tvnet)", [name])
    assert second == f"{name} [2]"
    assert name_metadata(long_stem, "vessels (tvnet)") == {
        FULL_NAME_KEY: f"{long_stem} vessels (tvnet)"}
