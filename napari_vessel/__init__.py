"""napari-vessel: segment, refine and fine-tune blood vessels in 3D microscopy stacks.

The package root is the public Python API. It imports neither napari nor Qt, so it works in
scripts and on clusters without a display.
"""

from __future__ import annotations

from .errors import Cancelled, InputError
from .progress import CancelToken
from .volume import Volume

__version__ = "0.1.0"

__all__ = ["__version__", "Volume", "InputError", "Cancelled", "CancelToken"]
