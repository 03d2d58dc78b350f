"""The autosave panel of the Review & refine widget: a crash loses at most the last second of edits.

Every 3D Labels layer gets an :class:`~napari_vessel.refine.autosave.AutoSaver` that writes it to a
recovery file in the background after each finished stroke, tool edit, undo or redo: at once, or
(throttled) when the last save is N seconds old -- 1 s by default, longer for labels so large that
one save takes more than a quarter of that. When an image is opened whose recovery file exists,
the user is asked whether to restore the edits (as a new labels layer), discard them or keep them
for later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, Container, Label, LineEdit, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QSizePolicy

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name, show_info
from napari_vessel._qt.review_watch import EditWatcher, defer
from napari_vessel.errors import InputError
from napari_vessel.io.common import file_stem
from napari_vessel.refine.autosave import (
    AutoSaver,
    RecoveryInfo,
    check_folder_writable,
    default_recovery_folder,
    discard_recovery,
    find_recovery,
    load_recovery,
    recovery_path,
)

__all__ = ["AutosavePanel", "image_source", "restore_dialog", "ask_restore_dialog",
           "DEFAULT_INTERVAL_S"]

#: Seconds between two saves at most, after a finished stroke (the throttle; it used to be 10 s,
#: which could lose the strokes of the last 10 s).
DEFAULT_INTERVAL_S = 1


def image_source(layer: Any) -> str | None:
    """The file a layer was read from: ``layer.source.path`` or ``metadata['source']``."""
    path = getattr(getattr(layer, "source", None), "path", None)
    path = path or layer.metadata.get("source") or layer.metadata.get("image_path")
    return str(path) if path else None


def restore_dialog(info: RecoveryInfo) -> Any:
    """The question asked about a recovery file: a QMessageBox with three buttons."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox()
    box.setWindowTitle("Restore unsaved edits?")
    box.setIcon(QMessageBox.Icon.Question)
    box.setText(
        f"Edits of '{info.layer_name}' ({' × '.join(map(str, info.shape))}) saved at "
        f"{info.saved_at_text} were not saved to a file.\n\nRestore them as a new labels layer?"
    )
    box.setInformativeText(f"Recovery file: {info.path}")
    box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Ask me later", QMessageBox.ButtonRole.RejectRole)
    return box


def ask_restore_dialog(info: RecoveryInfo) -> str:
    """Ask whether to restore a recovery file: ``"restore"``, ``"discard"`` or ``"keep"``."""
    from qtpy.QtWidgets import QMessageBox

    box = restore_dialog(info)
    box.exec()
    clicked = box.clickedButton()
    role = box.buttonRole(clicked) if clicked is not None else None
    if role == QMessageBox.ButtonRole.AcceptRole:
        return "restore"
    return "discard" if role == QMessageBox.ButtonRole.DestructiveRole else "keep"


class _Relay(QObject):
    """Carries saver callbacks from the saving thread to the GUI thread."""

    saved = Signal(object, object)
    failed = Signal(object)


@dataclass
class _Entry:
    layer: Any
    saver: AutoSaver
    watcher: EditWatcher | None
    image_path: str | None
    edited: bool = False  # no recovery file for labels nobody edited

    def on_edit(self, regions: list) -> None:
        self.edited = True
        self.saver.mark_dirty(regions)

    def on_unknown(self) -> None:
        if self.edited:  # undo/redo; a refresh of labels nobody edited changes nothing
            self.saver.mark_dirty()


class AutosavePanel(Container):
    """Autosave settings and one background saver per labels layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    get_image : callable
        Returns the image layer chosen in the widget (or None): its file names the recovery file.
    notify : callable
        Shows a user-facing error.
    """

    def __init__(self, viewer: Any, get_image: Callable[[], Any], notify: Callable) -> None:
        super().__init__(labels=True)
        self.viewer, self.get_image, self.notify = viewer, get_image, notify
        self.autosave_on = CheckBox(text="autosave edits", value=True)
        self.interval = SpinBox(label="at most every (s)", value=DEFAULT_INTERVAL_S, min=1,
                                max=3600, tooltip="a finished stroke is saved at once, or this "
                                "long after the previous save (longer for very large labels)")
        self.folder = LineEdit(label="recovery folder", value="",
                               tooltip="empty: next to the image file (or your home folder)")
        self.folder.native.setPlaceholderText("next to the image")
        self.browse = PushButton(text="Choose folder...")
        self.status = Label(value="")
        self.extend([self.autosave_on, self.interval, self.folder, self.browse, self.status])
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.native.layout().addStretch()
        #: ``ask_restore(info) -> "restore" | "discard" | "keep"``; replace it to decide in code.
        self.ask_restore: Callable[[RecoveryInfo], str] = ask_restore_dialog
        self.entries: dict[int, _Entry] = {}
        self._folder = ""
        self._relay = _Relay()
        self._relay.saved.connect(self._saved)
        self._relay.failed.connect(self.notify)
        self.autosave_on.changed.connect(self._enabled_changed)
        self.interval.changed.connect(self._interval_changed)
        self.folder.native.editingFinished.connect(self.apply_folder)
        self.browse.changed.connect(self._browse)
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self._removed)
        for layer in list(viewer.layers):
            self._start(layer)
        defer(self._offer_all)  # after the caller had a chance to set ask_restore

    # -- savers ------------------------------------------------------------------------------
    def saver_for(self, layer: Any) -> AutoSaver | None:
        """The saver of a labels layer (None if it is not autosaved)."""
        entry = self.entries.get(id(layer))
        return entry.saver if entry is not None else None

    def _image_path(self, labels: Any) -> str | None:
        """The image file whose recovery file holds these labels."""
        from napari.layers import Image

        if labels.metadata.get("image_path"):
            return str(labels.metadata["image_path"])
        chosen = self.get_image()
        candidates = [chosen] + [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        for image in candidates:
            if image is not None and tuple(image.data.shape) == tuple(labels.data.shape):
                path = image_source(image)
                if path:
                    return path
        return image_source(labels)

    def _path_for(self, labels: Any, image_path: str | None) -> Path:
        if self._folder:
            return recovery_path(image_path, labels.name, self._folder)
        path = recovery_path(image_path, labels.name)
        try:
            check_folder_writable(path.parent)
        except InputError:  # the image's folder is read-only: use the user folder
            fallback = recovery_path(image_path, labels.name, default_recovery_folder(None))
            show_info(f"cannot write next to the image; edits of '{labels.name}' are backed up in "
                      f"{fallback.parent}")
            return fallback
        return path

    def _start(self, layer: Any) -> None:
        from napari.layers import Labels

        if (not self.autosave_on.value or not isinstance(layer, Labels) or layer.ndim != 3
                or OUTPUT_KEY in layer.metadata or id(layer) in self.entries):
            return
        image_path = self._image_path(layer)
        saver = AutoSaver(lambda: layer.data, self._path_for(layer, image_path),
                          interval_s=self.interval.value, layer_name=layer.name,
                          image_path=image_path,
                          metadata={"scale": [float(s) for s in layer.scale],
                                    "translate": [float(t) for t in layer.translate]},
                          on_saved=lambda path: self._relay.saved.emit(layer.name, path),
                          on_error=self._relay.failed.emit)
        saver.start()
        entry = _Entry(layer, saver, None, image_path)
        entry.watcher = EditWatcher(self.viewer, layer, on_edit=entry.on_edit,
                                    on_unknown=entry.on_unknown)
        self.entries[id(layer)] = entry

    def _stop(self, key: int, flush: bool = True) -> None:
        entry = self.entries.pop(key)
        if entry.watcher is not None:
            entry.watcher.close()
        entry.saver.stop(flush=flush)

    def stop_all(self, flush: bool = True) -> None:
        """Stop every saver (saving what is pending when ``flush``)."""
        for key in list(self.entries):
            self._stop(key, flush)

    def _inserted(self, event: Any) -> None:
        from napari.layers import Image

        layer = event.value
        self._start(layer)
        if isinstance(layer, Image):
            defer(lambda: self.offer_restore(layer))

    def _removed(self, event: Any) -> None:
        if id(event.value) in self.entries:
            self._stop(id(event.value))

    def _enabled_changed(self, on: bool) -> None:
        if on:
            for layer in list(self.viewer.layers):
                self._start(layer)
            self.status.value = ""
        else:
            self.stop_all()
            self.status.value = "autosave is off: edits are not backed up"

    def _interval_changed(self, seconds: int) -> None:
        for entry in self.entries.values():
            entry.saver.interval_s = float(seconds)

    def _browse(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Recovery folder", self._folder)
        if folder:
            self.folder.value = folder
            self.apply_folder()

    def apply_folder(self) -> bool:
        """Use the folder typed in the box (empty: next to the image); False if not writable."""
        folder = str(self.folder.value).strip()
        if folder == self._folder:
            return True
        if folder:
            try:
                check_folder_writable(folder)
            except InputError as err:
                self.notify(err)
                self.folder.value = self._folder
                return False
        self._folder = folder
        for entry in self.entries.values():
            entry.saver.set_path(self._path_for(entry.layer, entry.image_path))
            entry.saver.mark_dirty()
        return True

    def _saved(self, name: str, path: Any) -> None:
        from time import strftime

        self.status.value = f"'{name}' backed up at {strftime('%H:%M:%S')}"
        self.status.tooltip = f"recovery file: {path}"

    # -- recovery ----------------------------------------------------------------------------
    def _offer_all(self) -> None:
        from napari.layers import Image

        for layer in list(self.viewer.layers):
            if isinstance(layer, Image):
                self.offer_restore(layer)

    def offer_restore(self, image: Any) -> list:
        """Ask about each recovery file left for ``image``'s file; returns the restored layers."""
        path = image_source(image)
        if not path or image not in self.viewer.layers:
            return []
        ours = {entry.saver.path.resolve() for entry in self.entries.values()}
        restored = []
        for info in find_recovery(path, self._folder or None):
            if info.path.resolve() in ours:
                continue
            decision = self.ask_restore(info)
            if decision == "discard":
                discard_recovery(info.path)
            elif decision == "restore":
                layer = self._restore(info, image, path)
                if layer is not None:
                    restored.append(layer)
        return restored

    def _restore(self, info: RecoveryInfo, image: Any, path: str) -> Any:
        try:
            data, info = load_recovery(info.path)
        except InputError as err:
            self.notify(err)
            return None
        grid = {}
        if data.ndim == image.ndim:
            grid = {"scale": image.scale, "translate": image.translate}
        stem = info.layer_name or file_stem(path)
        layer = self.viewer.add_labels(
            data, name=output_name(stem, "recovered", self.viewer.layers),
            metadata={"image_path": path, "recovered_from": str(info.path),
                      **name_metadata(stem, "recovered")}, **grid)
        entry = self.entries.get(id(layer))
        if entry is not None:
            entry.edited = True
        saver = entry.saver if entry is not None else None
        if saver is not None and saver.path.resolve() != info.path.resolve() and saver.save_now():
            discard_recovery(info.path)  # now backed up under the new layer's name
        show_info(f"restored '{layer.name}' from {info.path.name} (saved {info.saved_at_text})")
        return layer
