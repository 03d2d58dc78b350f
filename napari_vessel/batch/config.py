"""Settings and results of a batch run (typed, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.inference.cluster import RESOURCE

__all__ = ["RESOURCE", "BatchConfig", "StackResult", "BatchReport"]
_RUNTIMES, _DEVICES = ("auto", "torch", "onnx", "openvino"), ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs; saved in ``batch_manifest.json``.

    Parameters
    ----------
    model : str, optional
        A registered model; None for the recommended one.
    threshold : float, optional
        Plain threshold in [0, 1]; None for the model card's post-processing (as ``segment``).
    runtime : {"auto", "torch", "onnx", "openvino"}
    device : {"auto", "cpu", "cuda", "mps"}
        ``auto`` on a machine with several GPUs puts local worker ``i`` on GPU ``i % n``.
    workers, threads_per_worker : int, optional
        Size of the ``LocalCluster`` (default: one worker per stack up to the number of cores,
        the cores shared among them). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``) instead of a ``LocalCluster``.
    overwrite : bool
        Segment stacks again even when their manifest says they are done.
    channel, frame : int, optional
        The channel / time point to take from every multi-channel / time-series file.
    connect_timeout : float
        Seconds to wait for ``scheduler`` to answer.
    dashboard : str
        Address of the local dashboard (``":0"``: any free port).
    zarr : bool
        Segment each stack out of core into OME-Zarr stores with pyramids
        (:func:`napari_vessel.inference.out_of_core.segment_to_zarr`; memory bounded by the block, not
        the stack) instead of TIFFs.
    """

    model: str | None = None
    threshold: float | None = None
    runtime: str = "auto"
    device: str = "auto"
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    overwrite: bool = False
    channel: int | None = None
    frame: int | None = None
    connect_timeout: float = 10.0
    dashboard: str = ":8787"
    zarr: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {self.threshold}")
        for name, value, allowed in (("runtime", self.runtime, _RUNTIMES), ("device", self.device, _DEVICES)):
            if value not in allowed:
                raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        for name, least in (("workers", 1), ("threads_per_worker", 1), ("channel", 0), ("frame", 0)):
            if getattr(self, name) is not None and int(getattr(self, name)) < least:
                raise InputError(f"{name.replace('_', ' ')} must be {least} or more, "
                                 f"not {getattr(self, name)}")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise InputError("the scheduler address is empty; give one like tcp://host:8786")
        if not float(self.connect_timeout) > 0:
            raise InputError(f"connect timeout must be positive, not {self.connect_timeout}")

    def settings(self) -> dict[str, Any]:
        """What decides the result of a stack; a done stack made with other settings is not reused."""
        return {"model": self.model, "threshold": self.threshold, "channel": self.channel,
                "frame": self.frame, **({"zarr": True} if self.zarr else {})}


@dataclass(frozen=True)
class StackResult:
    """One row of ``summary.csv``: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    voxels: int | None = None
    vessel_fraction: float | None = None
    error: str = ""


@dataclass(frozen=True)
class BatchReport:
    """What :func:`run_batch` did: one :class:`StackResult` per input, in input order."""

    stacks: tuple[StackResult, ...]
    summary: Path
    manifest: Path
    dashboard: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[StackResult, ...]:
        """The stacks that failed (their ``error`` says why)."""
        return tuple(s for s in self.stacks if s.status == "failed")


