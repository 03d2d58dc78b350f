"""The model card: one typed, frozen record of what a model is and how it was made.

A card lives on disk as ``NAME.json`` beside ``NAME.safetensors`` (see
:mod:`napari_vessel.models.weights`). In memory it is a :class:`ModelCard`, checked when it is
made, so a card that is read can be trusted and a bad card can never be written. Keys the code
does not know (``paper``, ``notes``, ``finetuned_on``, ...) are kept in :attr:`ModelCard.extra`,
so reading a card and writing it again loses nothing.

The JSON layout is unchanged: :meth:`ModelCard.to_dict` always writes the fields of
:data:`CARD_FIELDS` and writes the optional fields (``threshold``, ``postprocessing``,
``patch_size_zyx``, ``description``, ``calibrated_on``) only when they are set.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError

__all__ = ["FORMAT_VERSION", "CARD_FIELDS", "OPTIONAL_FIELDS", "ModelCard", "format_count",
           "format_scores"]

#: Version of the card layout this code writes and understands.
FORMAT_VERSION = 1

#: Fields every card has on disk (missing ones are written as None or empty).
CARD_FIELDS = (
    "format_version", "name", "architecture", "config", "kind", "trained_on", "training",
    "scores", "intensity_profile", "preprocessing", "parent", "created", "weights_file", "sha256",
)

#: Fields written only when set (not None).
OPTIONAL_FIELDS = ("description", "threshold", "postprocessing", "patch_size_zyx", "calibrated_on")

#: The kinds a card may name (as :data:`napari_vessel.models.registry.KINDS`).
_KINDS = ("supervised", "unsupervised", "classical")

_TEXT_FIELDS = ("architecture", "kind", "parent", "created", "weights_file", "sha256",
                "description")
_OPTIONAL_MAPPINGS = ("config", "intensity_profile", "preprocessing", "postprocessing")
_MAPPINGS = ("training", "scores")


def _plain(value: Any) -> Any:
    """A deep copy of JSON-like data with mappings as dicts and tuples as lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelCard:
    """What a model is, how to rebuild it, what it was trained on and how it scored.

    Every field is checked when the card is made (:class:`~napari_vessel.errors.InputError` with
    a message that says what to fix). Build one from JSON with :meth:`from_dict` or
    :meth:`read`; turn it back into JSON with :meth:`to_dict`. Change one with
    :func:`dataclasses.replace` (checked again). The mappings are plain dicts (copies): treat
    them as read-only.

    Parameters
    ----------
    name : str
        Model name (non-empty).
    format_version : int
        Version of the card layout, 1 to :data:`FORMAT_VERSION`; a newer one is refused.
    architecture : str, optional
        Registered architecture (builder) that rebuilds the network.
    kind : {"supervised", "unsupervised", "classical"}, optional
        How the model learned.
    config : mapping, optional
        Keyword arguments of the architecture's builder; None: the registered architecture's.
    trained_on : tuple
        Data the model saw: file names or descriptions (str), or records of a volume (mappings,
        as a fine-tune writes them). A single string is read as a one-item tuple.
    training : mapping
        How it was trained: ``command`` (to reproduce it), ``seed``, ``steps``, ``minutes``,
        ``loss`` and more.
    scores : mapping
        Validation scores, e.g. leave-one-volume-out F1 per volume and their mean.
    intensity_profile : mapping, optional
        Intensity statistics of the training data.
    preprocessing : mapping, optional
        The preprocessing pipeline (JSON form) the model expects.
    parent : str, optional
        The model it was fine-tuned from.
    created : str, optional
        ISO 8601 time (UTC) the weights were written.
    weights_file : str, optional
        File name of the weights, beside the card.
    sha256 : str, optional
        SHA-256 of the weights file.
    threshold : float, optional
        Recommended vessel-probability threshold, from 0 to 1.
    postprocessing : mapping, optional
        How the probability map becomes labels (JSON form, see
        :class:`napari_vessel.postprocess.labels.Postprocessing`).
    patch_size_zyx : tuple of 3 int, optional
        Patch size for sliding-window inference.
    description : str, optional
        One line for lists and tooltips.
    calibrated_on : tuple of str, optional
        Volumes the threshold was chosen on (when they differ from ``trained_on``).
    extra : mapping
        Every other key of the JSON card, kept as it is (``paper``, ``notes``, ...).

    Raises
    ------
    InputError
        A field of the wrong type or out of range, an empty name, or a format version newer than
        this code knows.
    """

    name: str
    format_version: int = FORMAT_VERSION
    architecture: str | None = None
    kind: str | None = None
    config: Mapping[str, Any] | None = field(default=None, hash=False)
    trained_on: tuple[Any, ...] = field(default=(), hash=False)
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)
    scores: Mapping[str, Any] = field(default_factory=dict, hash=False)
    intensity_profile: Mapping[str, Any] | None = field(default=None, hash=False)
    preprocessing: Mapping[str, Any] | None = field(default=None, hash=False)
    parent: str | None = None
    created: str | None = None
    weights_file: str | None = None
    sha256: str | None = None
    threshold: float | None = None
    postprocessing: Mapping[str, Any] | None = field(default=None, hash=False)
    patch_size_zyx: tuple[int, int, int] | None = None
    description: str | None = None
    calibrated_on: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        def put(key: str, value: Any) -> None:
            object.__setattr__(self, key, value)

        version = self.format_version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InputError(f"the card's format_version {version!r} is not a positive whole "
                             "number; a card written by napari-vessel has format_version "
                             f"{FORMAT_VERSION}")
        if version > FORMAT_VERSION:
            raise InputError(
                f"the card has format version {version}, newer than this napari-vessel "
                f"understands ({FORMAT_VERSION}); upgrade napari-vessel (pip install -U "
                "napari-vessel)")
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"the card's name {self.name!r} must be a non-empty text; give the "
                             "model a name")
        for key in _TEXT_FIELDS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"the card's {key} {value!r} must be a text (or null), not "
                                 f"{type(value).__name__}")
        if self.kind is not None and self.kind not in _KINDS:
            raise InputError(f"the card's kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        for key in _OPTIONAL_MAPPINGS + _MAPPINGS:
            value = getattr(self, key)
            if value is None and key in _MAPPINGS:
                value = {}
            if value is not None and not isinstance(value, Mapping):
                raise InputError(f"the card's {key} must be a JSON object (a dict of settings), "
                                 f"not {type(value).__name__}; fix the card")
            put(key, None if value is None else _plain(value))
        put("trained_on", self._items("trained_on", self.trained_on, (str, Mapping)) or ())
        if self.calibrated_on is not None:
            put("calibrated_on", self._items("calibrated_on", self.calibrated_on, (str,)))
        level = self.threshold
        if level is not None:
            if not _number(level) or not 0.0 <= float(level) <= 1.0:
                raise InputError(f"the card's threshold {level!r} must be a number from 0 to 1; "
                                 "fix the card or pass a threshold")
            put("threshold", float(level))
        patch = self.patch_size_zyx
        if patch is not None:
            if not (isinstance(patch, list | tuple) and len(patch) == 3 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in patch)):
                raise InputError(f"the card's patch_size_zyx {patch!r} must be three whole "
                                 "numbers of at least 1 (z, y, x)")
            put("patch_size_zyx", tuple(patch))
        if not isinstance(self.extra, Mapping):
            raise InputError(f"extra must be a mapping, not {type(self.extra).__name__}")
        known = {f.name for f in fields(self)}
        clash = sorted(str(k) for k in self.extra if not isinstance(k, str) or k in known)
        if clash:
            raise InputError(f"extra keys {', '.join(clash)} are card fields or not text; pass "
                             "them as fields")
        put("extra", _plain(self.extra))

    @staticmethod
    def _items(key: str, value: Any, types: tuple[type, ...]) -> tuple[Any, ...] | None:
        """``value`` as a tuple of items of ``types`` (a lone string: one item)."""
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(v, types) for v in value):
            kinds = " or ".join("text" if t is str else "JSON objects" for t in types)
            raise InputError(f"the card's {key} {value!r} must be a list of {kinds}")
        return tuple(_plain(v) if isinstance(v, Mapping) else v for v in value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """A card from its JSON form (a dict as read from ``NAME.json``).

        Parameters
        ----------
        data : mapping
            The card's keys; unknown keys go to :attr:`extra`. ``format_version`` defaults to
            :data:`FORMAT_VERSION` only when absent.

        Returns
        -------
        ModelCard

        Raises
        ------
        InputError
            ``data`` is not a mapping, or a field is invalid (see :class:`ModelCard`).
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a model card must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in known}
        extra = {key: value for key, value in data.items() if key not in known}
        if "name" not in values:
            raise InputError("the card has no name; give the model a name")
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON form: a new plain dict (lists, not tuples), ready for ``json.dumps``.

        The fields of :data:`CARD_FIELDS` are always there; those of :data:`OPTIONAL_FIELDS`
        only when set; then the :attr:`extra` keys.
        """
        out: dict[str, Any] = {key: _plain(getattr(self, key)) for key in CARD_FIELDS}
        for key in OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = _plain(value)
        out.update(_plain(self.extra))
        return out

    def to_json(self) -> str:
        """The card as indented JSON text.

        Raises
        ------
        InputError
            A value that JSON cannot hold (an object, NaN).
        """
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InputError(f"the model card cannot be saved as JSON: {err}") from err

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        """Read and check the card at ``path`` (a ``.json`` file).

        A card without a name takes the file's name (``NAME.json``: ``NAME``).

        Raises
        ------
        InputError
            Missing, unreadable or not-JSON file, no integer ``format_version``, one newer than
            this code knows, or an invalid field; the message names the file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise InputError(f"model card {path} not found; each weights file needs its JSON "
                             "card beside it") from err
        except (OSError, ValueError) as err:
            raise InputError(f"model card {path} is unreadable or not JSON: {err}") from err
        if not isinstance(data, dict):
            raise InputError(f"model card {path} is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise InputError(f"model card {path} has no integer format_version")
        if not data.get("name"):
            data["name"] = path.stem
        try:
            return cls.from_dict(data)
        except InputError as err:
            raise InputError(f"model card {path}: {err}") from err


def format_count(n: int | None) -> str:
    """``419978 -> '420k'``, ``76171842 -> '76.2M'``, None -> '-'."""
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def format_scores(scores: Any) -> str:
    """A short summary of a card's ``scores``: the mean entries first, then other numbers."""
    if not isinstance(scores, dict) or not scores:
        return "-"
    numbers = {k: v for k, v in scores.items() if isinstance(v, int | float)}
    means = {k: v for k, v in numbers.items() if "mean" in k.lower()}
    shown = means or numbers
    if not shown:
        nested = scores.get("mean") if isinstance(scores.get("mean"), dict) else None
        shown = {k: v for k, v in (nested or {}).items() if isinstance(v, int | float)}
    if not shown:
        return "see card"
    return ", ".join(f"{k} {v:.3f}" for k, v in list(shown.items())[:4])
