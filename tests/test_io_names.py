"""One answer each to "what is this file's stem?" and "is this array lazy?" (napari_vessel.io)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_vessel.io.common import file_stem
from napari_vessel.io.outputs import finetune_output_paths, output_paths
from napari_vessel.io.volume import Volume, is_dask, is_lazy


@pytest.mark.parametrize(("path", "stem"), [
    ("mouse1.ome.tif", "mouse1"),
    ("mouse1.ome.tiff", "mouse1"),
    ("mouse1.tif", "mouse1"),
    ("Mouse1.TIFF", "Mouse1"),
    ("big.btf", "big"),
    ("stack.tf8", "stack"),
    ("store.zarr", "store"),
    ("store.ome.zarr", "store"),
    ("/data/run.v2.ome.zarr/", "run.v2"),
    ("mouse1.day3.tif", "mouse1.day3"),
    ("/data/2024.05.17_mouse", "2024.05.17_mouse"),  # a Zarr folder without .zarr: kept whole
    ("plain_folder", "plain_folder"),
    ("scan.czi", "scan.czi"),  # not a stack napari-vessel names: kept whole
    (".tif", ".tif"),
])
def test_file_stem(path, stem):
    assert file_stem(path) == stem
    assert file_stem(Path(path)) == stem


def test_output_names_use_the_file_stem(tmp_path):
    paths = output_paths("/in/mouse1.ome.tif", tmp_path)
    assert paths["labels"] == tmp_path / "mouse1_labels.tif"
    assert output_paths("/in/store.ome.zarr", tmp_path, zarr=True)["prob"].name == "store_prob.zarr"
    tuned = finetune_output_paths("/in/mouse1.ome.tif", tmp_path, "mine")
    assert tuned["labels"].name == "mouse1.mine.labels.tif"


def test_is_lazy_and_is_dask(tmp_path):
    array = np.zeros((2, 3, 4), np.uint8)
    store = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=array.shape, dtype=array.dtype)
    mapped = np.memmap(tmp_path / "m.raw", dtype=np.uint8, mode="w+", shape=array.shape)
    lazy = da.zeros(array.shape, chunks=2)
    assert not is_lazy(array) and not is_lazy(mapped)  # a memory map behaves as a NumPy array
    assert is_lazy(lazy) and is_lazy(store)
    assert is_dask(lazy) and not is_dask(store) and not is_dask(array)
    assert Volume(lazy).is_lazy and Volume(store).is_lazy and not Volume(array).is_lazy
