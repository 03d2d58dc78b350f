"""Compare models on a folder of annotated stacks: the papers' scores, speed and memory, one table.

:func:`compare` runs every chosen model through :func:`napari_vessel.inference.run.segment` (the path
of ``napari-vessel segment``: the card's preprocessing, the sliding window, the card's threshold
or post-processing) on every image/label pair and scores the labels with
:func:`napari_vessel.evaluation.metrics.evaluate`. :func:`format_markdown` renders one row per model (the
mean over the volumes) and optionally one row per model and volume.

Peak memory is the rise of this process's resident memory (RSS) above its level when a run
starts, sampled every 10 ms while the model segments one volume; the table shows the largest rise
over the volumes. Memory the process still holds from earlier runs can be reused without showing
up, so read it as a lower bound on what a fresh process needs on top of the loaded stack.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import file_stem
from napari_vessel.io.volume import Volume
from napari_vessel.memory import PeakMemory
from napari_vessel.progress import CancelToken, Progress, no_progress, scaled

__all__ = ["Comparison", "PeakMemory", "load_folder", "choose_models", "compare",
           "format_markdown", "to_json", "SCORES", "NO_WEIGHTS"]

#: Score keys of :func:`napari_vessel.evaluation.metrics.evaluate` shown in the table, with their titles.
SCORES = {"ap": "AP", "dice": "F1", "sensitivity": "Sens", "specificity": "Spec",
          "jaccard": "Jaccard", "mcc": "MCC", "cldice": "clDice", "hd95": "HD95"}
#: Graph columns of ``compare(..., graph=True)`` (:func:`napari_vessel.graph.graph_scores`).
GRAPH_TITLES = {"lc": "LC", "d_total_length_um": "Δ length µm", "d_n_segments": "Δ segments",
                "d_n_junctions": "Δ junctions", "d_n_end_points": "Δ end points",
                "d_mean_diameter_um": "Δ diameter µm"}

#: Why a network without trained weights is skipped.
NO_WEIGHTS = "no trained weights"

_IMAGE_ENDINGS = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


@dataclass
class Comparison:
    """What :func:`compare` returns.

    Attributes
    ----------
    rows : list of dict
        One per model and volume: ``model``, ``volume``, the scores of
        :func:`~napari_vessel.evaluation.metrics.evaluate`, ``seconds`` (segmentation, reading excluded),
        ``voxels_per_s``, ``peak_rss_mb``, ``labels_by`` and ``seen_in_training``.
    means : list of dict
        One per model that ran: the mean of every score over its volumes, ``seconds`` per volume,
        ``voxels_per_s`` over all volumes, the largest ``peak_rss_mb``, ``volumes``.
    skipped : list of dict
        ``{"model": name, "reason": text}`` for every model that was asked for (or registered)
        but did not run.
    hd95_unit : str
        ``"µm"`` when every volume's voxel size is known, else ``"voxels"``.
    settings : dict
        Device, volumes and versions, for the record.
    """

    rows: list[dict] = field(default_factory=list)
    means: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    hd95_unit: str = "voxels"
    settings: dict = field(default_factory=dict)


def load_folder(folder: str | os.PathLike, *, spacing_zyx: Any = None
                ) -> list[tuple[str, Volume, np.ndarray]]:
    """Read every ``images/NAME.tif`` of ``folder`` with its ``labels/NAME.tif``.

    Parameters
    ----------
    folder : path
        A folder with ``images/`` and ``labels/`` sub-folders of TIFF files with the same names
        (the layout of ``napari-vessel data`` and ``napari-vessel train``).
    spacing_zyx : (float, float, float), optional
        Voxel size in µm for every stack; default from each image file.

    Returns
    -------
    list of (name, Volume, labels)
        Sorted by name; images as read (no normalisation), labels as bool (non-zero = vessel).

    Raises
    ------
    InputError
        Missing folder or sub-folders, no pairs, an image without labels, shapes that differ.
    """
    from napari_vessel.io.stacks import load_volume

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a folder with images/ and labels/")
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{folder} needs 'images/' and 'labels/' sub-folders of TIFF files with "
                         "the same names")
    files = sorted(p for p in images.iterdir()
                   if p.name.lower().endswith(_IMAGE_ENDINGS) and not p.name.startswith("."))
    if not files:
        raise InputError(f"no image/label pairs in {folder}: {images} holds no .tif files")
    pairs = []
    for path in files:
        label_path = labels / path.name
        if not label_path.is_file():
            raise InputError(f"no labels for {path.name}: expected {label_path}")
        volume = load_volume(path, spacing=spacing_zyx, lazy=False)
        reference = load_volume(label_path, lazy=False).to_numpy() > 0
        if tuple(volume.shape) != reference.shape:
            raise InputError(f"{path.name}: image {tuple(volume.shape)} and labels "
                             f"{reference.shape} differ in shape")
        pairs.append((file_stem(path), volume, reference))
    return pairs


def choose_models(names: Sequence[str] | None = None) -> tuple[list[Any], list[dict]]:
    """The models to run and those to skip, with the reason.

    Parameters
    ----------
    names : sequence of str, optional
        Model names; default every registered model.

    Returns
    -------
    runnable : list of ModelSpec
        Classical models and networks whose weights exist, in the given (or registry) order.
    skipped : list of dict
        ``{"model": name, "reason": ...}`` for networks without trained weights.

    Raises
    ------
    InputError
        An unknown name (the message suggests the closest names).
    """
    from napari_vessel.models import registry

    specs = registry.list_models() if names is None else [registry.get(n) for n in names]
    runnable, skipped, seen = [], [], set()
    for spec in specs:
        if spec.name in seen:
            continue
        seen.add(spec.name)
        if spec.usable:
            runnable.append(spec)
        else:
            skipped.append({"model": spec.name, "reason": NO_WEIGHTS})
    return runnable, skipped


def _as_pairs(data: Any, spacing_zyx: Any) -> list[tuple[str, Volume, np.ndarray]]:
    if isinstance(data, str | os.PathLike):
        return load_folder(data, spacing_zyx=spacing_zyx)
    pairs = []
    for name, image, reference in data:
        if isinstance(image, Volume):
            volume = image.with_spacing(spacing_zyx) if spacing_zyx is not None else image
        else:
            volume = Volume(np.asarray(image), spacing_zyx or (1.0, 1.0, 1.0),
                            spacing_known=spacing_zyx is not None)
        reference = np.asarray(reference) != 0
        if tuple(volume.shape) != reference.shape:
            raise InputError(f"{name}: image {tuple(volume.shape)} and labels {reference.shape} "
                             "differ in shape")
        pairs.append((str(name), volume, reference))
    if not pairs:
        raise InputError("no image/label pairs to compare on")
    return pairs


def _mean(rows: list[dict], spec: Any) -> dict:
    out: dict[str, Any] = {"model": spec.name}
    for key in (*SCORES, *GRAPH_TITLES):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if values:
            out[key] = float(np.mean(values))
    seconds = sum(r["seconds"] for r in rows)
    out["seconds"] = seconds / len(rows)
    out["voxels_per_s"] = sum(r["voxels"] for r in rows) / seconds if seconds > 0 else math.inf
    peaks = [r["peak_rss_mb"] for r in rows if r.get("peak_rss_mb") is not None]
    out["peak_rss_mb"] = max(peaks) if peaks else None
    from napari_vessel.postprocess.labels import Postprocessing

    recipes = {r["labels_by"] for r in rows}  # one per volume when a level rule chose them
    out["labels_by"] = (rows[0]["labels_by"] if len(recipes) == 1
                        else Postprocessing.for_model(spec).describe())
    out["volumes"] = len(rows)
    out["seen_in_training"] = sum(bool(r["seen_in_training"]) for r in rows)
    return out


def compare(data: Any, models: Sequence[str] | None = None, *, device: Any = "cpu",
            spacing_zyx: Any = None, progress: Progress | None = None,
            cancel: CancelToken | None = None, graph: bool = False) -> Comparison:
    """Segment every pair with every model and score the labels against the references.

    Parameters
    ----------
    data : path or sequence of (name, image, labels)
        A folder as read by :func:`load_folder`, or the pairs themselves (image a Volume or an
        array (Z, Y, X); labels non-zero for vessel).
    models : sequence of str, optional
        Model names; default every registered model that can run (see :func:`choose_models`).
    device : str, optional
        Device for the networks, as in :func:`~napari_vessel.inference.run.segment`.
    spacing_zyx : (float, float, float), optional
        Voxel size in µm for every stack (default: from the files; 1 µm for arrays).
    progress : callable, optional
        ``progress(fraction, message)``.
    cancel : CancelToken, optional
        Checked between and during runs; raises :class:`~napari_vessel.errors.Cancelled`.
    graph : bool
        Also compare the vessel graphs of the labels and the reference: paper 001's length
        correlation and the differences of length, segments, junctions, end points and mean
        diameter (:func:`napari_vessel.graph.graph_scores`; lengths in µm when the voxel size
        is known, else in voxels).

    Returns
    -------
    Comparison

    Raises
    ------
    InputError
        Bad folder, no pairs, unknown model name, or no model that can run.
    """
    from napari_vessel.devices import pick_device
    from napari_vessel.evaluation.metrics import evaluate
    from napari_vessel.inference.run import segment, versions
    from napari_vessel.postprocess.labels import Postprocessing

    progress = progress or no_progress
    runnable, skipped = choose_models(models)
    pairs = _as_pairs(data, spacing_zyx)
    if not runnable:
        names = ", ".join(s["model"] for s in skipped)
        raise InputError(f"none of the models can run ({names}): they have no trained weights")
    result = Comparison(skipped=skipped)
    known = all(volume.spacing_known for _, volume, _ in pairs)
    result.hd95_unit = "µm" if known else "voxels"
    total = len(runnable) * len(pairs)
    for m, spec in enumerate(runnable):
        trained_on = {v for v in (spec.card.trained_on if spec.card else ()) if isinstance(v, str)}
        rows: list[dict] = []
        for v, (name, volume, reference) in enumerate(pairs):
            step = m * len(pairs) + v
            where = scaled(progress, step / total, (step + 1) / total, f"{spec.name} on {name}")
            if cancel is not None:
                cancel.check()
            try:
                with PeakMemory() as memory:
                    started = time.perf_counter()
                    prob, labels, manifest = segment(volume, spec.name, device=device,
                                                     progress=where, cancel=cancel)
                    seconds = time.perf_counter() - started
            except (InputError, RuntimeError, MemoryError) as err:
                skipped.append({"model": spec.name, "reason": f"failed on {name}: {err}"})
                rows = []
                break
            scores = evaluate(labels, reference, prob,
                              volume.spacing_zyx if volume.spacing_known else None)
            if graph:
                from napari_vessel.graph import graph_scores

                scores.update(graph_scores(labels, reference, volume.spacing_zyx)[0])
            voxels = int(np.prod(volume.shape))
            rows.append({"model": spec.name, "volume": name, **scores, "seconds": seconds,
                         "voxels": voxels, "voxels_per_s": voxels / max(seconds, 1e-9),
                         "peak_rss_mb": memory.mb,
                         # the recipe as run (a card's level rule: the level it chose)
                         "labels_by": Postprocessing.from_dict(
                             manifest.parameters.postprocessing).describe(),
                         "seen_in_training": name in trained_on})
            del prob, labels
        if rows:
            result.rows += rows
            result.means.append(_mean(rows, spec))
    progress(1.0, "done")
    networks = any(spec.is_network for spec in runnable)
    result.settings = {"device": str(pick_device(device)) if networks else "cpu",
                       "volumes": [name for name, _, _ in pairs],
                       "shapes": [list(volume.shape) for _, volume, _ in pairs],
                       "memory": "peak rise of resident memory (RSS) during one segmentation, "
                                 "sampled every 10 ms; largest over the volumes",
                       "versions": versions()}
    return result


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if key == "hd95":
        return f"{value:.2f}"
    if key == "seconds":
        return f"{value:.1f}"
    if key == "voxels_per_s":
        return f"{value / 1e6:.2f} M"
    if key == "peak_rss_mb":
        return f"{value:.0f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def format_markdown(result: Comparison, *, per_volume: bool = False) -> str:
    """The comparison as Markdown: one row per model, notes, and optionally per-volume rows.

    Parameters
    ----------
    result : Comparison
        From :func:`compare`.
    per_volume : bool
        Add a second table with one row per model and volume.

    Returns
    -------
    str
    """
    graph = [k for k in GRAPH_TITLES if any(k in row for row in result.means)]
    keys = [*SCORES, *graph, "seconds", "voxels_per_s", "peak_rss_mb"]
    titles = [*(f"HD95 ({result.hd95_unit})" if k == "hd95" else t for k, t in SCORES.items()),
              *(GRAPH_TITLES[k] for k in graph), "s/volume", "voxels/s", "peak RSS MB"]
    marked = any(row["seen_in_training"] for row in result.means)
    body = [[row["model"] + (" †" if row["seen_in_training"] else ""),
             *(_cell(k, row.get(k)) for k in keys), row["labels_by"]] for row in result.means]
    parts = [_table(["model", *titles, "labels by"], body)]
    notes = [f"Mean over {len(result.settings.get('volumes', []))} volume(s); voxels/s is all "
             "voxels over all seconds (preprocessing, inference and post-processing; reading "
             "and scoring excluded). Peak RSS MB: the largest rise of resident memory during "
             "one volume's segmentation, sampled every 10 ms (a lower bound for a fresh "
             "process)."]
    if marked:
        notes.append("† the model was trained on some of these volumes: its scores are "
                     "training-set scores, not a fair comparison.")
    untrained = [item["model"] for item in result.skipped if item["reason"] == NO_WEIGHTS]
    if untrained:
        notes.append(f"skipped, {NO_WEIGHTS} (train one with 'napari-vessel train --model "
                     f"NAME'): {', '.join(untrained)}")
    for item in result.skipped:
        if item["reason"] != NO_WEIGHTS:
            notes.append(f"skipped {item['model']}: {item['reason']}")
    parts.append("\n".join(f"- {note}" for note in notes))
    if per_volume and result.rows:
        body = [[row["model"], row["volume"] + (" †" if row["seen_in_training"] else ""),
                 *(_cell(k, row.get(k)) for k in keys)] for row in result.rows]
        parts.append(_table(["model", "volume", *titles], body))
    return "\n\n".join(parts) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def to_json(result: Comparison) -> dict:
    """The comparison as JSON-ready data (``nan`` becomes null, ``inf`` the string "inf")."""
    return {"means": [{k: _plain(v) for k, v in r.items()} for r in result.means],
            "rows": [{k: _plain(v) for k, v in r.items()} for r in result.rows],
            "skipped": result.skipped, "hd95_unit": result.hd95_unit,
            "settings": result.settings}
