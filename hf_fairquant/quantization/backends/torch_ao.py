"""Reading models PyTorch's own quantization made: ``torch.ao.quantization.quantize_dynamic``
(int8 or float16 ``Linear`` weights, int8 activations computed per call), static
``torch.ao.nn.quantized`` modules and ``torch.ao.nn.qat`` layers, read by :mod:`.recognise`.

Neither ``save_pretrained`` nor this package saves such a model (its packed parameters are not
tensors: ``save_pretrained`` fails); audit it in the process that built it. Recipes do not
compile to this backend.
"""

from __future__ import annotations

import torch

from . import register_backend
from .bitsandbytes import foreign_size_bytes
from .reader import RecognisedQuantizer


class TorchAoDynamicReader(RecognisedQuantizer):
    name = "torch.ao"
    library = "torch.ao"
    how = "torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8) and torch.ao.nn.quantized modules"

    def size_bytes(self, model: torch.nn.Module) -> int:
        """Packed parameters are no tensors of the state dict's kind: counted from the layers."""
        return foreign_size_bytes(model)


TORCH_AO = TorchAoDynamicReader()
register_backend("torch.ao", TORCH_AO)
