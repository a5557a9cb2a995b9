"""Compiled evaluation (``torch_compile``) equals eager evaluation: predictions identical, losses
within 1e-4; the compile seconds are reported apart from the evaluation seconds."""

from __future__ import annotations

import numpy as np
import pytest

from hf_fairquant import audit, explain
from hf_fairquant.audit import AuditConfig
from hf_fairquant.diagnostics import ExplainConfig
from tests.conftest import image_dataset, tiny_vit


def test_compiled_evaluation_is_off_by_default_and_an_option_of_both_stages():
    assert AuditConfig().torch_compile is False and ExplainConfig().torch_compile is False
    assert AuditConfig(torch_compile=True).torch_compile and ExplainConfig(torch_compile=True).torch_compile


@pytest.mark.slow  # one compilation of a tiny ViT: 20–90 s on the shared 2-core machine
def test_compiled_audit_equals_eager_on_a_tiny_model():
    model, data = tiny_vit(), image_dataset(n=80)
    eager = audit(model, data, [], "group", n_boot=50, batch_size=32, progress=False)
    compiled = audit(model, data, [], "group", n_boot=50, batch_size=32, progress=False, torch_compile=True)
    assert np.array_equal(compiled.fp_outputs.predictions, eager.fp_outputs.predictions)
    np.testing.assert_allclose(compiled.fp_outputs.losses, eager.fp_outputs.losses, rtol=0, atol=1e-4)
    assert compiled.fp.metrics["group_accuracy"] == eager.fp.metrics["group_accuracy"]
    clock = compiled.settings["timings_s"]["FP"]
    assert clock["compile_s"] > 0 and clock["evaluate_s"] >= 0 and "compile_failed" not in clock
    assert "compile_s" not in eager.settings["timings_s"]["FP"]
    assert compiled.settings["torch_compile"] is True and eager.settings["torch_compile"] is False


@pytest.mark.slow  # two compilations (the FP and the quantized model)
def test_compiled_explain_pass_equals_eager():
    from tests.diagnostics.conftest import TinyClassifier, tiny_data

    model, data = TinyClassifier().eval(), tiny_data()
    options = dict(examples_per_group=8, probes=2, hvp_budget=6, progress=False)
    eager = explain(model, "w8a8", data, "group", **options)
    compiled = explain(model, "w8a8", data, "group", torch_compile=True, **options)
    assert compiled.settings["timings_s"]["compile"] >= 0 and "compile" not in eager.settings["timings_s"]
    for group in eager.group_names:
        for side in ("fp", "quantized"):
            a, b = getattr(eager.logits[group], side), getattr(compiled.logits[group], side)
            assert a.accuracy == b.accuracy
            assert b.loss == pytest.approx(a.loss, abs=1e-4)
    assert [d.activation_drift_overall for d in compiled.layers] == pytest.approx(
        [d.activation_drift_overall for d in eager.layers], rel=1e-4)
    assert compiled.curvature["fp"]["major"].lambda_max == eager.curvature["fp"]["major"].lambda_max  # eager alike


def test_a_model_the_compiler_cannot_run_is_evaluated_eagerly_with_a_warning(monkeypatch):
    import torch

    from hf_fairquant._compiled import CompiledForward

    def failing_compile(model, **_):
        def run(**inputs):
            raise RuntimeError("backend='inductor' raised: no kernel for this subclass")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    model, data = tiny_vit(), image_dataset(n=40)
    eager = audit(model, data, [], "group", n_boot=0, batch_size=16, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile could not run ViTForImageClassification .*evaluating it eagerly"):
        report = audit(model, data, [], "group", n_boot=0, batch_size=16, progress=False, torch_compile=True)
    assert report.settings["timings_s"]["FP"]["compile_failed"] == 1
    assert np.array_equal(report.fp_outputs.predictions, eager.fp_outputs.predictions)
    assert np.array_equal(report.fp_outputs.losses, eager.fp_outputs.losses)

    class Session(torch.nn.Module):  # a runtime behind a torch forward (an ONNX Runtime model)
        supports_torch_compile = False

    assert CompiledForward(Session()).enabled is False
