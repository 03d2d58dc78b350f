"""The project's promises about itself: manifest, README commands, CI entry point."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_commands_resolve():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(ROOT / "napari_vessel" / "napari.yaml")
    assert manifest.name == "napari-vessel"
    for command in manifest.contributions.commands:
        module, attr = command.python_name.split(":")
        assert hasattr(importlib.import_module(module), attr), command.python_name


def test_root_manifest_is_the_package_manifest():
    assert (ROOT / "napari.yaml").read_text() == (ROOT / "napari_vessel" / "napari.yaml").read_text()


def test_manifest_is_found_as_package_resource():
    from importlib.resources import files

    assert files("napari_vessel").joinpath("napari.yaml").is_file()


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_setup_commands():
    demo, tests = _readme_commands()
    assert demo.startswith("bash scripts/setup.sh") and "napari-vessel demo" in demo
    assert tests.startswith("bash scripts/setup.sh --test")


def test_ci_runs_the_readme_test_command():
    _, tests = _readme_commands()
    test_command = tests.split("&&", 1)[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    assert "bash scripts/setup.sh --test" in ci


def test_core_does_not_import_gui_at_runtime():
    import subprocess
    import sys

    code = (
        "import sys, napari_vessel, napari_vessel.io.stacks, napari_vessel.data.phantom, napari_vessel.cli;"
        "bad=[m for m in ('napari','qtpy','magicgui','PyQt6') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names_resolve():
    import napari_vessel as nv

    for name in nv.__all__:
        assert getattr(nv, name) is not None, name
    with pytest.raises(AttributeError):
        nv.no_such_thing  # noqa: B018
