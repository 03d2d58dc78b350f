"""The sliding window's settings as one checked value: :class:`WindowOptions`.

:func:`~napari_vessel.inference.run.predict`, :func:`~napari_vessel.inference.run.segment`,
:func:`~napari_vessel.inference.out_of_core.segment_to_zarr` and
:func:`~napari_vessel.inference.preview.segment_slice` take ``options=WindowOptions(...)``; their
loose keywords (``overlap=``, ``tta=``, ...) still work and are turned into options in one place,
:func:`window_options`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.runtime import RUNTIMES

__all__ = ["WindowOptions", "window_options", "BLENDINGS"]

#: The importance weights a patch's voxels may get (constant = the paper's averaging).
BLENDINGS = ("gaussian", "constant")


def _positive(value: Any, name: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer() \
            or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1, not {value!r}; {hint}")
    return int(value)


@dataclass(frozen=True)
class WindowOptions:
    """How a network runs over a stack (the sliding window and where it runs).

    Parameters
    ----------
    patch_size : (int, int, int), optional
        Patch size (z, y, x); None: the model's.
    overlap : float
        Fraction of a patch shared with its neighbours, in [0, 1).
    blending : {"gaussian", "constant"}
        Importance weights of the patch voxels (constant = the paper's averaging).
    batch_size : int, optional
        Patches per forward pass; None: the caller's default (4 on a CPU, 2 on a GPU in memory,
        1 out of core).
    tta : bool
        Average over the four in-plane flips (test-time augmentation).
    device : str or torch.device, optional
        ``"auto"``/None (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    runtime : {"auto", "torch", "onnx", "openvino"}
        How the network runs (:mod:`napari_vessel.runtime`).
    threads : int, optional
        CPU threads for the network; None: every core this process may use.

    Raises
    ------
    InputError
        A bad value, with what to give instead.
    """

    patch_size: tuple[int, int, int] | None = None
    overlap: float = 0.25
    blending: str = "gaussian"
    batch_size: int | None = None
    tta: bool = False
    device: Any = None
    runtime: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            try:
                patch = tuple(self.patch_size)
            except TypeError:
                patch = ()
            if len(patch) != 3:
                raise InputError(f"patch size {self.patch_size!r} must be three positive numbers "
                                 "(z, y, x)")
            object.__setattr__(self, "patch_size", tuple(
                _positive(p, "each patch size", "give three numbers (z, y, x), e.g. 32 128 128")
                for p in patch))
        try:
            overlap = float(self.overlap)
        except (TypeError, ValueError):
            overlap = math.nan
        if not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), not {self.overlap!r}; 0.25 is a good "
                             "start")
        object.__setattr__(self, "overlap", overlap)
        if self.blending not in BLENDINGS:
            raise InputError(f"blending must be 'gaussian' or 'constant', not {self.blending!r}")
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", _positive(
                self.batch_size, "batch size", "give 1 or more patches per forward pass"))
        if not isinstance(self.tta, bool):
            raise InputError(f"tta={self.tta!r} must be true or false")
        runtime = str(self.runtime or "auto").lower()
        if runtime not in RUNTIMES:
            raise InputError(f"unknown runtime {self.runtime!r}; choose one of "
                             f"{', '.join(RUNTIMES)}")
        object.__setattr__(self, "runtime", runtime)
        if self.threads is not None:
            object.__setattr__(self, "threads", _positive(
                self.threads, "threads", "give the number of CPU threads to use"))

    def manifest_parameters(self, spec: Any, patch: Any = None) -> dict[str, Any]:
        """The sliding window's part of a run manifest's ``parameters``.

        Parameters
        ----------
        spec : ModelSpec
            The model (its patch size when ``patch_size`` is None).
        patch : (int, int, int), optional
            The patch size used, when the caller settled it.
        """
        size = patch if patch is not None else (self.patch_size or spec.patch_size_zyx)
        return {"overlap": float(self.overlap), "blending": self.blending, "tta": bool(self.tta),
                "patch_size_zyx": tuple(size), "batch_size": self.batch_size}


_NAMES = tuple(f.name for f in fields(WindowOptions))


def window_options(options: WindowOptions | None = None, **keywords: Any) -> WindowOptions:
    """The one place loose keywords become :class:`WindowOptions`.

    Parameters
    ----------
    options : WindowOptions, optional
        Settings given as a whole (None: the defaults).
    **keywords
        ``patch_size``, ``overlap``, ``blending``, ``batch_size``, ``tta``, ``device``,
        ``runtime``, ``threads``; None means not given (and 0 threads or batch size means
        automatic, as it did before). A keyword given with ``options`` replaces that setting.

    Returns
    -------
    WindowOptions

    Raises
    ------
    InputError
        ``options`` of another type, or a bad value.
    """
    unknown = set(keywords) - set(_NAMES)
    if unknown:
        raise TypeError(f"unknown window option(s): {', '.join(sorted(unknown))}")
    # 0 threads or patches per pass meant "automatic" before the options were typed: still does
    given = {k: v for k, v in keywords.items()
             if v is not None and not (k in ("threads", "batch_size") and v == 0)}
    if options is None:
        return WindowOptions(**given)
    if not isinstance(options, WindowOptions):
        raise InputError(f"options must be a WindowOptions, not {type(options).__name__}")
    return replace(options, **given) if given else options
