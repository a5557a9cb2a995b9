"""optimum-quanto backend: swap modules for quantized ones, calibrate activations, freeze.

``quantize(model, recipe, calibration_dataset)`` is the one verb (PTQ, in place). QAT builds
on the same swap: an unfrozen quanto module fake-quantizes its weights on every forward
with straight-through gradients; ``freeze`` then stores the integer weights.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from optimum.quanto import Calibration, QModuleMixin, QTensor, qint2, qint4, qint8
from optimum.quanto import freeze as quanto_freeze
from optimum.quanto.nn import quantize_module

from ..batching import iterate_batches
from . import _quanto_fixes
from ..groups import GroupSpec, stratified_indices
from .recipe import LayerQuant, QuantRecipe, RecipeLike, _float_bits, _weighted_bits, quantizable_modules

_quanto_fixes.apply()

_QTYPES = {2: qint2, 4: qint4, 8: qint8}
_BITS_BY_QTYPE_NAME = {q.name: b for b, q in _QTYPES.items()}


def _set_submodule(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_plan(model: torch.nn.Module, plan: Mapping[str, LayerQuant | None]) -> torch.nn.Module:
    """Replace each planned module by its quanto counterpart (weights not frozen yet)."""
    for name, quant in plan.items():
        if quant is None:
            continue
        module = model.get_submodule(name)
        qmodule = quantize_module(
            module,
            weights=_QTYPES[quant.weight_bits],
            activations=_QTYPES[quant.activation_bits] if quant.activation_bits else None,
        )
        if qmodule is None:  # pragma: no cover - plan only holds Conv2d/Linear
            raise ValueError(f"optimum-quanto cannot quantize module '{name}' ({type(module).__name__})")
        qmodule.name = name
        _set_submodule(model, name, qmodule)
    return model


def calibrate(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
    """Record activation ranges over ``batches``. ``streamline=False``: with streamlining a
    save/reload is not exact (measured with optimum-quanto 0.2.7)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), Calibration(streamline=False):
        for inputs in batches:
            model(**inputs)
    model.train(was_training)


class ActivationRangeTracker:
    """During QAT, keep updating activation scales in training mode (as PyTorch's FakeQuantize
    observers do): an exponential moving average of a batch's absmax, detached from the graph.

    Without it the ranges stay those calibrated on the untrained model and, as the weights move,
    activations clip (measured: a W4A8 DistilBERT did not learn). Set ``active`` to choose
    which forwards update (the trainer updates every ``n``-th optimizer step, which keeps the
    cost off most steps); eval-mode forwards never do. Start it after :func:`calibrate`.
    """

    def __init__(self, model: torch.nn.Module, momentum: float = 0.9) -> None:
        from optimum.quanto.tensor import dtype_info

        self.momentum = momentum
        self.active = True
        self._qmax = dtype_info
        self._handles = []
        for module in model.modules():
            if isinstance(module, QModuleMixin) and module.activation_qtype is not None:
                self._handles.append(module.register_forward_pre_hook(self._before, prepend=True))
                self._handles.append(module.register_forward_hook(self._after, prepend=True))

    def _update(self, module: torch.nn.Module, name: str, value: Any) -> None:
        if not (self.active and module.training) or not isinstance(value, torch.Tensor) or isinstance(value, QTensor):
            return
        with torch.no_grad():
            # quanto's absmax_scale (abs, then max) measured ~50x slower than one aminmax pass
            lo, hi = torch.aminmax(value.detach())
            new = torch.maximum(-lo, hi) / self._qmax(module.activation_qtype.dtype).max
            # in place, before this forward's quantize hook reads it: no graph, no host sync
            scale = getattr(module, name)
            scale.lerp_(new.to(scale.dtype), 1.0 - self.momentum)

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        if args:
            self._update(module, "input_scale", args[0])

    def _after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._update(module, "output_scale", output)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Store integer weights in every quanto module (the end of PTQ or QAT)."""
    quanto_freeze(model)
    return model


def calibration_batches(
    model: torch.nn.Module,
    dataset: Any,
    size: int = 512,
    group_spec: GroupSpec | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Input batches of a group-stratified subset of ``dataset`` (uniform if no groups)."""
    if group_spec is not None:
        spec = group_spec if group_spec.is_fitted else group_spec.fit(dataset)
        rows = stratified_indices(spec.encode(dataset), size, seed)
    else:
        rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    subset = dataset.select(rows.tolist() if hasattr(rows, "tolist") else rows)
    return [inputs for inputs, _ in iterate_batches(model, subset, batch_size, with_labels=False)]


def quantize(
    model: torch.nn.Module,
    recipe: RecipeLike,
    calibration_dataset: Any = None,
    *,
    group_spec: GroupSpec | None = None,
    calibration_size: int = 512,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.nn.Module:
    """Post-training quantization of every Conv2d/Linear of ``model``, in place (returned too).

    Recipes with 8-bit activations need ``calibration_dataset`` (preprocessed, with the
    model's input columns); ``calibration_size`` examples are drawn stratified by
    ``group_spec`` so that rare groups shape the activation ranges too.
    """
    recipe = QuantRecipe.parse(recipe)
    plan = recipe.plan(model)
    if calibration_size <= 0:
        raise ValueError(f"calibration_size must be positive, got {calibration_size}")
    needs_calibration = any(q is not None and q.activation_bits for q in plan.values())
    if needs_calibration and calibration_dataset is None:
        raise ValueError(f"recipe {recipe} quantizes activations: pass a calibration_dataset")
    batches = (
        calibration_batches(model, calibration_dataset, calibration_size, group_spec, batch_size, seed)
        if needs_calibration
        else []
    )
    apply_plan(model, plan)
    if batches:
        calibrate(model, batches)
    return freeze(model)


def is_quantized(model: torch.nn.Module) -> bool:
    return any(isinstance(m, QModuleMixin) for m in model.modules())


def layer_bits(model: torch.nn.Module) -> dict[str, LayerQuant | None]:
    """What each Conv2d/Linear of a (possibly quantized) model holds: LayerQuant or None (float)."""
    out: dict[str, LayerQuant | None] = {}
    for name, module in model.named_modules():
        if isinstance(module, QModuleMixin) and module.weight_qtype is not None:
            act = module.activation_qtype
            out[name] = LayerQuant(
                _BITS_BY_QTYPE_NAME[module.weight_qtype.name], _BITS_BY_QTYPE_NAME[act.name] if act else None
            )
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
    bits = layer_bits(model)
    return _weighted_bits(
        (model.get_submodule(n).weight.numel(), q.weight_bits if q else _float_bits(model.get_submodule(n).weight))
        for n, q in bits.items()
    )


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor in the state dict — what ``save_quantized`` writes (± header)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
