"""Split one stack's prediction into block tasks on a dask.distributed cluster (the driver side).

:func:`predict_on_cluster` loads the network on a worker to learn its input multiple, plans the
patches, submits one :func:`~napari_vessel.inference.block_tasks.block_task` per block (phase 1, a bounded
number in flight) and, in the driver, writes each block into the probability map as soon as it
and its (up to 7) predecessors are saved (phase 2, :class:`_Assembler`): the block's own sums
plus its predecessors' overhangs, normalised, as :func:`~napari_vessel.inference.block_window.run_blocks`
writes them. The map equals ``run_blocks``' up to float rounding.

The driver reads the blocks' sums from the scratch folder the workers write: on several
machines it must be on a filesystem they all share.
"""

from __future__ import annotations

import itertools
import queue
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.inference.block_tasks import (
    STOP_FILE,
    BlockJob,
    ClusterRun,
    block_name,
    block_task,
    prepare_task,
)
from napari_vessel.inference.block_window import FORWARD, BlockGrid, _write_block, block_grid, overhang_box
from napari_vessel.inference.sliding_window import importance_weights, plan_tiles
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = ["predict_on_cluster"]

#: Seconds between looks at the driver's cancel token while blocks run.
POLL_S = 0.1
#: Seconds a cancel waits for the running blocks to stop before the scratch goes.
STOP_WAIT_S = 30.0


class _Assembler:
    """Phase 2: writes a block into ``out`` once it and its predecessors are saved."""

    def __init__(self, grid: BlockGrid, out: Any, scratch: Path) -> None:
        self.grid, self.out, self.scratch = grid, out, scratch
        self.saved: set[tuple] = set()
        self.written: set[tuple] = set()

    def _near(self, index: Sequence[int], sign: int) -> list[tuple[tuple, tuple]]:
        """(block, step) of the blocks ``sign`` = -1 before / +1 after ``index`` it shares voxels with."""
        near = []
        for step in FORWARD:
            other = tuple(i + sign * d for i, d in zip(index, step, strict=True))
            if all(0 <= o < n for o, n in zip(other, self.grid.counts, strict=True)):
                near.append((other, step))
        return near

    def add(self, index: tuple) -> None:
        """Block ``index`` is saved: write every block that is ready now."""
        file = self.scratch / block_name(index)
        if not file.is_file():
            raise InputError(f"the sums of block {index} are not in {self.scratch}: the workers "
                             "must share a filesystem with this machine (the scratch is next to "
                             "the outputs)")
        self.saved.add(index)
        for block in (index, *(b for b, _ in self._near(index, 1))):
            if block in self.saved and block not in self.written and all(
                    p in self.saved for p, _ in self._near(block, -1)):
                self._write(block)

    def _write(self, index: tuple) -> None:
        lo, hi, _ = self.grid.box(index)
        own = np.load(self.scratch / block_name(index), mmap_mode="r")
        sums = np.array(own[(slice(None), *(slice(0, h - s) for s, h in zip(lo, hi, strict=True)))])
        del own
        before = self._near(index, -1)
        for block, step in before:
            plo, phi, _ = self.grid.box(block)
            theirs = np.load(self.scratch / block_name(block), mmap_mode="r")
            part = theirs[(slice(None), *overhang_box(theirs.shape[1:], plo, phi, step))]
            sums[(slice(None), *(slice(0, n) for n in part.shape[1:]))] += part
            del theirs, part
        _write_block(self.grid.plan, sums, lo, hi, self.out)
        self.written.add(index)
        for block in (index, *(b for b, _ in before)):  # it and the blocks it reaches written
            if block in self.written and all(b in self.written for b, _ in self._near(block, 1)):
                (self.scratch / block_name(block)).unlink(missing_ok=True)


class _Waiter:
    """Futures of the driver, collected as they finish while the cancel token is watched."""

    def __init__(self, client: Any, cancel: CancelToken | None, scratch: Path) -> None:
        self.client, self.cancel, self.scratch = client, cancel, scratch
        self.pending: set[Any] = set()
        self._done: queue.Queue = queue.Queue()

    def add(self, future: Any) -> None:
        self.pending.add(future)
        future.add_done_callback(self._done.put)

    def next(self) -> Any:
        """The result of the next finished task (its exception raised; a lost task explained)."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        from napari_vessel.inference.cluster import lost_task_message

        while True:
            if self.cancel is not None:
                self.cancel.check()
            try:
                future = self._done.get(timeout=POLL_S)
            except queue.Empty:
                continue
            self.pending.discard(future)
            try:
                return future.result()
            except (KilledWorker, CancelledError) as err:
                raise InputError(lost_task_message(err, "predicting a block",
                                                   "segment the stack again")) from err

    def stop(self) -> None:
        """Tell the running blocks to stop, wait for them (a while), cancel what is left."""
        from distributed import wait

        if self.scratch.is_dir():
            (self.scratch / STOP_FILE).touch()
        futures = list(self.pending)
        if futures:
            try:  # a running block stops at its next batch; a pending one as it starts
                wait(futures, timeout=STOP_WAIT_S)
            except TimeoutError:
                pass
            self.client.cancel(futures)
        self.pending.clear()


def _check_options(job: BlockJob) -> None:
    from napari_vessel.runtime import _check as check_runtime

    if isinstance(job.batch_size, bool) or int(job.batch_size) < 1:
        raise InputError(f"batch size must be at least 1, not {job.batch_size}")
    check_runtime(job.runtime)  # an unknown runtime: InputError now, as predict says it
    importance_weights((1, 1, 1), job.blending)  # an unknown blending: InputError now


def predict_on_cluster(client: Any, job: BlockJob, shape: Sequence[int], patch: Sequence[int],
                       overlap: float, out: Any, *, progress: Progress | None = None,
                       cancel: CancelToken | None = None) -> ClusterRun:
    """Predict a preprocessed stack block by block on the workers of ``client`` into ``out``.

    Parameters
    ----------
    client : distributed.Client
        Its workers read ``job.source`` and write ``job.scratch`` (a shared filesystem).
    job : BlockJob
        The input, the scratch folder (created here), the network and how it runs.
    shape : (int, int, int)
        The stack's shape (``out``'s).
    patch : (int, int, int)
        Patch size (rounded to the network's input multiple, as in ``predict``).
    overlap : float
        As in :func:`~napari_vessel.inference.run.predict`.
    out : array-like
        Where the map goes (a Zarr array), written block by block in the driver.
    progress : callable, optional
        ``progress(fraction, message)`` as blocks finish.
    cancel : CancelToken, optional
        Watched every :data:`POLL_S` s: no more blocks are submitted, running ones stop at their
        next batch, pending ones are cancelled, and :class:`Cancelled` is raised.

    Returns
    -------
    ClusterRun

    Raises
    ------
    InputError
        Bad options, NaN or infinite voxels, a constant stack, a lost task, workers that do
        not share the scratch folder.
    Cancelled
        When ``cancel`` was set.
    """
    from napari_vessel.inference.cluster import one_task_each
    from napari_vessel.io.volume import constant_error

    progress = progress or no_progress
    _check_options(job)
    scratch = Path(job.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    resources, tag = one_task_each(client), uuid.uuid4().hex[:8]
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    waiter = _Waiter(client, cancel, scratch)
    try:
        waiter.add(client.submit(prepare_task, job, key=f"vessel-prepare-{tag}", pure=False,
                                 resources=resources))
        ready = waiter.next()
        if ready["dims"] == 2:
            patch = (1, *tuple(patch)[-2:])
        plan = plan_tiles(shape, patch, overlap, ready["multiple"])
        grid = block_grid(plan, job.block_shape)
        job = replace(job, plan=plan, multiple=tuple(ready["multiple"]))
        assembler = _Assembler(grid, out, scratch)
        todo = deque(itertools.product(*(range(n) for n in grid.counts)))
        tasks, window = len(todo), max(4, 2 * n_workers)
        done, workers, loads, lows, highs = 0, set(), int(ready["loaded"]), [], []
        while todo or waiter.pending:
            while todo and len(waiter.pending) < window:  # a cancel stops submitting here
                index = todo.popleft()
                waiter.add(client.submit(block_task, job, index, pure=False, resources=resources,
                                         key=f"vessel-block-{tag}-{'-'.join(map(str, index))}"))
            result = waiter.next()
            if result.get("stopped"):  # not the user (cancel raised above): the scratch went
                raise InputError(f"block {result['index']} stopped: its scratch folder {scratch} "
                                 "was removed while the blocks ran (another run on the same "
                                 "outputs?)")
            workers.add(result["worker"])
            loads += int(result["loaded"])
            lows.append(result["extremes"][0])
            highs.append(result["extremes"][1])
            assembler.add(result["index"])
            done += result["patches"]
            progress(done / plan.n_tiles, f"patch {done}/{plan.n_tiles} ({len(assembler.written)}"
                     f"/{tasks} blocks, {len(workers)} worker(s))")
    except BaseException:
        waiter.stop()
        raise
    if cancel is not None:
        cancel.check()
    if min(lows) == max(highs):
        raise constant_error(min(lows))
    return ClusterRun(plan, ready["info"], ready["device"], len(workers), tasks, loads)
