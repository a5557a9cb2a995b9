"""Link 1 of the chain: how far quantization moves weights and activations, per layer.

Weight error is ‖W_q − W‖/‖W‖ per quantized module. Activation drift compares each quantized
module's output in the quantized model with the same module's output in the FP model on the
same inputs, so it includes what upstream layers passed down (the cascade); per example the
squared norms ‖a_q − a‖² and ‖a‖² are kept, and a group's drift is
√(Σ‖a_q − a‖²)/√(Σ‖a‖²) over its examples.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..quantization import Quantizer
from ..tasks import is_quantized_tensor


def weight_errors(
    fp: torch.nn.Module, quantized: torch.nn.Module, names: Sequence[str], quantizer: Quantizer
) -> dict[str, float]:
    """``{module: ‖W_q − W‖/‖W‖}`` (0 for an all-zero W that stays zero)."""
    out = {}
    for name in names:
        w = fp.get_submodule(name).weight.detach().double()
        wq = quantizer.quantized_weight(quantized.get_submodule(name)).double()
        norm = float(w.norm())
        diff = float((wq - w).norm())
        out[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    return out


def _dense(output: object) -> torch.Tensor:
    output = output[0] if isinstance(output, (tuple, list)) else output
    if is_quantized_tensor(output):  # a backend's quantized activations
        output = output.dequantize()
    return output.detach().double()


def per_example_sq(values: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example sum of squares of a module output; with ``positions`` (a ``(batch, sequence)``
    mask, e.g. a causal LM's attention mask) only the outputs at those positions count, so padding
    does not add drift."""
    if positions is not None and values.ndim >= 3 and tuple(values.shape[:2]) == tuple(positions.shape):
        values = values * positions.to(values.dtype).reshape(*positions.shape, *([1] * (values.ndim - 2)))
    return (values.flatten(1) ** 2).sum(1)


class ActivationRecorder:
    """Forward hooks on named modules that keep each one's latest output (dense, float64).

    Use as a context manager: the hooks are removed on exit, so the model is left as it was. A
    hook on a quanto module runs after quanto's own output hook, so it sees the quantized output.
    """

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        self.model, self.names = model, list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "ActivationRecorder":
        for name in self.names:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def record(module, args, output):
            self.outputs[name] = _dense(output)
        return record

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
