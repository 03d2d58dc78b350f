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


@pytest.fixture(scope="session")
def fit_to_bars():
    """``fit(model, threshold=0.5) -> model``: teach a tiny network bright bars on dim noise.

    A randomly initialised network finds no vessel, so an unsupervised adaptation has nothing
    to work from and declines; tests of adaptation start from a network that finds the bars.
    Works on the min-max-stretched image, as the fine-tune feeds it without a card pipeline.
    """
    import numpy as np
    import torch

    def fit(model, steps: int = 80, seed: int = 0):
        rng = np.random.default_rng(seed)
        labels = np.zeros((2, 1, 8, 32, 32), np.float32)
        for b in range(2):
            for _ in range(3):
                y = rng.integers(3, 29)
                labels[b, 0, :, y - 1:y + 2, :] = 1
        image = np.clip(labels * 180 + 30 + rng.normal(0, 12, labels.shape), 0, 255)
        image = (image - image.min()) / (image.max() - image.min())
        x, y = torch.from_numpy(image.astype(np.float32)), torch.from_numpy(labels)
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return model.eval()

    return fit
