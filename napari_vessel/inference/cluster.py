"""A dask.distributed Client for the commands that spread work over workers (batch, segment).

:func:`open_client` starts a ``LocalCluster`` of worker processes on this machine, or connects to
a running scheduler (``tcp://host:8786``) and says clearly when it does not answer. Its workers
carry the resource ``stack=1`` (:data:`RESOURCE`): a task that asks for it has the worker, and
all its threads, to itself (:func:`one_task_each` tells whether every worker has it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from napari_vessel.errors import InputError

__all__ = ["RESOURCE", "open_client", "one_task_each", "lost_task_message"]

#: Worker resource that lets the scheduler give a worker one heavy task (a stack, a block) at a
#: time, with all its threads (``dask worker --resources stack=1``).
RESOURCE = "stack"


def _check(workers: int | None, threads_per_worker: int | None, scheduler: str | None,
           connect_timeout: float) -> None:
    for name, value in (("workers", workers), ("threads per worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise InputError(f"{name} must be 1 or more, not {value}")
    if scheduler is not None and not str(scheduler).strip():
        raise InputError("the scheduler address is empty; give one like tcp://host:8786")
    if not float(connect_timeout) > 0:
        raise InputError(f"connect timeout must be positive, not {connect_timeout}")


@contextmanager
def open_client(*, scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int | None = None, connect_timeout: float = 10.0,
                dashboard: str = ":8787", resources: Mapping[str, float] | None = None,
                log: Callable[[str], None] | None = None) -> Iterator[Any]:
    """A dask ``Client`` on a new ``LocalCluster`` of processes, or on ``scheduler``.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``); ``workers`` and
        ``threads_per_worker`` are then the scheduler's business. Waits for a first worker.
    workers : int, optional
        Worker processes of the local cluster (default: one per core).
    threads_per_worker : int, optional
        Threads of each local worker (default: the cores shared among the workers).
    connect_timeout : float
        Seconds to wait for ``scheduler`` to answer.
    dashboard : str
        Address of the local dashboard (``":0"``: any free port).
    resources : mapping, optional
        Resources of each local worker (default ``{RESOURCE: 1}``).
    log : callable(str), optional
        Told which cluster is used.

    Yields
    ------
    distributed.Client
        Closed (and the local cluster shut down) on leaving the block.

    Raises
    ------
    InputError
        A scheduler that does not answer within ``connect_timeout``, bad sizes.
    """
    import dask
    from distributed import Client, LocalCluster

    from napari_vessel.devices import cpu_count

    log = log or (lambda line: None)
    _check(workers, threads_per_worker, scheduler, connect_timeout)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise InputError(f"the dask scheduler at {scheduler} did not answer within "
                             f"{connect_timeout:g} s ({err}); check the address and that the "
                             "scheduler runs, or leave out --scheduler to use this machine") from err
        log(f"connected to the dask scheduler {scheduler}")
        with client:
            if not client.scheduler_info().get("workers"):
                log("waiting for a worker to join the scheduler (Ctrl-C to stop) ...")
                client.wait_for_workers(1)
            yield client
        return
    cores = cpu_count()
    workers = int(workers or cores)
    threads = int(threads_per_worker or max(1, cores // workers))
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               resources=dict(resources or {RESOURCE: 1}),
                               dashboard_address=dashboard)
    log(f"started a local dask cluster: {workers} worker(s) x {threads} thread(s)")
    with cluster, Client(cluster) as client:
        yield client


def one_task_each(client: Any) -> dict[str, int] | None:
    """``{RESOURCE: 1}`` when every worker of ``client`` has the resource, else None (submit
    without: a worker without it would never get a task that asks for it)."""
    workers = client.scheduler_info().get("workers", {}).values()
    if workers and all(RESOURCE in (w.get("resources") or {}) for w in workers):
        return {RESOURCE: 1}
    return None


def lost_task_message(err: BaseException, what: str, again: str = "run it again") -> str:
    """What a task's exception raised by dask (not by the work) means to the user; ``what`` is
    the work (``"segmenting this stack"``), ``again`` how to retry (``"run the batch again"``)."""
    from distributed import KilledWorker

    if isinstance(err, KilledWorker):
        return (f"the worker {what} died (out of memory, or killed) each time it was tried; give "
                f"the workers more memory (fewer --workers) and {again}")
    return f"the cluster lost this task ({type(err).__name__}: {err})"
