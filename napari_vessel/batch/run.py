"""Run a batch on a cluster: submit, collect, resume, summarise."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from napari_vessel.batch.config import RESOURCE, BatchConfig, BatchReport, StackResult
from napari_vessel.batch.inputs import _check_outdir, _folder_names, _manifest_of, _previous
from napari_vessel.batch.worker import _segment_stack
from napari_vessel.errors import InputError
from napari_vessel.progress import Progress, no_progress


def _failure(err: BaseException) -> str:
    """What a task's exception (raised by dask, not by the stack) means to the user."""
    from napari_vessel.inference.cluster import lost_task_message

    return lost_task_message(err, "segmenting this stack", "run the batch again")


@contextmanager
def _client(config: BatchConfig, n_stacks: int, log: Callable[[str], None]) -> Iterator[Any]:
    """A dask Client on a new ``LocalCluster`` of processes (one worker per stack up to the
    cores), or on ``config.scheduler`` (:func:`napari_vessel.inference.cluster.open_client`)."""
    from napari_vessel.devices import cpu_count
    from napari_vessel.inference.cluster import open_client

    workers = config.workers or max(1, min(cpu_count(), n_stacks))
    with open_client(scheduler=config.scheduler, workers=workers,
                     threads_per_worker=config.threads_per_worker,
                     connect_timeout=config.connect_timeout, dashboard=config.dashboard,
                     resources={RESOURCE: 1}, log=log) as client:
        yield client


def _differences(old: Any, new: dict) -> str:
    """``"model tvnet, not frangi"``: the settings of a done stack that differ from this run's."""
    if not isinstance(old, dict):
        return "outside napari-vessel batch"
    name = {None: "default"}
    return "; ".join(f"{k} {name.get(old.get(k), old.get(k))}, not {name.get(v, v)}"
                     for k, v in new.items() if old.get(k) != v)


def _rows_csv(rows: Sequence[StackResult]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, [f.name for f in fields(StackResult)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return text.getvalue()


def run_batch(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, config: BatchConfig,
              progress: Progress | None = None, *, log: Callable[[str], None] | None = None) -> BatchReport:
    """Segment every stack of ``inputs`` into ``outdir/<name>/`` on dask.distributed.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Stack files or ``.zarr`` folders (see :func:`find_inputs`).
    outdir : str or PathLike
        Output folder (created when missing). ``<name>`` is the stack's file name without its
        ending, plus ``-<hash of its path>`` where two inputs share a name.
    config : BatchConfig
    progress : callable(fraction, message), optional
        Called as stacks finish.
    log : callable(str), optional
        Told the cluster and its dashboard address.

    Returns
    -------
    BatchReport
        One row per input; ``summary.csv`` and ``batch_manifest.json`` are written in ``outdir``.

    Raises
    ------
    InputError
        An unknown model, an output folder that cannot be written, a done stack made with other
        settings (without ``overwrite``), a scheduler that does not answer.
    """
    from distributed import as_completed

    from napari_vessel.inference.cluster import one_task_each
    from napari_vessel.inference.run import versions
    from napari_vessel.io.common import atomic_path
    from napari_vessel.io.outputs import output_paths, write_json
    from napari_vessel.models import registry

    progress, log = progress or no_progress, log or (lambda line: None)
    config = replace(config, model=registry.get(config.model or registry.default_model_name()).name)
    sources = [str(Path(p).expanduser().resolve()) for p in inputs]
    if not sources:
        raise InputError("no stack to segment; give stack files, folders or globs")
    out = Path(outdir).expanduser().resolve()
    _check_outdir(out)
    folders = [str(out / name) for name in _folder_names([Path(s) for s in sources])]
    rows: dict[int, StackResult] = {}
    for i, (source, folder) in enumerate(zip(sources, folders, strict=True)):
        paths = output_paths(source, folder, zarr=config.zarr)
        old = None if config.overwrite else _previous(paths)
        if old is None:
            other = None if config.overwrite else _manifest_of(paths["manifest"])
            if other is not None and other.batch is not None and (
                    other.batch.settings != config.settings()):  # e.g. a TIFF set for a Zarr one
                raise InputError(f"{folder} holds results made with other settings ("
                                 f"{_differences(other.batch.settings, config.settings())}"
                                 "); add --overwrite to replace them, or choose another "
                                 "-o/--out")
            continue
        batch, recorded = old.batch, old.input.source
        if batch is None or batch.settings != config.settings():
            raise InputError(f"{folder} was segmented with other settings ("
                             f"{_differences(batch and batch.settings, config.settings())}); add "
                             "--overwrite to segment it again, or choose another -o/--out")
        if recorded != source:
            rows[i] = StackResult(source, folder, "failed", error=f"{folder} holds the results of "
                                  f"{recorded}; add --overwrite to replace them or use another -o/--out")
            continue
        rows[i] = StackResult(source, folder, "skipped", float(batch.seconds or 0.0),
                              batch.voxels, batch.vessel_fraction)
    todo = [i for i in range(len(sources)) if i not in rows]
    started, dashboard = time.strftime("%Y-%m-%dT%H:%M:%S%z"), None
    progress(len(rows) / len(sources), f"{len(rows)} already done" if rows else "")
    if todo:
        with _client(config, len(todo), log) as client:
            dashboard = client.dashboard_link
            log(f"dask dashboard: {dashboard}")
            one_each = one_task_each(client)
            futures = {client.submit(_segment_stack, sources[i], folders[i], config, pure=False,
                                     key=f"segment-{Path(folders[i]).name}-{os.urandom(4).hex()}",
                                     resources=one_each): i for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    rows[i] = future.result()
                except Exception as err:  # noqa: BLE001 - a lost task fails its stack only
                    rows[i] = StackResult(sources[i], folders[i], "failed", error=_failure(err))
                progress(len(rows) / len(sources), f"{Path(sources[i]).name}: {rows[i].status}")
    stacks = tuple(rows[i] for i in range(len(sources)))
    counts = {s: sum(r.status == s for r in stacks) for s in ("done", "skipped", "failed")}
    summary, manifest = out / "summary.csv", out / "batch_manifest.json"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(summary, overwrite=True) as tmp:
        tmp.write_text(_rows_csv(stacks), encoding="utf-8")
    write_json(manifest, {"config": asdict(config), "started": started, "counts": counts,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dashboard": dashboard,
                           "stacks": [asdict(s) for s in stacks], "versions": versions()}, True)
    return BatchReport(stacks, summary, manifest, dashboard, counts)
