"""Does a network keep its labels in bfloat16? OpenVINO bf16 against fp32 on the real volumes.

The runtime uses reduced precision only for a model whose labels agree with fp32 at Dice >= 0.999
on every one of the six VesselNN volumes. This prints, per volume, the time of one forward pass
in each precision, the label Dice at the card's threshold and the largest probability difference.

    python benchmarks/bf16_check.py --model tvnet --data ../shared/data/vesselnn --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import openvino as ov

    from napari_vessel.models import registry
    from napari_vessel.runtime.export import export_onnx
    from napari_vessel.training.data import load_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tvnet")
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    model, spec = registry.load_model(args.model, "cpu")
    multiple = tuple(getattr(model, "total_stride", spec.input_multiple_zyx))
    path, _ = export_onnx(model, dims=spec.dims, multiple=multiple)
    core = ov.Core()
    compiled = {hint: core.compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": hint})
        for hint in ("f32", "bf16")}
    level = spec.threshold
    worst = 1.0
    print("| volume | fp32 s | bf16 s | label Dice | max prob. diff |\n|---|---|---|---|---|")
    for pair in load_pairs(args.data, pipeline=None):
        shape = [-(-n // m) * m for n, m in zip(pair.image.shape, multiple, strict=True)]
        x = np.zeros((1, 1, *shape), np.float32)
        x[0, 0, :pair.image.shape[0], :pair.image.shape[1], :pair.image.shape[2]] = pair.image
        probs, seconds = {}, {}
        for hint, net in compiled.items():
            start = time.perf_counter()
            logits = net(x)[0]
            seconds[hint] = time.perf_counter() - start
            probs[hint] = 1 / (1 + np.exp(-logits))
        a, b = probs["f32"] > level, probs["bf16"] > level
        dice = 2 * np.sum(a & b) / max(1, int(a.sum() + b.sum()))
        worst = min(worst, dice)
        diff = float(np.abs(probs["f32"] - probs["bf16"]).max())
        print(f"| {pair.name} | {seconds['f32']:.2f} | {seconds['bf16']:.2f} | {dice:.5f} | "
              f"{diff:.3f} |", flush=True)
    verdict = "may use bf16" if worst >= 0.999 else "stays fp32"
    print(f"\nworst label Dice {worst:.5f}: {args.model} {verdict} (rule: >= 0.999 on every volume)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
