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
