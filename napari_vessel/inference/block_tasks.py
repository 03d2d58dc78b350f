"""The tasks that predict one stack's blocks on the workers of a dask.distributed cluster.

:func:`~napari_vessel.inference.block_window.run_blocks` goes through the blocks in order in one process
and carries what a block's patches leave in the following blocks (the "spill") forward. Here
the blocks are independent, in two phases:

1. one task per block, on the workers (:func:`block_task`): read the block's region from the
   preprocessed input Zarr, predict the patches the block owns (the same
   :func:`~napari_vessel.inference.sliding_window.add_tiles` loop, the same weights) and save the block's
   whole weighted sums, its own voxels and its overhang into the following blocks, as one
   ``.npy`` in the scratch folder;
2. in the driver (:mod:`napari_vessel.inference.block_cluster`, which submits the tasks), as soon as a
   block and its (up to 7) predecessors are saved: the block's own sums plus the overhangs of
   its predecessors, normalised, are written into the probability Zarr as ``run_blocks`` writes
   them; a saved block is deleted once every block it reaches is written.

Every patch is predicted once with the same weights, so the map equals ``run_blocks``' up to
float rounding (the sums are added in another order). Each worker loads the network once and
keeps it (keyed by the model, its weights file, device, runtime, flips and threads), runs it as
:func:`~napari_vessel.inference.run.predict` would (``runtime="auto"``: the checked ONNX export on a
CPU) with the worker's threads, one block at a time.

The input Zarr and the scratch folder are read and written by the workers and the driver: on a
cluster of several machines they must be on a filesystem all of them share (the scratch lives
next to the outputs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.inference.block_window import block_grid
from napari_vessel.inference.network import Network
from napari_vessel.inference.sliding_window import TilePlan, add_tiles, importance_weights, read_region
from napari_vessel.io.common import atomic_replace

__all__ = ["BlockJob", "ClusterRun", "prepare_task", "block_task", "block_name", "STOP_FILE"]

#: A file in the scratch folder that tells running block tasks to stop (the user cancelled).
STOP_FILE = "STOP"


@dataclass(frozen=True)
class BlockJob:
    """What every block task needs (sent with each task; small).

    Attributes
    ----------
    source : str
        The preprocessed input Zarr array, as every worker reaches it (absolute path).
    scratch : str
        Folder for the blocks' sums, shared by the workers and the driver.
    spec : ModelSpec
        The registered network.
    block_shape : (int, int, int)
        As in :func:`~napari_vessel.inference.block_window.block_grid`.
    blending, batch_size, device, runtime, tta
        As in :func:`~napari_vessel.inference.run.predict`.
    threads : int, optional
        Threads for the network on each worker (default: the worker's own).
    plan, multiple
        The patch plan and the network's input multiple (set by
        :func:`~napari_vessel.inference.block_cluster.predict_on_cluster`).
    """

    source: str
    scratch: str
    spec: Any
    block_shape: tuple[int, int, int]
    blending: str = "gaussian"
    batch_size: int = 1
    device: Any = None
    runtime: str = "auto"
    tta: bool = False
    threads: int | None = None
    plan: TilePlan | None = None
    multiple: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ClusterRun:
    """What :func:`~napari_vessel.inference.block_cluster.predict_on_cluster` did: the plan, the runtime
    and device of the workers, how many workers ran blocks, how many block tasks and network
    loads there were."""

    plan: TilePlan
    info: Any
    device: str
    workers: int
    tasks: int
    loads: int


# -- on the workers ------------------------------------------------------------------------------

_LOCK = threading.Lock()  # one block at a time per worker process, with all its threads
_NETWORKS: dict[tuple, Network] = {}  # this worker's loaded networks, most recent last
_WEIGHTS: dict[tuple, np.ndarray] = {}
#: Networks a worker keeps loaded at most.
KEEP_LOADED = 2


def _network_key(job: BlockJob, threads: int) -> tuple:
    """A loaded network is reused for the same model, weights file (path, size, mtime), device,
    runtime, flips and threads."""
    spec, weights = job.spec, getattr(job.spec, "weights", None)
    stat = Path(weights).stat() if weights is not None and Path(weights).exists() else None
    stamp = (str(weights), stat.st_mtime_ns, stat.st_size) if stat else None
    return (spec.name, repr(sorted(spec.config.items())), stamp, str(job.device),
            str(job.runtime).lower(), bool(job.tta), int(threads))


def _load_network(job: BlockJob, threads: int) -> Network:
    """The network as :func:`~napari_vessel.inference.run.predict` runs a registered one."""
    from napari_vessel.inference.network import open_network

    return open_network(None, job.spec, device=job.device, runtime=job.runtime, tta=job.tta,
                        threads=threads, state={"batch_size": int(job.batch_size)})


def _where() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # called outside a worker (a test, a debugger)
        return "this process"


def _network(job: BlockJob) -> tuple[Network, int, bool]:
    """(network, threads, whether it was loaded now) for this worker; hold :data:`_LOCK`."""
    from distributed import get_worker

    from napari_vessel.devices import cpu_count

    threads = job.threads
    if not threads:
        try:
            threads = get_worker().state.nthreads
        except ValueError:  # called outside a worker: the cores of this process
            threads = cpu_count()
    key = _network_key(job, int(threads))
    net = _NETWORKS.pop(key, None)
    loaded = net is None
    if net is None:
        net = _load_network(job, int(threads))
    _NETWORKS[key] = net
    while len(_NETWORKS) > KEEP_LOADED:
        _NETWORKS.pop(next(iter(_NETWORKS)))
    return net, int(threads), loaded


class _Stop:
    """The cancel token of a block task: the driver's stop file, or a scratch folder gone."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch

    def check(self) -> None:
        if (self._scratch / STOP_FILE).exists() or not self._scratch.is_dir():
            raise Cancelled("stopped by the user")


def _check_shared(scratch: Path) -> None:
    if not scratch.is_dir():
        raise InputError(f"the worker {_where()} cannot see the scratch folder {scratch}: the "
                         "workers must share a filesystem with this machine (the scratch is "
                         "next to the outputs); write the outputs to a shared folder")


@contextmanager
def _torch_mode(net: Network, threads: int) -> Iterator[None]:
    """PyTorch's inference mode and the worker's threads, when the network runs on PyTorch."""
    if net.model is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if net.device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(previous)


def block_name(index: Sequence[int]) -> str:
    """The file of block ``index``'s sums in the scratch folder."""
    return "block-{}-{}-{}.npy".format(*index)


def prepare_task(job: BlockJob) -> dict[str, Any]:
    """Load the network on a worker (kept for its blocks); its input multiple, dims, runtime."""
    _check_shared(Path(job.scratch))
    with _LOCK:
        net, threads, loaded = _network(job)
    return {"multiple": net.multiple, "dims": net.dims, "info": net.info, "device": str(net.device),
            "loaded": loaded, "worker": _where()}


def block_task(job: BlockJob, index: tuple[int, int, int]) -> dict[str, Any]:
    """Phase 1 on a worker: predict the patches block ``index`` owns and save its whole sums.

    Returns
    -------
    dict
        ``index``, ``patches`` predicted, the region's ``extremes`` (min, max), the ``worker``
        and whether the network was ``loaded`` by this task; ``index`` and ``stopped`` when the
        driver's stop file appeared (nothing saved).

    Raises
    ------
    InputError
        NaN or infinite voxels, a scratch folder this worker cannot see (no shared filesystem),
        a network with another input multiple than the driver planned with.
    """
    scratch, plan = Path(job.scratch), job.plan
    if plan is None:
        raise InputError("a block task needs the patch plan (see block_cluster.predict_on_cluster)")
    _check_shared(scratch)
    try:
        with _LOCK:
            return _run_block(job, index, scratch, plan)
    except Cancelled:  # the driver stopped: nothing saved, no error in the worker's log
        return {"index": tuple(index), "stopped": True}


def _run_block(job: BlockJob, index: tuple[int, int, int], scratch: Path,
               plan: TilePlan) -> dict[str, Any]:
    """:func:`block_task`'s work, under this worker's lock."""
    import zarr

    from napari_vessel.io.volume import check_voxels

    stop = _Stop(scratch)
    stop.check()
    net, threads, loaded = _network(job)
    if job.multiple is not None and tuple(net.multiple) != tuple(job.multiple):
        raise InputError(f"the worker {_where()} runs {job.spec.name} with input multiple "
                         f"{net.multiple}, the plan has {job.multiple}: the workers need the "
                         "same software and weights as this machine")
    grid = block_grid(plan, job.block_shape)
    lo, hi, end = grid.box(index)
    region = read_region(zarr.open_array(job.source, mode="r"), plan, lo, end)
    check_voxels(region, constant=False)
    extremes = (float(region.min()), float(region.max()))
    key = (plan.patch, job.blending)
    if key not in _WEIGHTS:
        _WEIGHTS.clear()
        _WEIGHTS[key] = importance_weights(plan.patch, job.blending)
    sums = np.zeros((2, *(e - s for s, e in zip(lo, end, strict=True))), dtype=np.float32)
    count = [0]
    with _torch_mode(net, threads):
        add_tiles(region, grid.tiles(index), lo, plan.patch, net.forward, _WEIGHTS[key],
                  sums[0], sums[1], batch_size=job.batch_size, cancel=stop,
                  done=lambda n: count.__setitem__(0, count[0] + n))
    del region
    stop.check()
    # never half a file under the final name; a retried task replaces its own earlier result
    with atomic_replace(scratch / block_name(index)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, sums)
    return {"index": tuple(index), "patches": count[0], "extremes": extremes,
            "worker": _where(), "loaded": loaded}
