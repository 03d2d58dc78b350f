"""Shared fixtures: the real VesselNN volumes (skipped when absent) and small phantoms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Where the real annotated volumes live, beside the repository (never inside it).
VESSELNN_DIR = Path(
    os.environ.get(
        "NAPARI_VESSEL_VESSELNN",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vesselnn",
    )
)


@pytest.fixture(scope="session")
def vesselnn_dir() -> Path:
    """Folder with ``images/`` and ``labels/`` of the six VesselNN volumes, or skip."""
    if not (VESSELNN_DIR / "images").is_dir():
        pytest.skip(
            f"real VesselNN volumes not found at {VESSELNN_DIR}; set NAPARI_VESSEL_VESSELNN or run "
            "'napari-vessel data --dest DIR' to download them"
        )
    return VESSELNN_DIR


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """ONNX exports go to a fresh cache folder, never the user's."""
    os.environ["NAPARI_VESSEL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread avoids thread hand-off costs on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
