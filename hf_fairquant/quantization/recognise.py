"""Recognise how a model was quantized, by any library, with no set-up: see
:mod:`hf_fairquant.quantization.backends.recognise` (re-exported here)."""

from __future__ import annotations

from .backends.recognise import (  # noqa: F401
    LIBRARIES,
    LayerInfo,
    declared_quantization,
    describe_layers,
    effective_bits,
    is_embedding,
    quantized_by,
)

__all__ = ["LIBRARIES", "LayerInfo", "declared_quantization", "describe_layers", "effective_bits", "is_embedding", "quantized_by"]
