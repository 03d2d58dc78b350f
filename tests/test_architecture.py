"""The import contracts cover the whole core: a new core module cannot slip past them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTER = {"commands", "cli", "_qt", "_napari", "__init__"}  # may import the core, not the reverse


def test_every_core_module_is_under_the_no_cli_no_docks_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if "command line" in c["name"])
    listed = {m.removeprefix("napari_vessel.") for m in contract["source_modules"]}
    package = ROOT / "napari_vessel"
    core = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir()
                                                     if (p / "__init__.py").exists()}
    missing = sorted(core - OUTER - listed)
    assert not missing, f"add these core modules to the contract in pyproject.toml: {missing}"
    assert not listed & OUTER and listed <= core  # no outer or stale names
