"""Time the whole ``napari-vessel segment`` command: warm export cache against ``--runtime torch``.

Each run is a fresh ``napari-vessel segment VOLUME -o OUT`` process (interpreter start, imports,
reading, preprocessing, the network, post-processing and writing included), timed from outside.
The default runtime runs first once to build the ONNX export in a private cache folder (not
counted); then the default (warm cache: no PyTorch import) and ``--runtime torch`` alternate,
``--repeats`` runs each, and the medians are compared. The load average is recorded before every
run, since the seconds depend on what else the machine does. One more (untimed) warm run checks
that PyTorch was not imported.

usage::

    python benchmarks/bench_segment_command.py                     # the real 25x512x512 stack
    python benchmarks/bench_segment_command.py --volume stack.tif --repeats 5 --json out.json
    python benchmarks/bench_segment_command.py --phantom 8x64x64   # start-up and import costs

Without ``--volume`` it uses ``../shared/data/vesselnn/images/poon2015_BBB_Leakage.tif`` when
present, else a 25x512x512 phantom.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared/data/vesselnn/images/poon2015_BBB_Leakage.tif"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("napari-vessel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "napari_vessel.cli"]


def _volume(path: str | None, phantom: str | None, work: Path) -> Path:
    if path:
        return Path(path)
    if REAL.exists() and not phantom:
        return REAL
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.io.stacks import save_volume

    shape = tuple(int(n) for n in (phantom or "25x512x512").split("x"))
    target = work / f"phantom_{'x'.join(map(str, shape))}.tif"
    save_volume(target, make_phantom(shape, seed=0).image, (2.0, 1.0, 1.0))
    return target


def _run(volume: Path, out: Path, env: dict, extra: list[str]) -> dict:
    from napari_vessel.manifest import read_manifest

    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([*_command(), "segment", str(volume), "-o", str(out), "--quiet",
                           "--overwrite", *extra], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"segment failed ({done.returncode}):\n{done.stderr}")
    manifest = read_manifest(next(out.glob("*_manifest.json")))
    return {"seconds": round(seconds, 3), "load_before": round(load, 2),
            "runtime": manifest.runtime and manifest.runtime.to_dict(),
            "timing": manifest.timing.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", default=None, help="3D stack (default: the real 25x512x512)")
    parser.add_argument("--phantom", default=None, metavar="ZxYxX",
                        help="use a phantom of this shape instead (e.g. 8x64x64: the command's "
                        "fixed costs, start and imports, with almost no network work)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--json", default=None, help="also write the runs to this JSON file")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    try:
        volume = _volume(args.volume, args.phantom, work)
        env = {**os.environ, "NAPARI_VESSEL_CACHE": str(work / "cache")}
        print(f"volume {volume}, {os.cpu_count()} CPUs, load average {os.getloadavg()}",
              file=sys.stderr)
        build = _run(volume, work / "build", env, [])  # builds the export (with PyTorch)
        print(f"cache built: {build['runtime']['reason']} ({build['seconds']:.1f} s)",
              file=sys.stderr)
        check = subprocess.run(
            [sys.executable, "-c", "import sys; from napari_vessel.cli import main; "
             f"code = main(['segment', {str(volume)!r}, '-o', {str(work / 'check')!r}, "
             "'--quiet']); print('torch' in sys.modules); sys.exit(code)"],
            env=env, capture_output=True, text=True)
        torch_imported = check.stdout.strip().splitlines()[-1] == "True"
        runs: dict[str, list[dict]] = {"warm": [], "torch": []}
        for i in range(args.repeats):
            for name, extra in (("warm", []), ("torch", ["--runtime", "torch"])):
                result = _run(volume, work / f"{name}{i}", env, extra)
                runs[name].append(result)
                print(f"{name} run {i + 1}: {result['seconds']:.2f} s (load {result['load_before']}, "
                      f"network {result['timing'].get('predict_s')} s, {result['runtime']['name']})",
                      file=sys.stderr)
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        net = {k: statistics.median(r["timing"].get("predict_s", 0) for r in v)
               for k, v in runs.items()}
        loads = [r["load_before"] for v in runs.values() for r in v]
        summary = {"volume": str(volume), "repeats": args.repeats, "cpus": os.cpu_count(),
                   "median_s": med, "median_network_s": net,
                   "speedup": round(med["torch"] / med["warm"], 2),
                   "load_average_range": [min(loads), max(loads)],
                   "warm_run_imported_torch": torch_imported,
                   "warm_runtime": runs["warm"][0]["runtime"], "runs": runs}
        print(f"\nwhole command, median of {args.repeats}: warm cache {med['warm']:.2f} s, "
              f"--runtime torch {med['torch']:.2f} s ({summary['speedup']}x); network pass "
              f"{net['warm']:.2f} s vs {net['torch']:.2f} s; load average {min(loads)}-{max(loads)}"
              f"; warm run imported torch: {torch_imported}")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
