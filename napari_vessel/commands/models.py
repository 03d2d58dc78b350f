"""``napari-vessel models``: list the registered models, one line each."""

from __future__ import annotations

import argparse
import json

from napari_vessel.models import registry
from napari_vessel.models.card import format_count, format_scores

NAME = "models"
HELP = "list the segmentation models: name, kind, parameters, scores"
DESCRIPTION = """\
List every model the plugin can run: the shipped networks, the classical methods and the models
you trained or fine-tuned (found in the user models folder, $NAPARI_VESSEL_MODELS or
~/.napari-vessel/models). One line per model: name, kind (supervised, unsupervised, classical),
number of parameters, and the validation scores from its model card. The recommended default is
marked with '*'; models without trained weights are marked 'no weights'.

examples:
  napari-vessel models
  napari-vessel models --kind classical
  napari-vessel models --json > models.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` options to ``parser``."""
    parser.add_argument("--kind", choices=registry.KINDS, default=None,
                        help="only models of this kind")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def describe(spec: registry.ModelSpec) -> dict:
    """One model as a JSON-ready dict."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "parameters": registry.count_parameters(spec),
        "weights": str(spec.weights) if spec.weights else None,
        "usable": spec.usable,
        "source": spec.source,
        "scores": (spec.card.scores if spec.card is not None else None) or {},
        "description": spec.description,
    }


def run(args: argparse.Namespace) -> int:
    """Print the model list; returns the exit code."""
    specs = registry.list_models(kind=args.kind)
    try:
        default = registry.default_model_name()
    except Exception:  # noqa: BLE001 - listing must work even with no usable model
        default = None
    rows = [describe(spec) for spec in specs]
    if args.json:
        print(json.dumps({"default": default, "models": rows}, indent=2))
        return 0
    if not rows:
        print("no models registered")
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    print(f"  {'name':<{width}}{'kind':<14}{'params':>8}  scores")
    for r in rows:
        mark = "*" if r["name"] == default else " "
        note = "" if r["usable"] else "  (no weights)"
        extra = "  [user]" if r["source"] == "user" else ""
        print(f"{mark} {r['name']:<{width}}{r['kind']:<14}{format_count(r['parameters']):>8}  "
              f"{format_scores(r['scores'])}{note}{extra}")
    if default:
        print(f"\n* default model: {default}")
    return 0
