"""ONNX Runtime export: FP32 parity, per-node kernels from the recipe, refusals, the audited artifact."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from hf_fairquant import audit
from hf_fairquant.audit import AuditReport
from hf_fairquant.batching import iterate_batches
from hf_fairquant.errors import FairQuantError, UnsupportedByBackendError
from hf_fairquant.quantization import effective_bits, is_quantized, layer_bits, model_size_bytes
from hf_fairquant.quantization.onnx import export_onnx, load_onnx
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_resnet, tiny_vit


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_fp32_export_matches_torch_with_a_dynamic_batch(model_case, tmp_path):
    name, make_model, data = model_case
    model = make_model()
    result = export_onnx(model, "w8a8", tmp_path, data)
    assert result.fp32_path == tmp_path / "onnx" / "model.onnx"
    assert result.quantized_path == tmp_path / "onnx" / "model_quantized.onnx"
    fp32 = load_onnx(tmp_path, "model.onnx")
    assert not is_quantized(fp32)  # FP32 graph: not a quantized model
    inputs = next(iterate_batches(model, data, 13))  # traced with 8 rows
    with torch.no_grad():
        expected = model(**inputs).logits
    got = fp32(**inputs).logits
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    quantized = load_onnx(tmp_path)
    assert is_quantized(quantized) and effective_bits(quantized) == 8.0
    assert model_size_bytes(quantized) == result.quantized_path.stat().st_size
    assert (quantized(**inputs).logits.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.75


def test_text_model_takes_another_sequence_length(tmp_path):
    model, data = tiny_distilbert(), text_dataset(length=12)
    export_onnx(model, "w8", tmp_path, data)
    fp32 = load_onnx(tmp_path, "model.onnx")
    ids = torch.randint(1, 100, (3, 20))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(fp32(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=0)


def test_recipe_is_compiled_per_node(tmp_path):
    model, data = tiny_vit(), image_dataset()
    recipe = {"preset": "w8a8", "overrides": {"classifier": "w8", "vit.layers.1.mlp.*": "w4"},
              "exclude": ["vit.layers.0.mlp.fc1"]}
    result = export_onnx(model, recipe, tmp_path, data, calibration_size=32)
    kernels = {m: v["kernel"] for m, v in result.layers.items()}
    assert kernels["classifier"] == "dynamic int8"
    assert kernels["vit.layers.0.mlp.fc1"] is None
    assert kernels["vit.layers.1.mlp.fc2"] == "MatMulNBits int4"
    assert kernels["vit.layers.0.attention.q_proj"] == "static QDQ int8"
    assert kernels["vit.embeddings.patch_embeddings.projection"] == "static QDQ int8"
    ops = _ops(result.quantized_path)
    assert {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulNBits"} <= ops
    graph = onnx.load(str(result.quantized_path)).graph
    fc1 = next(n for n in graph.node if n.name == "/vit/layers.0/mlp/fc1/MatMul")
    assert not any("DequantizeLinear" == p.op_type for p in graph.node if set(p.output) & set(fc1.input))
    # attention score MatMuls (two activations) keep float inputs
    scores = next(n for n in graph.node if n.name == "/vit/layers.0/attention/MatMul")
    assert not any(p.op_type == "DequantizeLinear" for p in graph.node if set(p.output) & set(scores.input))
    ort_model = load_onnx(tmp_path)
    bits = layer_bits(ort_model)
    assert bits["vit.layers.0.mlp.fc1"] is None and str(bits["vit.layers.1.mlp.fc2"]) == "w4"
    assert 4 < effective_bits(ort_model) < 32


def test_w4_linear_model_is_matmulnbits_and_smaller(tmp_path):
    model, data = tiny_distilbert(), text_dataset()
    w8 = export_onnx(model, "w8", tmp_path / "w8", data).quantized_path.stat().st_size
    result = export_onnx(model, "w4", tmp_path / "w4", data)
    assert "MatMulNBits" in _ops(result.quantized_path)
    assert "Gemm" not in _ops(result.quantized_path)  # the classifier Gemm became MatMulNBits too
    assert result.quantized_path.stat().st_size < w8


@pytest.mark.parametrize(
    "make_model, recipe, named",
    [(tiny_vit, "w2a8", "vit.layers.0.attention.q_proj"),
     (tiny_resnet, "w4", "resnet.embedder.embedder.convolution"),
     (tiny_vit, {"preset": "w8", "overrides": {"vit.embeddings.*": "w4"}}, "vit.embeddings.patch_embeddings.projection")],
)
def test_recipes_without_an_ort_kernel_are_refused_before_work(make_model, recipe, named, tmp_path):
    model = make_model()
    with pytest.raises(UnsupportedByBackendError, match="no CPU kernel") as err:
        export_onnx(model, recipe, tmp_path / "out", image_dataset())
    assert named in str(err.value)
    assert not (tmp_path / "out").exists()
    from hf_fairquant.quantization import QuantRecipe
    from hf_fairquant.quantization.onnx import onnx_plan

    with pytest.raises(UnsupportedByBackendError):
        onnx_plan(model, QuantRecipe.parse(recipe).plan(model))


def test_export_takes_the_float_model(tmp_path):
    from hf_fairquant.quantization import quantize

    with pytest.raises(FairQuantError, match="full-precision"):
        export_onnx(quantize(tiny_vit(), "w8"), "w8", tmp_path, image_dataset())


def test_audit_of_the_deployed_model_per_group(model_case, tmp_path):
    name, make_model, data = model_case
    model = make_model()
    export_onnx(model, "w8a8", tmp_path, data, calibration_size=32)
    deployed = load_onnx(tmp_path)
    report = audit(model, data, ["w8a8"], "group", calibration_dataset=data, deployed_models={"W8A8": deployed},
                   n_boot=20, calibration_size=32, progress=False)
    row = report.result("W8A8 ONNX")
    assert set(row.metrics["group_accuracy"]) == set(report.group_names)
    assert row.size_bytes == (tmp_path / "onnx" / "model_quantized.onnx").stat().st_size
    comparison = report.deployment["W8A8"]
    sim = report.result("W8A8").metrics["group_accuracy"]
    for g in report.group_names:
        assert comparison["group_accuracy_difference"][g] == pytest.approx(row.metrics["group_accuracy"][g] - sim[g])
    assert 0 <= comparison["flip_rate"] <= 1
    # every group with an interval is checked; groups under the metric's min_group_size have none
    small = set(report.result("W8A8").metrics["groups_too_small_for_interval"])
    assert set(comparison["within_simulated_ci"]) == set(report.group_names) - small
    text = report.to_markdown()
    assert "Simulated vs deployed" in text and "W8A8 ONNX" in text
    again = AuditReport.from_json(report.to_json())
    assert again.deployment == json.loads(report.to_json())["deployment"]


def test_audit_refuses_a_deployed_model_of_no_audited_recipe(tmp_path):
    model, data = tiny_vit(), image_dataset()
    export_onnx(model, "w8", tmp_path, data)
    with pytest.raises(FairQuantError, match="names no audited model"):
        audit(model, data, ["w8a8"], "group", calibration_dataset=data, deployed_models={"W4": load_onnx(tmp_path)},
              progress=False)
