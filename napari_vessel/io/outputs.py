"""The output set of a segmentation run: where its files go and how they are published.

One home for ``segment``, ``batch`` and anything else that writes a labels / probability /
manifest set: :func:`output_paths` names the files, :func:`check_writable` fails before the work,
:func:`publish_set` publishes the set atomically (manifest last), :func:`write_json` writes one
JSON file atomically.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from napari_vessel.errors import InputError
from napari_vessel.io.common import file_stem

__all__ = ["output_paths", "finetune_output_paths", "write_json", "check_writable",
           "publish_set"]


def output_paths(input_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                 zarr: bool = False) -> dict[str, Path]:
    """Where ``segment`` (and ``batch``, per stack) writes for one input: TIFFs, or OME-Zarr
    stores with ``zarr`` (the out-of-core path, :mod:`napari_vessel.inference.out_of_core`)."""
    name = file_stem(input_path)
    out = Path(out_dir)
    ending = ".zarr" if zarr else ".tif"
    return {"labels": out / f"{name}_labels{ending}", "prob": out / f"{name}_prob{ending}",
            "manifest": out / f"{name}_manifest.json"}


def finetune_output_paths(input_path: str | os.PathLike, out_dir: str | os.PathLike,
                          model: str) -> dict[str, Path]:
    """Where ``napari-vessel finetune --segment`` writes the new model's segmentation:
    ``STEM.MODEL.labels.tif``, ``STEM.MODEL.probability.tif``, ``STEM.MODEL.manifest.json``
    (the names docs/finetuning.md promises; the model's name keeps them apart from a plain
    ``segment`` run's in the same folder)."""
    stem = file_stem(input_path)
    out = Path(out_dir)
    return {"labels": out / f"{stem}.{model}.labels.tif",
            "prob": out / f"{stem}.{model}.probability.tif",
            "manifest": out / f"{stem}.{model}.manifest.json"}


def write_json(path: Path, data: dict, overwrite: bool) -> None:
    """Write ``data`` as JSON atomically, with the permissions of any new file (the umask)."""
    from napari_vessel.io.common import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def check_writable(out: Path, flag: str = "-o/--out") -> None:
    """Fail before the work when ``out`` cannot be created or written (nothing is created);
    the message asks for another ``flag``."""
    target = out
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the results to {out}: {target} is not a writable folder; "
                         f"choose another {flag}")


def publish_set(paths: dict[str, Path], write) -> None:
    """Write a run's outputs as one set: every file under a hidden temporary name first, then,
    only when all are complete, the old manifest is removed, the files are moved into place
    and the manifest comes last. A reader that finds the manifest finds the matching set; a run
    that fails or is killed leaves the earlier set as it was (its leftovers are removed by the
    next run).

    Parameters
    ----------
    paths : dict
        Final paths by role; ``"manifest"`` is published last.
    write : callable(dict) -> Any
        Writes every output to the temporary paths it is given (same keys and suffixes).
    """
    from napari_vessel.io.common import remove_path

    folder = paths["manifest"].parent
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.partial*"):  # a killed run's temporary files
        if any(leftover.name.startswith(f".{p.name}.") for p in paths.values()):
            remove_path(leftover)
    tag = uuid.uuid4().hex[:8]
    tmp = {k: p.with_name(f".{p.name}.{tag}.partial{''.join(p.suffixes[-1:])}")
           for k, p in paths.items()}
    old = {k: p.with_name(f".{p.name}.{tag}.partial.old") for k, p in paths.items()}
    try:
        write(tmp)
        paths["manifest"].unlink(missing_ok=True)  # from here on the set is incomplete
        for key in sorted(paths, key=lambda k: k == "manifest"):
            if paths[key].is_dir():  # a Zarr store: a folder is not replaced in one step
                os.replace(paths[key], old[key])
            os.replace(tmp[key], paths[key])
    finally:
        for path in (*tmp.values(), *old.values()):
            remove_path(path)
