"""Does the parent's accuracy on synthetic stacks made to look like a volume predict adaptation?

For every case of ``bench_adapt.py`` (the six real volumes, two resampled, the shifted phantoms
and the new shifts), draw held-out synthetic volumes matched to it exactly as the ``synthetic``
adaptation method does (``matched_volumes``: the volume's voxel size, preprocessing and
intensity quantiles; another seed than the method's), and score the parent model on them (F1 at
its threshold against their exact labels, and how much vessel it calls against how much there
is). A label-free signal that separates the volumes the method helps from those it harms would
let the one click decide when to adapt.

    python benchmarks/adapt_probe.py --jsonl runs/adapt_probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_adapt import DATA, new_shifts, real_cases
from bench_finetune import card_labels, probability
from loo_phantoms import other_microscopes

from napari_vessel.evaluation.metrics import dice
from napari_vessel.io.volume import Volume
from napari_vessel.models import registry
from napari_vessel.training.adapt_synthetic import matched_volumes
from napari_vessel.training.finetune_data import prepare_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tvnet")
    parser.add_argument("--count", type=int, default=6, help="matched volumes per case")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = registry.get(args.model)
    model, _ = registry.load_model(spec, "cpu")
    cases = real_cases(DATA) + [(label, Volume(image, (1.0, 1.0, 1.0)), ref)
                                for label, image, ref in other_microscopes()] + new_shifts()
    for name, volume, ref in cases:
        t0 = time.monotonic()
        image, _ = prepare_image(spec, volume)
        pairs = matched_volumes(image, volume.spacing_zyx,
                                lambda raw, spacing: prepare_image(spec, Volume(raw, spacing))[0],
                                count=args.count, seed=args.seed)
        f1, called, present = [], 0.0, 0.0
        for pair in pairs:
            pred = card_labels(spec, probability(model, spec, pair.image))[0]
            f1.append(dice(pred, pair.labels))
            called, present = called + pred.sum(), present + pair.labels.sum()
        pred = card_labels(spec, probability(model, spec, image))[0]
        row = {"volume": name, "matched_f1": float(np.mean(f1)),
               "matched_called_over_present": float(called / max(present, 1)),
               "f1_on_volume": float(dice(pred, ref)), "seconds": time.monotonic() - t0}
        print(json.dumps(row), flush=True)
        with args.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
