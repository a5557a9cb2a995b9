"""The ONNX Runtime backend: the deployed CPU artifact (static/dynamic int8, MatMulNBits int4).

Unlike quanto it does not swap torch modules: a recipe is compiled into an exported graph by
:func:`hf_fairquant.quantization.onnx.export_onnx`, and the result runs as an
:class:`~hf_fairquant.quantization.onnx.OrtModel`. This handler says what the recipe may ask
(``check``: no 2-bit weights, no 4-bit Conv) and describes an OrtModel to the generic verbs
(``is_quantized``, ``layer_bits``, ``effective_bits``, ``model_size_bytes``).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ...errors import FairQuantError
from ..recipe import LayerQuant, weighted_bits
from . import Plan, QuantBackend, register_backend


def _is_ort(model: torch.nn.Module) -> bool:
    # a marker, not isinstance: the OrtModel module imports this one (to register it), not back
    return getattr(model, "is_onnxruntime_model", False) is True


class OnnxRuntimeBackend(QuantBackend):
    name = "onnxruntime"

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        from ..onnx.compile import onnx_plan

        onnx_plan(model, plan)

    def _compiled_elsewhere(self, *_: object, **__: object) -> torch.nn.Module:
        raise FairQuantError(
            "the onnxruntime backend compiles an exported graph, not torch modules: use "
            "hf_fairquant.quantization.onnx.export_onnx(model, recipe, dir, calibration_dataset=...) "
            "and audit the OrtModel it writes (load_onnx(dir))"
        )

    apply = quantize_module = freeze = prepare_qat = convert_qat = save = load = _compiled_elsewhere

    def can_load(self, folder) -> bool:
        return False  # an exported folder's onnx/*.onnx loads with load_onnx (or onnxruntime alone)

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        self._compiled_elsewhere()

    def owns(self, model: torch.nn.Module) -> bool:
        return _is_ort(model) and model.recipe is not None

    def layer_table(self, model: torch.nn.Module) -> dict[str, LayerQuant | None] | None:
        layers = model.metadata.get("layers", {})
        return {n: LayerQuant.parse(v["bits"]) if v.get("kernel") else None for n, v in layers.items()}

    def layer_bits(self, model: torch.nn.Module) -> dict[str, LayerQuant]:
        return {n: q for n, q in self.layer_table(model).items() if q is not None}

    def effective_bits(self, model: torch.nn.Module) -> float | None:
        layers = model.metadata.get("layers", {})
        table = self.layer_table(model)
        return weighted_bits((v["numel"], table[n].weight_bits if table[n] else 32) for n, v in layers.items())

    def size_bytes(self, model: torch.nn.Module) -> int | None:
        return model.size_bytes


register_backend(OnnxRuntimeBackend())
