"""One registry of segmentation models: networks, fine-tuned user models and classical methods.

Every model the plugin can run is a :class:`ModelSpec`. Model modules register their specs when they
are imported (``register(ModelSpec(...))`` at module level); the registry imports the built-in model
modules lazily, the first time a name is looked up or the list is asked for, so importing the
package stays cheap. Models the user trained or fine-tuned live in the user models folder
(:func:`user_models_dir`) as ``NAME.safetensors`` + ``NAME.json`` pairs; every card found there
becomes a spec built on the registered architecture it names.

Widgets and the command line list models only from here (:func:`list_models`); an unknown name is
an :class:`~napari_vessel.errors.InputError` that suggests the closest names, never a silent
fallback.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.models.card import FORMAT_VERSION, ModelCard

__all__ = [
    "ModelSpec",
    "KINDS",
    "BUILTIN_MODULES",
    "DEFAULT_ORDER",
    "register",
    "unregister",
    "get",
    "list_models",
    "default_model_name",
    "user_models_dir",
    "load_model",
    "count_parameters",
    "is_package_spec",
    "untouched",
]

#: The kinds of model: trained with labels, trained without, or not trained at all.
KINDS = ("supervised", "unsupervised", "classical")

#: Modules that register built-in models when imported. A module that does not exist (yet) is
#: skipped quietly; one that fails to import is skipped with a warning naming the error.
BUILTIN_MODULES = (
    "napari_vessel.models.umis",
    "napari_vessel.models.tvnet",
    "napari_vessel.models.vcnet",
    "napari_vessel.models.cascades",
    "napari_vessel.models.deepvess",
    "napari_vessel.models.vesselnn",
    "napari_vessel.models.classical",
)

#: The recommended model is the first of these that is registered and usable (classical, or a
#: network whose weights are shipped). Put the best-validated model first.
DEFAULT_ORDER = ("tvnet", "umis", "frangi", "morph-acwe")

#: Environment variable that overrides the user models folder.
MODELS_ENV = "NAPARI_VESSEL_MODELS"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, load, run and describe one model.

    Parameters
    ----------
    name : str
        Unique name, used on the command line and in the widgets (lower case, dashes).
    kind : {"supervised", "unsupervised", "classical"}
        How the model learned (classical: not at all).
    description : str
        One line for lists and tooltips.
    builder : callable, optional
        ``builder(**config) -> torch.nn.Module`` for networks; None for classical models.
    predict : callable, optional
        For classical models: ``predict(volume, spacing_zyx, **params) -> probability`` with the
        volume a float array (Z, Y, X) and the result float32 in [0, 1] of the same shape.
        One that accepts a ``cancel`` keyword is given the run's
        :class:`~napari_vessel.progress.CancelToken` to check between its steps.
    config : dict
        Keyword arguments of ``builder`` (networks) or default ``params`` of ``predict``.
    weights : Path, optional
        The ``.safetensors`` file; None when no trained weights exist (yet).
    card : ModelCard, optional
        The model card (see :mod:`napari_vessel.models.card`); read from the JSON file beside
        ``weights`` when not given. A dict is turned into a :class:`ModelCard` (named like the
        model when it names nothing; an empty dict is None), so model modules may give a few
        notes (``paper``, ``notes``, ...) for networks without weights.
    patch_size_zyx : tuple of 3 int
        Patch size for sliding-window inference (z of 1 for a 2D model).
    input_multiple_zyx : tuple of 3 int
        Every network input size must be a multiple of these (the product of the strides of the
        down-sampling layers per axis); the inference engine pads or rounds patches to them.
    dims : {2, 3}
        3 for volumetric networks; 2 for networks applied slice by slice.
    preprocessing : dict, optional
        The preprocessing pipeline (JSON form) the model expects its input to have gone through.
    postprocessing : dict, optional
        How the probability map becomes labels when the user gives no threshold (JSON form, see
        :meth:`napari_vessel.postprocess.labels.Postprocessing.from_dict`), e.g. paper 003's
        hysteresis.
        None: a plain threshold at the card's ``threshold`` (else 0.5).
    intensity_profile : dict, optional
        Intensity statistics of the training data, for warning on unusual input.
    trainable : bool
        Whether fine-tuning can start from this model.
    architecture : str
        Identifier of the builder; user cards name it to find the builder. Defaults to ``name``.
    source : {"builtin", "user"}
        Shipped with the package or found in the user models folder.
    output : {"probability", "logits"}
        What the network's segmentation output is; the engine applies a sigmoid to logits.
    min_slices : int
        The fewest slices a network input may have (VC-Net: its slab of sliding MIPs); the
        engine refuses thinner stacks with a clear message before running anything.
    """

    name: str
    kind: str
    description: str
    builder: Callable[..., Any] | None = None
    predict: Callable[..., Any] | None = None
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    weights: Path | None = None
    card: ModelCard | None = field(default=None, hash=False)
    patch_size_zyx: tuple[int, int, int] = (32, 128, 128)
    input_multiple_zyx: tuple[int, int, int] = (1, 1, 1)
    dims: int = 3
    preprocessing: Mapping[str, Any] | None = field(default=None, hash=False)
    postprocessing: Mapping[str, Any] | None = field(default=None, hash=False)
    intensity_profile: Mapping[str, Any] | None = field(default=None, hash=False)
    trainable: bool = True
    architecture: str = ""
    source: str = "builtin"
    output: str = "probability"
    min_slices: int = 1

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"model name {self.name!r} must be a non-empty word")
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.output not in ("probability", "logits"):
            raise ValueError(f"model {self.name!r}: output must be 'probability' or 'logits'")
        if isinstance(self.min_slices, bool) or int(self.min_slices) < 1:
            raise ValueError(f"model {self.name!r}: min_slices must be at least 1")
        if self.dims not in (2, 3):
            raise ValueError(f"model {self.name!r}: dims must be 2 or 3, not {self.dims!r}")
        if self.kind == "classical":
            if self.predict is None:
                raise ValueError(f"classical model {self.name!r} needs a predict function")
        elif self.builder is None:
            raise ValueError(f"network {self.name!r} needs a builder")
        patch = tuple(int(p) for p in self.patch_size_zyx)
        multiple = tuple(int(m) for m in self.input_multiple_zyx)
        if len(patch) != 3 or min(patch) < 1 or len(multiple) != 3 or min(multiple) < 1:
            raise ValueError(f"model {self.name!r}: patch size and multiples need 3 positive ints")
        object.__setattr__(self, "patch_size_zyx", patch)
        object.__setattr__(self, "input_multiple_zyx", multiple)
        object.__setattr__(self, "config", dict(self.config))
        card = self.card
        if card is not None and not isinstance(card, ModelCard):
            card = ModelCard.from_dict({"format_version": FORMAT_VERSION, "name": self.name,
                                        **card}) if card else None
        object.__setattr__(self, "card", card)
        if not self.architecture:
            object.__setattr__(self, "architecture", self.name)
        if self.weights is not None:
            object.__setattr__(self, "weights", Path(self.weights))

    @property
    def is_network(self) -> bool:
        """True for a neural network (it has a builder)."""
        return self.builder is not None

    @property
    def has_weights(self) -> bool:
        """True when trained weights exist on disk."""
        return self.weights is not None and self.weights.is_file()

    @property
    def usable(self) -> bool:
        """True when the model can segment now (classical, or a network with weights)."""
        return self.kind == "classical" or self.has_weights

    @property
    def threshold(self) -> float:
        """The vessel-probability threshold the card recommends, else 0.5 (the one rule).

        A card value of 0 stays 0. The card checked it when it was made (a number from 0 to 1).
        """
        value = self.card.threshold if self.card is not None else None
        return 0.5 if value is None else value


_BUILTIN: dict[str, ModelSpec] = {}
_builtins_loaded = False


def _read_card(weights: Path) -> ModelCard | None:
    """The card beside ``weights``; None when there is none, None and a warning when it is
    invalid (loading the model then names the problem)."""
    card_path = weights.with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        return ModelCard.read(card_path)
    except InputError as err:
        warnings.warn(f"{err}; the model is listed without its card", stacklevel=3)
        return None


def register(spec: ModelSpec, *, replace_existing: bool = False) -> ModelSpec:
    """Add a model to the registry; model modules call this at import.

    Parameters
    ----------
    spec : ModelSpec
        The model. When it names weights but no card, the card is read from the JSON file beside
        the weights (and its preprocessing / intensity profile fill the spec's empty fields).
    replace_existing : bool
        Replace a model of the same name instead of raising.

    Returns
    -------
    ModelSpec
        The registered spec (with its card filled in).
    """
    if spec.name in _BUILTIN and not replace_existing:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    card = _read_card(spec.weights) if spec.weights is not None and not spec.card else None
    if card is not None:
        spec = replace(
            spec,
            card=card,
            preprocessing=spec.preprocessing or card.preprocessing,
            postprocessing=card.postprocessing or spec.postprocessing,  # fitted levels
            intensity_profile=spec.intensity_profile or card.intensity_profile,
        )
    _BUILTIN[spec.name] = spec
    if sys._getframe(1).f_globals.get("__name__") in BUILTIN_MODULES:
        _PACKAGE_NAMES.add(spec.name)
    else:  # a plugin's or a test's model, or a replaced built-in one
        _PACKAGE_NAMES.discard(spec.name)
    return spec


def unregister(name: str) -> None:
    """Remove a model from the registry (for tests and plugins); unknown names are ignored."""
    _BUILTIN.pop(name, None)
    _PACKAGE_NAMES.discard(name)


#: Names whose registered spec comes from the package's own model modules (not replaced since).
_PACKAGE_NAMES: set[str] = set()


def untouched() -> bool:
    """True while nothing is registered yet in this process (no model module imported, no
    plugin's model): a name then resolves as in any fresh process."""
    return not _builtins_loaded and not _BUILTIN


def is_package_spec(spec: ModelSpec) -> bool:
    """Whether a fresh process resolves ``spec.name`` to this same spec: registered by the
    package's model modules and not replaced since, or a user model while every registered model
    is the package's own. :mod:`napari_vessel.runtime.warm` records only such specs, so that a
    later process can run them without importing the model modules (and PyTorch)."""
    if not _builtins_loaded or set(_BUILTIN) - _PACKAGE_NAMES:
        return False
    if spec.source == "user":
        return spec.name not in _BUILTIN
    return _BUILTIN.get(spec.name) is spec


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                warnings.warn(f"model module {module} could not be imported: {err}", stacklevel=3)
        except Exception as err:  # noqa: BLE001 - one broken model must not hide the others
            warnings.warn(f"model module {module} could not be imported: {err!r}", stacklevel=3)


def user_models_dir() -> Path:
    """The folder of user-trained and fine-tuned models.

    ``$NAPARI_VESSEL_MODELS`` when set, else ``~/.napari-vessel/models``. It is not created here;
    the code that saves a model creates it.
    """
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".napari-vessel" / "models"


#: Largest network a user card may describe (parameters): 50 x the largest shipped one.
MAX_PARAMETERS = 50_000_000


def user_config(card: ModelCard, base: ModelSpec) -> dict:
    """The builder configuration of a user model: its card's ``config`` as written (the one the
    weights were made with), else the registered architecture's. Never a mix of both: a card
    made with the earlier four-level ``tvnet`` must not inherit the shipped card's five-level
    strides."""
    return dict(base.config) if card.config is None else dict(card.config)


#: Results of :func:`_check_user_card` by card file and its size and modification time, so a
#: listing (every ``get``) does not build each user network again.
_CHECKED: dict[tuple, Any] = {}


def _checked_card(path: Path, card: ModelCard, base: ModelSpec,
                  weights_name: str) -> tuple[int, int, int] | None:
    """:func:`_check_user_card`, remembered until the card file changes."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, base.architecture)
    if key not in _CHECKED:
        try:
            _CHECKED[key] = _check_user_card(card, base, weights_name)
        except ValueError as err:
            _CHECKED[key] = err
    result = _CHECKED[key]
    if isinstance(result, ValueError):
        raise result
    return result


def _check_user_card(card: ModelCard, base: ModelSpec,
                     weights_name: str) -> tuple[int, int, int] | None:
    """Raise ValueError (the card is then skipped with a warning) unless a user card is sound.

    Checked when the card is read, before anything is built or loaded: the weights file lies in
    the card's own folder; the configuration builds the registered architecture (on PyTorch's
    ``meta`` device: no memory) with at most :data:`MAX_PARAMETERS` parameters; the patch size
    is at most 1024 per axis; the post-processing runs. (The card checked the types, the
    threshold and the patch's form when it was read.)
    Returns the network's input multiple when it has one (its down-sampling, which a card's
    config may change), else None.
    """
    import numpy as np
    import torch

    if Path(weights_name).name != weights_name or weights_name in ("", ".", ".."):
        raise ValueError(f"weights_file {weights_name!r} must be a file name in the card's own "
                         "folder")
    config = user_config(card, base)
    try:
        with torch.device("meta"):
            net = base.builder(**config)
    except (TypeError, ValueError, KeyError, InputError) as err:
        raise ValueError(f"its config does not build a {base.architecture} ({err})") from err
    count = sum(p.numel() for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"its config describes {count:,} parameters, more than the "
                         f"{MAX_PARAMETERS:,} a model here may have")
    patch = card.patch_size_zyx
    if patch is not None and max(patch) > 1024:
        raise ValueError(f"patch_size_zyx {list(patch)} must be three whole numbers from 1 to 1024")
    recipe = card.postprocessing
    if recipe is not None:
        from napari_vessel.postprocess.labels import Postprocessing

        try:
            Postprocessing.from_dict(recipe).apply(np.zeros((1, 4, 4), np.float32))
        except (InputError, TypeError, ValueError) as err:
            raise ValueError(f"its postprocessing is invalid ({err})") from err
    stride = getattr(net, "input_multiple", None) or getattr(net, "total_stride", None)
    return tuple(int(v) for v in stride) if stride is not None else None


def _user_specs() -> dict[str, ModelSpec]:
    """Specs for every readable card in the user models folder whose architecture is known."""
    folder = user_models_dir()
    if not folder.is_dir():
        return {}
    by_architecture: dict[str, ModelSpec] = {}
    for spec in _BUILTIN.values():
        if spec.is_network:
            by_architecture.setdefault(spec.architecture, spec)
    found: dict[str, ModelSpec] = {}
    for card_path in sorted(folder.glob("*.json")):
        if card_path.name.startswith("."):  # a save's temporary file, never a model
            continue
        try:
            raw = json.loads(card_path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or "format_version" not in raw:
                continue  # another JSON file (a run manifest, a checkpoint note): not a card
            card = ModelCard.read(card_path)
            name = card.name
            base = by_architecture.get(card.architecture or "")
            if base is None:
                warnings.warn(
                    f"user model card {card_path} names architecture "
                    f"{card.architecture!r}, which is not registered; skipped",
                    stacklevel=3,
                )
                continue
            if name in _BUILTIN or name in found:
                warnings.warn(
                    f"user model {card_path} is named {name!r} like another model; skipped",
                    stacklevel=3,
                )
                continue
            weights_name = card.weights_file or card_path.with_suffix(".safetensors").name
            multiple = _checked_card(card_path, card, base, weights_name)
            patch = card.patch_size_zyx or base.patch_size_zyx
            # a pipeline the card leaves out is the architecture's; one set to null is none
            stated = {key for key in ("preprocessing", "postprocessing", "intensity_profile")
                      if key in raw}
            found[name] = replace(
                base,
                name=name,
                kind=card.kind or base.kind,
                description=card.description or f"{name} (user model from {base.name})",
                config=user_config(card, base),
                weights=card_path.parent / weights_name,
                card=card,
                patch_size_zyx=tuple(patch),
                input_multiple_zyx=multiple or base.input_multiple_zyx,
                preprocessing=card.preprocessing if "preprocessing" in stated
                else base.preprocessing,
                postprocessing=card.postprocessing if "postprocessing" in stated
                else inherited_postprocessing(base.postprocessing),
                intensity_profile=card.intensity_profile if "intensity_profile" in stated
                else base.intensity_profile,
                source="user",
            )
        except (OSError, ValueError, TypeError, AttributeError) as err:
            warnings.warn(f"user model card {card_path} is unreadable ({err}); skipped",
                          stacklevel=3)
    return found


def _all_specs() -> dict[str, ModelSpec]:
    _load_builtins()
    return {**_BUILTIN, **_user_specs()}


def list_models(kind: str | None = None) -> list[ModelSpec]:
    """All registered models (built-in first, then user models), optionally of one kind."""
    specs = list(_all_specs().values())
    if kind is not None:
        if kind not in KINDS:
            raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
        specs = [s for s in specs if s.kind == kind]
    return specs


def get(name: str | ModelSpec) -> ModelSpec:
    """The model called ``name``.

    Raises
    ------
    InputError
        When no model has that name; the message lists the closest names and all names.
    """
    if isinstance(name, ModelSpec):
        return name
    specs = _all_specs()
    if name in specs:
        return specs[name]
    lowered = {n.lower(): n for n in specs}
    if str(name).lower() in lowered:
        return specs[lowered[str(name).lower()]]
    close = difflib.get_close_matches(str(name), list(specs), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(
        f"unknown model {name!r}; {hint}available models: {', '.join(sorted(specs)) or 'none'} "
        "(see 'napari-vessel models')"
    )


def default_model_name() -> str:
    """Name of the recommended model: the first usable one in :data:`DEFAULT_ORDER`."""
    specs = _all_specs()
    for name in DEFAULT_ORDER:
        if name in specs and specs[name].usable:
            return name
    for spec in specs.values():
        if spec.usable:
            return spec.name
    raise InputError("no usable model is registered; reinstall napari-vessel")


def count_parameters(spec: ModelSpec | str) -> int | None:
    """Number of parameters of a network (built on the meta device, so free); None if classical."""
    spec = get(spec)
    if not spec.is_network:
        return None
    import torch

    with torch.device("meta"):
        model = spec.builder(**spec.config)
    return int(sum(p.numel() for p in model.parameters()))


def load_model(name: str | ModelSpec, device: Any = None, *, allow_untrained: bool = False):
    """Build a network, load its weights and put it in eval mode on ``device``.

    Parameters
    ----------
    name : str or ModelSpec
        A registered network.
    device : str or torch.device, optional
        Where to put the model; ``None`` or ``"auto"`` picks CUDA, then MPS, then the CPU.
    allow_untrained : bool
        Return a randomly initialised network when no weights exist (for benchmarks and tests).

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``device``.
    spec : ModelSpec
        The model's spec (its card as read from the weights file).
    """
    from napari_vessel.devices import pick_device
    from napari_vessel.models.weights import load_weights

    spec = get(name)
    if not spec.is_network:
        raise InputError(
            f"{spec.name!r} is a classical method, not a network; run it with "
            "napari_vessel.inference.run.predict"
        )
    model = spec.builder(**spec.config)
    if spec.weights is not None and (spec.weights.exists() or spec.source == "user"):
        state, card = load_weights(spec.weights, model=model)
        spec = replace(spec, card=card)
    elif not allow_untrained:
        raise InputError(
            f"model {spec.name!r} has no trained weights yet; train it with "
            f"'napari-vessel train --model {spec.name}' or choose another model"
        )
    return model.to(pick_device(device)).eval(), spec


def inherited_postprocessing(recipe: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """What a user model whose card states no ``postprocessing`` takes from its architecture.

    A paper's hysteresis recipe (the cascades) belongs to the architecture and passes on. A plain
    threshold recipe belongs to the weights it was fitted for (the shipped ``tvnet``'s level rule):
    other weights use their own card's threshold instead, so None.
    """
    if recipe is None or recipe.get("method") != "hysteresis":
        return None
    return recipe
