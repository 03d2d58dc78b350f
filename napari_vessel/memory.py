"""Peak memory of a piece of work: the rise of this process's resident memory, sampled in a thread.

Used by :mod:`napari_vessel.evaluation.comparison`. Resident memory (RSS) counts what the process really
holds in RAM, NumPy arrays and PyTorch tensors alike (``tracemalloc`` misses PyTorch's own
allocator). Before the baseline is taken, freed memory is returned to the system where the C
library allows (glibc ``malloc_trim``), so memory left over from earlier work inflates the baseline
as little as possible; what the process can still reuse without asking the system does not show,
so the rise is a lower bound on what a fresh process needs.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from typing import Any

__all__ = ["PeakMemory", "rss_bytes"]


def rss_bytes() -> int | None:
    """Resident memory of this process in bytes (None when the system does not tell)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc), so the next baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Highest resident memory above the level at entry, sampled in a thread.

    Parameters
    ----------
    interval : float
        Seconds between samples.

    Examples
    --------
    >>> with PeakMemory() as memory:
    ...     block = bytearray(50_000_000)
    >>> memory.mb is None or memory.mb >= 0
    True
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.baseline: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        self.baseline = self.peak = rss_bytes()
        if self.baseline is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        value = rss_bytes()
        if value is not None and self.peak is not None:
            self.peak = max(self.peak, value)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def mb(self) -> float | None:
        """The rise in MB (10^6 bytes), or None when memory cannot be read here."""
        if self.baseline is None or self.peak is None:
            return None
        return (self.peak - self.baseline) / 1e6
