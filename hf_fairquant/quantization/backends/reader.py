"""The base of the backends that read models another library quantized (bitsandbytes, hqq,
torch.ao): their layers are read through :mod:`.recognise`, nothing is imported to read them, and
recipes do not compile to them."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ...errors import FairQuantError, UnsupportedByBackendError
from ..recipe import LayerQuant
from . import Plan, Quantizer, get_backend, quantizing_backends
from .recognise import describe_layers, quantized_by


class RecognisedQuantizer(Quantizer):
    """A backend that reads models another library quantized, through :mod:`.recognise` (nothing
    imported to read them); recipes do not compile to it. Set :attr:`library` (a
    :data:`~.recognise.LIBRARIES` name) and :attr:`how` (how such a model is made, for messages)."""

    reads_foreign_models = True
    #: the :mod:`.recognise` library name of the layers this backend reads
    library: str = ""
    #: how users quantize with this library (the refusal of recipes says it)
    how: str = ""

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        raise UnsupportedByBackendError(
            f"backend {self.name} reads models quantized elsewhere ({self.how}); recipes compile to "
            f"{[n for n in quantizing_backends() if not get_backend(n).quantizer.reads_foreign_models]} "
            "or to a transformers quantization config"
        )

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        self.check(model, plan)
        return model

    def owns(self, model: torch.nn.Module) -> bool:
        try:
            return self.library in quantized_by(model)
        except FairQuantError:
            return False

    def layer_bits(self, model: torch.nn.Module) -> dict[str, LayerQuant]:
        return {n: LayerQuant.observed_as(i.weight_bits, i.activation_bits) for n, i in describe_layers(model).items()
                if i.library == self.library}

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """Nothing to record: the library quantized the model already."""

    def describe(self, model: torch.nn.Module) -> str:
        return self.library
