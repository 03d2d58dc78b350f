"""Leave-one-out fold weights of ``loo_eval.py`` scored on the "other microscope" phantoms.

A recipe can gain on the six volumes it is tuned on and lose on stacks from elsewhere. This runs
the fold weights kept with ``loo_eval.py --save-dir`` on the two shifted phantoms of the
fine-tuning benchmark (``bench_finetune.PHANTOMS``, never seen in training), each fold with its
own threshold, and prints the mean F1 and AP over the folds.

usage::

    python benchmarks/loo_phantoms.py FOLDS_DIR LOO.json [LOO2.json] [--depth-correct]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from bench_finetune import PHANTOMS
from loo_table import thresholds


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file

    from napari_vessel.metrics import average_precision
    from napari_vessel.models.tvnet import build_tvnet
    from napari_vessel.phantom import make_phantom, shifted
    from napari_vessel.training.data import normalise, training_pipeline
    from napari_vessel.training.train import f1_score, predict_volume

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folds", help="the --save-dir folder of a loo_eval.py run")
    parser.add_argument("loo_json", nargs="+", help="its --json file(s): each fold's threshold")
    parser.add_argument("--depth-correct", action="store_true",
                        help="the run used --depth-correct")
    parser.add_argument("--model", default="{}", help="its --model JSON (TV-Net settings)")
    parser.add_argument("--only", nargs="*", default=None, help="these folds (held-out names)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = thresholds(args.loo_json)
    if not isinstance(levels, dict):
        parser.error("loo_json must be loo_eval.py JSON files (each fold has its own level)")
    folds = [name for name in levels if args.only is None or name in args.only]
    pipeline = training_pipeline(depth_correct=args.depth_correct)
    for label, geometry, shift in PHANTOMS:
        phantom = shifted(make_phantom((16, 256, 256), seed=geometry), **shift)
        image, ref = normalise(phantom.image, pipeline), phantom.labels > 0
        f1s, aps = [], []
        for held in folds:
            model = build_tvnet(**json.loads(args.model))
            model.load_state_dict(load_file(f"{args.folds}/{held}.safetensors"))
            prob = predict_volume(model.eval(), image)
            f1s.append(f1_score(prob > levels[held], ref))
            aps.append(average_precision(prob, ref))
        print(f"{label}: F1 {np.mean(f1s):.3f}, AP {np.mean(aps):.3f} "
              f"(mean over {len(folds)} folds)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
