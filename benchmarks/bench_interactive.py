"""The plugin's accuracy after a user's corrections: a simulated user, rounds of strokes and fine-tunes.

Run from the repository root (one torch thread; resumable: finished rounds are read back from
``--jsonl`` and skipped, the models and masks of finished rounds are kept beside it)::

    .venv/bin/python benchmarks/bench_interactive.py --rounds 3 --strokes 20 --radius 4 \\
        --minutes 0.5 --threads 1 --seed 0 --jsonl runs/interactive.jsonl \\
        --write docs/benchmarks-interactive.md
    .venv/bin/python benchmarks/bench_interactive.py --no-run --write ...  # report only

The protocol (issue #12, "An interactive benchmark"), for each of the six VesselNN volumes
(skipped with a message when ``../shared/data/vesselnn`` is absent), starting from ``--model``
(default the shipped ``tvnet``, whose card says it was pretrained on synthetic volumes only, so
every volume is held out; ``--loo-dir`` takes leave-one-volume-out weights instead):

0. *round 0*: the starting model segments the volume at its card's threshold; these are the labels
   the user sees.
1. *strokes* (:func:`simulate_strokes`): the user fixes the largest wrong connected pieces first
   (26-connected in 3D; false-vessel pieces erased, missed-vessel pieces painted), with at most
   ``--strokes`` brush strokes per round. A stroke is a disk of ``--radius`` pixels on one z slice:
   on the slice where the piece has most of its uncorrected voxels, centred on the voxel of the
   piece there that lies farthest from the piece's edge (the usual click simulation of
   interactive segmentation). The voxels the disk covers get the reference value and join the
   edited mask. A piece larger than one stroke gets further strokes while it stays the largest.
2. *fine-tune*: the plugin's supervised fine-tune
   (:func:`napari_vessel.training.finetune.finetune`, ``mode="supervised"``, its default loss and
   settings) from all the corrections so far (the cumulative edited mask), for ``--minutes`` of
   wall-clock time (or ``--steps`` steps), starting from the previous round's model (round 1: the
   starting model). The result is saved as a user model (``save_finetuned``) into a folder beside
   the JSONL file, which ``NAPARI_VESSEL_MODELS`` points to, so the next round loads it by name.
3. *re-segment*: the fine-tuned network segments the whole volume (the plugin's preprocessing and
   sliding window, as :func:`~napari_vessel.training.finetune.segment_result`) at the starting
   model's threshold; the user then sees these labels with all of their edits applied.
4. repeat 1-3 for ``--rounds`` rounds.

Scores: F1, precision, sensitivity and AP on the voxels no stroke has touched so far (cumulative,
so the edited voxels, whose labels the user supplied, never count), and, on the very same voxels,
the starting model's own labels: the strokes remove the starting model's largest errors from the
scored voxels, so the starting model scores higher on them too, and only the difference between
the two is what the fine-tune taught. Also the F1 of what the user ends up with on the whole
volume (the model's labels with the edits applied), the edited voxels and the seconds per round.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "vesselnn"
DEFAULT_JSONL = ROOT / "runs" / "interactive.jsonl"

#: Settings that must match between the rows of one JSONL file (a resumed run continues them).
SETTINGS = ("model", "strokes", "radius", "per_piece", "minutes", "steps", "loo_dir")

_FULL = np.ones((3, 3, 3), bool)


# --- the simulated user ---------------------------------------------------------------------------

def disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of the pixels of a disk of ``radius`` pixels around its centre (centre included).

    Parameters
    ----------
    radius : float
        Radius in pixels; 0 gives the centre pixel alone.

    Returns
    -------
    dy, dx : ndarray of int
    """
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dy ** 2 + dx ** 2 <= radius ** 2
    return dy[inside], dx[inside]


def paint_disk(mask: np.ndarray, z: int, y: int, x: int, offsets: tuple[np.ndarray, np.ndarray]
               ) -> None:
    """Set a disk (``offsets`` from :func:`disk_offsets`) centred on (y, x) of slice z, cut at the
    slice's edges, to True in ``mask`` (in place)."""
    ys, xs = offsets[0] + y, offsets[1] + x
    keep = (ys >= 0) & (ys < mask.shape[1]) & (xs >= 0) & (xs < mask.shape[2])
    mask[z, ys[keep], xs[keep]] = True


def error_pieces(labels: np.ndarray, ref: np.ndarray, touched: np.ndarray
                 ) -> tuple[np.ndarray, int]:
    """Connected wrong pieces (26-connected) outside ``touched``.

    Returns
    -------
    pieces : ndarray of int32, shape (Z, Y, X)
        0 where the labels are right or touched; ``1 .. n_false`` false-vessel pieces, above
        that missed-vessel pieces.
    n_false : int
        Number of false-vessel pieces.
    """
    false, n_false = ndi.label(labels & ~ref & ~touched, _FULL)
    missed, n_missed = ndi.label(~labels & ref & ~touched, _FULL)
    pieces = false.astype(np.int32)
    pieces[missed > 0] = missed[missed > 0] + n_false
    return pieces, int(n_false)


def simulate_strokes(labels: np.ndarray, ref: np.ndarray, touched: np.ndarray | None = None, *,
                     strokes: int = 20, radius: float = 4.0,
                     per_piece: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """The voxels one round of a simulated user's brush strokes touches.

    The user looks at ``labels`` (the model's labels with the earlier edits applied) and fixes the
    largest wrong connected piece first (by its voxels not yet touched; false vessel erased,
    missed vessel painted): one stroke is a disk of ``radius`` pixels on the z slice where that
    piece has most of its untouched voxels, centred on the piece's voxel on that slice farthest
    from the piece's edge. After each stroke the piece's untouched voxels are counted again, so
    a piece keeps getting strokes while it stays the largest. Voxels already ``touched`` are
    right (the user set them) and are never a target.

    Parameters
    ----------
    labels : ndarray of bool, shape (Z, Y, X)
        What the user sees.
    ref : ndarray of bool, shape (Z, Y, X)
        The reference labels.
    touched : ndarray of bool, shape (Z, Y, X), optional
        Voxels earlier strokes touched.
    strokes : int
        Budget of strokes for this round.
    radius : float
        Brush radius in pixels.
    per_piece : int, optional
        At most this many strokes on one piece (a user who fixes a little of each big error,
        then moves on); None: no limit (the largest piece takes strokes while it stays largest).

    Returns
    -------
    new : ndarray of bool, shape (Z, Y, X)
        Voxels this round's strokes touched (the caller gives them the reference value and adds
        them to the edited mask).
    done : list of dict
        One per stroke: ``z, y, x``, ``kind`` ("erase" or "paint") and ``piece`` (the piece's
        untouched voxels before the stroke).
    """
    labels, ref = np.asarray(labels, bool), np.asarray(ref, bool)
    if labels.shape != ref.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and reference {ref.shape} must be one 3D shape")
    touched = np.zeros(ref.shape, bool) if touched is None else np.asarray(touched, bool)
    if strokes < 0 or radius < 0:
        raise ValueError(f"strokes ({strokes}) and radius ({radius}) must not be negative")
    if per_piece is not None and per_piece < 1:
        raise ValueError(f"per_piece ({per_piece}) must be at least 1 or None")
    given: dict[int, int] = {}
    pieces, n_false = error_pieces(labels, ref, touched)
    sizes = np.bincount(pieces.ravel())
    boxes = ndi.find_objects(pieces)
    heap = [(-int(sizes[i]), i) for i in range(1, len(sizes)) if sizes[i]]
    heapq.heapify(heap)
    offsets = disk_offsets(radius)
    new = np.zeros(ref.shape, bool)
    done: list[dict] = []
    while heap and len(done) < strokes:
        size, index = heapq.heappop(heap)
        box = boxes[index - 1]
        piece = (pieces[box] == index) & ~new[box]
        left = int(piece.sum())
        if left != -size:  # an earlier stroke covered part of it: re-queue with its true size
            if left:
                heapq.heappush(heap, (-left, index))
            continue
        if per_piece is not None and given.get(index, 0) >= per_piece:
            continue  # this piece had its share: the next largest one
        given[index] = given.get(index, 0) + 1
        zi = int(np.argmax(piece.sum(axis=(1, 2))))
        depth = ndi.distance_transform_edt(np.pad(piece[zi], 1))[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(depth)), depth.shape)
        z, y, x = box[0].start + zi, box[1].start + int(cy), box[2].start + int(cx)
        paint_disk(new, z, y, x, offsets)
        done.append({"z": int(z), "y": int(y), "x": int(x), "piece": left,
                     "kind": "erase" if index <= n_false else "paint"})
        left = int(((pieces[box] == index) & ~new[box]).sum())
        if left:
            heapq.heappush(heap, (-left, index))
    return new, done


def scores(pred: np.ndarray, ref: np.ndarray, keep: np.ndarray | None = None,
           prob: np.ndarray | None = None) -> dict:
    """F1, precision, sensitivity (and AP when ``prob`` is given) on the voxels ``keep`` selects.

    Parameters
    ----------
    pred, ref : ndarray of bool, shape (Z, Y, X)
    keep : ndarray of bool, optional
        Voxels to score (default all).
    prob : ndarray of float, optional
        Probability map for the average precision.

    Returns
    -------
    dict
        ``f1, precision, sensitivity`` (and ``ap``), plus ``voxels`` scored.
    """
    if keep is not None:
        pred, ref = pred[keep], ref[keep]
        prob = None if prob is None else prob[keep]
    tp = float(np.count_nonzero(pred & ref))
    npred, nref = float(np.count_nonzero(pred)), float(np.count_nonzero(ref))
    out = {"f1": 2 * tp / (npred + nref) if npred + nref else 1.0,
           "precision": tp / npred if npred else 1.0,
           "sensitivity": tp / nref if nref else 1.0, "voxels": int(pred.size)}
    if prob is not None:
        from napari_vessel.evaluation.metrics import average_precision

        out["ap"] = average_precision(prob, ref)
    return out


# --- the rounds -----------------------------------------------------------------------------------

def _read(path: Path) -> dict[tuple, dict]:
    """Rows of the JSONL file by (volume, round, seed); a later row replaces an earlier one."""
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["volume"], r["round"], r["seed"]): r for r in rows}


def _state_name(volume: str, seed: int, rnd: int) -> str:
    return f"iv-{volume}-s{seed}-r{rnd}"


def _settings(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in SETTINGS}


def _resume_point(rows: dict, volume: str, seed: int, state: Path, rounds: int) -> int:
    """The last round of (volume, seed) whose row, masks and model are all kept (-1: none)."""
    from napari_vessel.models import registry

    last = -1
    for rnd in range(rounds + 1):
        row = rows.get((volume, rnd, seed))
        if row is None or not (state / f"{_state_name(volume, seed, rnd)}.npz").is_file():
            break
        try:
            registry.get(row["model"])
        except Exception:  # noqa: BLE001 - the saved model is gone: redo from the round before
            break
        last = rnd
    return last


def _save_state(state: Path, name: str, **arrays: np.ndarray) -> None:
    tmp = state / f".{name}.tmp.npz"
    np.savez_compressed(tmp, **{k: np.packbits(v) for k, v in arrays.items()})
    os.replace(tmp, state / f"{name}.npz")


def _load_state(state: Path, name: str, shape: tuple) -> dict[str, np.ndarray]:
    size = int(np.prod(shape))
    with np.load(state / f"{name}.npz") as data:
        return {k: np.unpackbits(data[k])[:size].reshape(shape).astype(bool) for k in data.files}


def run_volume(name: str, volume, ref: np.ndarray, start: str, how: str, args: argparse.Namespace,
               rows: dict, out: Path, state: Path) -> None:
    """All rounds of one volume (continuing from the last kept round)."""
    from bench_finetune import card_labels, probability

    from napari_vessel.models import registry
    from napari_vessel.training.finetune import FinetuneConfig, finetune, save_finetuned
    from napari_vessel.training.finetune_data import prepare_image
    from napari_vessel.training.finetune_save import remove_finetuned

    seed = args.seed
    spec = registry.get(start)
    threshold = float(spec.threshold)  # the card's; a level rule sets each map's level
    image, _ = prepare_image(spec, volume)
    base = {"volume": name, "seed": seed, "settings": _settings(args), "start": start,
            "start_weights": how, "threshold": threshold, "shape": list(ref.shape),
            "reference_voxels": int(ref.sum()), "command": shlex.join(sys.argv[1:]),
            "threads": args.threads}
    last = _resume_point(rows, name, seed, state, args.rounds)
    if last == args.rounds:
        print(f"{name}: rounds 0-{args.rounds} done (seed {seed})", flush=True)
        return
    if last >= 0:
        kept = _load_state(state, _state_name(name, seed, last), ref.shape)
        pred0, pred, touched = kept["pred0"], kept["pred"], kept["touched"]
        current = rows[name, last, seed]["model"]
        print(f"{name}: continuing after round {last} (model {current})", flush=True)
    else:
        t0 = time.monotonic()
        model, _ = registry.load_model(start, "cpu")
        prob = probability(model, spec, image)
        pred, level = card_labels(spec, prob)
        pred0 = pred
        touched = np.zeros(ref.shape, bool)
        current = start
        seconds = time.monotonic() - t0
        row = {**base, "level": level, "round": 0, "model": start, "strokes": [], "edited_voxels": 0,
               "new_voxels": 0, "untouched": scores(pred, ref, prob=prob),
               "start_untouched": scores(pred0, ref), "user_labels": scores(pred, ref),
               "whole": scores(pred, ref), "seconds": {"segment": seconds, "total": seconds}}
        _emit(row, out, state, pred0=pred0, pred=pred, touched=touched)
        last = 0
    for rnd in range(last + 1, args.rounds + 1):
        t0 = time.monotonic()
        user = pred.copy()
        user[touched] = ref[touched]
        new, strokes = simulate_strokes(user, ref, touched, strokes=args.strokes,
                                        radius=args.radius, per_piece=args.per_piece)
        touched = touched | new
        user[touched] = ref[touched]
        t1 = time.monotonic()
        config = FinetuneConfig(mode="supervised", minutes=None if args.steps else args.minutes,
                                max_steps=args.steps, seed=seed * 100 + rnd, threads=args.threads,
                                preview=False, **args.set)
        result = finetune(current, volume, labels=user, edited_mask=touched, config=config)
        t2 = time.monotonic()
        child = _state_name(name, seed, rnd)
        if result.steps:
            stale = state / f"{child}.safetensors"
            if stale.is_file():
                remove_finetuned(stale)
            save_finetuned(result, child, parent=current, folder=state,
                           extra={"benchmark": "bench_interactive", "round": rnd})
            current = child
        prob = probability(result.model, spec, image)
        # the labels the user gets from the current model: its own card's recipe (a child
        # keeps the level its parent's rule chose for this volume)
        pred, level = card_labels(registry.get(current), prob)
        t3 = time.monotonic()
        user = pred.copy()
        user[touched] = ref[touched]
        keep = ~touched
        row = {**base, "level": level, "round": rnd, "model": current, "strokes": strokes,
               "edited_voxels": int(touched.sum()), "new_voxels": int(new.sum()),
               "untouched": scores(pred, ref, keep, prob), "start_untouched": scores(pred0, ref, keep),
               "user_labels": scores(user, ref), "whole": scores(pred, ref),
               "finetune": {"steps": result.steps, "kept_parent": result.kept_parent,
                            "message": result.message, "seconds": result.seconds},
               "seconds": {"strokes": t1 - t0, "finetune": t2 - t1, "segment": t3 - t2,
                           "total": time.monotonic() - t0}}
        _emit(row, out, state, pred0=pred0, pred=pred, touched=touched)


def _emit(row: dict, out: Path, state: Path, **arrays: np.ndarray) -> None:
    """Keep the round's masks, then append its row (so a kept row always has its masks)."""
    _save_state(state, _state_name(row["volume"], row["seed"], row["round"]), **arrays)
    with out.open("a") as f:
        f.write(json.dumps(row, default=float) + "\n")
    u, s = row["untouched"], row["start_untouched"]
    kinds = [k["kind"] for k in row["strokes"]]
    print(f"{row['volume']} round {row['round']}: F1 on untouched {u['f1']:.3f} (P "
          f"{u['precision']:.3f}, S {u['sensitivity']:.3f}; starting model there {s['f1']:.3f}); "
          f"user's labels {row['user_labels']['f1']:.3f}; {kinds.count('erase')} erase + "
          f"{kinds.count('paint')} paint strokes, {row['edited_voxels']} edited voxels; "
          f"{row['seconds']['total']:.0f} s" + (f"; {row['finetune']['steps']} steps, "
                                                 f"{row['finetune']['message']}"
                                                 if "finetune" in row else ""), flush=True)


def run(args: argparse.Namespace, out: Path, state: Path) -> None:
    """Every selected volume, resuming what ``out`` already holds."""
    from bench_finetune import starting_model
    from loo_table import thresholds as loo_thresholds

    from napari_vessel.io.stacks import load_volume

    rows = _read(out)
    mine = _settings(args)
    for row in rows.values():
        if row["settings"] != mine:
            raise SystemExit(f"{out} holds runs with other settings ({row['settings']}, here "
                             f"{mine}); use another --jsonl to compare settings")
    images = sorted((Path(args.data) / "images").glob("*.tif"))
    if not images:
        print(f"no VesselNN volumes in {args.data}: nothing to run (download them with "
              "'napari-vessel data --dest DIR' and pass --data DIR)", flush=True)
        return
    levels = loo_thresholds(args.loo_json) if args.loo_json else {}
    for path in images:
        if args.only and not any(path.stem.startswith(o) for o in args.only):
            continue
        volume = load_volume(path, lazy=False)
        ref = load_volume(Path(args.data) / "labels" / path.name, lazy=False).to_numpy() > 0
        start, how = starting_model(args.model, path.stem, args.loo_dir,
                                    levels if isinstance(levels, dict) else {})
        run_volume(path.stem, volume, ref, start, how, args, rows, out, state)


# --- the report -----------------------------------------------------------------------------------

def _by_volume(rows: list[dict]) -> dict[str, dict[int, list[dict]]]:
    table: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        table.setdefault(r["volume"], {}).setdefault(r["round"], []).append(r)
    return table


def _mean(runs: list[dict], *keys: str) -> float:
    values = []
    for r in runs:
        value = r
        for k in keys:
            value = value[k]
        values.append(value)
    return float(np.mean(values))


def _complete(table: dict, rounds: list[int]) -> list[str]:
    return [v for v, by in table.items() if all(k in by for k in rounds)]


def tables(rows: list[dict]) -> str:
    """The Markdown tables of the report (means over the seeds present)."""
    table = _by_volume(rows)
    rounds = sorted({r["round"] for r in rows})
    volumes = list(table)
    full = _complete(table, rounds)
    head = "| volume | " + " | ".join(f"round {k}" for k in rounds) + " |"
    rule = "|---|" + "---|" * len(rounds)

    def block(title: str, cell) -> list[str]:
        lines = [title, "", head, rule]
        for v in volumes:
            lines.append(f"| {v} | " + " | ".join(cell(table[v][k]) if k in table[v] else ""
                                                   for k in rounds) + " |")
        if len(full) > 1:
            lines.append(f"| **mean of {len(full)} volumes** | " + " | ".join(
                cell([r for v in full for r in table[v][k]]) for k in rounds) + " |")
        return lines + [""]

    lines = block("F1 of the model's labels on the voxels no stroke touched (precision / "
                  "sensitivity):",
                  lambda runs: f"**{_mean(runs, 'untouched', 'f1'):.3f}** "
                               f"({_mean(runs, 'untouched', 'precision'):.2f} / "
                               f"{_mean(runs, 'untouched', 'sensitivity'):.2f})")
    lines += block("The starting model's own labels on the same voxels, and the fine-tune's "
                   "gain over them (what the corrections taught the rest of the volume):",
                   _gain_cell)
    lines += block("AP of the model's probabilities on the untouched voxels:",
                    lambda runs: f"{_mean(runs, 'untouched', 'ap'):.3f}")
    lines += block("What the user ends up with: F1 of the model's labels with the edits applied, "
                   "whole volume:", lambda runs: f"{_mean(runs, 'user_labels', 'f1'):.3f}")
    lines += block("Edited voxels so far (% of the reference's vessel voxels); strokes this "
                   "round (erase + paint):", _edit_cell)
    lines += block("Seconds of the round (strokes + fine-tune + re-segmentation; round 0: the "
                   "first segmentation); fine-tune steps:", _time_cell)
    return "\n".join(lines)


def _gain_cell(runs: list[dict]) -> str:
    start = _mean(runs, "start_untouched", "f1")
    return f"{start:.3f} ({_mean(runs, 'untouched', 'f1') - start:+.3f})"


def _edit_cell(runs: list[dict]) -> str:
    share = np.mean([r["edited_voxels"] / max(1, r["reference_voxels"]) for r in runs])
    kinds = [k["kind"] for r in runs for k in r["strokes"]]
    n = len(runs)
    text = f"{_mean(runs, 'edited_voxels'):.0f} ({100 * share:.2f} %)"
    if kinds:
        text += f"; {kinds.count('erase') / n:.0f} + {kinds.count('paint') / n:.0f}"
    return text


def _time_cell(runs: list[dict]) -> str:
    text = f"{_mean(runs, 'seconds', 'total'):.0f}"
    if "finetune" in runs[0]:
        steps = np.mean([r["finetune"]["steps"] for r in runs])
        kept = sum(r["finetune"]["kept_parent"] for r in runs)
        text += f"; {steps:.0f} steps" + (f" ({kept} kept parent)" if kept else "")
    return text


def plot(rows: list[dict], path: Path) -> None:
    """Mean F1 on untouched voxels against the round: one line per volume, the mean in bold, and
    the starting model's labels on the same voxels (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _by_volume(rows)
    rounds = sorted({r["round"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for volume, by in table.items():
        ks = [k for k in rounds if k in by]
        ax.plot(ks, [_mean(by[k], "untouched", "f1") for k in ks], marker="o", lw=1.2,
                alpha=0.8, label=volume)
    full = _complete(table, rounds)
    if len(full) > 1:
        ax.plot(rounds, [np.mean([_mean(table[v][k], "untouched", "f1") for v in full])
                         for k in rounds], color="black", lw=3, marker="o",
                label=f"mean of {len(full)} volumes")
    if full:
        ax.plot(rounds, [np.mean([_mean(table[v][k], "start_untouched", "f1") for v in full])
                         for k in rounds], color="black", lw=1.5, ls="--",
                label=f"starting model on the same voxels (mean of {len(full)})")
    ax.set_xticks(rounds)
    ax.set_xlabel("rounds of corrections (strokes + fine-tune)")
    ax.set_ylabel("F1 on voxels no stroke touched")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(rows: list[dict], args: argparse.Namespace, load: float, image: Path | None) -> str:
    """The Markdown report."""
    s = rows[0]["settings"] if rows else _settings(args)
    budget = f"{s['steps']} steps" if s["steps"] else f"{s['minutes']} min"
    picture = [f"![mean F1 on untouched voxels per round]({image})", ""] if image else []
    starts = sorted({r["start_weights"] for r in rows})
    commands = list(dict.fromkeys(r["command"] for r in rows if "command" in r))
    threads = ", ".join(sorted({str(r.get("threads", "?")) for r in rows}))
    levels = ", ".join(sorted({f"{r.get('level', r['threshold']):g}" for r in rows}))
    return "\n".join([
        "# Benchmark: accuracy after a simulated user's corrections", "",
        *[f"Run: `.venv/bin/python benchmarks/{Path(__file__).name} {c}`  " for c in commands],
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load "
        f"{load:.1f} when the report was written), {threads} torch thread(s).  ",
        f"Starting model `{s['model']}` ({', '.join(starts)}) at its card's threshold or level "
        f"rule (levels used: {levels}), kept for every round. Per "
        f"round: up to {s['strokes']} brush strokes"
        + (f" (at most {s['per_piece']} on one wrong piece)" if s.get("per_piece") else "")
        + f", each a disk of radius {s['radius']} px on "
        f"one slice, then a supervised fine-tune of {budget} from all the edits so far, starting "
        "from the previous round's model. Seeds: "
        f"{', '.join(map(str, sorted({r['seed'] for r in rows})))}.", "",
        *picture, tables(rows), NOTES])


NOTES = """\
How to read it. Round 0 is the starting model alone. In each round the simulated user spends its
strokes on the largest wrong 3D-connected pieces of the labels it sees (false vessel erased,
missed vessel painted; one disk per stroke on the slice where the piece is largest, centred on
the piece's innermost voxel there), every voxel under a disk takes the reference's value and
joins the edited mask, and the plugin's supervised fine-tune learns from all edits so far. The
scores count only voxels that no stroke has touched up to that round, so the user's own edits
never count as the model's; as the strokes take the largest errors out of the scored voxels, the
starting model scores higher on them too: compare each round with the second table (the starting
model on the same voxels), the gain there is what the fine-tune spread to the untouched voxels.
Times are wall-clock on a shared CPU with one torch thread.

The simulated brush sets every voxel under the disk to the reference (a user who paints the
vessel's exact outline); a real brush erasing false vessel also erases any true vessel under
it. The stroke budget (a person takes a few seconds per stroke on a slice: a round is about a
minute or two of work) is stated above.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="tvnet", help="starting model (registered name)")
    parser.add_argument("--loo-dir", default=None,
                        help="leave-one-out weights: VOLUME.safetensors or MODEL-loo-VOLUME...")
    parser.add_argument("--loo-json", nargs="*", default=[],
                        help="loo_eval.py JSON files giving each fold's threshold")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strokes", type=int, default=20, help="brush strokes per round")
    parser.add_argument("--radius", type=float, default=4.0, help="brush radius in pixels")
    parser.add_argument("--per-piece", type=int, default=None,
                        help="at most this many strokes on one wrong piece per round (default: "
                        "no limit, every stroke on the largest piece while it stays largest)")
    parser.add_argument("--minutes", type=float, default=0.5, help="fine-tune budget per round")
    parser.add_argument("--steps", type=int, default=None,
                        help="fine-tune steps per round instead of --minutes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="FinetuneConfig fields to change, e.g. anchor=0 beta_clip=0.5")
    parser.add_argument("--only", nargs="*", default=None, help="volume names (or prefixes)")
    parser.add_argument("--jsonl", default=str(DEFAULT_JSONL),
                        help="results, one round per line (resumable); the models and masks of "
                             "each round are kept in PATH.state/")
    parser.add_argument("--no-run", action="store_true", help="only write the report")
    parser.add_argument("--write", default=None, help="write the Markdown report here")
    parser.add_argument("--plot", default=None,
                        help="PNG of the rounds (default: images/interactive-rounds.png beside "
                             "the report)")
    args = parser.parse_args()
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.rounds < 0 or args.strokes < 0 or args.radius < 0:
        parser.error("--rounds, --strokes and --radius must not be negative")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if not args.minutes > 0:
        parser.error("--minutes must be positive")
    out = Path(args.jsonl)
    state = out.with_name(out.name + ".state")
    # Fine-tuned rounds are user models in this folder, found by name by the next round; set
    # before anything reads the registry, so the user's own models folder is neither read nor
    # written.
    os.environ["NAPARI_VESSEL_MODELS"] = str(state.resolve())
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if not args.no_run:
        out.parent.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        run(args, out, state)
    rows = sorted(_read(out).values(), key=lambda r: (r["volume"], r["round"], r["seed"]))
    if not rows:
        print(f"no results in {out}", flush=True)
        return
    image = None
    if args.write:
        target = Path(args.write)
        png = Path(args.plot) if args.plot else target.parent / "images" / "interactive-rounds.png"
        plot(rows, png)
        image = Path(os.path.relpath(png.resolve(), target.parent.resolve())).as_posix()
    text = report(rows, args, load, image)
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
