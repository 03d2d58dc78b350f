"""Do two revisions of the package segment the same stacks to the same labels?

A refactor must not change what users get. This exports two git revisions of ``napari_vessel``
into temporary folders, runs ``napari-vessel segment`` of each on every stack (the same model
weights for both: the weights of ``--weights-from``, default the second revision), and compares
the label files voxel by voxel and the probability maps by their largest difference.

usage::

    python benchmarks/same_labels.py 3045b8a HEAD ../shared/data/vesselnn/images/*.tif
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def export(revision: str, into: Path) -> Path:
    """The package of ``revision`` under ``into`` (git archive), ready to run with PYTHONPATH."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "napari_vessel"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def segment(package: Path, image: Path, out: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of one stack, written by the revision in ``package``."""
    from napari_vessel.io.stacks import load_volume

    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "napari_vessel.cli", "segment", str(image.resolve()), "-o", str(out),
               "--model", model, "--overwrite", "--quiet"]
    done = subprocess.run(command, cwd=package, capture_output=True, text=True,
                          env={"PYTHONPATH": str(package), "PATH": "/usr/bin:/bin",
                               "HOME": str(Path.home()),
                               # each revision its own cache: no export or index is shared
                               "XDG_CACHE_HOME": str(package / ".cache")})
    if done.returncode != 0:
        raise SystemExit(f"segment failed in {package}:\n{done.stderr}")
    stem = image.name.split(".")[0]
    labels = load_volume(out / f"{stem}_labels.tif").data
    prob = load_volume(out / f"{stem}_prob.tif").data
    return np.asarray(labels), np.asarray(prob)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", default="tvnet")
    parser.add_argument("--weights-from", default=None,
                        help="revision whose shipped weights both use (default: AFTER)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="same-labels-"))
    try:
        first = export(args.before, tmp / "before")
        second = export(args.after, tmp / "after")
        weights = export(args.weights_from or args.after, tmp / "weights")
        shutil.rmtree(first / "napari_vessel/models/weights")
        shutil.copytree(weights / "napari_vessel/models/weights",
                        first / "napari_vessel/models/weights")
        print("| stack | labels identical | voxels that differ | max prob. difference |")
        print("|---|---|---|---|")
        same = True
        for image in args.images:
            a_labels, a_prob = segment(first, image, tmp / "out_before", args.model)
            b_labels, b_prob = segment(second, image, tmp / "out_after", args.model)
            differ = int(np.count_nonzero(a_labels != b_labels))
            same &= differ == 0
            print(f"| {image.name} | {'yes' if differ == 0 else 'no'} | {differ} | "
                  f"{float(np.abs(a_prob - b_prob).max()):.2g} |")
        return 0 if same else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
