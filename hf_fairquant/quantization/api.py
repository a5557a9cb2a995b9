"""The one verb, ``quantize(model, recipe)``, and what can be read off any quantized model.

Every function here dispatches through the backend registry (:mod:`.backends`): a recipe names
its backend, a quantized model is asked which backend's modules it holds.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ..errors import FairQuantError
from ..groups import GroupSpec
from .backends import DEFAULT_BACKEND, Plan, Quantizer, get_quantizer, loaded_artifact_of, quantizer_of
from .calibration import calibration_batches
from .recipe import (
    LayerQuant,
    QuantRecipe,
    RecipeLike,
    float_bits,
    quantizable_modules,
    weighted_bits,
)


def recipe_quantizer(recipe: QuantRecipe) -> Quantizer:
    """The quantizer a recipe compiles to, with the recipe's backend options."""
    return get_quantizer(recipe.backend).configure(recipe)


def apply_plan(model: torch.nn.Module, plan: Plan, backend: str = DEFAULT_BACKEND) -> torch.nn.Module:
    """Swap each planned module for ``backend``'s quantized module (not frozen: QAT starts here)."""
    quantizer = get_quantizer(backend)
    quantizer.check(model, plan)
    return quantizer.apply(model, plan)


def _owner(model: torch.nn.Module) -> Quantizer:
    quantizer = quantizer_of(model)
    if quantizer is None:
        raise FairQuantError(f"{type(model).__name__} holds no quantized module: quantize it first")
    return quantizer


def calibrate(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
    """Record activation ranges of a quantized (unfrozen) model over input ``batches``."""
    _owner(model).calibrate(model, batches)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Store integer weights in every quantized module (the end of PTQ or QAT)."""
    return _owner(model).freeze(model)


def quantize(
    model: torch.nn.Module,
    recipe: RecipeLike,
    calibration_dataset: Any = None,
    *,
    group_spec: GroupSpec | None = None,
    calibration_size: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    data_collator: Any = None,
    processing_class: Any = None,
) -> torch.nn.Module:
    """Post-training quantization of every Conv2d/Linear of ``model``, in place (returned too).

    Recipes with static 8-bit activations (optimum-quanto) need ``calibration_dataset``
    (preprocessed, with the model's input columns); ``calibration_size`` examples are drawn
    stratified by ``group_spec`` so that rare groups shape the activation ranges too. torchao's
    int8 activations are dynamic: no calibration data.
    """
    recipe = QuantRecipe.parse(recipe)
    check_not_quantized(model, "quantize")
    plan = recipe.plan(model)
    backend = recipe_quantizer(recipe)
    backend.check(model, plan)
    if calibration_size <= 0:
        raise FairQuantError(f"calibration_size must be positive, got {calibration_size}")
    needs_calibration = backend.needs_calibration(plan)
    if needs_calibration and calibration_dataset is None:
        raise FairQuantError(f"recipe {recipe} quantizes activations: pass a calibration_dataset")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise FairQuantError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = (
        calibration_batches(
            model, calibration_dataset, calibration_size, group_spec, batch_size, seed,
            data_collator=data_collator, processing_class=processing_class,
        )
        if needs_calibration
        else []
    )
    backend.apply(model, plan)
    # freeze first, then calibrate: the activation ranges come out the same (the frozen weights
    # are the values the unfrozen modules fake-quantize to), but each calibration forward no
    # longer re-quantizes every weight (ViT-B/16, 8 examples at 64²: 2.1 s → 0.65 s)
    backend.freeze(model)
    if batches:
        backend.calibrate(model, batches)
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    """True for a model holding a backend's quantized modules, or a loaded quantized artifact."""
    return quantizer_of(model) is not None or loaded_artifact_of(model) is not None


def check_not_quantized(model: torch.nn.Module, where: str) -> None:
    """``where`` takes a full-precision model: an already-quantized one is named as such (its
    Conv2d/Linear modules are gone, so planning would say it has none)."""
    quantizer = quantizer_of(model)
    if quantizer is not None:
        raise FairQuantError(
            f"{where} needs a full-precision model, but this {type(model).__name__} is already quantized by "
            f"{quantizer.name}: load the full-precision model again and quantize that"
        )


def layer_bits(model: torch.nn.Module) -> dict[str, LayerQuant | None]:
    """What each Conv2d/Linear of a (possibly quantized) model holds: LayerQuant or None (float)."""
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.layer_table(model)
    quantizer = quantizer_of(model)
    quantized = quantizer.layer_bits(model) if quantizer is not None else {}
    out: dict[str, LayerQuant | None] = {}
    for name, module in model.named_modules():
        if name in quantized:
            out[name] = quantized[name]
        elif type(module) in (torch.nn.Conv2d, torch.nn.Linear):
            out[name] = None
    if not out:
        quantizable_modules(model)  # raises the "nothing to quantize" error
    return out


def effective_bits(model: torch.nn.Module) -> float:
    """Parameter-weighted mean weight bits over the Conv2d/Linear modules of ``model``.

    Quantized modules count their weight bits; float modules their dtype width (32 for
    float32), so excluding a large layer shows in the number.
    """
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.effective_bits(model)
    bits = layer_bits(model)
    return weighted_bits(
        (model.get_submodule(n).weight.numel(), q.weight_bits if q else float_bits(model.get_submodule(n).weight))
        for n, q in bits.items()
    )


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor in the state dict — what ``save_quantized`` writes (± header).
    A tensor subclass (torchao's integer weights) counts the plain tensors it holds; a loaded
    artifact that describes itself (an ONNX Runtime model) counts its file's bytes."""
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.size_bytes(model)
    return sum(_tensor_bytes(t) for t in model.state_dict().values())


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()
