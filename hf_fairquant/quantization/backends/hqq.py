"""Reading models HQQ quantized: ``HQQLinear`` layers (``W_q`` packed weights, ``meta`` scales and
zero points), e.g. ``HQQLinear(linear, BaseQuantizeConfig(nbits=4, group_size=64), ...)`` applied
by hand. This runs on a CPU (hqq's PyTorch backend dequantizes, then multiplies).

Through transformers it does not run here: transformers 5.25's ``HqqHfQuantizer`` has no
``get_quantize_ops``, so ``from_pretrained(..., quantization_config=HqqConfig(...))`` raises
``NotImplementedError: QuantizationMethod.HQQ is not available yet`` as soon as a weight needs
quantizing (the transformers backend refuses such a recipe before any work and says so).
Recipes do not compile to this backend.
"""

from __future__ import annotations

from . import register_backend
from .reader import RecognisedQuantizer


class HqqReader(RecognisedQuantizer):
    name = "hqq"
    library = "hqq"
    how = "hqq's HQQLinear layers applied directly (HqqConfig does not run through transformers 5.25)"


HQQ = HqqReader()
register_backend("hqq", HQQ)
