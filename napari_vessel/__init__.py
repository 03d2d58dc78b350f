"""napari-vessel: segment, refine and fine-tune blood vessels in 3D microscopy stacks.

The package root is the public Python API. It imports neither napari nor Qt, so it works in
scripts and on clusters without a display; heavier parts (PyTorch) load on first use.

Examples
--------
>>> import napari_vessel as nv                                   # doctest: +SKIP
>>> volume = nv.load_volume("stack.tif")                         # doctest: +SKIP
>>> prob, labels, manifest = nv.segment(volume)                  # doctest: +SKIP
>>> nv.save_volume("vessels.tif", labels, volume.spacing_zyx, kind="labels")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.io.volume import Volume
from napari_vessel.progress import CancelToken

__version__ = "0.1.0"

#: Public names loaded on first use: name -> module that defines it.
_LAZY = {
    "load_volume": "io.stacks",
    "save_volume": "io.stacks",
    "describe_file": "io.stacks",
    "make_phantom": "data.phantom",
    "Pipeline": "preprocess",
    "segment": "inference.run",
    "predict": "inference.run",
    "segment_to_zarr": "inference.out_of_core",
    "RunManifest": "manifest",
    "read_manifest": "manifest",
    "list_models": "models.registry",
    "evaluate": "evaluation.metrics",
    "compare": "evaluation.comparison",
    "finetune": "training.finetune",
    "train": "training.train",
}

__all__ = ["__version__", "Volume", "InputError", "Cancelled", "CancelToken", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'napari_vessel' has no attribute {name!r}")
