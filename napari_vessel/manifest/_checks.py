"""Checks and conversions shared by the parts of the run manifest (:mod:`napari_vessel.manifest`)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar

from napari_vessel.errors import InputError


def _plain(value: Any) -> Any:
    """JSON-ready copy: typed parts as their dicts, mappings as dicts, tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _bad(what: str, need: str, value: Any) -> InputError:
    return InputError(f"manifest field {what} must be {need}, not {value!r}")


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _bad(what, f"a whole number >= {low}", value)
    return int(value)


def _float(value: Any, what: str, low: float = 0.0, high: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise _bad(what, f"a number >= {low:g}" if high == float("inf") else
                   f"a number from {low:g} to {high:g}", value)
    return float(value)


def _str(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _bad(what, "text" + (" or null" if optional else ""), value)
    return value


def _bool(value: Any, what: str, optional: bool = False) -> bool | None:
    if (value is None and optional) or isinstance(value, bool):
        return value
    raise _bad(what, "true or false", value)


def _seq(value: Any, what: str, length: int | None = None) -> tuple:
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise _bad(what, "a list" + (f" of {length}" if length is not None else ""), value)
    return tuple(value)


def _ints(value: Any, what: str, length: int | None = None, low: int = 0) -> tuple[int, ...]:
    return tuple(_int(v, what, low) for v in _seq(value, what, length))


def _strs(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_str(v, what) for v in _seq(value, what))


def _mapping(value: Any, what: str, optional: bool = False) -> dict | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _bad(what, "a JSON object" + (" or null" if optional else ""), value)
    return _plain(value)


def _section(cls: type, value: Any, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    return cls.from_dict(value)


class _Section:
    """``to_dict`` and ``from_dict`` of a part of the manifest: the field names are the keys."""

    #: Fields left out of the JSON when they are None (they are absent from some manifests).
    _omit_none: ClassVar[tuple[str, ...]] = ()
    #: The part's name in error messages.
    _where: ClassVar[str] = "manifest"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts and lists, the keys of ``STEM_manifest.json``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if not (f.name in self._omit_none and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Read the JSON form (an instance is returned as it is).

        Raises
        ------
        InputError
            Not a JSON object, a missing, unknown or bad field.
        """
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise InputError(f"{cls._where} must be a JSON object, not {data!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        missing = [n for n in names if n not in data and n not in cls._omit_none]
        if unknown or missing:
            raise InputError(f"{cls._where}: " + "; ".join(filter(None, [
                missing and f"missing field(s) {', '.join(missing)}",
                unknown and f"unknown field(s) {', '.join(unknown)}"])))
        return cls(**data)
