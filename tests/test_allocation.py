"""Bit allocation: the MILP is exact, the budget holds, worst_group protects the minority's layer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_fairquant import (
    FairQuantTrainer,
    FairQuantTrainingArguments,
    QuantRecipe,
    allocate_bits,
    quantize,
)
from hf_fairquant.allocation import solve_allocation
from hf_fairquant.quantization import layer_bits
from tests.conftest import image_dataset, tiny_resnet

WIDTH, CLASSES = 16, 4


def _weights(outlier: float, seed: int) -> torch.Tensor:
    w = torch.randn(CLASSES, WIDTH, generator=torch.Generator().manual_seed(seed))
    w[:, -1] = outlier  # an input the data never uses: harmless in float, coarsens low-bit grids
    return w


class TwoPath(torch.nn.Module):
    """Group "a" only goes through ``path_a``, group "b" only through ``path_b`` (same size).

    ``path_b`` carries a larger weight outlier, so at 2 bits it costs group b ~4× what 2-bit
    ``path_a`` costs group a; group b is 5 % of the data, so the group-blind mean prefers
    to protect ``path_a``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.path_a = torch.nn.Linear(WIDTH, CLASSES, bias=False)
        self.path_b = torch.nn.Linear(WIDTH, CLASSES, bias=False)
        with torch.no_grad():
            self.path_a.weight.copy_(_weights(6.0, 0))
            self.path_b.weight.copy_(_weights(30.0, 1))

    def forward(self, features: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.path_a(features[:, :WIDTH]) + self.path_b(features[:, WIDTH:]))


def two_path_data(model: torch.nn.Module, n_a: int = 190, n_b: int = 10) -> Dataset:
    rng = np.random.default_rng(0)
    x = np.zeros((n_a + n_b, 2 * WIDTH), np.float32)
    x[:n_a, : WIDTH - 1] = rng.normal(size=(n_a, WIDTH - 1))
    x[n_a:, WIDTH:-1] = rng.normal(size=(n_b, WIDTH - 1))
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).logits.argmax(-1).numpy()  # the float model is right
    return Dataset.from_dict({"features": x, "labels": labels, "group": ["a"] * n_a + ["b"] * n_b})


@pytest.fixture(scope="module")
def two_path():
    model = TwoPath().eval()
    return model, two_path_data(model)


# ---------------------------------------------------------------- the fairness effect
def test_worst_group_protects_the_minority_layer_and_mean_does_not(two_path):
    model, data = two_path
    fair = allocate_bits(model, data, "group", candidate_bits=(2, 8), budget=5.0, objective="worst_group")
    blind = allocate_bits(model, data, "group", candidate_bits=(2, 8), budget=5.0, objective="mean")
    assert fair.bits == {"path_a": 2, "path_b": 8}
    assert blind.bits == {"path_a": 8, "path_b": 2}
    # the evidence is in the table: each path only moves its own group's loss
    assert fair.layers[0].sensitivity[2]["b"] == pytest.approx(0.0, abs=1e-6)
    assert fair.layers[1].sensitivity[2]["a"] == pytest.approx(0.0, abs=1e-6)
    assert max(fair.predicted_loss_increase.values()) < max(blind.predicted_loss_increase.values())
    assert fair.measured_accuracy["b"] > blind.measured_accuracy["b"]
    # sensitivities of one layer add up: prediction and measurement agree on this model
    for alloc in (fair, blind):
        for g in ("a", "b"):
            assert alloc.measured_loss_increase[g] == pytest.approx(alloc.predicted_loss_increase[g], abs=1e-4)
    assert "path_b" in fair.to_markdown()


def test_hessian_proxy_sees_the_same_structure(two_path):
    model, data = two_path
    fair = allocate_bits(model, data, "group", (2, 8), 5.0, "worst_group", sensitivity="hessian")
    blind = allocate_bits(model, data, "group", (2, 8), 5.0, "mean", sensitivity="hessian")
    assert fair.bits == {"path_a": 2, "path_b": 8} and blind.bits == {"path_a": 8, "path_b": 2}
    a, b = fair.layers
    assert a.sensitivity[2]["b"] == 0.0 and b.sensitivity[2]["a"] == 0.0  # no gradient, no curvature
    assert b.sensitivity[2]["b"] > a.sensitivity[2]["a"] > 10 * abs(a.sensitivity[8]["a"])


def test_the_recipe_meets_the_budget_and_goes_into_quantize():
    model, data = tiny_resnet(), image_dataset(48, 8)
    for budget in (3.0, 4.0):
        alloc = allocate_bits(model, data, "group", budget=budget, calibration_size=32)
        assert alloc.effective_bits <= budget + 1e-9
        assert alloc.recipe.effective_bits(model) == pytest.approx(alloc.effective_bits)
        params = {layer.name: layer.params for layer in alloc.layers}
        assert sum(params[n] * b for n, b in alloc.bits.items()) <= budget * sum(params.values()) + 1e-6
    quantized = quantize(tiny_resnet(), alloc.recipe)
    assert {n: q.weight_bits for n, q in layer_bits(quantized).items()} == alloc.bits
    assert QuantRecipe.parse(alloc.recipe.to_dict()).plan(model) == alloc.recipe.plan(model)


def test_allocation_leaves_the_model_unchanged():
    model, data = tiny_resnet(), image_dataset(32, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    allocate_bits(model, data, "group", candidate_bits=(4, 8), budget=6.0, activations=8, calibration_size=16)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for n, m in model.named_modules() if n in layer_bits(model))


# ---------------------------------------------------------------- the solver is exact
def _brute_force(s, params, bits, budget, objective, weights):
    best = np.inf
    for choice in itertools.product(range(len(bits)), repeat=len(params)):
        if sum(p * bits[k] for p, k in zip(params, choice)) > budget * sum(params) + 1e-9:
            continue
        total = s[np.arange(len(params)), list(choice)].sum(0)  # per group
        best = min(best, total.max() if objective == "worst_group" else total @ (weights / weights.sum()))
    return best


@pytest.mark.parametrize("objective", ["worst_group", "mean"])
@pytest.mark.parametrize("seed", range(4))
def test_milp_optimum_equals_brute_force(objective, seed):
    rng = np.random.default_rng(seed)
    bits = (2, 4, 8)
    params = rng.integers(10, 1000, size=5)
    s = rng.gamma(1.0, size=(5, 3, 3)) * np.array([4.0, 1.0, 0.1])[None, :, None]  # fewer bits hurt more
    weights = rng.integers(1, 100, size=3).astype(float)
    budget = float(rng.uniform(2.5, 6.0))
    choice = solve_allocation(s, params, bits, budget, objective, weights)
    assert sum(p * bits[k] for p, k in zip(params, choice)) <= budget * params.sum() + 1e-6
    total = s[np.arange(5), choice].sum(0)
    value = total.max() if objective == "worst_group" else total @ (weights / weights.sum())
    assert value == pytest.approx(_brute_force(s, params, bits, budget, objective, weights), rel=1e-6, abs=1e-9)


def test_infeasible_budget_names_the_constraint():
    with pytest.raises(ValueError, match="budget constraint.*fewest achievable is 4 mean bits"):
        solve_allocation(np.zeros((2, 2, 1)), [10, 10], (4, 8), 3.0)


# ---------------------------------------------------------------- bad input fails early
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": 1.5}, r"allowed 2 ≤ budget ≤ 8"),
        ({"budget": 9}, r"allowed 2 ≤ budget ≤ 8"),
        ({"candidate_bits": (4, 8), "budget": 3.0}, r"allowed 4 ≤ budget ≤ 8"),
        # issue 26: a string is a type error, not "outside the range"
        ({"budget": "4"}, r"budget must be a number of mean weight bits \(2 ≤ budget ≤ 8\), got str '4': pass 4\.0"),
        ({"budget": True}, r"budget must be a number.*got bool True"),
        ({"candidate_bits": (3, 8)}, r"unsupported candidate bits \[3\]"),
        ({"candidate_bits": ()}, r"unsupported candidate bits"),
        ({"objective": "median"}, r"unknown objective 'median'; allowed: \['worst_group', 'mean', 'cvar'\]"),
        ({"sensitivity": "fisher"}, r"unknown sensitivity 'fisher'; allowed: \['measured', 'hessian', 'gradient'\]"),
        ({"objective": "cvar", "alpha": 0.0}, r"alpha 0.0 is not a share of the example weight"),
        ({"sensitivity": "hessian", "hessian_probes": 0}, r"hessian_probes must be positive"),
        ({"activations": 4}, r"unsupported activation bits 4"),
        ({"calibration_size": 0}, r"calibration_size must be positive"),
    ],
)
def test_bad_arguments_raise_before_any_forward(kwargs, match):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, features):
            raise AssertionError("no forward pass should run")

    with pytest.raises(ValueError, match=match):
        allocate_bits(Exploding(), Dataset.from_dict({"features": [[0.0, 0.0]], "labels": [0], "group": ["a"]}), **kwargs)


def test_no_quantizable_module_is_an_error():
    class NoLayers(torch.nn.Module):
        def forward(self, features):
            return SequenceClassifierOutput(logits=features)

    with pytest.raises(ValueError, match="no Conv2d or Linear module"):
        allocate_bits(NoLayers(), Dataset.from_dict({"features": [[0.0, 0.0]], "labels": [0], "group": ["a"]}))


def test_missing_group_column_is_named():
    with pytest.raises(ValueError, match="group"):
        allocate_bits(tiny_resnet(), image_dataset(8, 8).remove_columns("group"))


# ---------------------------------------------------------------- trainer
def _trainer_args(tmp_path, quantization):
    return FairQuantTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, calibration_size=32, quantization=quantization,
    )


def test_trainer_allocates_with_auto_budget_then_runs_qat(tmp_path):
    trainer = FairQuantTrainer(model=tiny_resnet(), args=_trainer_args(tmp_path, "auto:4.0"), train_dataset=image_dataset(48, 8))
    assert trainer.quant_recipe is trainer.allocation.recipe
    assert trainer.allocation.effective_bits <= 4.0
    trainer.train()
    assert {n: q.weight_bits for n, q in layer_bits(trainer.model).items()} == trainer.allocation.bits


def test_trainer_takes_the_returned_recipe(tmp_path):
    alloc = allocate_bits(tiny_resnet(), image_dataset(48, 8), budget=3.0, calibration_size=32)
    trainer = FairQuantTrainer(model=tiny_resnet(), args=_trainer_args(tmp_path, alloc.recipe), train_dataset=image_dataset(48, 8))
    assert {n: q.weight_bits for n, q in layer_bits(trainer.model).items()} == alloc.bits


@pytest.mark.parametrize("value", ["auto:", "auto:x", "auto:1", "auto:9.5"])
def test_bad_auto_budget_is_rejected_by_the_arguments(tmp_path, value):
    with pytest.raises(ValueError, match="auto:<budget>"):
        _trainer_args(tmp_path, value)
