"""The import contracts cover the whole package: a new module cannot slip past them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTER = ["cli", "commands", "_qt", "_napari"]  # may import the core, not the reverse


def _layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    assert contract["containers"] == ["napari_vessel"] and contract["exhaustive"] is True
    return [{name.strip() for name in layer.replace(":", "|").split("|")}
            for layer in contract["layers"]]


def test_every_module_has_a_layer_and_the_outer_ones_are_on_top():
    layers = _layers()
    listed = set().union(*layers)
    package = ROOT / "napari_vessel"
    modules = ({p.stem for p in package.glob("*.py")} - {"__init__"}) | {
        p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert sorted(modules - listed) == [], "give these modules a layer in pyproject.toml"
    assert sorted(listed - modules) == [], "these layers name no module any more"
    assert [next(iter(layer)) for layer in layers[:len(OUTER)]] == OUTER
    assert layers[-1] == {"errors"}  # everything may raise InputError


def test_the_core_never_imports_qt_or_napari():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "forbidden")
    assert contract["source_modules"] == ["napari_vessel"]
    assert {"napari", "qtpy", "PyQt6", "vispy"} <= set(contract["forbidden_modules"])
    assert all(rule.startswith(("napari_vessel._qt.", "napari_vessel._napari."))
               for rule in contract["ignore_imports"])
