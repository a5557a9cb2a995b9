"""Reading models bitsandbytes quantized: ``Linear8bitLt`` (LLM.int8) and ``Linear4bit`` (NF4, FP4).

Such models come from ``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`` (the
transformers backend builds and reads those, with their config) or from swapping bitsandbytes
layers in by hand; this backend reads the layers (:mod:`.recognise`: 8 or 4 bits, the 4-bit
quantization state counted in the bytes) and counts the bytes without calling ``state_dict()`` —
on a CPU with AVX512-BF16 that call repacks every 4-bit weight that has run a forward and
scrambles its block scales (bitsandbytes 0.50.2; docs/quantizers.md). Recipes do not compile to
it: a ``BitsAndBytesConfig`` is the recipe.
"""

from __future__ import annotations

import torch

from . import register_backend
from .reader import RecognisedQuantizer
from .recognise import describe_layers, tensor_bytes


class BitsAndBytesReader(RecognisedQuantizer):
    name = "bitsandbytes"
    library = "bitsandbytes"
    how = "from_pretrained(..., quantization_config=BitsAndBytesConfig(...)), or its Linear8bitLt/Linear4bit layers"

    def size_bytes(self, model: torch.nn.Module) -> int:
        """Every parameter and persistent buffer once; a bitsandbytes weight as the recogniser
        counts it (data + quantization state), read without ``state_dict()``."""
        return foreign_size_bytes(model)


def foreign_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's tensors without calling ``state_dict()``: each parameter and persistent
    buffer once (a tied weight once), a quantized layer's weight as :mod:`.recognise` counts it
    (integer data with its scales, zero points, absmax and code tables)."""
    layers = describe_layers(model, strict=False)
    seen: set[int] = set()
    total = 0
    for name, module in model.named_modules():
        info = layers.get(name)
        quantized = info is not None and info.quantized and info.tied_to is None
        if quantized:
            total += info.bytes
        tensors = list(module._parameters.items()) + [
            (k, b) for k, b in module._buffers.items() if k not in module._non_persistent_buffers_set]
        for key, tensor in tensors:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if not (quantized and key == "weight"):
                total += tensor_bytes(tensor)
    return total

BITSANDBYTES = BitsAndBytesReader()
register_backend("bitsandbytes", BITSANDBYTES)
