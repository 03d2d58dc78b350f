"""``napari-vessel info FILE``: what a stack file holds, without loading the voxels."""

from __future__ import annotations

import argparse
import json

from napari_vessel.io.stacks import describe_file, load_volume

NAME = "info"
HELP = "show what a stack file holds: shape, dtype, channels, frames, voxel size"
DESCRIPTION = """\
Show what a TIFF, OME-TIFF, ImageJ hyperstack, Zarr or OME-Zarr file holds: its axes, shape, pixel
type, channels, time points and voxel size, read from the metadata without loading the voxels.
With --channel/--frame it also checks that this choice gives a 3D stack.

example:
  napari-vessel info stack.tif
  napari-vessel info hyperstack.tif --channel 1 --frame 0
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` options to ``parser``."""
    parser.add_argument("file", help="a .tif/.tiff/.ome.tif/.btf file or a .zarr folder")
    parser.add_argument("--channel", type=int, default=None, metavar="N",
                        help="channel to check (0-based) when the file has several")
    parser.add_argument("--frame", type=int, default=None, metavar="N",
                        help="time point to check (0-based) when the file has several")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def _lines(facts: dict) -> list[str]:
    dims = " × ".join(str(s) for s in facts["shape"])
    lines = [
        f"file:        {facts['path']}",
        f"format:      {facts['format']}",
        f"shape:       {dims}  (axes {' '.join(facts['axes'])})",
        f"dtype:       {facts['dtype']}  ({_size(facts['nbytes'])} uncompressed)",
    ]
    channels, frames = facts["channels"], facts["frames"]
    note = "  (RGB colour)" if facts["rgb"] else ""
    if channels > 1:
        note += f"  choose one with --channel 0..{channels - 1}"
    lines.append(f"channels:    {channels}{note}")
    hint = f"  choose one with --frame 0..{frames - 1}" if frames > 1 else ""
    lines.append(f"frames:      {frames}{hint}")
    size = facts["voxel_size_um"]
    text = " × ".join("?" if s is None else f"{s:.4g}" for s in size) + " µm (z × y × x)"
    if not facts["spacing_known"]:
        text += "  (not fully in the file: give the voxel size when you process it)"
    lines.append(f"voxel size:  {text}")
    if facts.get("kind"):
        lines.append(f"saved as:    {facts['kind']}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print what ``args.file`` holds; returns 0."""
    facts = describe_file(args.file)
    if args.channel is not None or args.frame is not None:
        volume = load_volume(args.file, channel=args.channel, frame=args.frame, lazy=True)
        facts["selected"] = {"channel": args.channel, "frame": args.frame,
                             "stack_shape": volume.shape}
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    for line in _lines(facts):
        print(line)
    chosen = facts.get("selected", {})
    stack = chosen.get("stack_shape", facts["stack_shape"])
    if stack is None:
        print("3D stack:    none: this is a 2D image; the segmentation needs a z stack")
        return 0
    picks = ", ".join(f"{k} {chosen[k]}" for k in ("channel", "frame") if chosen.get(k) is not None)
    if not picks and facts["channels"] * facts["frames"] > 1:
        picks = "each channel and frame"
    print(f"3D stack:    {' × '.join(str(s) for s in stack)} (z × y × x)"
          + (f"  for {picks}" if picks else ""))
    return 0
