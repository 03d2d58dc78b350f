"""``napari-vessel preprocess IN OUT``: run a preprocessing pipeline on a stack file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.preprocess import DEFAULT_2PM, DEFAULT_CONFOCAL, STEPS, Pipeline, compute
from napari_vessel.progress import scaled, tqdm_progress

NAME = "preprocess"
HELP = "median subtraction, histogram scaling, CLAHE, fusion, normalisation of a stack"
DESCRIPTION = f"""\
Preprocess a stack with an ordered list of steps and write the result (float32) to OUT, plus the
pipeline as OUT.pipeline.json beside it so the run can be repeated with --pipeline.

steps: {", ".join(STEPS)}
presets: 2pm = median_subtract, median3d, normalize (paper 001); confocal = clahe, normalize

examples:
  napari-vessel preprocess stack.tif out.tif
  napari-vessel preprocess stack.tif out.tif --steps median_subtract,clahe,normalize \\
      --set clahe.clip_limit=0.02 --set normalize.high=99.5
  napari-vessel preprocess stack.tif out.tif --steps histogram_scale,median_subtract \\
      --set histogram_scale.factor=16
  napari-vessel preprocess other.tif out2.tif --pipeline out.tif.pipeline.json
"""

_PRESETS = {"2pm": DEFAULT_2PM, "confocal": DEFAULT_CONFOCAL}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``preprocess`` options to ``parser``."""
    parser.add_argument("input", help="stack to read (.tif/.tiff/.ome.tif/.btf or .zarr)")
    parser.add_argument("output", help="file to write (.tif/.tiff/.ome.tif/.btf or .zarr)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--steps", metavar="A,B,...",
                       help="comma-separated step names, run in this order")
    group.add_argument("--pipeline", metavar="JSON", help="a saved pipeline file")
    group.add_argument("--preset", choices=sorted(_PRESETS), default=None,
                       help="a standard pipeline (default: 2pm)")
    parser.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                        dest="settings", help="change a step parameter, e.g. clahe.clip_limit=0.02 "
                        "(repeatable)")
    parser.add_argument("--channel", type=int, default=None, metavar="N",
                        help="channel to use (0-based) when the file has several")
    parser.add_argument("--frame", type=int, default=None, metavar="N",
                        help="time point to use (0-based) when the file has several")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in µm, overriding the file's")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["clahe.clip_limit=0.02"]`` -> ``{"clahe.clip_limit": 0.02}``."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise InputError(f"--set {item!r}: write STEP.PARAM=VALUE, e.g. --set "
                             "clahe.clip_limit=0.02")
        settings[key.strip()] = _value(value.strip())
    return settings


def build_pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline chosen by --steps, --pipeline or --preset, with --set applied."""
    settings = parse_settings(args.settings)
    if args.steps:
        return Pipeline.from_names(args.steps.split(","), settings)
    pipeline = Pipeline.load(args.pipeline) if args.pipeline else _PRESETS[args.preset or "2pm"]
    return pipeline.with_settings(settings)


def run(args: argparse.Namespace) -> int:
    """Read ``args.input``, preprocess, write ``args.output`` and its pipeline JSON; returns 0."""
    from napari_vessel.io.common import atomic_path
    from napari_vessel.io.stacks import load_volume, save_volume

    out = Path(args.output).expanduser()
    if out.resolve() == Path(args.input).expanduser().resolve():
        raise InputError(f"the output {out} is the input itself; write the preprocessed stack "
                         "to another file (the raw data is never replaced)")
    sidecar = out.with_name(out.name + ".pipeline.json")
    for path in (out, sidecar):
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} exists; choose another name or add --overwrite")
    pipeline = build_pipeline(args)
    volume = load_volume(args.input, channel=args.channel, frame=args.frame,
                         spacing=args.spacing)
    with tqdm_progress("preprocess", disable=args.quiet) as bar:
        result = pipeline.apply(volume, progress=scaled(bar, 0.0, 0.3 if volume.is_lazy else 0.9))
        data = compute(result.data, progress=scaled(bar, 0.3, 0.9))
        metadata = {"preprocess": pipeline.to_dict(), "source": str(args.input)}
        save_volume(out, data, result.spacing_zyx, overwrite=args.overwrite, kind="image",
                    metadata=metadata)
        with atomic_path(sidecar, overwrite=args.overwrite) as tmp:
            tmp.write_text(pipeline.to_json() + "\n", encoding="utf-8")
        bar(1.0, "written")
    if not args.quiet:
        print(f"wrote {out} ({' x '.join(map(str, data.shape))}, float32) and {sidecar.name}")
    return 0
