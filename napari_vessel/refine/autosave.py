"""Save labels to a recovery file in the background while they are painted.

:class:`AutoSaver` writes the labels soon after each :meth:`AutoSaver.mark_dirty` (a finished
stroke or edit), in a background thread: at once if the last save is ``interval_s`` seconds old
(1 s by default), else when it is -- longer for labels so large that a save takes more than a
quarter of that (``max_busy``). So a crash loses at most the edits of the last second or so.
Painting never waits for a copy or a write, and a recovery file never holds half of an edit (see
the class docstring for how).

Files are written to a temporary name and moved into place (``os.replace``), so a crash or a kill
leaves the previous complete recovery file. A recovery file ``<image stem>.vessel-recovery.npz``
holds the labels and JSON metadata (layer name, shape, dtype, image path, time). Its folder is, in
order: the ``folder`` argument, the ``NAPARI_VESSEL_RECOVERY`` environment variable, the image's
folder, ``~/.napari-vessel/recovery``.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import threading
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace, file_stem

__all__ = ["AutoSaver", "RecoveryInfo", "RECOVERY_SUFFIX", "ENV_VAR", "default_recovery_folder",
           "recovery_path", "check_folder_writable", "find_recovery", "load_recovery",
           "discard_recovery"]

RECOVERY_SUFFIX = ".vessel-recovery.npz"
ENV_VAR = "NAPARI_VESSEL_RECOVERY"
USER_FOLDER = Path("~/.napari-vessel/recovery")


def default_recovery_folder(image_path: str | os.PathLike | None = None) -> Path:
    """``$NAPARI_VESSEL_RECOVERY``, else the image's folder, else ``~/.napari-vessel/recovery``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    if image_path:
        return Path(image_path).expanduser().resolve().parent
    return USER_FOLDER.expanduser()


def _stem(image_path: str | os.PathLike | None) -> str:
    """The image's :func:`~napari_vessel.io.common.file_stem`, ``"untitled"`` without a file."""
    return file_stem(image_path) if image_path else "untitled"


def recovery_path(image_path: str | os.PathLike | None = None, layer_name: str | None = None,
                  folder: str | os.PathLike | None = None) -> Path:
    """Where the recovery file of ``layer_name`` (labels of ``image_path``) goes.

    ``<folder>/<image stem>[.<layer name>].vessel-recovery.npz``, with the folder from
    :func:`default_recovery_folder` unless given.
    """
    folder = Path(folder).expanduser() if folder else default_recovery_folder(image_path)
    name = _stem(image_path)
    if layer_name:
        name += "." + re.sub(r"[^\w\-]+", "_", layer_name).strip("_")
    return folder / (name + RECOVERY_SUFFIX)


def _explain(err: OSError, path: Path) -> str:
    """A message that says what failed and what to do."""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is read-only"
    elif err.errno == errno.ENOSPC:
        why = "the disk is full"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        why = "a file is in the way where a folder is needed"
    else:
        why = err.strerror or str(err)
    return (
        f"cannot write the recovery file {path} ({why}); your edits are not being backed up. "
        f"Choose another recovery folder (or set {ENV_VAR})."
    )


def check_folder_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check a file can be written there, or raise InputError."""
    folder = Path(folder).expanduser()
    probe = folder / f".napari-vessel-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(_explain(err, folder / "...")) from err
    return folder


@dataclass(frozen=True)
class RecoveryInfo:
    """What a recovery file holds (read without loading the labels)."""

    path: Path
    layer_name: str
    shape: tuple[int, ...]
    dtype: str
    image_path: str | None
    saved_at: float
    metadata: dict

    @property
    def saved_at_text(self) -> str:
        """The save time as local ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))


def _read_metadata(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["metadata"]))
    if not isinstance(meta, dict):
        raise ValueError("its metadata is not a JSON object")
    return meta


def _info(path: Path, meta: dict) -> RecoveryInfo:
    """The typed record of a recovery file; ValueError when its metadata has wrong types."""
    try:
        shape = tuple(int(n) for n in meta.get("shape", ()))
        saved_at = float(meta.get("saved_at", 0.0))
    except (TypeError, ValueError) as err:
        raise ValueError(f"its metadata is malformed ({err})") from err
    image = meta.get("image_path")
    return RecoveryInfo(path, str(meta.get("layer_name", "")), shape,
                        str(meta.get("dtype", "")), image if isinstance(image, str) else None,
                        saved_at, meta)


def find_recovery(image_path: str | os.PathLike | None,
                  folder: str | os.PathLike | None = None) -> list[RecoveryInfo]:
    """Recovery files left for ``image_path``, newest first.

    Searches ``folder`` if given, else the environment folder, the image's folder and the user
    folder. A file counts when its metadata names the same image (resolved path).
    """
    if folder:
        folders = [Path(folder).expanduser()]
    else:
        folders = [default_recovery_folder(image_path), USER_FOLDER.expanduser()]
        if image_path:
            folders.append(Path(image_path).expanduser().resolve().parent)
    wanted = str(Path(image_path).expanduser().resolve()) if image_path else None
    found: dict[Path, RecoveryInfo] = {}
    for place in folders:
        for path in sorted(place.glob(f"{glob.escape(_stem(image_path))}*{RECOVERY_SUFFIX}")):
            try:
                meta = _read_metadata(path)
                if meta.get("image_path") == wanted:
                    found[path.resolve()] = _info(path, meta)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                warnings.warn(f"skipping unreadable recovery file {path}: {err}", stacklevel=2)
    return sorted(found.values(), key=lambda info: info.saved_at, reverse=True)


def load_recovery(path: str | os.PathLike) -> tuple[np.ndarray, RecoveryInfo]:
    """The labels and the metadata saved in a recovery file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            labels = archive["labels"]
        info = _info(path, _read_metadata(path))
    except FileNotFoundError as err:
        raise InputError(f"recovery file {path} does not exist (already restored or discarded?)") from err
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"recovery file {path} cannot be read ({err}); discard it") from err
    return labels, info


def discard_recovery(path: str | os.PathLike) -> None:
    """Delete a recovery file (nothing happens if it is already gone)."""
    Path(path).unlink(missing_ok=True)


def _entries(region: Any, data: Any) -> list[tuple[Any, np.ndarray]]:
    """``(key, values)`` pairs copying what changed: boxes as slices, scattered voxels by index."""
    regions = region if isinstance(region, list) else [region]
    out = []
    for item in regions:
        if not isinstance(item, tuple) or len(item) != data.ndim:
            raise InputError(
                f"changed region {item!r} is not understood; give a tuple of slices (a box) or "
                "a tuple of index arrays, one per axis"
            )
        if not all(isinstance(k, slice) for k in item):
            item = tuple(np.asarray(k, dtype=np.intp) for k in item)
        out.append((item, np.array(data[item], copy=True)))
    return out


class AutoSaver:
    """Save a labels array to a recovery file in a background thread, soon after each edit.

    The saver keeps its own copy of the labels (the *shadow*, taken by :meth:`start`). Telling it
    what changed -- ``mark_dirty(region)`` with the changed box or voxels, as a napari paint event
    gives them -- copies just that region on the calling thread (well under a millisecond for a
    brush stroke), so the shadow only ever holds whole edits. ``mark_dirty()`` without a region
    (e.g. after undo) returns at once and the background thread copies the whole array; that copy
    is kept only if no edit was open or finished while it was taken (edits bracketed with
    :meth:`editing` or :meth:`begin_edit` / :meth:`end_edit`), otherwise it is taken again later.
    Painting never waits for a copy or a write.

    Parameters
    ----------
    source : ndarray or callable
        The labels, or a function returning them (e.g. ``lambda: layer.data``).
    path : path
        The recovery file (see :func:`recovery_path`).
    interval_s : float
        Minimum time between two saves (the throttle): an edit is in the file at most this long
        after it was marked (plus the time the save takes), unless ``max_busy`` stretches it.
    max_busy : float
        Largest fraction of the time spent writing: after a save that took ``w`` seconds the next
        one waits at least ``w / max_busy`` (large labels are saved less often, never
        back-to-back).
    layer_name, image_path : str, optional
        Stored in the metadata; :func:`find_recovery` matches on ``image_path``.
    metadata : dict, optional
        More JSON-serialisable metadata (e.g. the layer's scale).
    on_saved : callable, optional
        ``on_saved(path)`` after each save, called in the background thread.
    on_error : callable, optional
        ``on_error(error)`` with an :class:`InputError` whose message says what to do, called in
        the background thread when a save fails (once per distinct failure). Without it the
        failure is a warning. Nothing is written elsewhere; give a new file with :meth:`set_path`.
    compress : bool
        Compress the file (labels are mostly background, so files are small).
    """

    def __init__(self, source: Any, path: str | os.PathLike, *, interval_s: float = 1.0,
                 max_busy: float = 0.25,
                 layer_name: str = "", image_path: str | os.PathLike | None = None,
                 metadata: dict | None = None, on_saved: Callable[[Path], None] | None = None,
                 on_error: Callable[[InputError], None] | None = None,
                 compress: bool = True) -> None:
        if not interval_s > 0:
            raise InputError(f"autosave interval {interval_s} s must be a positive number of seconds")
        if not 0 < max_busy <= 1:
            raise InputError(f"max_busy {max_busy} must be a fraction of the time in (0, 1]")
        self._source = source if callable(source) else (lambda: source)
        self.path = Path(path).expanduser()
        self.interval_s = float(interval_s)
        self.max_busy = float(max_busy)
        self.write_s = 0.0  # how long the last save took
        self.layer_name = layer_name
        self.image_path = str(Path(image_path).expanduser().resolve()) if image_path else None
        self.metadata = dict(metadata or {})
        self.on_saved, self.on_error, self.compress = on_saved, on_error, compress
        self.last_saved: float | None = None
        self.last_error: InputError | None = None
        self.saves = 0
        # Written by the editing thread only; read by the background thread.
        self._generation = 0  # one per mark
        self._edit_seq = 0  # one per begin_edit / end_edit
        self._writing = 0  # edits open now
        self._journal: deque = deque()  # (generation, key or None for "everything", values)
        # Owned by whoever holds _cycle_lock.
        self._shadow: np.ndarray | None = None
        self._shadow_generation = 0  # the last mark the shadow includes
        self._saved_generation = 0
        self._cycle_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the editing side: never waits -------------------------------------------------------
    def mark_dirty(self, region: Any = None) -> None:
        """Note that the labels changed.

        Parameters
        ----------
        region : tuple or list of tuples, optional
            What changed: a tuple of slices (a box) or of index arrays, one per axis, or a list
            of these (e.g. :func:`napari_vessel.projection.regions_from_paint_event`). Its current
            values are copied now. None: anything may have changed; the background thread will
            copy everything.
        """
        self._generation += 1
        if region is None:
            self._journal.append((self._generation, None, None))
            return
        try:
            entries = _entries(region, self._source())
        except IndexError:  # the labels were replaced by another shape: copy everything
            entries = [(None, None)]
        for key, values in entries:
            self._journal.append((self._generation, key, values))

    def begin_edit(self) -> None:
        """Call before writing into the labels (e.g. when a brush stroke starts)."""
        self._writing += 1
        self._edit_seq += 1

    def end_edit(self) -> None:
        """Call after the write (and after marking what it changed)."""
        self._edit_seq += 1
        self._writing = max(self._writing - 1, 0)

    @contextmanager
    def editing(self, region: Any = None) -> Iterator[None]:
        """Bracket a write into the labels; on exit mark ``region`` (None: everything) dirty."""
        self.begin_edit()
        try:
            yield
        finally:
            self.mark_dirty(region)
            self.end_edit()

    @property
    def dirty(self) -> bool:
        """True while there are edits not yet in the recovery file."""
        return self._generation != self._saved_generation

    # -- the saving side ----------------------------------------------------------------------
    def start(self) -> AutoSaver:
        """Copy the labels (once, on the calling thread) and start the background thread."""
        with self._cycle_lock:
            if self._shadow is None:
                self._take_snapshot()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="vessel-autosave", daemon=True)
            self._thread.start()
        return self

    def stop(self, flush: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the thread; with ``flush``, save pending edits first (on the calling thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if flush and self.dirty:
            self.save_now()

    def set_path(self, path: str | os.PathLike) -> None:
        """Save to another file from now on (e.g. after a failure in a read-only folder)."""
        self.path = Path(path).expanduser()
        self.last_error = None
        self._saved_generation = -1  # the new file has nothing yet

    def save_now(self) -> bool:
        """Copy and save now, on the calling thread (the editing thread). True if written."""
        with self._cycle_lock:
            self._take_snapshot()
            return self._write(self._shadow, self._shadow_generation)

    def __enter__(self) -> AutoSaver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_snapshot(self) -> None:
        """Replace the shadow by a full copy (on the editing thread)."""
        self._keep(self._generation, np.array(self._source(), copy=True))

    def _keep(self, generation: int, snapshot: np.ndarray) -> None:
        """Make ``snapshot`` the shadow and forget the journal it includes."""
        self._shadow, self._shadow_generation = snapshot, generation
        while self._journal and self._journal[0][0] <= generation:
            self._journal.popleft()

    def _run(self) -> None:
        retry = 0.005
        while not self._stop.is_set():
            wait = (self.last_saved or 0.0) + self.gap_s - time.time()
            if not self.dirty or wait > 0:
                self._stop.wait(min(max(wait, 0.0), 0.05) if self.dirty else 0.02)
                continue
            with self._cycle_lock:
                ready = self._drain() or (self._full_copy() and self._drain())
                if ready and not self._write(self._shadow, self._shadow_generation):
                    self.last_saved = time.time()  # failed: try again after a full interval
            if ready:
                retry = 0.005
            else:  # an edit overlapped the full copy: try again soon
                self._stop.wait(retry)
                retry = min(2 * retry, 0.5)

    @property
    def gap_s(self) -> float:
        """The time between two saves now: ``interval_s``, or more after a long save."""
        return max(self.interval_s, self.write_s / self.max_busy)

    def _drain(self) -> bool:
        """Apply journalled regions to the shadow; False if a full copy is needed first."""
        while self._journal:
            generation, key, values = self._journal[0]
            if key is None or self._shadow is None:
                return False
            try:
                self._shadow[key] = values
            except (IndexError, ValueError):  # the labels changed shape: copy everything
                return False
            self._journal.popleft()
            self._shadow_generation = generation
        return True

    def _full_copy(self) -> bool:
        """A full copy in the background, kept only if no edit overlapped it."""
        before = (self._generation, self._edit_seq)
        if self._writing:
            return False
        snapshot = np.array(self._source(), copy=True)
        if self._writing or (self._generation, self._edit_seq) != before:
            return False
        self._keep(before[0], snapshot)
        return True

    def _write(self, data: np.ndarray, generation: int) -> bool:
        path = self.path
        meta = {**self.metadata, "layer_name": self.layer_name, "shape": list(data.shape),
                "dtype": str(data.dtype), "image_path": self.image_path, "saved_at": time.time(),
                "format": 1}
        start = time.perf_counter()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a unique temporary file, removed when anything fails; one os.replace publishes it
            with atomic_replace(path) as tmp, open(tmp, "wb") as fh:
                write = np.savez_compressed if self.compress else np.savez
                write(fh, labels=data, metadata=np.array(json.dumps(meta)))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            self._report(InputError(_explain(err, path)))
            return False
        self._saved_generation = generation
        self.write_s = time.perf_counter() - start
        self.last_saved, self.last_error = time.time(), None
        self.saves += 1
        if self.on_saved is not None:
            self.on_saved(path)
        return True

    def _report(self, error: InputError) -> None:
        if self.last_error is not None and str(self.last_error) == str(error):
            return  # already reported
        self.last_error = error
        if self.on_error is not None:
            self.on_error(error)
        else:
            warnings.warn(str(error), stacklevel=2)
