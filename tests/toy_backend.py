"""A toy quantization backend written in one file, outside the package: what a contributor adds.

``toy`` quantizes ``nn.Linear`` weights to a symmetric per-row integer grid (int8 codes and a
float scale per output row) and saves its own artifact (``config.json``, ``toy.safetensors``,
``toy.json``). Importing this module registers it; nothing in hf_fairquant names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hf_fairquant.errors import ArtifactError, UnsupportedByBackendError
from hf_fairquant.quantization import ArtifactFormat, LayerQuant, Publishing, Quantizer, register_backend

NAME = "toy"
MAP_FILE = "toy.json"
WEIGHTS_FILE = "toy.safetensors"


class ToyLinear(torch.nn.Module):
    """A Linear whose weight is ``codes * scale`` (codes in ``bits``-bit signed range)."""

    def __init__(self, linear: torch.nn.Linear, bits: int):
        super().__init__()
        qmax = 2 ** (bits - 1) - 1
        scale = linear.weight.detach().abs().amax(1, keepdim=True).clamp_min(1e-12) / qmax
        self.register_buffer("codes", torch.round(linear.weight.detach() / scale).clamp(-qmax - 1, qmax).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone())
        self.bits, self.in_features, self.out_features = bits, linear.in_features, linear.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.codes.to(self.scale.dtype) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ToyQuantizer(Quantizer):
    name = NAME

    def check(self, model, plan):
        others = [n for n, q in plan.items() if q is not None and not isinstance(model.get_submodule(n), torch.nn.Linear)]
        if others:
            raise UnsupportedByBackendError(f"backend toy quantizes nn.Linear only, not {others[:3]}")

    def apply(self, model, plan):
        for name, quant in plan.items():
            if quant is not None:
                model.set_submodule(name, ToyLinear(model.get_submodule(name), quant.weight_bits))
        return model

    def quantize_module(self, module, quant):
        return ToyLinear(module, quant.weight_bits)

    def needs_calibration(self, plan):
        return False

    def calibrate(self, model, batches):
        """Weights only: nothing to record."""

    def freeze(self, model):
        return model

    def owns(self, model):
        return any(isinstance(m, ToyLinear) for m in model.modules())

    def layer_bits(self, model):
        return {n: LayerQuant(m.bits) for n, m in model.named_modules() if isinstance(m, ToyLinear)}

    def quantized_weight(self, module):
        return module.weight.detach()


class ToyArtifact(ArtifactFormat):
    name = NAME
    publishing = Publishing(library="toyquant", loads_with_transformers=False, note="Toy integer weights.",
                            tags=("toyquant",))
    expects = f"config.json, {WEIGHTS_FILE} and {MAP_FILE}"

    def artifact_files(self):
        return ("config.json", WEIGHTS_FILE, MAP_FILE)

    def save(self, model, folder, recipe=None):
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(folder) / WEIGHTS_FILE))
        bits = {n: q.weight_bits for n, q in TOY.layer_bits(model).items()}
        (Path(folder) / MAP_FILE).write_text(json.dumps(bits))

    def can_load(self, folder):
        return (Path(folder) / MAP_FILE).is_file()

    def load(self, folder):
        import transformers

        config = transformers.AutoConfig.from_pretrained(folder)
        model = getattr(transformers, config.architectures[0])(config)
        bits = json.loads((Path(folder) / MAP_FILE).read_text())
        TOY.apply(model, {n: LayerQuant(b) for n, b in bits.items()})
        result = model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ArtifactError(f"{folder}: keys do not fit ({result.missing_keys[:3]}, {result.unexpected_keys[:3]})")
        return model.eval()


TOY = ToyQuantizer()
register_backend(NAME, TOY, ToyArtifact())
