"""How fast Cancel stops a segmentation, for every shipped network (target: under 1 s).

For each model, ``napari_vessel.segment`` runs on a real stack in a worker thread (as the Segment
dock runs it); the cancel token is set ``--after`` seconds after the start, and the time from the
cancel to the ``Cancelled`` exception is measured. A run that finishes before the cancel counts
as "finished first" (nothing to measure).

    python benchmarks/bench_cancel.py --image ../shared/data/vesselnn/images/poon2015_BBB_Leakage.tif
"""

from __future__ import annotations

import argparse
import sys
import threading
import time


def latency(model: str, data, runtime: str, after: float) -> tuple[str, float | None]:
    """("cancelled" | "finished first" | error text, seconds from cancel to stop)."""
    from napari_vessel.errors import Cancelled
    from napari_vessel.inference.run import segment
    from napari_vessel.progress import CancelToken

    token = CancelToken()
    outcome: dict = {}

    def work() -> None:
        try:
            segment(data, model, device="cpu", runtime=runtime, cancel=token)
            outcome["state"] = "finished first"
        except Cancelled:
            outcome["state"] = "cancelled"
        except Exception as err:  # noqa: BLE001 - reported in the table
            outcome["state"] = f"error: {err}"
        outcome["end"] = time.perf_counter()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(after)
    pressed = time.perf_counter()
    token.cancel()
    thread.join()
    if outcome["state"] != "cancelled":
        return outcome["state"], None
    return "cancelled", outcome["end"] - pressed


def main(argv: list[str] | None = None) -> int:
    import warnings

    from napari_vessel.io.stacks import load_volume
    from napari_vessel.models import registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--runtimes", nargs="+", default=["auto", "torch"])
    parser.add_argument("--after", type=float, default=1.0, help="seconds before Cancel")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    data = load_volume(args.image, lazy=False).to_numpy()
    names = args.models or [s.name for s in registry.list_models() if s.usable
                            and s.source == "builtin"]
    print(f"stack {args.image} {data.shape}, Cancel pressed {args.after:g} s after the start")
    print("| model | runtime | outcome | seconds from Cancel to stop |\n|---|---|---|---|")
    for name in names:
        for runtime in args.runtimes if registry.get(name).is_network else ["torch"]:
            state, seconds = latency(name, data, runtime, args.after)
            shown = f"{seconds:.2f}" if seconds is not None else "-"
            print(f"| {name} | {runtime} | {state} | {shown} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
