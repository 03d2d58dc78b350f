"""``napari-vessel data --dest DIR``: download the public VesselNN volumes, checked by hashes."""

from __future__ import annotations

import argparse

from napari_vessel.data.datasets import VESSELNN_URL, fetch_vesselnn, iter_pairs, vesselnn_names
from napari_vessel.progress import tqdm_progress

NAME = "data"
HELP = "download the public VesselNN two-photon volumes with labels (hash-checked)"
DESCRIPTION = f"""\
Download the six annotated two-photon volumes of the VesselNN dataset (Teikari et al. 2016) into
DIR/images and DIR/labels. Every file is checked against its published SHA256 hash; files already
there are kept. About 17 MB.

Default source: {VESSELNN_URL}
(or the environment variable NAPARI_VESSEL_VESSELNN_URL). --source also takes a local folder or a
file:// URL, laid out like the repository (denoised/, labels/) or like DIR (images/, labels/).

example:
  napari-vessel data --dest ~/vesselnn
  napari-vessel data --dest ~/vesselnn --only burgess2014_tgMouse
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``data`` options to ``parser``."""
    parser.add_argument("--dest", required=True, metavar="DIR", help="folder to download into")
    parser.add_argument("--source", default=None, metavar="URL_OR_DIR",
                        help="mirror URL or local folder to copy from instead of GitHub")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        choices=vesselnn_names(),
                        help="fetch only this volume (repeat for several); default all")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Fetch the files and list the image/label pairs; returns 0."""
    with tqdm_progress("VesselNN", disable=args.quiet) as progress:
        dest = fetch_vesselnn(args.dest, source=args.source, names=args.only, progress=progress)
    pairs = [p for p in iter_pairs(dest) if args.only is None or p[0] in args.only]
    print(f"{len(pairs)} image/label pairs in {dest}:")
    for name, _image, _label in pairs:
        print(f"  {name}")
    return 0
