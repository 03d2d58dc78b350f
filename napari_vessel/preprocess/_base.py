"""The base class of the preprocessing steps and the checks their parameters share."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.preprocess._common import as_image

__all__ = ["Step"]


def _meta(help: str, **limits: Any) -> dict:
    return {"help": help, **limits}


class Step:
    """Base class of the preprocessing steps (subclasses are frozen dataclasses)."""

    #: Name used in pipeline files and on the command line.
    name: ClassVar[str] = ""
    #: One-line description for menus.
    title: ClassVar[str] = ""

    def needs_3d(self) -> bool:
        """True when the step cannot run on a single 2D slice (use :meth:`preview` there)."""
        return False

    def halo(self, spacing_zyx: Any = None) -> int:
        """Slices of context needed on each side of a block (0 for per-slice steps)."""
        return 0

    def context(self, shape: tuple[int, ...], spacing_zyx: Any = None) -> int:
        """Slices on each side of a plane that a faithful preview of that plane should include."""
        return self.halo(spacing_zyx)

    def fit(self, data: Any, spacing_zyx: Any = None) -> Any:
        """Global statistics of the (NumPy or dask) stack that :meth:`transform` needs."""
        return None

    def transform(self, block: np.ndarray, state: Any, z0: int = 0, n_z: int | None = None,
                  spacing_zyx: Any = None) -> np.ndarray:  # pragma: no cover - abstract
        """Process a float32 block of whole slices ``z0 ..`` of a stack of ``n_z`` slices."""
        raise NotImplementedError

    def apply(self, array: Any, spacing_zyx: Any = None) -> np.ndarray:
        """Run the step on a NumPy stack (Z, Y, X), or a 2D slice if the step allows it.

        Returns a new float32 array; the input is never modified.
        """
        return self.apply_checked(self.check_input(array), spacing_zyx)

    def check_input(self, array: Any, finite: bool = True) -> np.ndarray:
        """``array`` as float32, or :class:`InputError` (2D input to a 3D-only step, NaN, ...)."""
        ndims = (3,) if self.needs_3d() else (2, 3)
        return as_image(array, ndims=ndims, what=f"the '{self.name}' step", finite=finite)

    def apply_checked(self, image: np.ndarray, spacing_zyx: Any = None) -> np.ndarray:
        """:meth:`apply` on an array already checked by :meth:`check_input`."""
        stack = image if image.ndim == 3 else image[None]
        out = self.transform(stack, self.fit(stack, spacing_zyx), 0, stack.shape[0], spacing_zyx)
        return out if image.ndim == 3 else out[0]

    def preview(self, plane: Any, spacing_zyx: Any = None) -> np.ndarray:
        """A fast 2D version of the step on one slice or projection (float32)."""
        return self.apply(as_image(plane, ndims=(2,), what="a preview"), spacing_zyx)

    def to_dict(self) -> dict:
        """``{"name": ..., parameter: value, ...}`` (JSON-able)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in values.items()}}

    @classmethod
    def parameters(cls) -> list[dataclasses.Field]:
        """The dataclass fields (with ``metadata``: help, min, max, choices)."""
        return list(dataclasses.fields(cls))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    value = str(value).lower()
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if isinstance(value, (bool, np.bool_, int)) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be true or false, not {value!r}")
