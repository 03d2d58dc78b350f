"""From a probability map to clean vessel labels: thresholds, small-object removal, hole filling.

All functions take 2D or 3D arrays (3D is (z, y, x)), treat any non-zero label as vessel, and
never modify their input. Connectivity follows SciPy and scikit-image: 1 joins voxels that share
a face, 2 an edge, 3 a corner. The default here is the full neighbourhood (``connectivity=3`` in
3D) because thin capillaries running obliquely through anisotropic voxels often touch their next
voxel only at an edge or a corner. ``connectivity=None`` (the default) means that full
neighbourhood for the array's number of axes (3 for (z, y, x), 2 for (y, x)).

:class:`Postprocessing` is the one road from a probability map to labels: a model card's recipe
(or the user's threshold) as a frozen, validated value, with :meth:`Postprocessing.apply`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.postprocess.level import LevelRule

__all__ = ["threshold", "hysteresis", "remove_small", "fill_holes", "hole_mask", "probability_to_labels",
           "Postprocessing", "METHODS", "LevelRule"]

#: The post-processing methods a model card may name.
METHODS = ("threshold", "hysteresis")


def _check_array(data: Any, what: str) -> np.ndarray:
    """Return ``data`` as a 2D or 3D real NumPy array without NaN, or raise :class:`InputError`."""
    array = np.asarray(data)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"the {what} has data type {array.dtype}; give a numeric array")
    if np.iscomplexobj(array):
        raise InputError(f"the {what} is complex; give real numbers")
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(f"the {what} has shape {array.shape}; give a non-empty 2D (y, x) or 3D "
                         "(z, y, x) array")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise InputError(f"the {what} contains NaN values; replace them (e.g. np.nan_to_num) first")
    return array


def _check_level(value: Any, name: str) -> float:
    try:
        level = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={value!r} is not a number") from err
    if not math.isfinite(level):
        raise InputError(f"{name}={value!r} must be a finite number, e.g. 0.5")
    return level


def _structure(ndim: int, connectivity: Any) -> np.ndarray:
    """The structuring element of ``connectivity`` (None: the full neighbourhood) in ``ndim`` D."""
    if connectivity is None:
        connectivity = ndim
    if isinstance(connectivity, bool) or connectivity not in range(1, ndim + 1):
        names = {1: "faces", 2: "edges", 3: "corners"}
        choices = ", ".join(f"{k} ({names[k]})" for k in range(1, ndim + 1))
        raise InputError(f"connectivity {connectivity!r} is not valid for {ndim}D data; "
                         f"choose {choices}")
    return ndi.generate_binary_structure(ndim, int(connectivity))


def _check_size(value: Any, name: str) -> int:
    try:
        ok = float(value).is_integer() and value >= 0 and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={value!r} must be a whole number of voxels >= 0")
    return int(value)


def threshold(prob: Any, level: float = 0.5) -> np.ndarray:
    """Label the voxels whose probability is above ``level``.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability (or any score) per voxel.
    level : float
        Voxels with ``prob > level`` become vessel.

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.

    Examples
    --------
    >>> threshold(np.array([[0.2, 0.5, 0.9]]))
    array([[0, 0, 1]], dtype=uint8)
    """
    prob = _check_array(prob, "probability map")
    return (prob > _check_level(level, "level")).astype(np.uint8)


def hysteresis(prob: Any, low: float, high: float, *, connectivity: int | None = None) -> np.ndarray:
    """Hysteresis threshold: keep regions above ``low`` that contain a voxel above ``high``.

    Faint stretches of a vessel survive when they are connected to a confident part, while
    isolated faint noise does not. With ``connectivity=1`` this equals
    :func:`skimage.filters.apply_hysteresis_threshold`.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability (or any score) per voxel.
    low, high : float
        Lower and upper thresholds (``low <= high``); comparisons are strict (``>``).
    connectivity : int, optional
        Neighbourhood joining voxels of one region, from 1 (faces) to ``prob.ndim`` (corners);
        None: ``prob.ndim``.

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.
    """
    prob = _check_array(prob, "probability map")
    low, high = _check_level(low, "low"), _check_level(high, "high")
    if low > high:
        raise InputError(f"low={low} is above high={high}; the low threshold must not exceed the "
                         "high one")
    components, count = ndi.label(prob > low, structure=_structure(prob.ndim, connectivity))
    if count == 0:
        return np.zeros(prob.shape, dtype=np.uint8)
    confident = np.zeros(count + 1, dtype=bool)
    confident[np.unique(components[prob > high])] = True
    confident[0] = False
    return confident[components].astype(np.uint8)


def remove_small(labels: Any, min_size: int, *, connectivity: int | None = None) -> np.ndarray:
    """Remove connected vessel pieces with fewer than ``min_size`` voxels.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X) or (Y, X)
        Labels; any non-zero value is vessel.
    min_size : int
        Pieces with fewer voxels than this are set to 0 (0 or 1 keeps everything).
    connectivity : int, optional
        Neighbourhood joining voxels of one piece, from 1 (faces) to ``labels.ndim`` (corners);
        None: ``labels.ndim``.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
        The labels with small pieces set to 0; other voxels keep their value.
    """
    labels = _check_array(labels, "labels")
    min_size = _check_size(min_size, "min_size")
    structure = _structure(labels.ndim, connectivity)
    if min_size <= 1:
        return labels.copy()
    components, count = ndi.label(labels != 0, structure=structure)
    small = np.bincount(components.ravel(), minlength=count + 1) < min_size
    small[0] = False
    out = labels.copy()
    out[small[components]] = 0
    return out


def hole_mask(foreground: np.ndarray, *, per_slice: bool = False) -> np.ndarray:
    """The holes of a mask: background voxels enclosed by foreground (in 3D, or within each
    slice with ``per_slice``), as a boolean array of the same shape."""
    if per_slice:
        filled = np.stack([ndi.binary_fill_holes(plane) for plane in foreground])
    else:
        filled = ndi.binary_fill_holes(foreground)
    return filled & ~foreground


def fill_holes(labels: Any, *, per_slice: bool = False, max_size: int | None = None) -> np.ndarray:
    """Fill background regions that vessel voxels enclose completely.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X) or (Y, X)
        Labels; any non-zero value is vessel.
    per_slice : bool
        False: fill cavities closed in the full array. True (3D only): fill holes closed within
        each z slice, such as the dark lumen of a vessel running along z, which is open at both
        ends in 3D.
    max_size : int, optional
        Leave holes with more voxels than this open. Useful per slice, where a ring of vessels
        can enclose tissue that must stay background.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
        The labels with holes set to the largest label value present (1 for 0/1 labels).
    """
    labels = _check_array(labels, "labels")
    if per_slice and labels.ndim != 3:
        raise InputError(f"per_slice needs a 3D (z, y, x) array; these labels are {labels.ndim}D. "
                         "Use per_slice=False for a single slice.")
    if max_size is not None:
        max_size = _check_size(max_size, "max_size")
    foreground = labels != 0
    holes = hole_mask(foreground, per_slice=per_slice)
    if max_size is not None and holes.any():
        structure = ndi.generate_binary_structure(labels.ndim, 1)
        if per_slice:  # a hole is a region within one slice
            structure[0] = structure[2] = False
        pieces, count = ndi.label(holes, structure=structure)
        large = np.bincount(pieces.ravel(), minlength=count + 1) > max_size
        large[0] = False
        holes &= ~large[pieces]
    out = labels.copy()
    if holes.any():
        out[holes] = labels.max()
    return out


def probability_to_labels(prob: Any, *, level: float = 0.5, min_size: int = 0, fill: bool = False,
                          connectivity: int | None = None) -> np.ndarray:
    """Threshold a probability map and clean it up in one call.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability of vessel per voxel.
    level : float
        Voxels with ``prob > level`` become vessel (see :func:`threshold`).
    min_size : int
        Remove pieces with fewer voxels than this (see :func:`remove_small`); 0 keeps all.
    fill : bool
        Fill cavities enclosed in 3D (see :func:`fill_holes`).
    connectivity : int, optional
        Neighbourhood for ``min_size``, from 1 (faces) to ``prob.ndim`` (corners); None:
        ``prob.ndim``.

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.
    """
    labels = threshold(prob, level)
    _structure(labels.ndim, connectivity)
    if _check_size(min_size, "min_size"):
        labels = remove_small(labels, min_size, connectivity=connectivity)
    if fill:
        labels = fill_holes(labels)
    return labels


#: Keys of a recipe's JSON form that :class:`Postprocessing` reads; any other is kept as a note.
_KEYS = ("method", "level", "low", "high", "min_size", "fill_holes", "max_hole", "connectivity",
         "level_rule")


def _whole(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    return _check_size(value, name)


@dataclass(frozen=True)
class Postprocessing:
    """How a probability map becomes vessel labels: the one road (:meth:`apply`).

    The JSON form (:meth:`to_dict`, :meth:`from_dict`) is the ``postprocessing`` of a model card
    and of a run manifest: ``{"method": "threshold", "level": 0.5, "min_size": 0}`` or
    ``{"method": "hysteresis", "low": 0.45, "high": 0.95, "min_size": 64, "fill_holes": true,
    "max_hole": 64}`` (paper 003).

    Parameters
    ----------
    method : {"threshold", "hysteresis"}
        A plain threshold, or a hysteresis threshold (:func:`hysteresis`).
    threshold : float
        In [0, 1]: voxels above it are vessel (the JSON ``level``); for hysteresis the low level
        (the JSON ``low``).
    high : float, optional
        Hysteresis only (required there): regions must hold a voxel above it; in
        [``threshold``, 1].
    min_size : int
        Remove vessel pieces with fewer voxels (:func:`remove_small`); 0 keeps all.
    fill_holes : bool
        Fill holes (:func:`fill_holes`): cavities enclosed in 3D for a threshold, holes closed
        within each z slice (up to ``max_hole`` voxels) for hysteresis, as in paper 003.
    max_hole : int, optional
        Hysteresis with ``fill_holes``: leave holes with more voxels open (None: fill all).
    connectivity : int, optional
        Neighbourhood joining voxels of one piece, 1 (faces) to the array's number of axes
        (corners); None: the full neighbourhood of the array.
    notes : mapping
        Other keys of the JSON form (e.g. ``chosen_on``, ``function``), kept for the record and
        written back by :meth:`to_dict`; they do not change the labels.
    rule : LevelRule, optional
        A plain threshold whose level follows the volume (the JSON ``level_rule``,
        :mod:`napari_vessel.postprocess.level`): :meth:`resolve` reads the map's vessel fraction
        and fixes the level; ``threshold`` is then only the fallback a reader without the rule
        would use.

    Raises
    ------
    InputError
        An unknown method, a level outside [0, 1], ``high`` missing for hysteresis or given for a
        threshold, ``threshold`` above ``high``, negative or fractional sizes, a connectivity
        other than 1, 2 or 3.

    Examples
    --------
    >>> Postprocessing(threshold=0.5).apply(np.array([[0.2, 0.5, 0.9]]))
    array([[0, 0, 1]], dtype=uint8)
    """

    method: str = "threshold"
    threshold: float = 0.5
    high: float | None = None
    min_size: int = 0
    fill_holes: bool = False
    max_hole: int | None = None
    connectivity: int | None = None
    notes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    rule: LevelRule | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown post-processing method {self.method!r}; the model card "
                             "may name 'threshold' or 'hysteresis'")
        hyst = self.method == "hysteresis"
        name = "low" if hyst else "threshold"
        level = _check_level(self.threshold, name)
        if not 0.0 <= level <= 1.0:
            raise InputError(f"{name} must be between 0 and 1, not {self.threshold}")
        object.__setattr__(self, "threshold", level)
        if hyst:
            if self.high is None:
                raise InputError("hysteresis needs a high level; give high (e.g. 0.95)")
            high = _check_level(self.high, "high")
            if not level <= high <= 1.0:
                raise InputError(f"high={self.high} must be between low={level} and 1; the low "
                                 "threshold must not exceed the high one")
            object.__setattr__(self, "high", high)
        elif self.high is not None:
            raise InputError(f"high={self.high!r} is a hysteresis level; give method='hysteresis' "
                             "or leave high unset for a plain threshold")
        object.__setattr__(self, "min_size", _check_size(self.min_size, "min_size"))
        if not isinstance(self.fill_holes, bool | np.bool_):
            raise InputError(f"fill_holes={self.fill_holes!r} must be true or false")
        object.__setattr__(self, "fill_holes", bool(self.fill_holes))
        object.__setattr__(self, "max_hole", _whole(self.max_hole, "max_hole", optional=True))
        if self.connectivity is not None:
            _structure(3, self.connectivity)
            object.__setattr__(self, "connectivity", int(self.connectivity))
        if not isinstance(self.notes, Mapping):
            raise InputError(f"notes={self.notes!r} must be a mapping of extra JSON entries")
        object.__setattr__(self, "notes", dict(self.notes))
        if self.rule is not None and not isinstance(self.rule, LevelRule):
            raise InputError(f"rule={self.rule!r} must be a LevelRule (read the JSON form with "
                             "LevelRule.from_dict)")
        if self.rule is not None and hyst:
            raise InputError("a level rule sets a plain threshold; it cannot go with hysteresis")

    @classmethod
    def from_dict(cls, recipe: Mapping[str, Any] | None) -> Postprocessing:
        """Read the JSON form (a model card's or a manifest's ``postprocessing``).

        Missing keys take the defaults of the card format: method ``threshold``, ``level`` 0.5,
        hysteresis ``low`` 0.45 and ``high`` 0.95, ``min_size`` 0, no hole filling. None gives a
        plain threshold at 0.5.

        Raises
        ------
        InputError
            Not a mapping, or values :class:`Postprocessing` refuses.
        """
        if recipe is None:
            return cls()
        if not isinstance(recipe, Mapping):
            raise InputError(f"the post-processing {recipe!r} must be a JSON object such as "
                             '{"method": "threshold", "level": 0.5}')
        method = recipe.get("method", "threshold")
        hyst = method == "hysteresis"
        level = recipe.get("low", 0.45) if hyst else recipe.get("level", 0.5)
        return cls(method=method, threshold=level,
                   high=recipe.get("high", 0.95) if hyst else recipe.get("high"),
                   min_size=recipe.get("min_size", 0),
                   fill_holes=bool(recipe.get("fill_holes", False)),
                   max_hole=recipe.get("max_hole"), connectivity=recipe.get("connectivity"),
                   notes={k: v for k, v in recipe.items() if k not in _KEYS},
                   rule=(None if recipe.get("level_rule") is None
                         else LevelRule.from_dict(recipe["level_rule"])))

    @classmethod
    def for_model(cls, spec: Any, threshold: float | None = None,
                  min_size: int = 0) -> Postprocessing:
        """How :func:`~napari_vessel.inference.run.segment` turns a model's map into labels.

        Parameters
        ----------
        spec : ModelSpec
            The model.
        threshold : float, optional
            The user's threshold: when given, a plain threshold at this level, whatever the card
            says (the user's choice wins, and the labels can be redone from the map the same
            way).
        min_size : int
            Remove vessel pieces smaller than this; 0 keeps the post-processing's own value.

        Returns
        -------
        Postprocessing
            The model's ``postprocessing`` (e.g. hysteresis 0.45/0.95 and clean-up for the paper
            003 cascades) when no threshold is given, else a plain threshold at ``threshold``,
            else at the card's ``threshold``, else at 0.5.

        Raises
        ------
        InputError
            A threshold outside [0, 1], a negative ``min_size``, an invalid card recipe.
        """
        min_size = _check_size(min_size, "min_size")
        if threshold is None and spec.postprocessing:
            recipe = cls.from_dict({k: v for k, v in dict(spec.postprocessing).items()
                                    if k != "function"})
            return replace(recipe, min_size=min_size) if min_size else recipe
        if threshold is None:
            threshold = spec.threshold if spec.threshold is not None else 0.5
        level = _check_level(threshold, "threshold")
        if not 0.0 <= level <= 1.0:
            raise InputError(f"threshold must be between 0 and 1, not {threshold}")
        return cls(threshold=level, min_size=min_size)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as model cards and run manifests hold it (see :meth:`from_dict`)."""
        if self.method == "hysteresis":
            out: dict[str, Any] = {"method": self.method, "low": self.threshold,
                                   "high": self.high}
        else:
            out = {"method": self.method, "level": self.threshold}
        out["min_size"] = self.min_size
        if self.fill_holes:
            out["fill_holes"] = True
        if self.max_hole is not None:
            out["max_hole"] = self.max_hole
        if self.connectivity is not None:
            out["connectivity"] = self.connectivity
        if self.rule is not None:
            out["level_rule"] = self.rule.to_dict()
        out.update(self.notes)
        return out

    def resolve(self, prob: Any = None, *, fraction: float | None = None) -> Postprocessing:
        """The recipe with its level fixed for one volume (itself when it has no level rule).

        Parameters
        ----------
        prob : array-like, optional
            The volume's whole probability map (NumPy, Zarr or dask; read in slabs).
        fraction : float, optional
            Instead of ``prob``: the fraction of its voxels above the rule's probe, when the
            caller has counted it already (e.g. block by block).

        Returns
        -------
        Postprocessing
            A plain recipe at the rule's level, without the rule; its ``level_from`` note
            records the fraction read and the rule, so that the run manifest says how the level
            was chosen and reproduces the labels as they are.
        """
        if self.rule is None:
            return self
        if fraction is None:
            if prob is None:
                raise InputError("a level rule needs the probability map (or its fraction) to "
                                 "choose the level")
            level, fraction = self.rule.level(prob)
        else:
            level = self.rule.level_for(fraction)
        note = {"rule": self.rule.to_dict(), "fraction": round(float(fraction), 6),
                "fallback_level": self.threshold}
        return replace(self, threshold=round(level, 6), rule=None,
                       notes={**self.notes, "level_from": note})

    def rethreshold(self, threshold: float, min_size: int | None = None) -> Postprocessing:
        """The same recipe at another threshold (the slider): ``replace(self, threshold=...)``.

        For hysteresis ``threshold`` is the new low level; a high level below it rises to it
        (hysteresis with low == high is a plain threshold at that level).

        Parameters
        ----------
        threshold : float
            The new (low) level, in [0, 1].
        min_size : int, optional
            The new smallest piece kept; None keeps the recipe's.
        """
        level = _check_level(threshold, "threshold")
        # the user's level: no rule, and no note saying the rule chose it
        changes: dict[str, Any] = {"threshold": level, "rule": None,
                                   "notes": {k: v for k, v in self.notes.items()
                                             if k != "level_from"}}
        if self.method == "hysteresis" and self.high is not None and level > self.high:
            changes["high"] = level
        if min_size is not None:
            changes["min_size"] = min_size
        return replace(self, **changes)

    def describe(self) -> str:
        """A short text, e.g. ``"hysteresis 0.45/0.95, min 64, fill"`` (for tables)."""
        if self.method == "hysteresis":
            text = f"hysteresis {self.threshold}/{self.high}"
        elif self.rule is not None:
            text = "threshold from the vessel fraction (card's level rule)"
        elif isinstance(self.notes.get("level_from"), Mapping):
            note = self.notes["level_from"]
            probe = (note.get("rule") or {}).get("probe", 0.5)
            fraction = note.get("fraction")
            read = f", {100 * float(fraction):.1f} % above {float(probe):g}" \
                if isinstance(fraction, int | float) else ""
            text = f"threshold {self.threshold:.3g} (level rule{read})"
        else:
            text = f"threshold {self.threshold:.3g}"
        if self.min_size:
            text += f", min {self.min_size}"
        if self.fill_holes:
            text += ", fill"
        return text

    def apply(self, prob: Any) -> np.ndarray:
        """Labels from a probability map: threshold (or hysteresis), small-piece removal, holes.

        Parameters
        ----------
        prob : ndarray, shape (Z, Y, X) or (Y, X)
            Probability of vessel per voxel.

        Returns
        -------
        ndarray of uint8, same shape
            1 for vessel, 0 for background.

        Raises
        ------
        InputError
            A bad array, or a connectivity above its number of axes.
        """
        if self.rule is not None:  # the level of this map, read from the whole map
            return self.resolve(_check_array(prob, "probability map")).apply(prob)
        if self.method == "hysteresis":
            labels = hysteresis(prob, self.threshold, self.high, connectivity=self.connectivity)
        else:
            labels = threshold(prob, self.threshold)
            _structure(labels.ndim, self.connectivity)
        if self.min_size > 1:
            labels = remove_small(labels, self.min_size, connectivity=self.connectivity)
        if self.fill_holes and self.method == "hysteresis":
            labels = fill_holes(labels, per_slice=labels.ndim == 3, max_size=self.max_hole)
        elif self.fill_holes:
            labels = fill_holes(labels)
        return labels.astype(np.uint8, copy=False)

