"""Segment many stacks on dask.distributed: one task per stack, resumable, one failure never stops the rest.

:func:`find_inputs` turns files, folders (searched recursively) and globs into a list of stacks;
:func:`run_batch` segments each one into ``OUTDIR/<name>/`` with the same outputs and the same atomic
publishing as ``napari-vessel segment`` (labels, probability map, then the manifest, written last
and read as the "done" marker), on a ``LocalCluster`` of worker processes or on an existing
scheduler, and writes ``OUTDIR/summary.csv`` and ``OUTDIR/batch_manifest.json``. A worker segments
one stack at a time with all its threads and loads each model once (see :func:`_segment_stack`).
"""

from napari_vessel.batch.config import RESOURCE, BatchConfig, BatchReport, StackResult
from napari_vessel.batch.inputs import find_inputs
from napari_vessel.batch.run import run_batch

__all__ = ["BatchConfig", "StackResult", "BatchReport", "find_inputs", "run_batch", "RESOURCE"]
