"""Speed and memory of the inference engine for every registered model, on this machine.

For each model and input size: seconds, voxels per second, peak memory above the process baseline
(each run in a fresh child process, so peaks do not mix), and for networks the achieved GFLOP/s
(FLOPs of one patch counted with ``torch.utils.flop_counter.FlopCounterMode`` times the number of
patches) next to the GFLOP/s of a large matrix multiplication measured in the same run. When MONAI
is installed, ``monai.inferers.sliding_window_inference`` runs the same network on the same input
with the same patch, overlap and Gaussian blending, in a fresh process of its own, for a time and
a peak-memory ratio (ours over MONAI's: below 1 is better).

Untrained networks are fine here: speed does not depend on the weights.

usage::

    python benchmarks/bench_inference.py                       # all models, 25x512x512 and 64x512x512
    python benchmarks/bench_inference.py --models umis frangi --sizes 25x512x512
    python benchmarks/bench_inference.py --models tvnet umis --real ../shared/data/vesselnn/images/*.tif
    python benchmarks/bench_inference.py --models tvnet --sizes 16x128x128 --repeats 3   # medians
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
import time

import numpy as np


def _rss_mib() -> float:
    """Current resident memory of this process in MiB (Linux)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakMemory:
    """Highest resident memory (MiB) above the level at entry, sampled every 5 ms in a thread."""

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())

    @property
    def above_baseline(self) -> float:
        return self.peak - self.baseline


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matrix multiplication on all cores (best of ``repeats``)."""
    import torch

    from napari_vessel.devices import cpu_count

    torch.set_num_threads(cpu_count())
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _input(shape: tuple[int, int, int], real: str | None) -> tuple[np.ndarray, str]:
    if real:
        from napari_vessel.io.stacks import load_volume

        data = load_volume(real).to_numpy().astype(np.float32)
        return data / max(float(data.max()), 1.0), f"real {real.rsplit('/', 1)[-1]}"
    try:
        from napari_vessel.data.phantom import make_phantom

        image = make_phantom(shape, seed=0).image.astype(np.float32)
        return image / max(float(image.max()), 1.0), "phantom"
    except Exception:  # noqa: BLE001 - the phantom is optional here
        return np.random.default_rng(0).random(shape, dtype=np.float32), "random"


def _patch_flops(model, patch: tuple[int, int, int], dims: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = (1, 1, *patch) if dims == 3 else (1, 1, *patch[-2:])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(shape))
    return float(counter.get_total_flops())


def _child(job: dict, queue) -> None:
    """Run one measurement in this (fresh) process and put a result dict on ``queue``."""
    try:
        queue.put(_measure(job))
    except Exception as err:  # noqa: BLE001 - report, do not crash the table
        queue.put({**job, "error": repr(err)})


def _measure(job: dict) -> dict:
    import torch

    from napari_vessel.inference.run import predict
    from napari_vessel.inference.sliding_window import plan_tiles
    from napari_vessel.models import registry

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    data, source = _input(tuple(job["shape"]), job.get("real"))
    spec = registry.get(job["model"])
    result = {**job, "shape": list(data.shape), "input": source}
    model = None
    if spec.is_network:
        model, spec = registry.load_model(spec, "cpu", allow_untrained=True)
        predict(model, data[: min(16, data.shape[0]), :64, :64], patch_size=spec.patch_size_zyx,
                device="cpu", spec=spec, runtime="torch", threads=job.get("threads"))  # warm up
    if job.get("engine") == "monai":
        return {**result, **_monai(model, data, spec, job["overlap"])}
    info, out = [], {}
    with PeakMemory() as memory:
        seconds = _timed(lambda: out.setdefault("prob", predict(
            model if model is not None else spec, data, spacing_zyx=(5.0, 1.0, 1.0),
            device="cpu", overlap=job["overlap"], patch_size=spec.patch_size_zyx, spec=spec,
            runtime=job.get("runtime", "torch"), run_info=info, threads=job.get("threads"))))
    if job.get("save"):
        np.save(job["save"], out["prob"])
    result.update(seconds=seconds, mvoxels_per_s=data.size / seconds / 1e6,
                  peak_mib=memory.above_baseline, threads=job.get("threads") or torch.get_num_threads(),
                  runtime_used=info[0].name if info else "none",
                  runtime_reason=info[0].reason if info else "")
    if model is not None:
        multiple = tuple(getattr(model, "input_multiple", spec.input_multiple_zyx))
        patch = tuple(spec.patch_size_zyx)
        if spec.dims == 2:  # as the engine does: one slice per patch
            patch, multiple = (1, *patch[-2:]), (1, *multiple[-2:])
        plan = plan_tiles(data.shape, patch, job["overlap"], multiple)
        flops = _patch_flops(model, plan.patch, spec.dims) * plan.n_tiles
        result.update(tiles=plan.n_tiles, patch=list(plan.patch), gflop=flops / 1e9,
                      gflops_per_s=flops / seconds / 1e9)
    return result


def _monai(model, data, spec, overlap) -> dict:
    """MONAI's sliding window on the same network, patch, overlap and blending (own process)."""
    try:
        import torch
        from monai.inferers import sliding_window_inference
    except ImportError:
        return {"monai": "skipped (monai is not installed)"}
    from napari_vessel.inference.sliding_window import plan_tiles

    if spec.dims != 3:
        return {"monai": "skipped (2D model)"}
    multiple = getattr(model, "input_multiple", spec.input_multiple_zyx)
    patch = plan_tiles(data.shape, spec.patch_size_zyx, overlap, multiple).patch

    def net(x):
        out = model(x)
        return out.seg if hasattr(out, "seg") else out

    # MONAI pads only where the volume is smaller than the patch; give it a multiple-sized input
    x = torch.from_numpy(data)[None, None]
    with torch.inference_mode(), PeakMemory() as memory:
        seconds = _timed(lambda: sliding_window_inference(
            x, tuple(patch), 4, net, overlap=overlap, mode="gaussian", padding_mode="reflect"))
    return {"monai_seconds": seconds, "monai_peak_mib": memory.above_baseline}


def run_job(job: dict, timeout: float) -> dict:
    """One measurement in a fresh spawned process (clean peak memory)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        return {**job, "error": f"no result within {timeout:.0f} s"}
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()


def _compare(results: list[dict], spec) -> None:
    """Max probability difference and label Dice of each runtime against PyTorch fp32."""
    base = next((r for r in results if r.get("runtime") == "torch" and r.get("save")), None)
    if base is None or not os.path.exists(base["save"]):
        return
    ref = np.load(base["save"])
    level = spec.threshold
    for r in results:
        if r is base or not r.get("save") or not os.path.exists(r["save"]):
            continue
        prob = np.load(r["save"])
        a, b = ref > level, prob > level
        total = int(a.sum() + b.sum())
        r["max_prob_diff"] = float(np.max(np.abs(prob - ref)))
        r["label_dice"] = 1.0 if total == 0 else float(2 * np.sum(a & b) / total)
        r["speedup_vs_torch"] = base["seconds"] / r["seconds"]


def _repeated_runtimes(job: dict, runtimes: list[str], repeats: int, timeout: float,
                       monai: bool) -> list[dict]:
    """Every runtime (and MONAI), alternating, ``repeats`` times; medians per runtime."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="bench-inference-")
    runs: dict[str, list[dict]] = {rt: [] for rt in runtimes}
    theirs = []
    for _ in range(repeats):
        for rt in runtimes:
            runs[rt].append(run_job({**job, "runtime": rt,
                                     "save": os.path.join(folder, f"{rt}.npy")}, timeout))
        if monai:
            theirs.append(run_job({**job, "engine": "monai"}, timeout))
    results = []
    for rt in runtimes:
        results.append(_summarise(runs[rt], theirs))
    from napari_vessel.models import registry

    _compare(results, registry.get(job["model"]))
    return results


def _summarise(ours: list[dict], theirs: list[dict]) -> dict:
    if any("error" in r for r in ours):
        return next(r for r in ours if "error" in r)
    result = dict(ours[0])
    for key in ("seconds", "peak_mib"):
        result[key] = float(np.median([r[key] for r in ours]))
    result["mvoxels_per_s"] = float(np.prod(result["shape"])) / result["seconds"] / 1e6
    if "gflop" in result:
        result["gflops_per_s"] = result["gflop"] / result["seconds"]
    result["runs"] = [{"seconds": r["seconds"], "peak_mib": r["peak_mib"]} for r in ours]
    if theirs and all("monai_seconds" in r for r in theirs):
        for key in ("monai_seconds", "monai_peak_mib"):
            result[key] = float(np.median([r[key] for r in theirs]))
        result["monai_runs"] = [{k: r[k] for k in ("monai_seconds", "monai_peak_mib")}
                                for r in theirs]
    elif theirs:
        result["monai"] = theirs[0].get("monai") or theirs[0].get("error", "failed")
    return result


def _row(r: dict) -> str:
    shape = "x".join(str(s) for s in r["shape"])
    if "error" in r:
        return f"| {r['model']} | {shape} | error: {r['error']} |||||"
    gf = f"{r['gflops_per_s']:.1f}" if "gflops_per_s" in r else "-"
    tiles = f"{r['tiles']} x {'x'.join(map(str, r['patch']))}" if "tiles" in r else "whole"
    monai = r.get("monai", "-")
    if "monai_seconds" in r:
        monai = (f"{r['monai_seconds']:.1f} s, {r['monai_peak_mib']:.0f} MiB (time "
                 f"{r['seconds'] / r['monai_seconds']:.2f}x, memory "
                 f"{r['peak_mib'] / max(r['monai_peak_mib'], 1.0):.2f}x)")
    agree = (f"{r['max_prob_diff']:.1e} / {r['label_dice']:.4f} ({r['speedup_vs_torch']:.2f}x)"
             if "label_dice" in r else "-")
    return (f"| {r['model']} | {shape} ({r['input']}) | {r.get('runtime_used', '-')} | "
            f"{r['seconds']:.2f} | {r['mvoxels_per_s']:.2f} | {r['peak_mib']:.0f} | {tiles} | "
            f"{gf} | {agree} | {monai} |")


def main(argv: list[str] | None = None) -> int:
    from napari_vessel.devices import cpu_count
    from napari_vessel.models import registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--sizes", nargs="+", default=["25x512x512", "64x512x512"])
    parser.add_argument("--real", nargs="+", default=None,
                        help="use these stacks (each at its own shape) instead of phantoms")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    parser.add_argument("--include-gpu-models", action="store_true",
                        help="also time umis-full on the CPU (minutes)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each engine, alternating; the medians are reported")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "openvino"],
                        help="runtimes to compare (napari_vessel.runtime); torch first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (default: every core)")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    names = args.models or [s.name for s in registry.list_models() if s.source == "builtin"]
    if not args.include_gpu_models and args.models is None:
        names = [n for n in names if not n.endswith("-full")]
    try:
        import monai  # noqa: F401

        have_monai = True
    except ImportError:
        have_monai = False
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU cores: {cpu_count()}, load average before the run: {load:.1f}")
    print(f"matrix multiplication (2048^2, float32): {matmul_gflops():.1f} GFLOP/s")
    print("MONAI comparison: " + ("on" if have_monai else "skipped (monai is not installed)"))
    print("| model | input | runtime | seconds | Mvoxel/s | peak MiB | patches | GFLOP/s | "
          "vs torch: max prob diff / label Dice (speed-up) | MONAI |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    inputs = [(None, [int(v) for v in size.lower().split("x")]) for size in args.sizes]
    if args.real:
        inputs = [(path, [0, 0, 0]) for path in args.real]  # each stack's own shape is used
    results = []
    for real, shape in inputs:
        for name in names:
            spec = registry.get(name)
            if spec.kind == "classical" and shape[0] > 32 and args.models is None:
                continue  # the classical methods are timed on the real-sized stack only
            job = {"model": name, "shape": shape, "real": real, "overlap": args.overlap,
                   "threads": args.threads}
            runtimes = args.runtimes if spec.is_network else ["torch"]
            for result in _repeated_runtimes(job, runtimes, args.repeats, args.timeout,
                                             monai=have_monai and spec.is_network):
                results.append(result)
                print(_row(result), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
