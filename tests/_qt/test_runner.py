"""DockRunner in a real viewer: finish once, errors in the status line, cancel adds nothing."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from magicgui.widgets import Label, ProgressBar, PushButton

from napari_vessel._qt.runner import DockRunner
from napari_vessel.errors import InputError


@pytest.fixture
def dock(make_napari_viewer):
    """A viewer with one image, the widgets a dock has, and a runner over them."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="stack")
    ns = SimpleNamespace(viewer=viewer, errors=[], infos=[], done=[],
                         run=PushButton(text="Run"), other=PushButton(text="Other"),
                         cancel=PushButton(text="Cancel", enabled=False),
                         progress=ProgressBar(min=0, max=1000, value=0, visible=False),
                         status=Label(value=""))
    ns.runner = DockRunner(buttons=(ns.run, ns.other), cancel_button=ns.cancel,
                           progress=ns.progress, status=ns.status, notify=ns.errors.append,
                           info=ns.infos.append, cancelled="cancelled; no layer was added")

    def add_layer(result):
        ns.done.append(result)
        viewer.add_image(result, name="result")

    ns.add_layer = add_layer
    return ns


def _wait(qtbot, dock) -> None:
    qtbot.waitUntil(lambda: dock.runner.job is None, timeout=10000)


def _idle(dock) -> bool:
    return (dock.run.enabled and dock.other.enabled and not dock.cancel.enabled
            and not dock.progress.visible)


def test_success_calls_finish_once_and_enables_the_buttons(dock, qtbot):
    gate, seen = threading.Event(), []

    def work(progress, cancel):
        progress(0.5, "half way")
        gate.wait(5)
        return np.ones((4, 8, 8), np.float32)

    dock.status.value = "failed: an earlier run"
    job = dock.runner.start(work, dock.add_layer, starting="starting the toy…")
    assert job is dock.runner.job and dock.runner.running
    assert not dock.run.enabled and not dock.other.enabled and dock.cancel.enabled
    assert dock.progress.visible and dock.status.value == "starting the toy…"
    assert dock.runner.refuse("already running") and dock.errors == ["already running"]
    qtbot.waitUntil(lambda: dock.progress.value == 500, timeout=5000)  # progress moves
    seen.append(dock.status.value)
    gate.set()
    _wait(qtbot, dock)
    assert seen == ["half way"]
    assert len(dock.done) == 1 and [layer.name for layer in dock.viewer.layers] == ["stack",
                                                                                   "result"]
    assert _idle(dock) and dock.errors == ["already running"] and not dock.infos
    assert not dock.runner.refuse("already running")


@pytest.mark.parametrize("where", ["worker", "finish"])
def test_an_error_shows_its_message_and_adds_nothing(dock, qtbot, where):
    def work(progress, cancel):
        if where == "worker":
            raise InputError("the stack is empty; open another file")
        return np.ones((4, 8, 8), np.float32)

    def finish(result):
        raise RuntimeError("boom")  # before any layer is added

    dock.runner.start(work, finish if where == "finish" else dock.add_layer)
    _wait(qtbot, dock)
    expected = ("the stack is empty; open another file" if where == "worker"
                else "RuntimeError: boom")
    assert dock.status.value == f"failed: {expected}"
    assert [str(err) for err in dock.errors] == [expected.removeprefix("RuntimeError: ")]
    assert [layer.name for layer in dock.viewer.layers] == ["stack"] and not dock.done
    assert _idle(dock)


def test_cancel_mid_run_calls_no_finish_and_enables_the_buttons(dock, qtbot):
    started = threading.Event()

    def work(progress, cancel):
        started.set()
        for k in range(500):
            cancel.check()
            progress(k / 500, f"step {k}")
            threading.Event().wait(0.01)
        return np.ones((4, 8, 8), np.float32)

    dock.runner.start(work, dock.add_layer)
    assert started.wait(5)
    qtbot.waitUntil(lambda: dock.status.value.startswith("step"), timeout=5000)
    assert dock.runner.cancel()
    assert dock.status.value == "cancelling…"
    _wait(qtbot, dock)
    assert not dock.done and [layer.name for layer in dock.viewer.layers] == ["stack"]
    assert dock.status.value == "cancelled" and dock.infos == ["cancelled; no layer was added"]
    assert not dock.errors and _idle(dock)
    assert not dock.runner.cancel()  # nothing to cancel now


def test_a_result_after_cancel_is_dropped_unless_a_stop_keeps_it(dock, qtbot):
    gate = threading.Event()

    def work(progress, cancel):  # ignores the token: returns after Cancel was pressed
        gate.wait(5)
        return np.ones((4, 8, 8), np.float32)

    dock.runner.start(work, dock.add_layer)
    dock.runner.cancel()
    gate.set()
    _wait(qtbot, dock)
    assert not dock.done and dock.status.value == "cancelled"
    dock.runner.stop_keeps_result = True  # the Fine-tune dock: Stop keeps the best state
    gate.clear()
    dock.runner.start(work, dock.add_layer)
    dock.runner.cancel("stopping: keeping the best state so far…")
    gate.set()
    _wait(qtbot, dock)
    assert len(dock.done) == 1 and _idle(dock)
