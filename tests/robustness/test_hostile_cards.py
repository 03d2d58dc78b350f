"""User model cards are validated fully when read: one bad card is skipped with a warning naming
its file, and the listing, the other models and the machine's memory are unharmed."""

from __future__ import annotations

import json

import pytest

from napari_vessel.models import registry
from napari_vessel.models.registry import MODELS_ENV

GOOD = {"architecture": "tvnet", "config": {"widths": [2, 4, 4, 4]}, "kind": "supervised",
        "format_version": 1}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("change, reason", [
    ({"config": {"widths": [2, 4, 4, 4], "no_such_key": 1}}, "does not build"),
    ({"config": {"widths": [100000, 100000, 100000, 100000]}}, "parameters"),
    ({"threshold": "high"}, "threshold"),
    ({"threshold": 7}, "threshold"),
    ({"postprocessing": {"method": "magic"}}, "postprocessing"),
    ({"postprocessing": "hysteresis"}, "postprocessing"),
    ({"patch_size_zyx": [32, 512]}, "patch_size_zyx"),
    ({"weights_file": "/etc/passwd"}, "weights_file"),
    ({"weights_file": "../elsewhere.safetensors"}, "weights_file"),
])
def test_a_hostile_card_is_skipped_and_the_listing_survives(user_dir, change, reason):
    (user_dir / "bad.json").write_text(json.dumps({**GOOD, "name": "bad", **change}))
    (user_dir / "fine.json").write_text(json.dumps({**GOOD, "name": "fine"}))
    with pytest.warns(UserWarning) as record:
        names = [s.name for s in registry.list_models()]
    text = " ".join(str(w.message) for w in record)
    assert "bad.json" in text and reason in text
    assert "bad" not in names and "fine" in names and "tvnet" in names


def test_a_card_mended_on_disk_is_checked_again(user_dir):
    import os

    card = user_dir / "mended.json"
    card.write_text(json.dumps({**GOOD, "name": "mended", "threshold": "high"}))
    with pytest.warns(UserWarning, match="threshold"):
        assert "mended" not in [s.name for s in registry.list_models()]
    card.write_text(json.dumps({**GOOD, "name": "mended", "threshold": 0.5}))
    stat = card.stat()
    os.utime(card, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later edit
    assert "mended" in [s.name for s in registry.list_models()]
