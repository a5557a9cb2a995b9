"""Quantized models run under ``torch.inference_mode()`` and give the ``no_grad`` logits."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_fairquant.quantization import apply_plan, calibrate, freeze
from hf_fairquant.quantization.recipe import QuantRecipe
from tests.conftest import tiny_distilbert, tiny_resnet, tiny_vit

INPUTS = {
    "resnet": lambda: {"pixel_values": torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))},
    "vit": lambda: {"pixel_values": torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))},
    "distilbert": lambda: {"input_ids": torch.randint(1, 100, (3, 12), generator=torch.Generator().manual_seed(0))},
}
MODELS = {"resnet": tiny_resnet, "vit": tiny_vit, "distilbert": tiny_distilbert}


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "qat"])
@pytest.mark.parametrize("recipe", ["w8", "w4", "w2a8", "w4a8", "w8a8"])
@pytest.mark.parametrize("arch", list(MODELS))
def test_inference_mode_equals_no_grad(arch, recipe, frozen):
    model = MODELS[arch]()
    inputs = INPUTS[arch]()
    qmodel = apply_plan(copy.deepcopy(model), QuantRecipe.parse(recipe).plan(model))
    calibrate(qmodel, [inputs])
    if frozen:
        freeze(qmodel)
    qmodel.eval()
    with torch.no_grad():
        expected = qmodel(**inputs).logits
    with torch.inference_mode():
        got = qmodel(**inputs).logits
    torch.testing.assert_close(torch.as_tensor(got.dequantize() if hasattr(got, "dequantize") else got).clone(),
                               expected.dequantize() if hasattr(expected, "dequantize") else expected)


@pytest.mark.parametrize("recipe", ["w8a8", "w8", "w4", "w4a8", "w2a8"])
@pytest.mark.parametrize("arch", ["vit", "distilbert"])
def test_torchao_models_run_under_inference_mode(arch, recipe):
    from hf_fairquant import quantize

    model = MODELS[arch]()
    inputs = INPUTS[arch]()
    spec = {"preset": recipe, "backend": "torchao"}
    if arch == "vit":
        spec["exclude"] = ["vit.embeddings.*"]  # torchao quantizes Linear only
    qmodel = quantize(copy.deepcopy(model), spec).eval()
    with torch.no_grad():
        expected = qmodel(**inputs).logits
    with torch.inference_mode():
        got = qmodel(**inputs).logits
    torch.testing.assert_close(got.clone(), expected)
