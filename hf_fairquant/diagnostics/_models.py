"""The models explain compares, built from a recipe or an already quantized model.

- the FP model: the caller's, never modified;
- ``frozen``: the quantized model as deployed (integer weights, calibrated activations);
- ``straight_through``: its twin with unfrozen optimum-quanto modules (every forward
  fake-quantizes the weights; gradients pass straight through to the float weights, as in
  QAT) — the quantized model's gradients and curvature are taken there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from optimum.quanto import QModuleMixin, QTensor

from ..errors import FairQuantError, UnsupportedByBackendError
from ..quantization import (
    LayerQuant,
    QuantRecipe,
    apply_plan,
    backend_of,
    calibrate,
    freeze,
    is_quantized,
    layer_bits,
)


@dataclass
class QuantizedModels:
    """The deployed quantized model, its straight-through twin, and which modules are quantized."""

    frozen: torch.nn.Module
    straight_through: torch.nn.Module
    plan: dict[str, LayerQuant]
    recipe: QuantRecipe | None


def resolve(model: torch.nn.Module, recipe_or_model: Any) -> tuple[QuantRecipe | None, dict[str, LayerQuant]]:
    """Check the second argument of ``explain`` (cheap, before any heavy work) → (recipe, plan).

    A recipe must match modules of ``model``; a quantized model must have been quantized from
    a model of the same architecture (same module names and weight shapes).
    """
    if isinstance(recipe_or_model, torch.nn.Module):
        qmodel = recipe_or_model
        if not is_quantized(qmodel):
            raise FairQuantError(
                f"the {type(qmodel).__name__} given as the quantized model has no quantized module: pass a "
                "recipe (e.g. 'w4a8') or a model returned by hf_fairquant.quantize"
            )
        _check_quanto(backend_of(qmodel).name, f"the given {type(qmodel).__name__}")
        plan = {n: q for n, q in layer_bits(qmodel).items() if q is not None}
        fp_modules = dict(model.named_modules())
        for name in plan:
            fp = fp_modules.get(name)
            shape = tuple(qmodel.get_submodule(name).weight.shape)
            if fp is None or getattr(fp, "weight", None) is None or tuple(fp.weight.shape) != shape:
                raise FairQuantError(
                    f"quantized module '{name}' (weight {shape}) has no counterpart of that shape in the "
                    f"FP {type(model).__name__}: pass the FP model it was quantized from"
                )
        return None, plan
    recipe = QuantRecipe.parse(recipe_or_model)
    _check_quanto(recipe.backend, f"recipe {recipe}")
    plan = {n: q for n, q in recipe.plan(model).items() if q is not None}  # raises on unmatched patterns
    return recipe, plan


def _check_quanto(backend: str, what: str) -> None:
    """The chain is measured through optimum-quanto's straight-through modules (gradients,
    Hessians of the quantized weights): other backends are refused before any work."""
    if backend != "quanto":
        raise UnsupportedByBackendError(
            f"explain measures quantization through optimum-quanto modules; {what} uses backend {backend}: "
            "explain the same recipe on `backend: quanto` (e.g. 'w4a8' instead of 'w4a8@torchao')"
        )


def build(
    model: torch.nn.Module,
    recipe_or_model: Any,
    recipe: QuantRecipe | None,
    plan: dict[str, LayerQuant],
    calibration: list[dict[str, torch.Tensor]] | None,
) -> QuantizedModels:
    """Quantize a copy of ``model`` (a recipe) or wrap a given quantized model, plus the twin."""
    if recipe is not None:
        twin = apply_plan(copy.deepcopy(model), plan)
        if calibration:
            calibrate(twin, calibration)
        return QuantizedModels(freeze(copy.deepcopy(twin)), twin, plan, recipe)
    qmodel = recipe_or_model
    unfrozen = any(isinstance(m, QModuleMixin) and not m.frozen for m in qmodel.modules())
    if unfrozen:  # a QAT model mid-training: it is its own straight-through twin
        return QuantizedModels(freeze(copy.deepcopy(qmodel)), copy.deepcopy(qmodel), plan, None)
    twin = apply_plan(copy.deepcopy(model), plan)
    _copy_dequantized(twin, qmodel)
    return QuantizedModels(qmodel, twin, plan, None)


def _copy_dequantized(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst``, quantized weights dequantized."""
    with torch.no_grad():
        for name, module in dst.named_modules():
            source = src.get_submodule(name)
            for key, param in module.named_parameters(recurse=False):
                param.copy_(_dequantized(getattr(source, key)))
            for key, buffer in module.named_buffers(recurse=False):
                if buffer is not None:
                    buffer.copy_(getattr(source, key))


def _dequantized(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.dequantize() if isinstance(tensor, QTensor) else tensor


def quantized_weight(module: torch.nn.Module) -> torch.Tensor:
    """The float values a quanto module computes with: its integer weights dequantized (frozen)
    or its fake-quantized weights (unfrozen)."""
    weight = module.weight if isinstance(module.weight, QTensor) else module.qweight
    return _dequantized(weight).detach()


def weight_deltas(fp: torch.nn.Module, frozen: torch.nn.Module, plan: dict[str, LayerQuant]) -> dict[str, torch.Tensor]:
    """``{module: W_q − W}`` for every quantized module (float, detached)."""
    return {
        name: quantized_weight(frozen.get_submodule(name)).to(fp.get_submodule(name).weight.dtype)
        - fp.get_submodule(name).weight.detach()
        for name in plan
    }
