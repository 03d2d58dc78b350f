"""One stack's blocks as tasks on a real dask.distributed LocalCluster: the same map and labels."""

from __future__ import annotations

import argparse
import json
import socket
import time

import numpy as np
import pytest
import zarr
from test_out_of_core import _level, _read  # the gap threshold: float rounding cannot decide

from napari_vessel.commands import segment as segment_cmd
from napari_vessel.data.phantom import make_phantom
from napari_vessel.errors import Cancelled, InputError
from napari_vessel.inference.block_cluster import predict_on_cluster
from napari_vessel.inference.block_tasks import BlockJob, block_task
from napari_vessel.inference.out_of_core import segment_to_zarr
from napari_vessel.inference.run import predict, resolve_spec
from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.io.volume import Volume
from napari_vessel.manifest import OutOfCoreInfo
from napari_vessel.progress import CancelToken

MODEL, PATCH, BLOCK = "tvnet", (8, 32, 32), (8, 32, 32)  # one patch per block: 2 x 3 x 3 blocks


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    with cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    phantom = make_phantom((12, 80, 72), seed=3)
    return save_volume(tmp_path_factory.mktemp("in") / "stack.zarr", phantom.image,
                       phantom.spacing_zyx)


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    segment_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_blocks_on_workers_equal_the_sequential_blocks(client, tmp_path):
    rng = np.random.default_rng(0)
    image = zarr.open_array(str(tmp_path / "input.zarr"), mode="w", shape=(12, 80, 72),
                            chunks=(8, 32, 32), dtype=np.float32, zarr_format=2)
    image[:] = rng.random((12, 80, 72), dtype=np.float32)
    spec = resolve_spec(MODEL)
    sequential = np.zeros(image.shape, np.float32)
    info: list = []
    predict(spec, Volume(image, (1.0, 1.0, 1.0)), patch_size=PATCH, batch_size=1, threads=1,
            out=sequential, block_shape=BLOCK, spill_dir=tmp_path / "spill", run_info=info)
    job = BlockJob(source=str(tmp_path / "input.zarr"), scratch=str(tmp_path / "blocks"),
                   spec=spec, block_shape=BLOCK)
    spread = np.zeros(image.shape, np.float32)
    done = predict_on_cluster(client, job, image.shape, PATCH, 0.25, spread)
    np.testing.assert_allclose(spread, sequential, atol=1e-5)
    assert done.tasks == 18 and done.plan.n_tiles == 18 and 1 <= done.workers <= 2
    assert done.loads <= 2  # each worker loads the network once and keeps it
    assert done.info.name == info[0].name == "onnx" and done.info.threads == 1
    assert [p.name for p in (tmp_path / "blocks").iterdir()] == []  # sums deleted once written
    again = predict_on_cluster(client, job, image.shape, PATCH, 0.25, np.zeros_like(spread))
    assert again.loads == 0  # the workers kept it
    with pytest.raises(InputError, match="share a filesystem"):  # a worker without the scratch
        block_task(BlockJob(source=job.source, scratch=str(tmp_path / "elsewhere"), spec=spec,
                            block_shape=BLOCK, plan=done.plan), (0, 0, 0))


def test_segment_to_zarr_on_a_cluster_equals_one_process(client, stack, tmp_path):
    import dask

    options = dict(patch_size=PATCH, block_shape=BLOCK, pyramid_smallest=32)
    with dask.config.set(scheduler="threads"):  # the module's Client is dask's default
        first = segment_to_zarr(load_volume(stack), tmp_path / "one", MODEL, threads=1, **options)
        level = _level(_read(first.outputs["prob"]), 0.9)
        started = time.perf_counter()
        one = segment_to_zarr(load_volume(stack), tmp_path / "one", MODEL, threads=1,
                              threshold=level, overwrite=True, **options)
        one_s = time.perf_counter() - started
    started = time.perf_counter()
    spread = segment_to_zarr(load_volume(stack), tmp_path / "spread", MODEL, client=client,
                             threshold=level, **options)
    spread_s = time.perf_counter() - started
    print(f"one process {one_s:.2f} s, 2 workers {spread_s:.2f} s")
    ran = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert set(ran) == {"vessel-prepare", "vessel-block"}  # the rest ran in this process
    np.testing.assert_allclose(_read(spread.outputs["prob"]), _read(one.outputs["prob"]),
                               atol=1e-5)
    labels = _read(spread.outputs["labels"])
    np.testing.assert_array_equal(labels, _read(one.outputs["labels"]))
    assert 0 < labels.mean() < 0.5
    ooc = spread.out_of_core
    assert (ooc.blocks, ooc.block_tasks, ooc.patches) == ((2, 3, 3), 18, 18)
    assert 1 <= ooc.workers <= 2 and one.out_of_core.workers is None
    assert spread.runtime.name == one.runtime.name == "onnx"
    saved = json.loads((tmp_path / "spread" / "stack_manifest.json").read_text())
    assert saved["out_of_core"]["block_tasks"] == 18
    old = json.loads((tmp_path / "one" / "stack_manifest.json").read_text())["out_of_core"]
    assert "workers" not in old and OutOfCoreInfo.from_dict(old).block_tasks is None
    with pytest.raises(InputError, match="workers"):
        OutOfCoreInfo.from_dict({**old, "workers": 0})
    assert sorted(p.name for p in (tmp_path / "spread").iterdir()) == [
        "stack_labels.zarr", "stack_manifest.json", "stack_prob.zarr"]  # no scratch left


def test_cancel_stops_the_blocks_and_publishes_nothing(client, stack, tmp_path):
    cancel, seen = CancelToken(), []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if "patch" in message:  # the first block is written: cancel the rest
            cancel.cancel()

    with pytest.raises(Cancelled):
        segment_to_zarr(load_volume(stack), tmp_path, MODEL, client=client, patch_size=PATCH,
                        block_shape=BLOCK, progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []  # no store, no manifest, no scratch
    assert not any("18/18" in m for m in seen)
    deadline = time.monotonic() + 10
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values())  # nothing left running or queued


def test_cli_workers_start_a_local_cluster(stack, tmp_path, capsys):
    argv = [str(stack), "-o", str(tmp_path), "--model", MODEL, "--quiet", "--zarr",
            "--patch-size", *map(str, PATCH), "--block-size", *map(str, BLOCK),
            "--workers", "2", "--threads", "1"]
    assert segment_cmd.run(_args(argv)) == 0
    err = capsys.readouterr().err
    assert "started a local dask cluster: 2 worker(s) x 1 thread(s)" in err
    assert "18 patches in 2x3x3 blocks on " in err
    saved = json.loads((tmp_path / "stack_manifest.json").read_text())
    assert saved["out_of_core"]["block_tasks"] == 18 and saved["runtime"]["threads"] == 1


def test_cli_cluster_options_and_a_scheduler_that_does_not_answer(stack, tmp_path):
    with socket.socket() as s:  # a free port on this machine, nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [str(stack), "-o", str(tmp_path / "out"), "--model", MODEL, "--quiet",
            "--patch-size", *map(str, PATCH)]
    started = time.perf_counter()
    with pytest.raises(InputError, match="did not answer within 1 s"):
        segment_cmd.run(_args([*base, "--zarr", "--scheduler", f"tcp://127.0.0.1:{port}",
                               "--timeout", "1"]))
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "out").exists()  # nothing is created
    with pytest.raises(InputError, match="out of core only: add --zarr"):
        segment_cmd.run(_args([*base, "--workers", "2"]))
    with pytest.raises(InputError, match="not both"):
        segment_cmd.run(_args([*base, "--zarr", "--workers", "2", "--scheduler", "tcp://x:1"]))
    with pytest.raises(InputError, match="workers must be 1 or more"):
        segment_cmd.run(_args([*base, "--zarr", "--workers", "0"]))
