"""The numbers of the Vessel analysis dock: summary, a sortable table of segments, histograms.

:class:`SegmentTable` lists one row per segment (id, length, mean radius, tortuosity, whether it
touches the border), sorts numerically on any column, and calls back with the segment when the
user clicks a row (or moves to it with the keys). :func:`summary_html` formats the whole-stack
morphometrics and paper 001's four graph metrics. :class:`ResultsPanel` holds the summary, the
table and the two histograms (:mod:`.graph_plot`) of one graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_vessel._qt.graph_plot import Histogram
from napari_vessel.graph.params import SHORT_SEGMENT_UM

__all__ = ["ResultsPanel", "SegmentTable", "summary_html", "COLUMNS"]

#: Column headers of the table.
COLUMNS = ("id", "length µm", "mean r µm", "tortuosity", "border")


class _Item(QTableWidgetItem):
    """A read-only cell that sorts by a number (NaN last) and shows it formatted."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.value = float(value)
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.value, getattr(other, "value", math.nan)
        if math.isnan(mine) or math.isnan(theirs):
            return not math.isnan(mine) and math.isnan(theirs)
        return mine < theirs


def _cells(seg: Any) -> list[_Item]:
    tortuosity = seg.tortuosity
    return [_Item(seg.id, str(seg.id)),
            _Item(seg.length_um, f"{seg.length_um:.1f}"),
            _Item(seg.radius_mean_um, f"{seg.radius_mean_um:.2f}"),
            _Item(tortuosity, "loop" if math.isnan(tortuosity) else f"{tortuosity:.2f}"),
            _Item(float(seg.touches_border), "yes" if seg.touches_border else "")]


class SegmentTable(QTableWidget):
    """One row per segment; sortable; a click calls ``on_pick(segment)``.

    Parameters
    ----------
    on_pick : callable(Segment)
        Called when the user picks a row (click or arrow keys).

    Attributes
    ----------
    segments : dict
        Segment id -> Segment of the graph shown.
    """

    def __init__(self, on_pick: Callable[[Any], None]) -> None:
        super().__init__(0, len(COLUMNS))
        self.on_pick = on_pick
        self.segments: dict[int, Any] = {}
        self._picked: int | None = None
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setMinimumHeight(150)
        self.setToolTip("click a row to centre the view on the segment; click a header to sort. "
                        "border: the vessel reaches a face of the stack (its length there is cut)")
        self.currentCellChanged.connect(self._current_changed)

    def set_graph(self, graph: Any | None) -> None:
        """Show the segments of ``graph`` (None: empty the table)."""
        self.setSortingEnabled(False)  # inserting into a sorted table moves rows under our feet
        self.blockSignals(True)
        segments = () if graph is None else graph.segments
        self.segments = {seg.id: seg for seg in segments}
        self._picked = None
        self.clearContents()
        self.setRowCount(len(segments))
        for row, seg in enumerate(segments):
            for col, item in enumerate(_cells(seg)):
                self.setItem(row, col, item)
        self.blockSignals(False)
        self.setSortingEnabled(True)

    def segment_at(self, row: int) -> Any | None:
        """The segment shown in ``row`` (after sorting), or None."""
        item = self.item(row, 0)
        return None if item is None else self.segments.get(int(item.value))

    def pick_row(self, row: int) -> Any | None:
        """Select ``row`` as a click would (centring the view); returns its segment."""
        self.setCurrentCell(row, 0)
        return self.segment_at(row)

    def _current_changed(self, row: int, _col: int, _prev_row: int, _prev_col: int) -> None:
        seg = self.segment_at(row)
        if seg is None or seg.id == self._picked:  # sorting moves the current row: no jump
            return
        self._picked = seg.id
        self.on_pick(seg)


def _number(value: float, fmt: str, unit: str = "") -> str:
    return "–" if not math.isfinite(value) else f"{value:{fmt}}{unit}"


def summary_html(graph: Any, seconds: float | None = None) -> str:
    """The whole-stack numbers of ``graph`` as a two-column HTML table (for a QLabel)."""
    s = graph.summary
    rows = [
        ("vessel volume fraction", _number(100 * s.vessel_volume_fraction, ".2f", " %")),
        ("total length", _number(s.total_length_um, ".1f", " µm")),
        ("length density", _number(s.length_density_mm_per_mm3, ".1f", " mm/mm³")),
        ("branch-point density", _number(s.branch_point_density_per_mm3, ",.0f", " /mm³")),
        ("mean diameter", _number(s.mean_diameter_um, ".2f", " µm")),
        ("junctions / end points", f"{s.n_junctions} / {s.n_end_points}"),
        ("<b>paper 001</b>: segments", str(s.n_segments)),
        ("dangling segments", f"{s.n_dangling} ({s.n_dangling_interior} not at the border)"),
        (f"short segments (&lt; {SHORT_SEGMENT_UM:g} µm)", str(s.n_short)),
        ("incorrect bifurcations (&gt; 3 branches)", str(s.n_incorrect_bifurcations)),
    ]
    body = "".join(f"<tr><td>{k}</td><td align='right'>&nbsp;{v}</td></tr>" for k, v in rows)
    spacing = " × ".join(f"{v:g}" for v in graph.spacing_zyx)
    foot = f"voxel size {spacing} µm (z, y, x)"
    if seconds is not None:
        foot += f"; analysed in {seconds:.1f} s"
    note = f"<br><i>{s.note}</i>" if s.note else ""
    return f"<table cellspacing='0'>{body}</table><small>{foot}</small>{note}"


def _boxed(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.addWidget(widget)
    return box


class ResultsPanel(QWidget):
    """The summary, the table of segments and the histograms of one graph.

    Parameters
    ----------
    on_pick : callable(Segment)
        Called when the user picks a row of the table.

    Attributes
    ----------
    summary : QLabel
    table : SegmentTable
    diameters, lengths : Histogram
        Segment mean diameters and lengths (µm), one count per segment.
    """

    def __init__(self, on_pick: Callable[[Any], None]) -> None:
        super().__init__()
        self.summary = QLabel("the summary appears here after Analyse")
        self.summary.setWordWrap(True)
        self.table = SegmentTable(on_pick)
        self.diameters = Histogram("segment mean diameter (µm)")
        self.lengths = Histogram("segment length (µm)")
        plots = QWidget()
        row = QHBoxLayout(plots)
        row.setContentsMargins(0, 0, 0, 0)
        for plot in (self.diameters, self.lengths):
            plot.setToolTip("number of segments per bin; the dashed line is the median")
            row.addWidget(plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(_boxed("Summary", self.summary))
        layout.addWidget(_boxed("Segments", self.table))
        layout.addWidget(plots)

    def show_graph(self, graph: Any | None, seconds: float | None = None) -> None:
        """Show the numbers of ``graph`` (None: empty everything)."""
        self.table.set_graph(graph)
        segments = () if graph is None else graph.segments
        self.diameters.set_values([2 * s.radius_mean_um for s in segments])
        self.lengths.set_values([s.length_um for s in segments])
        self.summary.setText("no graph" if graph is None else summary_html(graph, seconds))
