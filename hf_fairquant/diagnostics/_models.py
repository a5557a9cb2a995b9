"""The models explain compares, built from a recipe or an already quantized model.

- the FP model: the caller's, never modified;
- ``frozen``: the quantized model as deployed (integer weights, calibrated activations);
- ``straight_through``: its twin whose forward quantizes the weights and whose gradients pass
  straight through to float weights (as in QAT) — the quantized model's gradients and curvature
  are taken there. The backend builds it (:meth:`~hf_fairquant.quantization.Quantizer.straight_through`);
  a backend that cannot is refused before any work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import FairQuantError, UnsupportedByBackendError
from ..quantization import (
    LayerQuant,
    QuantRecipe,
    Quantizer,
    calibrate,
    check_not_quantized,
    freeze,
    get_quantizer,
    is_quantized,
    layer_bits,
    quantizer_of,
    quantizing_backends,
)
from ..tasks import is_quantized_tensor


@dataclass
class QuantizedModels:
    """The deployed quantized model, its straight-through twin, and which modules are quantized."""

    frozen: torch.nn.Module
    straight_through: torch.nn.Module
    plan: dict[str, LayerQuant]
    recipe: QuantRecipe | None
    quantizer: Quantizer


def resolve(model: torch.nn.Module, recipe_or_model: Any) -> tuple[QuantRecipe | None, dict[str, LayerQuant], Quantizer]:
    """Check the second argument of ``explain`` (cheap, before any heavy work) → (recipe, plan, quantizer).

    A recipe must match modules of ``model``; a quantized model must have been quantized from
    a model of the same architecture (same module names and weight shapes).
    """
    check_not_quantized(model, "explain")  # the FP model: its quantized twin is built or given separately
    if isinstance(recipe_or_model, torch.nn.Module):
        qmodel = recipe_or_model
        quantizer = quantizer_of(qmodel) if is_quantized(qmodel) else None
        if quantizer is None:
            raise FairQuantError(
                f"the {type(qmodel).__name__} given as the quantized model has no quantized module: pass a "
                "recipe (e.g. 'w4a8') or a model returned by hf_fairquant.quantize"
            )
        _check_straight_through(quantizer, f"the given {type(qmodel).__name__}")
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
        return None, plan, quantizer
    recipe = QuantRecipe.parse(recipe_or_model)
    quantizer = get_quantizer(recipe.backend).configure(recipe)
    _check_straight_through(quantizer, f"recipe {recipe}")
    plan = {n: q for n, q in recipe.plan(model).items() if q is not None}  # raises on unmatched patterns
    return recipe, plan, quantizer


def _check_straight_through(quantizer: Quantizer, what: str) -> None:
    """The chain is measured through straight-through modules (gradients, Hessians of the
    quantized weights): a backend that cannot build them is refused before any work."""
    if not quantizer.has_straight_through:
        can = [n for n in quantizing_backends() if get_quantizer(n).has_straight_through]
        raise UnsupportedByBackendError(
            f"explain measures gradients and curvature through straight-through quantized modules; {what} uses "
            f"backend {quantizer.name}, which has none: explain the same recipe on backend {' or '.join(can) or '—'} "
            "(e.g. 'w4a8' instead of 'w4a8@<backend>')"
        )


def build(
    model: torch.nn.Module,
    recipe_or_model: Any,
    recipe: QuantRecipe | None,
    plan: dict[str, LayerQuant],
    quantizer: Quantizer,
    calibration: list[dict[str, torch.Tensor]] | None,
) -> QuantizedModels:
    """Quantize a copy of ``model`` (a recipe) or wrap a given quantized model, plus the twin."""
    if recipe is not None:
        twin = quantizer.straight_through(copy.deepcopy(model), plan)
        if calibration:
            calibrate(twin, calibration)
        return QuantizedModels(freeze(copy.deepcopy(twin)), twin, plan, recipe, quantizer)
    qmodel = recipe_or_model
    if not quantizer.is_frozen(qmodel):  # a QAT model mid-training: it is its own straight-through twin
        return QuantizedModels(freeze(copy.deepcopy(qmodel)), copy.deepcopy(qmodel), plan, None, quantizer)
    twin = quantizer.straight_through(copy.deepcopy(model), plan)
    _copy_dequantized(twin, qmodel)
    return QuantizedModels(qmodel, twin, plan, None, quantizer)


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
    return tensor.dequantize() if is_quantized_tensor(tensor) else tensor


def weight_deltas(fp: torch.nn.Module, models: QuantizedModels) -> dict[str, torch.Tensor]:
    """``{module: W_q − W}`` for every quantized module (float, detached)."""
    return {
        name: models.quantizer.quantized_weight(models.frozen.get_submodule(name)).to(fp.get_submodule(name).weight.dtype)
        - fp.get_submodule(name).weight.detach()
        for name in models.plan
    }
