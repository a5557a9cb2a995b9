import pytest
import torch

from hf_fairquant.batching import iterate_batches
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.quantization import QuantRecipe, apply_plan, calibrate, calibration_batches
from hf_fairquant.quantization import _quanto_fixes
from hf_fairquant.quantization.backends.quanto import ActivationRangeTracker
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_resnet


def _qat_backward(model, data):
    apply_plan(model, QuantRecipe.parse("w4").plan(model))
    model.train()
    inputs, labels = next(GroupedInputs(model, data).batches(8))
    model(**inputs, labels=labels).loss.backward()
    return model


def test_bert_qat_backward_needs_the_reshape_fix():
    data = text_dataset()
    with _quanto_fixes.disabled(), pytest.raises(RuntimeError, match="view size is not compatible"):
        _qat_backward(tiny_distilbert(), data)
    model = _qat_backward(tiny_distilbert(), data)
    grads = [p.grad for n, p in model.named_parameters() if n.endswith("q_lin.weight")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_activation_ranges_follow_training_batches_only():
    data = image_dataset()
    model = tiny_resnet()
    apply_plan(model, QuantRecipe.parse("w8a8").plan(model))
    calibrate(model, calibration_batches(model, data, 32))
    tracker = ActivationRangeTracker(model)
    scale = lambda: model.classifier[1].output_scale.clone()  # noqa: E731
    inputs = next(iterate_batches(model, data, 16))
    before = scale()
    model.eval()
    with torch.no_grad():
        model(**{"pixel_values": inputs["pixel_values"] * 10})
    assert torch.equal(scale(), before)
    model.train()
    tracker.active = False
    model(**{"pixel_values": inputs["pixel_values"] * 10})
    assert torch.equal(scale(), before)
    tracker.active = True
    model(**{"pixel_values": inputs["pixel_values"] * 10})
    assert scale() > before and not scale().requires_grad
    tracker.remove()
    after = scale()
    model(**{"pixel_values": inputs["pixel_values"] * 100})
    assert torch.equal(scale(), after)
