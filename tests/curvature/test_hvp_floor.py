"""HVPs near their floor equal today's: eager attention for curvature passes (the model's own
afterwards), gradient graphs kept across products, the gradient taken from them."""

from __future__ import annotations

import pytest
import torch

from hf_fairquant.curvature import GroupObjective, differentiable
from hf_fairquant.curvature._objective import CURVATURE_ATTENTION
from hf_fairquant.inputs import GroupedInputs
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_vit


def _reference_hvp(objective: GroupObjective, v: torch.Tensor) -> torch.Tensor:
    """The HVP as it was computed before: SDPA's math kernel, a fresh double backward of
    ``Σ g·v`` per micro-batch, nothing kept."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pieces = objective.unflatten(v)
    total = torch.zeros(objective.dim)
    flags = [p.requires_grad for p in objective.params]
    for p in objective.params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            for inputs, labels in objective.batches:
                grads = torch.autograd.grad(objective._batch_loss(inputs, labels), objective.params, create_graph=True)
                dot = sum((g * p).sum() for g, p in zip(grads, pieces))
                objective._accumulate(total, torch.autograd.grad(dot, objective.params))
    finally:
        for p, flag in zip(objective.params, flags):
            p.requires_grad_(flag)
    return total


def _reference_gradient(objective: GroupObjective) -> torch.Tensor:
    total = torch.zeros(objective.dim)
    with torch.enable_grad():
        for inputs, labels in objective.batches:
            objective._accumulate(total, torch.autograd.grad(objective._batch_loss(inputs, labels), objective.params))
    return total


@pytest.fixture(scope="module", params=["vit", "distilbert"])
def case(request):
    if request.param == "vit":
        model, data = tiny_vit(), image_dataset(n=24)
    else:
        model, data = tiny_distilbert(), text_dataset(n=24)
    assert model.config._attn_implementation == "sdpa"  # what the model runs on by default
    batches = list(GroupedInputs(model, data).batches(12))
    params = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim == 2]
    return model, params, batches


def _vectors(dim: int, k: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(dim, generator=g) for _ in range(k)]


def test_the_curvature_attention_is_switched_for_the_pass_and_restored(case):
    model, params, _ = case
    assert CURVATURE_ATTENTION == "eager"
    seen = []
    with differentiable(model, params):
        seen.append(model.config._attn_implementation)
    assert seen == ["eager"]
    assert model.config._attn_implementation == "sdpa"  # the model's own afterwards


def test_hvp_on_the_chosen_path_equals_todays(case):
    model, params, batches = case
    objective = GroupObjective(model, params, batches, chunk_size=8, parts=[0, 1])
    for v in _vectors(objective.dim):
        torch.testing.assert_close(objective.hvp(v), _reference_hvp(objective, v), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(objective.gradient(), _reference_gradient(objective), rtol=1e-4, atol=1e-7)
    assert model.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in params)  # flags as they were


@pytest.mark.parametrize("retain_bytes", [None, 1])  # every graph kept; none kept (rebuilt per product)
def test_kept_graphs_give_the_same_products_and_gradient(case, retain_bytes):
    model, params, batches = case
    plain = GroupObjective(model, params, batches, chunk_size=8, parts=[0, 1])
    kept = GroupObjective(model, params, batches, chunk_size=8, parts=[0, 1], retain_bytes=retain_bytes)
    vectors = _vectors(plain.dim)
    expected = [plain.hvp(v) for v in vectors]
    expected_parts = plain.gradient_parts()
    with kept.retained():
        parts = kept.gradient_parts()  # builds the graphs the products reuse
        got = [kept.hvp(v) for v in vectors]
        assert len(kept._graphs) == (len(kept.batches) if retain_bytes is None else 0)
        assert model.config._attn_implementation == "eager"
    assert not kept._graphs and model.config._attn_implementation == "sdpa"
    for a, b in zip(got, expected):
        assert torch.equal(a, b)  # one backward through a kept graph is the same arithmetic
    assert set(parts) == {0, 1}
    for label in parts:
        torch.testing.assert_close(parts[label], expected_parts[label], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(parts[0] + parts[1], plain.gradient(), rtol=1e-5, atol=1e-8)
    assert kept.hvps == len(vectors)


def test_parts_must_label_every_batch(case):
    model, params, batches = case
    from hf_fairquant.errors import FairQuantError

    with pytest.raises(FairQuantError, match="parts labels 1 batches, but 2"):
        GroupObjective(model, params, batches, parts=[0])
