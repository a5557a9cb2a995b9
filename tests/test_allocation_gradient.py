"""Gradient (AutoQuantize-style) sensitivity against a direct per-example computation; the CVaR
objective against brute force."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from hf_fairquant import allocate_bits, quantize
from hf_fairquant.allocation import gradient_sensitivity, solve_allocation
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.errors import FairQuantError
from hf_fairquant.quantization.recipe import quantizable_modules
from tests.conftest import image_dataset, tiny_resnet, tiny_vit

BITS = (2, 4)


def _layer_output(model, name, inputs, weight=None):
    """Layer ``name``'s output for ``inputs`` (optionally with its weight replaced), kept in the graph."""
    module = model.get_submodule(name)
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    original = module.weight.data.clone()
    try:
        if weight is not None:
            module.weight.data.copy_(weight)
        logits = model(**inputs).logits
    finally:
        module.weight.data.copy_(original)
        handle.remove()
    return logits, seen[0]


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit], ids=["resnet", "vit"])
def test_gradient_sensitivity_equals_a_direct_computation(make):
    model = make(num_labels=4)
    data = image_dataset(n=12, num_labels=4, groups=("a", "a", "b"))
    codes = np.array([0 if g == "a" else 1 for g in data["group"][:]])
    batches = list(GroupedInputs(model, data, "group").batches(5))
    layers = quantizable_modules(model)
    layers = [layers[0], layers[len(layers) // 2], layers[-1]]  # first, middle, classifier
    s, fp_loss, _ = gradient_sensitivity(model, batches, codes, 2, layers, BITS)
    assert s.shape == (3, len(BITS), 2) and (s >= 0).all() and s.max() > 0

    quantized = {b: quantize(copy.deepcopy(model), f"w{b}") for b in BITS}
    view = data.with_format("torch")
    direct = np.zeros_like(s)
    losses = []
    for i in range(len(data)):
        inputs = {"pixel_values": view[i : i + 1]["pixel_values"]}
        label = view[i : i + 1]["labels"]
        for l, name in enumerate(layers):
            logits, y = _layer_output(model, name, inputs)
            loss = torch.nn.functional.cross_entropy(logits, label)
            (grad,) = torch.autograd.grad(loss, y)
            if l == 0:
                losses.append(loss.item())
            for j, b in enumerate(BITS):
                w_q = quantized[b].get_submodule(name).weight.dequantize()
                with torch.no_grad():
                    _, y_q = _layer_output(model, name, inputs, weight=w_q)
                direct[l, j, codes[i]] += 0.5 * float((grad * (y_q - y.detach())).sum()) ** 2
    direct /= np.bincount(codes)[None, None, :]
    np.testing.assert_allclose(s, direct, rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(fp_loss, losses, rtol=1e-5)
    assert all(model.get_submodule(n).weight.grad is None for n in layers)  # no .grad left behind


def test_allocate_bits_with_gradient_sensitivity_and_cvar():
    model = tiny_resnet(num_labels=4)
    data = image_dataset(n=48, num_labels=4, groups=("a", "a", "a", "b"))
    flags = [p.requires_grad for p in model.parameters()]
    for objective in ("worst_group", "cvar", "mean"):
        allocation = allocate_bits(model, data, "group", budget=4.0, sensitivity="gradient", objective=objective,
                                   alpha=0.3, calibration_size=48)
        assert allocation.effective_bits <= 4.0 + 1e-9
        assert set(allocation.measured_loss_increase) == {"a", "b"}
        assert all(v >= 0 for layer in allocation.layers for per in layer.sensitivity.values() for v in per.values())
    assert [p.requires_grad for p in model.parameters()] == flags


def _cvar(values: np.ndarray, weights: np.ndarray, alpha: float) -> float:
    """Mean of the worst alpha share of weight (the last group counted fractionally)."""
    order = np.argsort(-values)
    left, total = alpha, 0.0
    for g in order:
        take = min(weights[g], left)
        total += take * values[g]
        left -= take
        if left <= 1e-15:
            break
    return total / alpha


@pytest.mark.parametrize("alpha", [0.1, 0.35, 0.6, 1.0])
def test_cvar_is_exact_against_brute_force(alpha):
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, size=(5, 3, 4)) * rng.uniform(0.2, 3, size=(1, 1, 4))
    params = rng.integers(10, 100, size=5)
    bits, budget = (2, 4, 8), 4.5
    weights = np.array([0.5, 0.3, 0.15, 0.05])
    choice = solve_allocation(s, params, bits, budget, "cvar", group_weights=weights, alpha=alpha)
    loss = lambda c: s[np.arange(5), list(c)].sum(0)  # noqa: E731
    feasible = [c for c in itertools.product(range(3), repeat=5)
                if (params * np.asarray(bits)[list(c)]).sum() <= budget * params.sum() + 1e-9]
    best = min(_cvar(loss(c), weights, alpha) for c in feasible)
    assert _cvar(loss(choice), weights, alpha) == pytest.approx(best, rel=1e-6, abs=1e-9)
    if alpha == 1.0:  # CVaR at alpha 1 is the weighted mean
        mean = solve_allocation(s, params, bits, budget, "mean", group_weights=weights)
        assert loss(choice) @ weights == pytest.approx(loss(mean) @ weights, rel=1e-6)


@pytest.mark.parametrize("alpha", [0, -0.5, 1.5, True])
def test_bad_alpha(alpha):
    with pytest.raises(FairQuantError, match="allowed 0 < alpha ≤ 1"):
        solve_allocation(np.ones((2, 2, 2)), [1, 1], (2, 4), 3.0, "cvar", alpha=alpha)
