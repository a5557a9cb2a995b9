"""The one verb, ``quantize(model, recipe)``, and what can be read off any quantized model.

Every function here dispatches through the backend registry (:mod:`.backends`): a recipe names
its backend, a quantized model is asked which backend's modules it holds — a model quantized
elsewhere too (bitsandbytes, torchao, optimum-quanto, HQQ, torch.ao, a transformers
``quantization_config``), in a fresh process, with no set-up.

What is counted (:func:`layer_bits`, :func:`effective_bits`): every weight-bearing module the
quantizers act on — ``Linear``, ``Conv1d/2d/3d`` (and transposed), transformers' ``Conv1D``, and
each library's quantized replacement of them — each weight once (a tied ``lm_head`` counts once).
Float embedding tables are left out: they are lookups, no quantizer here or in transformers'
configs quantizes them by default, and in a text model they would dominate the mean (a
DistilBERT's vocabulary is a third of its weights); an embedding a recipe quantizes by name
(``overrides: {model.embed_tokens: w4}``) is counted. :func:`~.recognise.describe_layers` lists
them all. For the demo's models (Conv2d/Linear only) this is the same count as before.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ..errors import FairQuantError
from ..groups import GroupSpec
from .backends import (
    DEFAULT_BACKEND,
    Plan,
    Quantizer,
    get_quantizer,
    loaded_artifact_of,
    quantizer_of,
)
from .backends.recognise import (
    LIBRARIES,
    LayerInfo,
    declared_quantization,
    describe_layers,
    is_embedding,
    tensor_bytes,
)
from .calibration import calibration_batches
from .recipe import (
    LayerQuant,
    RecipeLike,
    parse_recipe,
    quantizable_modules,
    weighted_bits,
)

#: A plan or a model that leaves more than this share of its counted weights float is reported as such.
FLOAT_SHARE_WARNING = 0.05


def recipe_quantizer(recipe: Any) -> Quantizer:
    """The quantizer a recipe compiles to, with the recipe's backend options."""
    return get_quantizer(recipe.backend).configure(recipe)


def apply_plan(model: torch.nn.Module, plan: Plan, backend: str = DEFAULT_BACKEND) -> torch.nn.Module:
    """Swap each planned module for ``backend``'s quantized module (not frozen: QAT starts here)."""
    quantizer = get_quantizer(backend)
    quantizer.check(model, plan)
    return quantizer.apply(model, plan)  # the quantized model (a new one if the backend builds one)


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
    """Post-training quantization of every Conv2d/Linear/Conv1D of ``model``; returns the
    quantized model — ``model`` itself, quantized in place, or (a transformers quantization
    config as the recipe) a new model built by ``from_pretrained`` the way users get it, with
    ``model`` left as it was. Always use the returned model.

    Recipes with static 8-bit activations (optimum-quanto) need ``calibration_dataset``
    (preprocessed, with the model's input columns); ``calibration_size`` examples are drawn
    stratified by ``group_spec`` so that rare groups shape the activation ranges too. torchao's
    int8 activations are dynamic: no calibration data.
    """
    recipe = parse_recipe(recipe)  # a preset recipe, or a transformers quantization config
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
    model = backend.apply(model, plan)
    # freeze first, then calibrate: the activation ranges come out the same (the frozen weights
    # are the values the unfrozen modules fake-quantize to), but each calibration forward no
    # longer re-quantizes every weight (ViT-B/16, 8 examples at 64²: 2.1 s → 0.65 s)
    model = backend.freeze(model)
    if batches:
        backend.calibrate(model, batches)
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    """True for a model holding quantized modules of any library this package reads, or a loaded
    quantized artifact."""
    return quantizer_of(model) is not None or loaded_artifact_of(model) is not None


def check_quantized(model: torch.nn.Module, what: str) -> Quantizer | None:
    """The quantizer of a model passed as quantized (``what`` names it in messages); raises naming
    what was looked for when it holds no quantized layer — and, when a transformers
    quantization config is attached but quantized nothing (GPT-2's ``Conv1D`` under
    ``TorchAoConfig``), says that too. A layer that cannot be read is an error naming it."""
    if loaded_artifact_of(model) is not None:
        return None
    quantizer = quantizer_of(model, strict=True)
    if quantizer is not None:
        return quantizer
    declared = declared_quantization(model)
    claim = ""
    if declared is not None:
        claim = (f" Its transformers quantization config ({declared['config'] or declared['quant_method']}) is attached, "
                 "but it quantized no layer of this model (transformers' TorchAo, Quanto and HQQ integrations convert "
                 "nn.Linear only: GPT-2-style Conv1D layers stay float).")
    raise FairQuantError(
        f"{what} ({type(model).__name__}) holds no quantized layer: looked for the quantized layers of "
        f"{', '.join(LIBRARIES)} (by their module and weight classes) and for a model.hf_quantizer / "
        f"config.quantization_config.{claim} Quantize it first (a recipe, a transformers quantization config, "
        "or QAT), or pass the full-precision model as the model, not as a quantized one"
    )


def check_not_quantized(model: torch.nn.Module, where: str) -> None:
    """``where`` takes a full-precision model: an already-quantized one is named as such (its
    Conv2d/Linear modules are gone, so planning would say it has none)."""
    quantizer = quantizer_of(model)
    if quantizer is not None:
        raise FairQuantError(
            f"{where} needs a full-precision model, but this {type(model).__name__} is already quantized by "
            f"{quantizer.describe(model)}: load the full-precision model again and quantize that"
        )


# ----------------------------------------------------------------------------- reading a model
class _Layer:
    """One counted weight-bearing module: its bits (None: float), weights, bits per weight as
    stored (quantization state included) and width."""

    __slots__ = ("quant", "numel", "bits", "storage_bits", "kind")

    def __init__(self, quant: LayerQuant | None, numel: int, bits: float, storage_bits: float, kind: str) -> None:
        self.quant, self.numel, self.bits, self.storage_bits, self.kind = quant, numel, bits, storage_bits, kind


def _counted_layers(model: torch.nn.Module) -> dict[str, _Layer]:
    """Every counted weight-bearing module (see the module docstring), each weight once."""
    quantizer = quantizer_of(model)
    strict = quantizer is not None and quantizer.reads_foreign_models  # a foreign model: every layer must be read
    described: dict[str, LayerInfo] = describe_layers(model, strict=strict)
    own = quantizer.layer_bits(model) if quantizer is not None else {}
    embeddings = {n for n, i in described.items() if is_embedding(i)}
    counted = {n for n in embeddings if described[n].quantized or n in own}  # an embedding a recipe quantized by name
    out: dict[str, _Layer] = {}
    for name, module in model.named_modules():
        info = described.get(name)
        if info is None:
            if name in own:  # a backend's module the recogniser does not know (a plugin's)
                numel = _weight_numel(module)
                out[name] = _Layer(own[name], numel, float(own[name].weight_bits), float(own[name].weight_bits),
                                   type(module).__name__)
            continue
        if (name in embeddings and name not in counted) or (
                info.tied_to is not None and (info.tied_to not in embeddings or info.tied_to in counted)):
            continue  # a float embedding table, or a weight counted at its first holder
        quant = own.get(name)
        if quant is None and info.quantized:
            quant = LayerQuant.observed_as(info.weight_bits, info.activation_bits)
        bits = float(quant.weight_bits) if quant is not None else info.weight_bits
        storage = info.storage_bits if info.quantized or quant is None else bits
        out[name] = _Layer(quant, info.numel, bits, storage, info.kind)
    return out


def _weight_numel(module: torch.nn.Module) -> int:
    weight = getattr(module, "weight", None)
    return int(weight.numel()) if isinstance(weight, torch.Tensor) else 0


def layer_bits(model: torch.nn.Module) -> dict[str, LayerQuant | None]:
    """What each counted weight-bearing module of a (possibly quantized) model holds: its
    LayerQuant, or None (float). Counted: Linear, Conv1d/2d/3d, transformers Conv1D and every
    library's quantized layers; not embedding tables (see the module docstring)."""
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.layer_table(model)
    out = {n: layer.quant for n, layer in _counted_layers(model).items()}
    if not out:
        quantizable_modules(model)  # raises the "nothing to quantize" error
    return out


def effective_bits(model: torch.nn.Module, *, count_state: bool = False) -> float:
    """Parameter-weighted mean weight bits over the counted weight-bearing modules of ``model``.

    Quantized modules count their weight bits; float modules their dtype width (32 for
    float32), so excluding a large layer shows in the number. ``count_state=True``: bits as
    stored, the quantization state included (scales, zero points, bitsandbytes' absmax and code
    table: NF4 is about 4.5 bits per weight with blocks of 64).
    """
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.effective_bits(model)
    layers = _counted_layers(model)
    if not layers:
        quantizable_modules(model)  # raises the "nothing to quantize" error
    return weighted_bits((layer.numel, layer.storage_bits if count_state else layer.bits) for layer in layers.values())


def float_weights(model: torch.nn.Module) -> tuple[float, dict[str, int]]:
    """(share of the counted weights left float, ``{module: weights}`` of the float modules,
    largest first) — what a report flags when the share exceeds :data:`FLOAT_SHARE_WARNING`."""
    if loaded_artifact_of(model) is not None:
        return 0.0, {}
    layers = _counted_layers(model)
    total = sum(layer.numel for layer in layers.values())
    floats = {n: layer.numel for n, layer in layers.items() if layer.quant is None}
    share = sum(floats.values()) / total if total else 0.0
    return share, dict(sorted(floats.items(), key=lambda kv: -kv[1]))


def float_kinds(model: torch.nn.Module, names: Iterable[str]) -> dict[str, str]:
    """``{module: class name}`` of ``names`` (for messages: "Conv1D", "Conv2d")."""
    return {n: type(model.get_submodule(n)).__name__ for n in names}


def describe_quantization(model: torch.nn.Module) -> str:
    """How ``model`` was quantized, in words (the library, and its config if one is attached)."""
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.publishing.library
    quantizer = quantizer_of(model)
    return quantizer.describe(model) if quantizer is not None else "full precision"


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor in the state dict — what ``save_quantized`` writes (± header).
    A tensor subclass (torchao's integer weights) counts the plain tensors it holds; a loaded
    artifact that describes itself (an ONNX Runtime model) counts its file's bytes; a backend
    whose ``state_dict()`` would change the model (bitsandbytes 4-bit after a CPU forward) counts
    its layers without calling it."""
    artifact = loaded_artifact_of(model)
    if artifact is not None:
        return artifact.size_bytes(model)
    quantizer = quantizer_of(model)
    if quantizer is not None:
        size = quantizer.size_bytes(model)
        if size is not None:
            return size
    return sum(tensor_bytes(t) for t in model.state_dict().values())
