"""Segment a stack larger than memory: block by block into OME-Zarr stores, published atomically.

:func:`segment_to_zarr` does what :func:`~napari_vessel.inference.run.segment` does, with memory
bounded by the block size instead of the stack size:

1. the model's preprocessing runs lazily on slabs of whole slices and is written once to a scratch
   Zarr array (its global statistics are the in-memory ones, see :mod:`napari_vessel.preprocess`);
2. the network runs on blocks aligned to the patch grid, each patch once
   (:mod:`napari_vessel.inference.block_window`), into ``STEM_prob.zarr``; with a dask ``client`` the
   blocks are tasks on its workers (:mod:`napari_vessel.inference.block_cluster`, same result);
3. the post-processing runs on blocks with the global answer (:mod:`.postprocess_blocks`) into
   ``STEM_labels.zarr``; a model card's level rule first reads the vessel fraction of the whole
   probability store (:func:`~napari_vessel.postprocess.level.fraction_above`) and fixes the
   level, which the stores and the manifest then record;
4. each store gets its pyramid of lower resolutions, level by level from the one before
   (:mod:`.io_pyramid`: probabilities by mean, labels by max), so napari opens them as fast
   multiscale layers; the labels store is an NGFF ``image-label`` pointing at the probabilities;
5. both stores and ``STEM_manifest.json`` are written under temporary names and moved into place
   together, manifest last (:func:`~napari_vessel.io.outputs.publish_set`); the scratch goes away.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.devices import run_device
from napari_vessel.errors import InputError
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.io.volume import Volume
from napari_vessel.manifest import OutOfCoreInfo, RunManifest
from napari_vessel.progress import CancelToken, Progress, no_progress, scaled

__all__ = ["segment_to_zarr", "needs_out_of_core", "BYTES_PER_VOXEL", "default_block_shape"]

#: Bytes per voxel the in-memory ``segment`` holds at its peak: the float32 preprocessed stack,
#: the float32 blending sums and weights, the float32 map and the uint8 labels (measured: resident
#: memory rises by about this much per voxel).
BYTES_PER_VOXEL = 17

#: Slices per slab when the preprocessing is written to the scratch array.
SLAB = 8


def needs_out_of_core(shape: Any, budget_gb: float | None) -> bool:
    """True when segmenting a stack of ``shape`` in memory would need more than ``budget_gb`` GB."""
    if budget_gb is None:
        return False
    if not float(budget_gb) > 0:
        raise InputError(f"memory budget must be a positive number of GB, not {budget_gb}")
    return int(np.prod(shape)) * BYTES_PER_VOXEL > float(budget_gb) * 1e9


def default_block_shape(patch: Any) -> tuple[int, int, int]:
    """One patch: the smallest block, so the least memory (a block's sums and its input region
    are held with the network's working memory; blocks of 1 x 2 x 2 patches peaked at 2.8 GB on a
    gigavoxel stack, see docs/segmentation.md)."""
    return int(patch[0]), int(patch[1]), int(patch[2])


def _check_blocks(block_shape: Any, shape: tuple, patch: Any, overlap: float, multiple: Any) -> tuple:
    from napari_vessel.inference.block_window import block_grid
    from napari_vessel.inference.sliding_window import plan_tiles

    try:
        block = tuple(int(b) for b in block_shape)
    except (TypeError, ValueError) as err:
        raise InputError(f"block size {block_shape!r} must be three whole numbers (z, y, x)") from err
    if len(block) != 3 or min(block) < 1:
        raise InputError(f"block size {block_shape!r} must be three positive numbers (z, y, x)")
    block_grid(plan_tiles(shape, patch, overlap, multiple), block)  # a patch larger: InputError
    return block


def segment_to_zarr(volume: Any, out_dir: str | os.PathLike, model_name: Any = None, *,
                    name: str | None = None, threshold: float | None = None,
                    preprocess: bool = True, min_size: int = 0, spacing_zyx: Any = None,
                    options: WindowOptions | None = None,
                    overlap: float | None = None, patch_size: Any = None,
                    blending: str | None = None, batch_size: int | None = None,
                    device: Any = None, tta: bool | None = None,
                    block_shape: Any = None, overwrite: bool = False,
                    pyramid_smallest: int | None = None,
                    progress: Progress | None = None, cancel: CancelToken | None = None,
                    runtime: str | None = None, threads: int | None = None,
                    extra: Mapping[str, Any] | None = None, client: Any = None) -> RunManifest:
    """Segment a volume out of core into ``out_dir``: ``NAME_prob.zarr``, ``NAME_labels.zarr``
    (OME-Zarr pyramids, level 0 at full resolution) and ``NAME_manifest.json``.

    Parameters
    ----------
    volume : Volume or array-like, shape (Z, Y, X)
        Lazy (dask, Zarr, e.g. from :func:`~napari_vessel.io.stacks.load_volume`) for stacks larger
        than memory.
    out_dir : str or PathLike
        Output folder (created when missing).
    name : str, optional
        Stem of the outputs; default the volume's source file name, else ``"stack"``.
    block_shape : (int, int, int), optional
        Voxels a block covers (default :func:`default_block_shape` of the patch); at least one
        patch along each axis. Memory grows with it, the result does not depend on it.
    overwrite : bool
        Replace existing outputs; without it existing ones raise :class:`InputError`.
    pyramid_smallest : int, optional
        The stores' lower resolutions halve y and x until both fit in this many voxels (default
        :data:`~napari_vessel.io.pyramid.SMALLEST`, 256); 0 writes level 0 only.
    options : WindowOptions, optional
        The sliding window's settings (:class:`~napari_vessel.inference.options.WindowOptions`);
        the keywords, when given, replace its settings.
    batch_size : int, optional
        Patches per network call; default 1 (out of core the network's working memory for one
        patch is the largest part of the peak, so one patch at a time keeps it bounded).
    extra : mapping, optional
        More top-level entries for the manifest, written with it: typed ones (e.g. ``batch``, a
        :class:`~napari_vessel.manifest.BatchInfo` or its JSON form) by name, any other into
        :attr:`~napari_vessel.manifest.RunManifest.extra` (see
        :meth:`~napari_vessel.manifest.RunManifest.updated`).
    client : distributed.Client, optional
        Predict the blocks as tasks on this cluster's workers (:mod:`napari_vessel.inference.block_cluster`;
        the map equals the one-process run's up to float rounding); each worker loads the
        network once and runs one block at a time with its threads (``threads``, if given, on
        each worker instead). The scratch (input and block sums) is next to the outputs: on
        several machines ``out_dir`` must be on a filesystem every worker shares. None: every
        block in this process.
    model_name, threshold, preprocess, min_size, spacing_zyx, overlap, patch_size, blending,
    device, tta, progress, cancel, runtime, threads
        As in :func:`~napari_vessel.inference.run.segment`.

    Returns
    -------
    RunManifest
        The run manifest (its :meth:`~napari_vessel.manifest.RunManifest.to_dict` is written),
        with ``outputs`` and ``out_of_core`` (block size, patch predictions, post-processing
        steps done; with a ``client`` the workers and block tasks).

    Raises
    ------
    InputError
        Existing outputs without ``overwrite``, an unwritable folder, a block smaller than a
        patch, a classical model (they need the whole stack), and what ``segment`` refuses;
        with a ``client``, workers that do not share the scratch folder or a lost task.
    Cancelled
        When ``cancel`` was set (with a ``client``: no block is submitted any more, running ones
        stop, pending ones are cancelled); nothing is published, the scratch is removed.
    """
    from napari_vessel.inference.run import prepare_input, resolve_spec, run_manifest
    from napari_vessel.io.outputs import check_writable, output_paths, publish_set, write_json
    from napari_vessel.io.pyramid import SMALLEST, plan_levels, write_pyramid
    from napari_vessel.io.volume import as_volume, check_volume_array
    from napari_vessel.io.zarr import create_zarr, mark_complete, update_metadata
    from napari_vessel.postprocess.labels import Postprocessing
    from napari_vessel.postprocess.level import fraction_above

    opts = window_options(options, patch_size=patch_size, overlap=overlap, blending=blending,
                          batch_size=batch_size, tta=tta, device=device, runtime=runtime,
                          threads=threads)
    if opts.batch_size is None:
        opts = replace(opts, batch_size=1)
    progress = progress or no_progress
    volume = as_volume(volume, spacing_zyx)
    data = check_volume_array(volume.data)
    spec = resolve_spec(model_name)
    if not spec.is_network:
        raise InputError(f"{spec.name} is a classical model that works on the whole stack in "
                         "memory; segment out of core with a network (see 'napari-vessel models')")
    recipe = Postprocessing.for_model(spec, threshold, min_size)
    stem = name or (Path(volume.source).name if volume.source else "stack")
    paths = output_paths(stem, out_dir, zarr=True)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{', '.join(existing)} already exist(s); add --overwrite to replace")
    check_writable(Path(out_dir))
    smallest = SMALLEST if pyramid_smallest is None else pyramid_smallest
    if smallest:
        plan_levels(data.shape, volume.spacing_zyx, smallest=smallest)  # a bad size: refused now
    patch = tuple(opts.patch_size or spec.patch_size_zyx)
    block = _check_blocks(block_shape or default_block_shape(patch), tuple(data.shape), patch,
                          opts.overlap, spec.input_multiple_zyx)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    scratch = paths["manifest"].with_name(f".{paths['manifest'].name}.{uuid.uuid4().hex[:8]}"
                                          ".scratch.partial")  # a killed run's: removed next time
    timing: dict[str, float] = {}
    dev = run_device(opts.device)
    try:
        manifest: list[RunManifest] = []

        def write(tmp: dict[str, Path]) -> None:
            import dask.array as da
            import zarr

            from napari_vessel.inference.block_window import block_grid
            from napari_vessel.inference.run import predict
            from napari_vessel.inference.sliding_window import plan_tiles
            from napari_vessel.postprocess.blocks import postprocess_blocks
            from napari_vessel.preprocess import compute

            started = time.perf_counter()
            lazy = data if hasattr(data, "dask") else da.from_array(data, chunks=(SLAB, -1, -1))
            prepared, pre_json = prepare_input(lazy.rechunk({0: SLAB}), spec, volume.spacing_zyx,
                                               preprocess=preprocess, cancel=cancel)
            pre = zarr.open_array(str(scratch / "input.zarr"), mode="w", shape=prepared.shape,
                                  chunks=(SLAB, 256, 256), dtype=np.float32, zarr_format=2)
            compute(prepared, out=pre, progress=scaled(progress, 0.0, 0.15, "preprocessing"),
                    cancel=cancel)
            timing["preprocess_s"] = time.perf_counter() - started
            meta = {"model": spec.name, "threshold": recipe.threshold}
            prob = create_zarr(tmp["prob"], pre.shape, np.float32, volume.spacing_zyx,
                               kind="image", metadata=meta)
            labels = create_zarr(tmp["labels"], pre.shape, np.uint8, volume.spacing_zyx,
                                 kind="labels", metadata=meta, image_label={
                                     "colors": [{"label-value": 1, "rgba": [255, 64, 64, 255]}],
                                     "properties": [{"label-value": 1, "class": "vessel"}],
                                     "source": {"image": f"../{paths['prob'].name}"}})
            started, run_info, ran = time.perf_counter(), [], []
            if client is None:
                predict(spec, Volume(pre, volume.spacing_zyx),
                        options=replace(opts, patch_size=patch, device=dev),
                        progress=scaled(progress, 0.15, 0.85), cancel=cancel,
                        run_info=run_info, out=prob, block_shape=block,
                        spill_dir=scratch / "spill")
            else:
                from napari_vessel.inference.block_cluster import predict_on_cluster
                from napari_vessel.inference.block_tasks import BlockJob

                job = BlockJob(source=str((scratch / "input.zarr").resolve()),
                               scratch=str((scratch / "blocks").resolve()), spec=spec,
                               block_shape=block, blending=opts.blending,
                               batch_size=opts.batch_size, device=opts.device,
                               runtime=opts.runtime, tta=opts.tta, threads=opts.threads)
                ran.append(predict_on_cluster(client, job, pre.shape, patch, opts.overlap, prob,
                                              progress=scaled(progress, 0.15, 0.85),
                                              cancel=cancel))
                run_info.append(ran[0].info)
            mark_complete(prob)
            timing["predict_s"] = time.perf_counter() - started
            started = time.perf_counter()
            post_block = tuple(max(c, b - b % c) for c, b in zip(prob.chunks, block, strict=True))
            used = recipe
            if recipe.rule is not None:  # the card's level rule reads the whole map's fraction
                progress(0.85, "vessel fraction")
                used = recipe.resolve(fraction=fraction_above(prob, recipe.rule.probe,
                                                             cancel=cancel))
                for role in ("prob", "labels"):  # the stores say the level actually used
                    update_metadata(tmp[role], threshold=used.threshold)
            steps = postprocess_blocks(prob, labels, used, block=post_block,
                                       scratch=scratch / "labels",
                                       progress=scaled(progress, 0.85, 0.95), cancel=cancel)
            mark_complete(labels)
            timing["postprocess_s"] = time.perf_counter() - started
            started, levels = time.perf_counter(), {}
            if smallest:
                for role, method, start in (("prob", "mean", 0.95), ("labels", "max", 0.975)):
                    shapes = write_pyramid(tmp[role], method=method, smallest=smallest,
                                           progress=scaled(progress, start, start + 0.025),
                                           cancel=cancel)
                    levels[role] = [list(s) for s in shapes]
                timing["pyramid_s"] = time.perf_counter() - started
            plan = (ran[0].plan if ran else
                    plan_tiles(pre.shape, patch, opts.overlap, spec.input_multiple_zyx))
            made = run_manifest(spec, volume, pre_json, used,
                                run_device(ran[0].device) if ran else dev, run_info, timing,
                                {**opts.manifest_parameters(spec, patch),
                                 "preprocess": bool(preprocess)})
            made = replace(made, out_of_core=OutOfCoreInfo(
                block_shape_zyx=block, blocks=tuple(block_grid(plan, block).counts),
                patches=plan.n_tiles, patch_predictions_per_patch=1.0,
                postprocessing_steps=tuple(steps), postprocessing_skipped=(),
                pyramid_levels_zyx=levels.get("prob", [tuple(pre.shape)]),
                pyramid_methods={"prob": "mean", "labels": "max"},
                workers=ran[0].workers if ran else None,
                block_tasks=ran[0].tasks if ran else None),
                outputs={k: str(v) for k, v in paths.items()}).updated(extra or {})
            write_json(tmp["manifest"], made.to_dict(), False)
            manifest.append(made)

        if client is None:
            publish_set(paths, write)
        else:  # a Client is dask's default scheduler: the stack's own reads stay in this process
            import dask

            with dask.config.set(scheduler="threads"):
                publish_set(paths, write)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress(1.0, "done")
    return manifest[0]
