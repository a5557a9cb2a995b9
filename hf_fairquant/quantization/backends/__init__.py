"""Quantization backends: one handler per library, registered by name (the torchao style).

A :class:`QuantBackend` compiles a resolved plan (``{module name: LayerQuant | None}``, from
:meth:`~hf_fairquant.QuantRecipe.plan`) into its library's modules. Every backend offers the same
steps — ``check`` (what it cannot do, before any work), ``apply`` (swap modules in, weights not
frozen yet: QAT starts here), ``calibrate``, ``freeze`` — and reads a quantized model back with
``layer_bits``; ``prepare_qat`` / ``convert_qat`` bracket quantization-aware training; ``save`` /
``can_load`` / ``load`` write and read the backend's artifact. Callers never branch on a backend's name: they ask :func:`get_backend` (by name)
or :func:`backend_of` (for a quantized model). Built-in handlers are imported on first use, so
``import hf_fairquant`` loads no quantization library.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from ...errors import FairQuantError, MissingFileError

if TYPE_CHECKING:  # the recipe module validates backend names against this registry
    from ..recipe import LayerQuant, QuantRecipe

Plan = Mapping[str, "LayerQuant | None"]

#: Built-in backends and the module that registers each (imported lazily).
_BUILTIN = {"quanto": f"{__name__}.quanto", "torchao": f"{__name__}.torchao"}
_REGISTRY: dict[str, "QuantBackend"] = {}


class QuantBackend:
    """The interface every backend implements (subclass it, then :func:`register_backend`)."""

    #: the name recipes, YAML and the CLI use (``backend: quanto``)
    name: str = ""

    def configure(self, recipe: "QuantRecipe") -> "QuantBackend":
        """This backend with the recipe's backend options (e.g. ``group_size``); default: itself."""
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

    def prepare_qat(
        self, model: torch.nn.Module, plan: Plan, batches: Iterable[Mapping[str, torch.Tensor]] = (), range_momentum: float = 0.9
    ) -> Any:
        """Make ``model`` fake-quantize the planned modules for training (raise first what this
        backend cannot train). ``batches``: calibration inputs when :meth:`needs_calibration`.
        Returns an activation-range tracker (``.active``, ``.remove()``) or None."""
        raise NotImplementedError

    def convert_qat(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """After QAT: store the integer weights (the model the trainer saves)."""
        raise NotImplementedError

    def save(self, model: torch.nn.Module, folder: Path, recipe: "QuantRecipe | None" = None) -> None:
        """Write this backend's artifact of ``model`` into the (temporary, empty) ``folder``."""
        raise NotImplementedError

    def can_load(self, folder: Path) -> bool:
        """True if ``folder`` holds this backend's artifact (default: False — a backend that
        writes no folder :func:`load_quantized` reads)."""
        return False

    def load(self, folder: Path) -> torch.nn.Module:
        """Rebuild the model :meth:`save` wrote (eval mode); raise on any mismatch."""
        raise NotImplementedError

    def owns(self, model: torch.nn.Module) -> bool:
        """True if ``model`` holds modules quantized by this backend."""
        raise NotImplementedError

    def layer_bits(self, model: torch.nn.Module) -> "dict[str, LayerQuant]":
        """``{module name: LayerQuant}`` of the modules this backend quantized in ``model``."""
        raise NotImplementedError


def register_backend(backend: QuantBackend) -> QuantBackend:
    """Make ``backend`` available by ``backend.name`` (returns it, so it can decorate an instance)."""
    if not backend.name:
        raise FairQuantError(f"{type(backend).__name__} has no name: set QuantBackend.name")
    _REGISTRY[backend.name] = backend
    return backend


def available_backends() -> list[str]:
    """Names :func:`get_backend` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_backend(name: str) -> QuantBackend:
    """The registered backend called ``name`` (a built-in one is imported on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FairQuantError(f"unknown quantization backend {name!r}; allowed: {available_backends()}") from None


def backend_of(model: torch.nn.Module) -> QuantBackend | None:
    """The backend whose modules ``model`` holds (None for a float model). Only backends already
    imported are asked: a model cannot hold modules of a library that was never loaded."""
    for backend in list(_REGISTRY.values()):
        if backend.owns(model):
            return backend
    return None


def backend_for_folder(folder: Path) -> QuantBackend:
    """The backend whose artifact ``folder`` holds (every built-in backend is asked)."""
    for name in available_backends():
        backend = get_backend(name)
        if backend.can_load(folder):
            return backend
    raise MissingFileError(
        f"{folder} holds no quantized model this package wrote (asked backends {available_backends()}): "
        f"expected config.json with a torchao quantization_config, or quantization_map.json + model.safetensors"
    )


__all__ = ["Plan", "QuantBackend", "available_backends", "backend_for_folder", "backend_of", "get_backend", "register_backend"]
