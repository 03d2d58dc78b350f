"""``napari-vessel batch`` on a real dask.distributed LocalCluster of worker processes."""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_vessel import batch
from napari_vessel.batch import BatchConfig, find_inputs, run_batch
from napari_vessel.batch import inputs as batch_inputs
from napari_vessel.batch import worker as batch_worker
from napari_vessel.commands import batch as batch_cmd
from napari_vessel.commands import segment as segment_cmd
from napari_vessel.errors import InputError
from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.manifest import RunManifest, read_manifest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _stack(path: Path, shift: int = 0) -> Path:
    z, y, x = np.indices((8, 32, 32))
    tube = np.hypot((z - 4) * 2, y - 12 - shift) < 3.5
    noise = np.random.default_rng(shift).normal(0, 5, tube.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_volume(path, (tube * 150 + 20 + noise).astype(np.uint8), (2.0, 1.0, 1.0))


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return {Path(row["input"]).relative_to(out.parent / "in").as_posix(): row
                for row in csv.DictReader(f)}


def _manifest(folder: str | Path) -> RunManifest:
    return read_manifest(next(Path(folder).glob("*_manifest.json")))


def test_find_inputs_files_folders_globs(tmp_path):
    for name in ("a.tif", "sub/b.ome.tif", "sub/deeper/c.TIFF", "d.tif"):
        _stack(tmp_path / name)
    save_volume(tmp_path / "e.zarr", np.ones((2, 4, 4), np.uint8), (1, 1, 1))
    (tmp_path / "notes.txt").write_text("not a stack")
    (tmp_path / ".hidden.tif").write_bytes(b"x")
    _stack(tmp_path / "out" / "a" / "a_labels.tif")  # an earlier batch's output
    skipped: list[Path] = []
    found = find_inputs([tmp_path, tmp_path / "a.tif", str(tmp_path / "*.tif")], exclude=tmp_path / "out",
                        on_skip=lambda path, why: skipped.append(path))
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["a.tif", "d.tif", "e.zarr", "sub/b.ome.tif", "sub/deeper/c.TIFF"]
    assert skipped == [tmp_path / "notes.txt"]
    assert find_inputs([str(tmp_path / "**" / "c.*")]) == [tmp_path / "sub/deeper/c.TIFF"]
    with pytest.raises(InputError, match="matches no file or folder"):
        find_inputs([tmp_path / "missing.tif"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.csv").write_text("1")
    with pytest.raises(InputError, match="no stack found"):
        find_inputs([tmp_path / "empty"])


def test_config_checks_and_names():
    for bad in ({"threshold": 1.5}, {"runtime": "tensorrt"}, {"device": "tpu"}, {"workers": 0},
                {"threads_per_worker": 0}, {"scheduler": " "}, {"connect_timeout": 0}, {"channel": -1}):
        with pytest.raises(InputError):
            BatchConfig(**bad)
    names = batch_inputs._folder_names([Path("a/x.tif"), Path("b/x.tif"), Path("c/X.ome.tif"),
                                        Path("y.zarr")])
    assert names[3] == "y" and len(set(names)) == 4
    assert all(n.startswith(("x-", "X-")) and len(n) == 10 for n in names[:3])
    assert batch_inputs._folder_names([Path("b/x.tif")]) == ["x"]
    assert batch_worker._worker_device("auto", 3, 2) == "cuda:1"
    assert batch_worker._worker_device("cpu", 3, 2) == "cpu"
    assert batch_worker._worker_device("auto", 0, 1) == "auto"


def test_batch_on_local_cluster_resumes_and_survives_bad_files(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(("one.tif", "sub/two.tif", "other/one.zarr")):
        _stack(src / name, shift=i)
    (src / "corrupt.tif").write_bytes(np.random.default_rng(0).bytes(4096))
    (src / "notes.txt").write_text("not a stack")
    argv = [str(src), "-o", str(out), "--model", "tvnet", "--workers", "2", "--threads-per-worker", "1",
            "--dashboard", ":0", "--quiet"]
    started = time.perf_counter()
    assert batch_cmd.run(_args(batch_cmd, argv)) == 1  # one stack failed
    first = time.perf_counter() - started
    err = capsys.readouterr().err
    assert "skipped 1 file(s) that are not stacks" in err and "notes.txt" in err
    assert "dask dashboard: http" in err and "3 done, 0 skipped" in err and "1 failed" in err
    rows = _summary(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "one.tif": "done", "sub/two.tif": "done", "other/one.zarr": "done", "corrupt.tif": "failed"}
    assert "not a readable TIFF" in rows["corrupt.tif"]["error"]
    assert not (out / "corrupt").exists()
    assert rows["one.tif"]["output"] != rows["other/one.zarr"]["output"]  # same stem, two folders
    assert int(rows["sub/two.tif"]["voxels"]) == 8 * 32 * 32
    assert 0 < float(rows["sub/two.tif"]["vessel_fraction"]) < 0.5
    report = json.loads((out / "batch_manifest.json").read_text())
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 1} and report["config"]["model"] == "tvnet"

    # same labels and probabilities as the single-stack command
    assert segment_cmd.run(_args(segment_cmd, [str(src / "sub/two.tif"), "-o", str(tmp_path / "single"),
                                               "--model", "tvnet", "--quiet"])) == 0
    ours, single = Path(rows["sub/two.tif"]["output"]), tmp_path / "single"
    np.testing.assert_array_equal(load_volume(ours / "two_labels.tif").data,
                                  load_volume(single / "two_labels.tif").data)
    np.testing.assert_allclose(load_volume(ours / "two_prob.tif").data,
                               load_volume(single / "two_prob.tif").data, atol=1e-5)

    # each worker process loaded the network at most once (none at all when a verified cached
    # export runs the model without PyTorch)
    batches = [_manifest(rows[k]["output"]).batch for k in ("one.tif", "sub/two.tif", "other/one.zarr")]
    workers = {b.worker for b in batches}
    loads = Counter(b.worker for b in batches if not b.model_from_cache)
    assert len(workers) <= 2 and all(n == 1 for n in loads.values())

    # run again: everything done is skipped, without starting a cluster
    (src / "corrupt.tif").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*_manifest.json")}
    started = time.perf_counter()
    assert batch_cmd.run(_args(batch_cmd, argv)) == 0
    assert time.perf_counter() - started < first / 2
    assert "0 done, 3 skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*_manifest.json")} == stamps

    # a run killed while publishing: outputs without a manifest and a temporary file are redone
    two = Path(rows["sub/two.tif"]["output"])
    (two / "two_manifest.json").unlink()
    (two / ".two_labels.tif.0badc0de.partial.tif").write_bytes(b"half")
    (two / "two_labels.tif").write_bytes(b"half-written")
    config = BatchConfig(model="tvnet", workers=1, threads_per_worker=1, dashboard=":0")
    again = run_batch(find_inputs([src], exclude=out), out, config)
    assert {Path(s.input).relative_to(src).as_posix(): s.status for s in again.stacks} == {
        "one.tif": "skipped", "other/one.zarr": "skipped", "sub/two.tif": "done"}
    assert sorted(p.name for p in two.iterdir()) == ["two_labels.tif", "two_manifest.json", "two_prob.tif"]
    np.testing.assert_array_equal(load_volume(two / "two_labels.tif").data,
                                  load_volume(single / "two_labels.tif").data)

    # other settings are refused rather than silently reused
    with pytest.raises(InputError, match="other settings.*--overwrite"):
        run_batch(find_inputs([src], exclude=out), out, BatchConfig(model="frangi"))


def test_unwritable_output_folder(tmp_path):
    stack = _stack(tmp_path / "a.tif")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(InputError, match="cannot write the results"):
        run_batch([stack], blocker / "out", BatchConfig(model="frangi"))
    with pytest.raises(InputError, match="unknown model 'frangy'; did you mean 'frangi'"):
        run_batch([stack], tmp_path / "out", BatchConfig(model="frangy"))
    assert not (tmp_path / "out").exists()
    if getattr(os, "geteuid", lambda: 1)() == 0:  # root writes into read-only folders anyway
        return
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    try:
        with pytest.raises(InputError, match="cannot write the results"):
            run_batch([stack], folder, BatchConfig(model="frangi"))
    finally:
        folder.chmod(0o755)


def test_scheduler_that_does_not_answer(tmp_path):
    stack = _stack(tmp_path / "a.tif")
    with socket.socket() as s:  # a free port on this machine, nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    config = BatchConfig(model="frangi", scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(InputError, match="did not answer within 1 s"):
        run_batch([stack], tmp_path / "out", config)
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "out").exists()  # nothing is created


def test_worker_dying_mid_task_fails_only_its_stack(tmp_path):
    import dask
    from distributed import Client, LocalCluster, WorkerPlugin

    class DieOnCrash(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and "crash" in str(key):
                os._exit(1)  # the worker process dies as in an out-of-memory kill

    stacks = [_stack(tmp_path / "in" / "crash.tif"), _stack(tmp_path / "in" / "fine.tif", 3)]
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               resources={batch.RESOURCE: 1})
    with cluster, Client(cluster) as client:
        client.register_plugin(DieOnCrash(), name="die-on-crash")
        config = BatchConfig(model="frangi", scheduler=cluster.scheduler_address)
        report = run_batch(stacks, tmp_path / "out", config)
    crash, fine = report.stacks
    assert (crash.status, fine.status) == ("failed", "done")
    assert "worker segmenting this stack died" in crash.error
    assert not (tmp_path / "out" / "crash").exists() or not list((tmp_path / "out" / "crash").glob("*.json"))


def test_jobqueue_config_parses_and_builds_clusters():
    import yaml

    config = yaml.safe_load((DOCS / "dask-jobqueue.yaml").read_text(encoding="utf-8"))
    for system in ("slurm", "pbs"):
        section = config["jobqueue"][system]
        assert {"cores", "memory", "processes", "walltime", "worker-extra-args"} <= set(section)
        assert section["worker-extra-args"] == ["--resources", f"{batch.RESOURCE}=1"]
    jobqueue = pytest.importorskip("dask_jobqueue")
    import dask

    merged = {f"jobqueue.{k}": {**dask.config.get(f"jobqueue.{k}"), **v}  # as dask merges ~/.config/dask
              for k, v in config["jobqueue"].items()}
    with dask.config.set(merged):
        for cluster_class, directive in ((jobqueue.SLURMCluster, "#SBATCH"), (jobqueue.PBSCluster, "#PBS")):
            with cluster_class(scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}) as cluster:
                script = cluster.job_script()  # no job is submitted
                assert directive in script and "--resources stack=1" in script and "--nthreads 8" in script
                assert "source $HOME/napari-vessel/.venv/bin/activate" in script


def test_batch_out_of_core_writes_ome_zarr_equal_to_the_tiff_path_and_resumes(tmp_path):
    src = tmp_path / "in"
    stacks = [_stack(src / "a.tif"), _stack(src / "b.tif", shift=3)]
    common = dict(model="tvnet", workers=1, threads_per_worker=1, dashboard=":0")
    tiff = run_batch(stacks, tmp_path / "tiff", BatchConfig(**common))
    zarr = run_batch(stacks, tmp_path / "zarr", BatchConfig(**common, zarr=True))
    assert [s.status for s in zarr.stacks] == ["done", "done"] and not tiff.failed
    for t, z in zip(tiff.stacks, zarr.stacks, strict=True):
        stem = Path(t.input).name.removesuffix(".tif")
        labels = load_volume(Path(z.output) / f"{stem}_labels.zarr")
        np.testing.assert_array_equal(np.asarray(labels.data),
                                      load_volume(Path(t.output) / f"{stem}_labels.tif").data)
        assert labels.spacing_zyx == (2.0, 1.0, 1.0)
        manifest = _manifest(z.output)
        assert manifest.batch.settings["zarr"] is True and manifest.out_of_core is not None
        assert z.voxels == 8 * 32 * 32 and z.vessel_fraction == pytest.approx(t.vessel_fraction)
    again = run_batch(stacks, tmp_path / "zarr", BatchConfig(**common, zarr=True))
    assert [s.status for s in again.stacks] == ["skipped", "skipped"]
    manifest = next(Path(tiff.stacks[0].output).glob("*_manifest.json")).read_bytes()
    with pytest.raises(InputError, match="other settings"):  # a TIFF set is not replaced silently
        run_batch(stacks, tmp_path / "tiff", BatchConfig(**common, zarr=True))
    assert next(Path(tiff.stacks[0].output).glob("*_manifest.json")).read_bytes() == manifest
