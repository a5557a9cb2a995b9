"""Quantization backends: one module per library, registered by name (the torchao style).

A backend has up to two halves, each optional:

- a :class:`Quantizer` — what quantizes the modules of a torch model. It compiles a resolved plan
  (``{module name: LayerQuant | None}``, from :meth:`~hf_fairquant.QuantRecipe.plan`) into its
  library's modules: ``check`` (what it cannot do, before any work), ``apply`` (swap modules in,
  weights not frozen yet: QAT starts here), ``calibrate``, ``freeze``; ``prepare_qat`` /
  ``convert_qat`` bracket quantization-aware training; ``layer_bits`` reads a quantized model back;
  ``straight_through`` gives explain a differentiable twin where the library can.
- an :class:`ArtifactFormat` — what a saved model of the backend is: ``save`` / ``can_load`` /
  ``load``, and its publishing facts (:class:`Publishing`: the library, the card's
  ``library_name``, tags, how to load it, what plain transformers does with it).

Callers never branch on a backend's name: they ask :func:`get_backend` (by name),
:func:`quantizer_of` (for a quantized model) or :func:`artifact_for_folder` (for a saved folder).
Built-in backends are imported on first use, so ``import hf_fairquant`` loads no quantization
library. A backend written elsewhere registers with :func:`register_backend`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ...errors import FairQuantError, MissingFileError, UnsupportedByBackendError

if TYPE_CHECKING:  # the recipe module validates backend names against this registry; torch loads on use
    import torch

    from ..recipe import LayerQuant, QuantRecipe

Plan = Mapping[str, "LayerQuant | None"]

#: Built-in backends and the module that registers each (imported lazily).
_BUILTIN = {"quanto": f"{__name__}.quanto", "torchao": f"{__name__}.torchao", "onnxruntime": f"{__name__}.onnxruntime"}
#: The backend a recipe compiles to when it names none: the research path (2-bit, Conv2d, static a8).
DEFAULT_BACKEND = "quanto"
_REGISTRY: dict[str, "Backend"] = {}
#: Loggers of backend libraries that warn, on import, about optional GPU kernel libraries a CPU
#: machine cannot load (harmless): quieted unless the user has set their level.
_NOISY_LOGGERS = {"torchao": logging.ERROR}


def quiet_library_loggers() -> None:
    """Raise the level of :data:`_NOISY_LOGGERS` (left alone when the user has configured them);
    ``import hf_fairquant`` calls it, before any library is imported."""
    for name, level in _NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


class Quantizer:
    """What quantizes the modules of a torch model (subclass it in a backend's module)."""

    #: the backend's name (recipes, YAML and the CLI use it: ``backend: quanto``)
    name: str = ""

    def configure(self, recipe: "QuantRecipe") -> "Quantizer":
        """This quantizer with the recipe's backend options (e.g. ``group_size``); default: itself."""
        return self

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        """Raise :class:`~hf_fairquant.errors.UnsupportedByBackendError` for what this backend cannot
        do (naming the modules and the backend that can) — before any work."""

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """Swap each planned module for this backend's (weights not frozen: fake-quantized)."""
        raise NotImplementedError

    def quantize_module(self, module: torch.nn.Module, quant: "LayerQuant") -> torch.nn.Module:
        """A quantized copy of one module (unfrozen), for per-layer sensitivity passes."""
        raise NotImplementedError

    def needs_calibration(self, plan: Plan) -> bool:
        """True if :meth:`calibrate` must see data before ``freeze`` (static activation ranges)."""
        return any(q is not None and q.activation_bits for q in plan.values())

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """Record activation ranges over input ``batches`` (static activation quantization)."""
        raise NotImplementedError

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        """Store integer weights (the end of PTQ or QAT)."""
        raise NotImplementedError

    def is_frozen(self, model: torch.nn.Module) -> bool:
        """True once the quantized modules store integer weights (what an artifact saves)."""
        return True

    def prepare_qat(
        self, model: torch.nn.Module, plan: Plan, batches: Iterable[Mapping[str, torch.Tensor]] = (), range_momentum: float = 0.9
    ) -> Any:
        """Make ``model`` fake-quantize the planned modules for training (raise first what this
        backend cannot train). ``batches``: calibration inputs when :meth:`needs_calibration`.
        Returns an activation-range tracker (``.active``, ``.remove()``) or None."""
        raise UnsupportedByBackendError(f"backend {self.name} has no quantization-aware training")

    def convert_qat(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """After QAT: store the integer weights (the model the trainer saves)."""
        raise NotImplementedError

    def owns(self, model: torch.nn.Module) -> bool:
        """True if ``model`` holds modules quantized by this backend."""
        raise NotImplementedError

    def layer_bits(self, model: torch.nn.Module) -> "dict[str, LayerQuant]":
        """``{module name: LayerQuant}`` of the modules this backend quantized in ``model``."""
        raise NotImplementedError

    # explain measures the quantized model's gradients and curvature on a twin whose forward
    # quantizes the weights and whose backward passes straight through to float weights
    #: whether :meth:`straight_through` builds such a twin
    has_straight_through: bool = False

    def straight_through(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """``model`` (float, a copy the caller owns) made to fake-quantize ``plan``'s modules with
        straight-through gradients (see :attr:`has_straight_through`)."""
        raise UnsupportedByBackendError(f"backend {self.name} builds no straight-through quantized modules")

    def quantized_weight(self, module: torch.nn.Module) -> torch.Tensor:
        """The float values a quantized module computes with (integer weights dequantized)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Publishing:
    """What a model card and a push say about a backend's artifact."""

    #: the library that stores the weights (a card tag, and the prose)
    library: str
    #: True when plain ``transformers`` loads the folder (``from_pretrained``, ``pipeline()``)
    #: with ``library`` installed; else ``hf_fairquant.load_quantized`` does
    loads_with_transformers: bool
    #: one sentence on how the weights are stored and run (the card's "Quantization" section)
    note: str
    #: how activations marked ``a8`` are quantized (the per-layer table's legend)
    activations: str = "8-bit activations"
    #: what the card's limitations say about speed on a CPU ("" when nothing to add)
    speed_note: str = ""
    #: extra card tags
    tags: tuple[str, ...] = field(default=())

    @property
    def library_name(self) -> str:
        """The card's ``library_name``: transformers when it loads the folder (the Hub then shows
        the transformers snippet), else this package."""
        return "transformers" if self.loads_with_transformers else "hf-fairquant"

    def load_line(self, repo_id: str, auto_class: str, pipeline_tag: str) -> str:
        if self.loads_with_transformers:
            return (f"Loads with plain transformers (and {self.library} installed): `{auto_class}.from_pretrained(\"{repo_id}\")` "
                    f"or `pipeline(\"{pipeline_tag}\", model=\"{repo_id}\")`; no hf_fairquant needed.")
        return (f"Load it with `hf_fairquant.load_quantized(\"{repo_id}\")`: these are {self.library} weights, and plain "
                "`transformers.from_pretrained` refuses this folder (by design) rather than load random weights.")

    def quantization_text(self, effective_bits: float, layer_bits: Mapping[str, str]) -> str:
        """A card's quantization section: the library, what ``a8`` means here, the bits per layer."""
        rows = "\n".join(f"| `{n}` | {b} |" for n, b in layer_bits.items())
        return (f"{self.library} (weights per layer as below; `a8` = {self.activations}). "
                f"Mean weight bits, weighted by parameters: {effective_bits:.2f}.\n\n| layer | bits |\n| --- | --- |\n{rows}")

    def load_snippet(self, repo_id: str, auto_class: str, pipeline_tag: str) -> str:
        if self.loads_with_transformers:
            return (f"from transformers import {auto_class}, pipeline\n\n"
                    f"model = {auto_class}.from_pretrained(\"{repo_id}\")  # {self.library} integer weights, exact logits of the audited model\n"
                    f"pipe = pipeline(\"{pipeline_tag}\", model=\"{repo_id}\")  # with its preprocessor")
        return ("from hf_fairquant import load_quantized\n\n"
                f"model = load_quantized(\"{repo_id}\")  # integer weights, exact logits of the audited model")


class ArtifactFormat:
    """What a saved model of one backend is (subclass it in a backend's module)."""

    #: the backend's name (as its quantizer's)
    name: str = ""
    publishing: Publishing
    #: what a folder of this format holds, for messages ("" when it writes no folder)
    expects: str = ""

    def save(self, model: torch.nn.Module, folder: Path, recipe: "QuantRecipe | None" = None) -> None:
        """Write the artifact of ``model`` into the (temporary, empty) ``folder``."""
        raise NotImplementedError

    def can_load(self, folder: Path) -> bool:
        """True if ``folder`` holds this backend's artifact."""
        return False

    def load(self, folder: Path) -> torch.nn.Module:
        """Rebuild the model :meth:`save` wrote (eval mode); raise on any mismatch."""
        raise NotImplementedError

    def artifact_files(self) -> tuple[str, ...]:
        """File names :meth:`save` writes (replaced whole on a re-save; a push needs them)."""
        return ()

    # A loaded artifact that is not a tree of torch modules (an ONNX Runtime session) describes
    # itself to the generic verbs (is_quantized, layer_bits, effective_bits, model_size_bytes).
    def owns(self, model: torch.nn.Module) -> bool:
        """True if ``model`` is a loaded artifact of this format that describes itself."""
        return False

    def layer_table(self, model: torch.nn.Module) -> "dict[str, LayerQuant | None]":
        """Every weight-bearing module's bits (None: float)."""
        raise NotImplementedError

    def effective_bits(self, model: torch.nn.Module) -> float:
        """Parameter-weighted mean weight bits."""
        raise NotImplementedError

    def size_bytes(self, model: torch.nn.Module) -> int:
        """Bytes of the artifact's files."""
        raise NotImplementedError


@dataclass(frozen=True)
class Backend:
    """A registered backend: its name and its halves (either may be None)."""

    name: str
    quantizer: Quantizer | None = None
    artifact: ArtifactFormat | None = None


def register_backend(name: str, quantizer: Quantizer | None = None, artifact: ArtifactFormat | None = None) -> Backend:
    """Make a backend available by ``name`` (a quantizer, an artifact format, or both)."""
    if not name or not isinstance(name, str):
        raise FairQuantError(f"a backend needs a name, got {name!r}")
    if quantizer is None and artifact is None:
        raise FairQuantError(f"backend {name!r} has neither a quantizer nor an artifact format")
    for half in (quantizer, artifact):
        if half is not None and half.name != name:
            raise FairQuantError(f"{type(half).__name__}.name is {half.name!r}; set it to the backend's name {name!r}")
    backend = Backend(name, quantizer, artifact)
    _REGISTRY[name] = backend
    return backend


def available_backends() -> list[str]:
    """Names :func:`get_backend` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_backend(name: str) -> Backend:
    """The registered backend called ``name`` (a built-in one is imported on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise FairQuantError(f"unknown quantization backend {name!r}; allowed: {available_backends()}") from None


def quantizing_backends() -> list[str]:
    """Backends that quantize torch modules (a recipe may compile to them)."""
    return [n for n in available_backends() if get_backend(n).quantizer is not None]


def publishable_backends() -> list[str]:
    """Backends that both quantize torch modules and save them (a run can publish with them)."""
    return [n for n in available_backends() if get_backend(n).quantizer is not None and get_backend(n).artifact is not None]


def get_quantizer(name: str) -> Quantizer:
    """The quantizer of backend ``name`` (an artifact-only backend is an error that says so)."""
    backend = get_backend(name)
    if backend.quantizer is None:
        raise UnsupportedByBackendError(
            f"backend {name} is an artifact format, not a quantizer of torch modules; recipes compile to "
            f"{quantizing_backends()}"
        )
    return backend.quantizer


def get_artifact(name: str) -> ArtifactFormat:
    """The artifact format of backend ``name``."""
    backend = get_backend(name)
    if backend.artifact is None:
        raise UnsupportedByBackendError(f"backend {name} writes no artifact of its own")
    return backend.artifact


def quantizer_of(model: torch.nn.Module) -> Quantizer | None:
    """The quantizer whose modules ``model`` holds (None for a float model). Only backends already
    imported are asked: a model cannot hold modules of a library that was never loaded."""
    for backend in list(_REGISTRY.values()):
        if backend.quantizer is not None and backend.quantizer.owns(model):
            return backend.quantizer
    return None


def loaded_artifact_of(model: torch.nn.Module) -> ArtifactFormat | None:
    """The artifact format of a loaded artifact that describes itself (an ONNX Runtime model), or None."""
    for backend in list(_REGISTRY.values()):
        if backend.artifact is not None and backend.artifact.owns(model):
            return backend.artifact
    return None


def artifact_for_folder(folder: Path) -> ArtifactFormat:
    """The artifact format ``folder`` holds (every built-in backend is asked)."""
    for name in available_backends():
        artifact = get_backend(name).artifact
        if artifact is not None and artifact.can_load(folder):
            return artifact
    expected = [f"{get_backend(n).artifact.publishing.library}: {get_backend(n).artifact.expects}"
                for n in available_backends() if get_backend(n).artifact is not None and get_backend(n).artifact.expects]
    raise MissingFileError(
        f"{folder} holds no quantized model this package can load (asked backends {available_backends()}); "
        f"a folder written by hf_fairquant.save_quantized holds {'; or '.join(expected)}"
    )


def transformers_native(name: str) -> bool:
    """Whether backend ``name``'s artifact loads with plain transformers."""
    artifact = get_backend(name).artifact
    return artifact is not None and artifact.publishing.loads_with_transformers


def publishable_with_transformers(model: torch.nn.Module, plan: Plan, recipe: "QuantRecipe") -> str | None:
    """The first backend whose artifact plain transformers loads and whose quantizer can take
    ``plan`` on ``model`` (None if none can) — what ``publish_backend: auto`` picks."""
    for name in available_backends():
        backend = get_backend(name)
        if backend.quantizer is None or not transformers_native(name):
            continue
        try:
            backend.quantizer.configure(recipe).check(model, plan)
        except UnsupportedByBackendError:
            continue
        return name
    return None


__all__ = [
    "ArtifactFormat", "Backend", "DEFAULT_BACKEND", "Plan", "Publishing", "Quantizer", "artifact_for_folder",
    "available_backends", "get_artifact", "get_backend", "get_quantizer", "loaded_artifact_of",
    "publishable_backends", "publishable_with_transformers", "quantizer_of", "quantizing_backends", "register_backend", "transformers_native",
]
