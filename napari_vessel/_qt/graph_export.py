"""Export of the Vessel analysis dock: a folder chooser, the overwrite question and the manifest.

The files are those of :func:`napari_vessel.graph.write_graph` (``segments.csv``, ``nodes.csv``,
``graph.graphml``, ``summary.json``), published as one set; the dock writes them in a worker.
An earlier set in the folder is replaced only when the user confirms.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget

from napari_vessel.graph import OUTPUT_FILES

__all__ = ["ask_folder", "confirm_replace", "existing_files", "versions", "OUTPUT_FILES"]


def ask_folder(parent: QWidget | None) -> Path | None:
    """The folder the user chose for the graph files, or None when they cancelled."""
    folder = QFileDialog.getExistingDirectory(parent, "Export the vessel graph to a folder")
    return Path(folder) if folder else None


def existing_files(folder: Path) -> list[str]:
    """The graph files already in ``folder`` (a previous export)."""
    return [name for name in OUTPUT_FILES if (folder / name).exists()]


def confirm_replace(parent: QWidget | None, folder: Path, existing: list[str]) -> bool:
    """Ask whether to replace the graph files of a previous export (default: no)."""
    answer = QMessageBox.question(
        parent, "Replace the graph files?",
        f"{folder} already holds {', '.join(existing)} from an earlier export. Replace them?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def versions() -> dict[str, str]:
    """Versions of the packages that made the graph, for the manifest."""
    import napari
    import networkx
    import skan

    from napari_vessel import __version__

    return {"napari-vessel": __version__, "napari": napari.__version__, "skan": skan.__version__,
            "networkx": networkx.__version__}
