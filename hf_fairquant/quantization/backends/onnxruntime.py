"""The ONNX Runtime backend: an artifact, not a quantizer of torch modules.

A recipe is compiled into an exported graph by :func:`hf_fairquant.quantization.onnx.export_onnx`
(static/dynamic int8, MatMulNBits int4), and the file runs as an
:class:`~hf_fairquant.quantization.onnx.OrtModel`. This module describes such a loaded file to the
generic verbs (``is_quantized``, ``layer_bits``, ``effective_bits``, ``model_size_bytes``) from the
metadata the export wrote into it, and says how a card presents it. Its files live in ``onnx/`` of
a published folder and load with ``onnxruntime`` alone (``load_onnx`` here), never through
``load_quantized``.
"""

from __future__ import annotations

import torch

from ..recipe import LayerQuant, weighted_bits
from . import ArtifactFormat, Publishing, register_backend


def _is_ort(model: torch.nn.Module) -> bool:
    # a marker, not isinstance: the OrtModel module imports this one (to register it), not back
    return getattr(model, "is_onnxruntime_model", False) is True


class OnnxRuntimeArtifact(ArtifactFormat):
    name = "onnxruntime"
    publishing = Publishing(
        library="onnxruntime",
        loads_with_transformers=False,
        note="ONNX Runtime CPU kernels: static or dynamic int8 (QDQ) and MatMulNBits int4, run as exported.",
        tags=("onnx",),
    )

    def owns(self, model: torch.nn.Module) -> bool:
        """A loaded ONNX Runtime model exported from a recipe (its metadata names the recipe)."""
        return _is_ort(model) and model.recipe is not None

    def layer_table(self, model: torch.nn.Module) -> dict[str, LayerQuant | None]:
        layers = model.metadata.get("layers", {})
        return {n: LayerQuant.parse(v["bits"]) if v.get("kernel") else None for n, v in layers.items()}

    def effective_bits(self, model: torch.nn.Module) -> float:
        layers = model.metadata.get("layers", {})
        table = self.layer_table(model)
        return weighted_bits((v["numel"], table[n].weight_bits if table[n] else 32) for n, v in layers.items())

    def size_bytes(self, model: torch.nn.Module) -> int:
        return model.size_bytes


register_backend("onnxruntime", artifact=OnnxRuntimeArtifact())
