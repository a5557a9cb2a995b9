"""explain on the repo's tiny transformers models: ResNet (Conv2d) and ViT (Linear, attention)."""

import math

import pytest
import torch

from hf_fairquant import explain
from hf_fairquant.quantization import quantizable_modules
from tests.conftest import image_dataset, tiny_resnet, tiny_vit


@pytest.mark.parametrize("make_model, recipe", [(tiny_resnet, "w2a8"), (tiny_vit, "w4a8")], ids=["resnet", "vit"])
def test_explain_runs_on_transformers_models(make_model, recipe, tmp_path):
    model = make_model()
    data = image_dataset(n=48, seed=1, groups=("a", "b", "b"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = explain(
        model, recipe, data, "group", calibration_dataset=image_dataset(n=24, seed=2), calibration_size=16,
        examples_per_group=8, probes=3, quantized_curvature=True, batch_size=16, progress=False,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [d.name for d in ex.layers] == quantizable_modules(model)
    assert all(d.weight_error > 0 and d.activation_drift_overall > 0 for d in ex.layers)
    assert ex.group_names == ["a", "b"] and set(ex.curvature) == {"fp", "quantized"}
    for group in ex.group_names:
        assert ex.gradients[group].examples == 8
        assert ex.gradients[group].quantized > 0  # gradients pass the quantized activations too
        for per_model in ex.curvature.values():
            assert per_model[group].lambda_hvps > 0 and math.isfinite(per_model[group].lambda_max)
        assert math.isfinite(ex.bound.groups[group].taylor)
    assert ex.bound.delta_norm > 0
    out = ex.save(tmp_path)
    assert (out / "explain.md").read_text().count("\n| `") == len(ex.layers)
