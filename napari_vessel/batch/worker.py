"""The task each dask worker runs: segment one stack with all its threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from napari_vessel.batch.config import BatchConfig, StackResult
from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.manifest import BatchInfo

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


def _options(config: BatchConfig, device: Any, threads: int) -> WindowOptions:
    """The sliding window's settings of a stack on this worker (its device and threads)."""
    return window_options(device=device, runtime=config.runtime, threads=threads)


def _segment_stack(source: str, folder: str, config: BatchConfig) -> StackResult:
    """The task: segment ``source`` into ``folder`` (``segment``'s output set); never raises."""
    import numpy as np

    from napari_vessel.inference.network import load_count
    from napari_vessel.inference.run import segment
    from napari_vessel.io.outputs import output_paths, publish_set, write_json
    from napari_vessel.io.stacks import load_volume, save_volume

    started = time.perf_counter()
    try:
        from distributed import get_worker

        worker = get_worker()
        where, threads, device = worker.address, worker.state.nthreads, config.device
        if device in ("auto", "cuda"):
            import torch

            device = _worker_device(device, worker.name, torch.cuda.device_count())
        if config.zarr:
            return _segment_to_zarr(source, folder, config, where, threads, device, started)
        with _RUN_LOCK, _lazy_reads_here(threads):
            loads = load_count()
            volume = load_volume(source, channel=config.channel, frame=config.frame)
            prob, labels, manifest = segment(volume, config.model, threshold=config.threshold,
                                             options=_options(config, device, threads))
            from_cache = load_count() == loads
        paths = output_paths(source, folder)
        fraction = float(labels.mean()) if labels.size else 0.0
        seconds = time.perf_counter() - started
        manifest = replace(manifest, outputs={k: str(v) for k, v in paths.items()},
                           batch=BatchInfo(settings=config.settings(), worker=where,
                                           threads=threads, seconds=round(seconds, 3),
                                           voxels=int(labels.size), vessel_fraction=fraction,
                                           model_from_cache=from_cache))
        meta = {"model": manifest.model.name, "threshold": manifest.parameters.threshold}
        publish_set(paths, lambda tmp: [
            save_volume(tmp["prob"], prob.astype(np.float32), volume.spacing_zyx, kind="image",
                        metadata=meta),
            save_volume(tmp["labels"], labels, volume.spacing_zyx, kind="labels", metadata=meta),
            write_json(tmp["manifest"], manifest.to_dict(), False)])
        return StackResult(source, folder, "done", round(time.perf_counter() - started, 3),
                           int(labels.size), fraction)
    except Exception as err:  # noqa: BLE001 - one stack's failure is recorded, the others go on
        return StackResult(source, folder, "failed", round(time.perf_counter() - started, 3),
                           error=_message(err))


def _segment_to_zarr(source: str, folder: str, config: BatchConfig, where: str, threads: int,
                     device: str, started: float) -> StackResult:
    """``config.zarr``: the stack out of core into OME-Zarr stores (raises; the task catches)."""
    import dask.array as da
    import numpy as np

    from napari_vessel.inference.out_of_core import segment_to_zarr
    from napari_vessel.io.outputs import output_paths
    from napari_vessel.io.stacks import load_volume

    stem = output_paths(source, folder)["manifest"].name.removesuffix("_manifest.json")
    with _RUN_LOCK, _lazy_reads_here(threads):
        volume = load_volume(source, channel=config.channel, frame=config.frame)
        batch = BatchInfo(settings=config.settings(), worker=where, threads=threads,
                          voxels=int(np.prod(volume.shape)), out_of_core=True)
        manifest = segment_to_zarr(volume, folder, config.model, name=stem,
                                   threshold=config.threshold,
                                   options=_options(config, device, threads), overwrite=True,
                                   extra={"batch": batch})
        labels = da.from_zarr(manifest.outputs["labels"], component="0")
        fraction = float(labels.mean().compute()) if labels.size else 0.0
    return StackResult(source, folder, "done", round(time.perf_counter() - started, 3),
                       int(labels.size), fraction)
