"""Which stacks a batch segments, and where their results go."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from napari_vessel.errors import InputError
from napari_vessel.io.stacks import SUPPORTED
from napari_vessel.manifest import RunManifest, read_manifest


def _is_stack(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED)


def _walk(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Files and ``.zarr`` folders under ``folder``, sorted, without hidden entries or ``exclude``."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = sorted(d for d in dirs if not d.startswith("."))
        dirs[:] = [d for d in keep if not d.lower().endswith(".zarr")
                   and (exclude is None or (here / d).resolve() != exclude)]
        yield from sorted([here / d for d in keep if d.lower().endswith(".zarr")]
                          + [here / f for f in files if not f.startswith(".")])


def find_inputs(patterns: Iterable[str | os.PathLike], *, exclude: str | os.PathLike | None = None,
                on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """The stacks named by files, folders (searched recursively) and globs, each once, in order.

    Parameters
    ----------
    patterns : iterable of str or PathLike
        Stack files or ``.zarr`` folders, folders (every stack below them; hidden entries skipped) or
        globs (``"data/*.tif"``, ``"data/**/*.tif"``).
    exclude : str or PathLike, optional
        A folder whose contents are never inputs (the output folder).
    on_skip : callable(Path, str), optional
        Told about every file that is not a stack (``.tif``/``.tiff``/``.btf``/OME-TIFF/``.zarr``).

    Returns
    -------
    list of Path

    Raises
    ------
    InputError
        A pattern that matches nothing, or no stack at all.
    """
    import glob

    patterns, skip = list(patterns), on_skip or (lambda path, why: None)
    excluded = Path(exclude).expanduser().resolve() if exclude is not None else None
    found: dict[Path, Path] = {}
    for pattern in patterns:
        text = os.path.expanduser(str(pattern))
        if any(c in text for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        else:
            matches = [Path(text)] if Path(text).exists() else []
        if not matches:
            raise InputError(f"{pattern} matches no file or folder; check the spelling and the folder")
        for match in matches:
            for path in _walk(match, excluded) if match.is_dir() and not _is_stack(match) else [match]:
                if excluded is not None and excluded in path.resolve().parents:
                    continue  # an earlier batch's output, not an input
                if _is_stack(path):
                    found.setdefault(path.resolve(), path)
                else:
                    skip(path, f"not a stack ({', '.join(SUPPORTED)})")
    if not found:
        raise InputError(f"no stack found in {', '.join(map(str, patterns))}; stacks end in "
                         f"{', '.join(SUPPORTED)}")
    return list(found.values())


def _folder_names(inputs: Sequence[Path]) -> list[str]:
    """One output folder name per input: its stem, plus a hash of its path where stems collide."""
    from napari_vessel.io.outputs import output_paths

    stems = [output_paths(p, ".")["manifest"].name.removesuffix("_manifest.json") for p in inputs]
    counts = Counter(s.lower() for s in stems)  # case-insensitive file systems collide too
    return [s if counts[s.lower()] == 1 else
            f"{s}-{hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]}"
            for s, p in zip(stems, inputs, strict=True)]


def _manifest_of(path: Path) -> RunManifest | None:
    """The manifest at ``path``, or None (missing, unreadable or not a run manifest)."""
    try:
        return read_manifest(path)
    except InputError:
        return None


def _previous(paths: dict[str, Path]) -> RunManifest | None:
    """The manifest of a complete earlier output set, or None (missing, partial or unreadable)."""
    if not all(p.exists() for p in paths.values()):
        return None
    return _manifest_of(paths["manifest"])


def _check_outdir(outdir: Path) -> None:
    """Raise :class:`InputError` unless a probe file can be written in ``outdir`` or, when it does
    not exist yet, in the folder it would be created in (nothing is left behind)."""
    from napari_vessel.io.outputs import check_writable as _check_writable

    _check_writable(outdir)
    existing = next(p for p in (outdir, *outdir.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"cannot write the results to {outdir}: {err.strerror or err}; choose "
                         "another -o/--out") from err


