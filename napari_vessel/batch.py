"""Segment many stacks on dask.distributed: one task per stack, resumable, one failure never stops the rest.

:func:`find_inputs` turns files, folders (searched recursively) and globs into a list of stacks;
:func:`run_batch` segments each one into ``OUTDIR/<name>/`` with the same outputs and the same atomic
publishing as ``napari-vessel segment`` (labels, probability map, then the manifest, written last
and read as the "done" marker), on a ``LocalCluster`` of worker processes or on an existing
scheduler, and writes ``OUTDIR/summary.csv`` and ``OUTDIR/batch_manifest.json``. A worker segments
one stack at a time with all its threads and loads each model once (see :func:`_segment_stack`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import SUPPORTED
from .progress import Progress, no_progress

__all__ = ["BatchConfig", "StackResult", "BatchReport", "find_inputs", "run_batch", "RESOURCE"]

#: Worker resource that lets the scheduler give a worker one stack at a time (``--resources stack=1``).
RESOURCE = "stack"
_RUNTIMES, _DEVICES = ("auto", "torch", "onnx", "openvino"), ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs; saved in ``batch_manifest.json``.

    Parameters
    ----------
    model : str, optional
        A registered model; None for the recommended one.
    threshold : float, optional
        Plain threshold in [0, 1]; None for the model card's post-processing (as ``segment``).
    runtime : {"auto", "torch", "onnx", "openvino"}
    device : {"auto", "cpu", "cuda", "mps"}
        ``auto`` on a machine with several GPUs puts local worker ``i`` on GPU ``i % n``.
    workers, threads_per_worker : int, optional
        Size of the ``LocalCluster`` (default: one worker per stack up to the number of cores,
        the cores shared among them). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``) instead of a ``LocalCluster``.
    overwrite : bool
        Segment stacks again even when their manifest says they are done.
    channel, frame : int, optional
        The channel / time point to take from every multi-channel / time-series file.
    connect_timeout : float
        Seconds to wait for ``scheduler`` to answer.
    dashboard : str
        Address of the local dashboard (``":0"``: any free port).
    """

    model: str | None = None
    threshold: float | None = None
    runtime: str = "auto"
    device: str = "auto"
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    overwrite: bool = False
    channel: int | None = None
    frame: int | None = None
    connect_timeout: float = 10.0
    dashboard: str = ":8787"

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {self.threshold}")
        for name, value, allowed in (("runtime", self.runtime, _RUNTIMES), ("device", self.device, _DEVICES)):
            if value not in allowed:
                raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        for name, least in (("workers", 1), ("threads_per_worker", 1), ("channel", 0), ("frame", 0)):
            if getattr(self, name) is not None and int(getattr(self, name)) < least:
                raise InputError(f"{name.replace('_', ' ')} must be {least} or more, "
                                 f"not {getattr(self, name)}")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise InputError("the scheduler address is empty; give one like tcp://host:8786")
        if not float(self.connect_timeout) > 0:
            raise InputError(f"connect timeout must be positive, not {self.connect_timeout}")

    def settings(self) -> dict[str, Any]:
        """What decides the result of a stack; a done stack made with other settings is not reused."""
        return {"model": self.model, "threshold": self.threshold, "channel": self.channel,
                "frame": self.frame}


@dataclass(frozen=True)
class StackResult:
    """One row of ``summary.csv``: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    voxels: int | None = None
    vessel_fraction: float | None = None
    error: str = ""


@dataclass(frozen=True)
class BatchReport:
    """What :func:`run_batch` did: one :class:`StackResult` per input, in input order."""

    stacks: tuple[StackResult, ...]
    summary: Path
    manifest: Path
    dashboard: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[StackResult, ...]:
        """The stacks that failed (their ``error`` says why)."""
        return tuple(s for s in self.stacks if s.status == "failed")


def _is_stack(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED)


def _walk(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Files and ``.zarr`` folders under ``folder``, sorted, without hidden entries or ``exclude``."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = sorted(d for d in dirs if not d.startswith("."))
        dirs[:] = [d for d in keep if not d.lower().endswith(".zarr")
                   and (exclude is None or (here / d).resolve() != exclude)]
        yield from sorted([here / d for d in keep if d.lower().endswith(".zarr")]
                          + [here / f for f in files if not f.startswith(".")])


def find_inputs(patterns: Iterable[str | os.PathLike], *, exclude: str | os.PathLike | None = None,
                on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """The stacks named by files, folders (searched recursively) and globs, each once, in order.

    Parameters
    ----------
    patterns : iterable of str or PathLike
        Stack files or ``.zarr`` folders, folders (every stack below them; hidden entries skipped) or
        globs (``"data/*.tif"``, ``"data/**/*.tif"``).
    exclude : str or PathLike, optional
        A folder whose contents are never inputs (the output folder).
    on_skip : callable(Path, str), optional
        Told about every file that is not a stack (``.tif``/``.tiff``/``.btf``/OME-TIFF/``.zarr``).

    Returns
    -------
    list of Path

    Raises
    ------
    InputError
        A pattern that matches nothing, or no stack at all.
    """
    import glob

    patterns, skip = list(patterns), on_skip or (lambda path, why: None)
    excluded = Path(exclude).expanduser().resolve() if exclude is not None else None
    found: dict[Path, Path] = {}
    for pattern in patterns:
        text = os.path.expanduser(str(pattern))
        if any(c in text for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        else:
            matches = [Path(text)] if Path(text).exists() else []
        if not matches:
            raise InputError(f"{pattern} matches no file or folder; check the spelling and the folder")
        for match in matches:
            for path in _walk(match, excluded) if match.is_dir() and not _is_stack(match) else [match]:
                if excluded is not None and excluded in path.resolve().parents:
                    continue  # an earlier batch's output, not an input
                if _is_stack(path):
                    found.setdefault(path.resolve(), path)
                else:
                    skip(path, f"not a stack ({', '.join(SUPPORTED)})")
    if not found:
        raise InputError(f"no stack found in {', '.join(map(str, patterns))}; stacks end in "
                         f"{', '.join(SUPPORTED)}")
    return list(found.values())


def _folder_names(inputs: Sequence[Path]) -> list[str]:
    """One output folder name per input: its stem, plus a hash of its path where stems collide."""
    from .outputs import output_paths

    stems = [output_paths(p, ".")["manifest"].name.removesuffix("_manifest.json") for p in inputs]
    counts = Counter(s.lower() for s in stems)  # case-insensitive file systems collide too
    return [s if counts[s.lower()] == 1 else
            f"{s}-{hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]}"
            for s, p in zip(stems, inputs, strict=True)]


def _previous(paths: dict[str, Path]) -> dict | None:
    """The manifest of a complete earlier output set, or None (missing, partial or unreadable)."""
    if not all(p.exists() for p in paths.values()):
        return None
    try:
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _check_outdir(outdir: Path) -> None:
    """Raise :class:`InputError` unless a probe file can be written in ``outdir`` or, when it does
    not exist yet, in the folder it would be created in (nothing is left behind)."""
    from .outputs import check_writable as _check_writable

    _check_writable(outdir)
    existing = next(p for p in (outdir, *outdir.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"cannot write the results to {outdir}: {err.strerror or err}; choose "
                         "another -o/--out") from err


# -- on the workers ------------------------------------------------------------------------------

_RUN_LOCK = threading.Lock()  # one stack at a time per worker process, with all its threads


@contextmanager
def _lazy_reads_here(threads: int) -> Iterator[None]:
    """A lazy (Zarr, big TIFF) stack is read in this worker, not sent through the cluster."""
    import dask

    with dask.config.set(scheduler="threads", num_workers=threads):
        yield


def _worker_device(requested: str, worker_name: Any, n_gpus: int) -> str:
    """``cuda:i`` for local worker ``i`` when ``requested`` is auto or cuda and there are several GPUs."""
    if requested in ("auto", "cuda") and n_gpus > 1 and isinstance(worker_name, int):
        return f"cuda:{worker_name % n_gpus}"
    return requested


def _message(err: BaseException) -> str:
    if isinstance(err, InputError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}".strip()


def _segment_stack(source: str, folder: str, config: BatchConfig) -> StackResult:
    """The task: segment ``source`` into ``folder`` (``segment``'s output set); never raises."""
    import numpy as np

    from .inference import load_count, segment
    from .io import load_volume, save_volume
    from .outputs import output_paths, publish_set, write_json

    started = time.perf_counter()
    try:
        from distributed import get_worker

        worker = get_worker()
        where, threads, device = worker.address, worker.state.nthreads, config.device
        if device in ("auto", "cuda"):
            import torch

            device = _worker_device(device, worker.name, torch.cuda.device_count())
        with _RUN_LOCK, _lazy_reads_here(threads):
            loads = load_count()
            volume = load_volume(source, channel=config.channel, frame=config.frame)
            prob, labels, manifest = segment(volume, config.model, threshold=config.threshold,
                                             device=device, runtime=config.runtime,
                                             threads=threads)
            from_cache = load_count() == loads
        paths = output_paths(source, folder)
        fraction = float(labels.mean()) if labels.size else 0.0
        seconds = time.perf_counter() - started
        manifest["outputs"] = {k: str(v) for k, v in paths.items()}
        manifest["batch"] = {"settings": config.settings(), "worker": where, "threads": threads,
                             "seconds": round(seconds, 3), "voxels": int(labels.size),
                             "vessel_fraction": fraction,
                             "model_from_cache": from_cache}
        meta = {"model": manifest["model"]["name"], "threshold": manifest["parameters"]["threshold"]}
        publish_set(paths, lambda tmp: [
            save_volume(tmp["prob"], prob.astype(np.float32), volume.spacing_zyx, kind="image",
                        metadata=meta),
            save_volume(tmp["labels"], labels, volume.spacing_zyx, kind="labels", metadata=meta),
            write_json(tmp["manifest"], manifest, False)])
        return StackResult(source, folder, "done", round(time.perf_counter() - started, 3),
                           int(labels.size), fraction)
    except Exception as err:  # noqa: BLE001 - one stack's failure is recorded, the others go on
        return StackResult(source, folder, "failed", round(time.perf_counter() - started, 3),
                           error=_message(err))


# -- on the client -------------------------------------------------------------------------------

def _failure(err: BaseException) -> str:
    """What a task's exception (raised by dask, not by the stack) means to the user."""
    from distributed import KilledWorker

    if isinstance(err, KilledWorker):
        return ("the worker segmenting this stack died (out of memory, or killed) each time it was "
                "tried; give the workers more memory (fewer --workers) and run the batch again")
    return f"the cluster lost this task ({type(err).__name__}: {err})"


@contextmanager
def _client(config: BatchConfig, n_stacks: int, log: Callable[[str], None]) -> Iterator[Any]:
    """A dask Client on a new ``LocalCluster`` of processes, or on ``config.scheduler``."""
    import dask
    from distributed import Client, LocalCluster

    from .devices import cpu_count

    if config.scheduler is not None:
        try:
            client = Client(config.scheduler, timeout=config.connect_timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise InputError(f"the dask scheduler at {config.scheduler} did not answer within "
                             f"{config.connect_timeout:g} s ({err}); check the address and that the "
                             "scheduler runs, or leave out --scheduler to use this machine") from err
        log(f"connected to the dask scheduler {config.scheduler}")
        with client:
            if not client.scheduler_info().get("workers"):
                log("waiting for a worker to join the scheduler (Ctrl-C to stop) ...")
                client.wait_for_workers(1)
            yield client
        return
    cores = cpu_count()
    workers = config.workers or max(1, min(cores, n_stacks))
    threads = config.threads_per_worker or max(1, cores // workers)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               resources={RESOURCE: 1}, dashboard_address=config.dashboard)
    log(f"started a local dask cluster: {workers} worker(s) x {threads} thread(s)")
    with cluster, Client(cluster) as client:
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

    from .inference import versions
    from .io_common import atomic_path
    from .models import registry
    from .outputs import output_paths, write_json

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
        old = None if config.overwrite else _previous(output_paths(source, folder))
        if old is None:
            continue
        batch, recorded = old.get("batch") or {}, (old.get("input") or {}).get("source")
        if batch.get("settings") != config.settings():
            raise InputError(f"{folder} was segmented with other settings ("
                             f"{_differences(batch.get('settings'), config.settings())}); add "
                             "--overwrite to segment it again, or choose another -o/--out")
        if recorded != source:
            rows[i] = StackResult(source, folder, "failed", error=f"{folder} holds the results of "
                                  f"{recorded}; add --overwrite to replace them or use another -o/--out")
            continue
        rows[i] = StackResult(source, folder, "skipped", float(batch.get("seconds") or 0.0),
                              batch.get("voxels"), batch.get("vessel_fraction"))
    todo = [i for i in range(len(sources)) if i not in rows]
    started, dashboard = time.strftime("%Y-%m-%dT%H:%M:%S%z"), None
    progress(len(rows) / len(sources), f"{len(rows)} already done" if rows else "")
    if todo:
        with _client(config, len(todo), log) as client:
            dashboard = client.dashboard_link
            log(f"dask dashboard: {dashboard}")
            workers = client.scheduler_info().get("workers", {}).values()
            one_each = bool(workers) and all(RESOURCE in (w.get("resources") or {}) for w in workers)
            futures = {client.submit(_segment_stack, sources[i], folders[i], config, pure=False,
                                     key=f"segment-{Path(folders[i]).name}-{os.urandom(4).hex()}",
                                     resources={RESOURCE: 1} if one_each else None): i for i in todo}
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
