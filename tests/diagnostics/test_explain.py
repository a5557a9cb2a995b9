"""explain on a tiny MLP: every number against a direct computation."""

import copy
import json

import numpy as np
import pytest

from hf_fairquant.errors import FairQuantError
import torch

from hf_fairquant import GroupSpec, explain, quantize
from hf_fairquant.diagnostics import Explanation
from hf_fairquant.quantization import QuantRecipe, apply_plan

from .conftest import TinyClassifier, flat_loss, group_tensors, tiny_data

FAST = dict(progress=False, probes=4)


def _exact_hessian(model, names, x, y):
    loss, theta = flat_loss(copy.deepcopy(model).double(), names, x.double(), y)
    return torch.autograd.functional.hessian(loss, theta).numpy()


def _direct_gradient(model, names, x, y):
    params = [model.get_parameter(n) for n in names]
    loss = torch.nn.functional.cross_entropy(model(x).logits, y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.fixture(scope="module")
def w4(data):
    model = TinyClassifier().eval()
    before = copy.deepcopy(model.state_dict())
    ex = explain(model, "w4", data, "group", examples_per_group="all", tol=1e-7, probes=500, hvp_budget=None, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # FP model untouched
    return model, ex


def test_logit_statistics_match_a_hand_computation(w4, data):
    model, ex = w4
    for group in ("major", "minor"):
        x, y = group_tensors(data, group)
        with torch.no_grad():
            logits = model(x).logits.double().numpy()
        y = y.numpy()
        variance = np.mean([np.mean((row - row.mean()) ** 2) for row in logits])
        others = [np.max(np.delete(row, label)) for row, label in zip(logits, y)]
        margin = np.mean(logits[np.arange(len(y)), y] - others)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        loss = np.mean(-np.log(probs[np.arange(len(y)), y]))
        fp = ex.logits[group].fp
        assert fp.logit_variance == pytest.approx(variance, rel=1e-5)
        assert fp.margin == pytest.approx(margin, rel=1e-5, abs=1e-6)
        assert fp.confidence == pytest.approx(probs.max(1).mean(), rel=1e-5)
        assert fp.loss == pytest.approx(loss, rel=1e-5)
        assert fp.accuracy == pytest.approx(np.mean(logits.argmax(1) == y))
        gl = ex.logits[group]
        assert gl.variance_ratio == pytest.approx(gl.quantized.logit_variance / fp.logit_variance)
        assert gl.excess_loss == pytest.approx(gl.quantized.loss - fp.loss)
    assert ex.overall.count == len(data) == sum(ex.logits[g].count for g in ex.group_names)


def test_gradient_norms_match_a_direct_computation(w4, data):
    model, ex = w4
    names = ["hidden.weight", "classifier.weight"]  # parameters="quantized"
    twin = apply_plan(copy.deepcopy(model), QuantRecipe.parse("w4").plan(model))  # straight-through
    for group in ("major", "minor"):
        x, y = group_tensors(data, group)
        fp = _direct_gradient(model, names, x, y).norm().item()
        q = _direct_gradient(twin, names, x, y).norm().item()
        assert ex.gradients[group].fp == pytest.approx(fp, rel=1e-5)
        assert ex.gradients[group].quantized == pytest.approx(q, rel=1e-5)
        assert ex.gradients[group].examples == len(y)
        assert q != pytest.approx(fp, rel=1e-3)  # the straight-through graph really is quantized


def test_curvature_and_bound_match_the_exact_hessian(w4, data):
    model, ex = w4
    names = ["hidden.weight", "classifier.weight"]
    deltas = []
    for name in ("hidden", "classifier"):
        qmodel = quantize(copy.deepcopy(model), "w4")
        deltas.append((qmodel.get_submodule(name).weight.dequantize() - model.get_submodule(name).weight).reshape(-1))
    delta = torch.cat(deltas).detach().double().numpy()
    assert ex.bound.delta_norm == pytest.approx(np.linalg.norm(delta), rel=1e-6)
    for group in ("major", "minor"):
        x, y = group_tensors(data, group)
        hessian = _exact_hessian(model, names, x, y)
        c = ex.curvature["fp"][group]
        assert c.lambda_max == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-4)
        assert c.trace_exact and c.trace == pytest.approx(np.trace(hessian), rel=1e-4)
        b = ex.bound.groups[group]
        g = _direct_gradient(model, names, x, y).double().numpy()
        assert b.gradient_term == pytest.approx(np.linalg.norm(g) * np.linalg.norm(delta), rel=1e-5)
        assert b.curvature_term == pytest.approx(0.5 * c.lambda_max * np.linalg.norm(delta) ** 2, rel=1e-9)
        assert b.bound == pytest.approx(b.gradient_term + b.curvature_term)
        assert b.taylor == pytest.approx(g @ delta + 0.5 * delta @ hessian @ delta, rel=1e-4, abs=1e-7)
        assert b.measured_excess_loss == ex.logits[group].excess_loss
    assert sorted(ex.bound.order_by_bound) == sorted(ex.group_names)


def test_all_parameters_include_the_biases(data):
    model = TinyClassifier().eval()
    ex = explain(model, "w4", data, "group", examples_per_group="all", parameters="all", tol=1e-7, hvp_budget=None, **FAST)
    names = [n for n, _ in model.named_parameters()]
    x, y = group_tensors(data, "minor")
    hessian = _exact_hessian(model, names, x, y)
    assert ex.settings["dimension"] == hessian.shape[0] == sum(p.numel() for p in model.parameters())
    assert ex.curvature["fp"]["minor"].lambda_max == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-4)
    assert ex.gradients["minor"].fp == pytest.approx(_direct_gradient(model, names, x, y).norm().item(), rel=1e-5)


def test_no_drift_at_8_bits_for_representable_weights(data):
    model = TinyClassifier(representable=True).eval()
    ex = explain(model, "w8", data, "group", **FAST)
    assert [d.name for d in ex.layers] == ["hidden", "classifier"]
    for layer in ex.layers:
        assert layer.weight_error == 0 and layer.activation_drift_overall == 0
        assert set(layer.activation_drift.values()) == {0.0}
    assert ex.bound.delta_norm == 0
    for group in ex.group_names:
        assert ex.logits[group].excess_loss == 0 and ex.logits[group].variance_ratio == 1
        assert ex.bound.groups[group].bound == 0
    # and the same weights at 2 bits do drift
    assert all(d.weight_error > 0 for d in explain(model, "w2", data, "group", **FAST).layers)


def test_activation_drift_is_the_ratio_of_norms(data):
    model = TinyClassifier().eval()
    ex = explain(model, "w2", data, "group", **FAST)
    qmodel = quantize(copy.deepcopy(model), "w2")
    x, _ = group_tensors(data, "minor")
    with torch.no_grad():
        a, aq = torch.tanh(model.hidden(x)), torch.tanh(qmodel.hidden(x))
        out, outq = model.classifier(a), qmodel.classifier(aq)
    drift = {d.name: d.activation_drift["minor"] for d in ex.layers}
    assert drift["classifier"] == pytest.approx(((outq - out).norm() / out.norm()).item(), rel=1e-5)
    assert drift["hidden"] == pytest.approx(((qmodel.hidden(x) - model.hidden(x)).norm() / model.hidden(x).norm()).item(), rel=1e-5)


def test_a_given_quantized_model_gives_what_its_recipe_gives(data):
    model = TinyClassifier().eval()
    from_recipe = explain(model, "w4", data, "group", **FAST)
    from_model = explain(model, quantize(copy.deepcopy(model), "w4"), data, "group", **FAST)
    assert [d.weight_error for d in from_model.layers] == [d.weight_error for d in from_recipe.layers]
    assert from_model.logits == from_recipe.logits
    for group in data.unique("group"):
        assert from_model.gradients[group].quantized == pytest.approx(from_recipe.gradients[group].quantized, rel=1e-4)
    assert from_model.quantization["name"] == "W4 (given model)"


def test_activation_recipe_calibrates_and_the_model_is_left_as_it_was(data):
    model = TinyClassifier().train()
    calibration = tiny_data(n=30, seed=5)
    model.hidden.weight.requires_grad_(False)
    ex = explain(model, "w8a8", data, "group", calibration_dataset=calibration, calibration_size=12, **FAST)
    assert model.training and not model.hidden.weight.requires_grad
    assert not model.hidden._forward_hooks and not model.classifier._forward_hooks
    assert ex.settings["calibrated_on"] == "calibration_dataset" and ex.settings["calibration_size"] == 12
    assert ex.quantization["name"] == "W8A8"
    assert ex.gradients["minor"].fp > 0  # gradients taken although the caller froze a weight


def test_examples_per_group_is_seeded_and_capped(data):
    model = TinyClassifier().eval()
    a = explain(model, "w4", data, "group", examples_per_group=10, seed=1, **FAST)
    b = explain(model, "w4", data, "group", examples_per_group=10, seed=1, **FAST)
    c = explain(model, "w4", data, "group", examples_per_group=10, seed=2, **FAST)
    assert a.to_dict()["gradients"] == b.to_dict()["gradients"]
    assert a.curvature == b.curvature
    assert a.gradients["major"].fp != c.gradients["major"].fp
    assert {g.examples for g in a.gradients.values()} == {10}
    every = explain(model, "w4", data, "group", examples_per_group="all", **FAST)
    assert {g: x.examples for g, x in every.gradients.items()} == {"major": 40, "minor": 20}


def test_json_round_trip_markdown_and_plots(w4, tmp_path):
    _, ex = w4
    data = ex.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert Explanation.from_dict(json.loads(ex.to_json())).to_dict() == data
    out = ex.save(tmp_path / "out")
    assert Explanation.load(out / "explain.json").to_dict() == data
    assert Explanation.load(out).to_dict() == data  # the folder save() wrote
    assert Explanation.from_json(ex.to_json()).to_dict() == data  # text, however long
    with pytest.raises(FairQuantError, match="takes JSON text"):
        Explanation.from_json(str(out / "explain.json"))
    text = (out / "explain.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert "| `hidden` | w4 |" in text and "explain_plots/activation_drift.png" in text
    for name in ("groups.png", "activation_drift.png", "gradients_curvature.png"):
        assert (out / "explain_plots" / name).read_bytes()[:4] == b"\x89PNG"
    ex.save(out)  # overwrite in place, no temp leftovers
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


class ForwardCounter:
    def __init__(self, model):
        self.seen = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.seen += (kwargs.get("pixel_values", args[0] if args else None)).shape[0]

    def __deepcopy__(self, memo):
        return self


class NoLogits(TinyClassifier):
    def forward(self, pixel_values, labels=None):
        return {"scores": super().forward(pixel_values).logits}


class OneLogit(TinyClassifier):
    def forward(self, pixel_values, labels=None):
        return super().forward(pixel_values).logits[:, :1]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"examples_per_group": 30}, r"examples_per_group=30 but group\(s\) 'minor' has 20 example\(s\).*'all'"),
        ({"examples_per_group": 0}, "examples_per_group must be a positive int, 'all', or None"),
        ({"probes": 0}, "explain probes must be an integer ≥ 1, got 0"),
        ({"max_iterations": -1}, "explain max_iterations must be an integer ≥ 1, got -1"),
        ({"hvp_budget": 6}, r"hvp_budget=6 Hessian-vector products per group cannot cover probes=4"),
        ({"chunk_size": 0}, "explain chunk_size must be an integer ≥ 1, got 0"),
        ({"eigen_method": "qr"}, r"unknown eigen_method 'qr'; allowed: \['lanczos', 'power'\]"),
        ({"parameters": "biases"}, r"unknown parameters 'biases'; allowed: \['quantized', 'all'\]"),
        ({"recipe": {"preset": "w4", "overrides": {"decoder.*": "w8"}}}, "'decoder.\\*' matches no Conv2d/Linear"),
        ({"recipe": "w3"}, "unsupported weight bits 3"),
        ({"recipe": TinyClassifier()}, "has no quantized module"),
        ({"group_spec": "sex"}, r"group column\(s\) \['sex'\] not found"),
        ({"model": NoLogits()}, "without `logits`"),
        ({"model": OneLogit()}, r"logits of shape \(1, 1\).*at least 2 classes"),
        ({"dataset": tiny_data().map(lambda r: {"labels": 7})}, r"labels \[7\] have no loss: the model gives 3 logits"),
    ],
)
def test_bad_input_fails_before_heavy_work(data, change, message):
    kwargs = dict(model=TinyClassifier().eval(), recipe="w4", dataset=data, group_spec="group", **FAST)
    kwargs.update(change)
    counter = ForwardCounter(kwargs["model"])
    with pytest.raises(ValueError, match=message):
        explain(kwargs.pop("model"), kwargs.pop("recipe"), kwargs.pop("dataset"), kwargs.pop("group_spec"), **kwargs)
    assert counter.seen <= 1  # at most the one-example check of the model's output


def test_intersectional_groups(data):
    extra = data.map(lambda r, i: {"site": "x" if i % 2 else "y"}, with_indices=True)
    ex = explain(TinyClassifier().eval(), "w4", extra, GroupSpec(["group", "site"]), **FAST)
    assert ex.group_names == ["major×x", "major×y", "minor×x", "minor×y"]
    assert ex.group_columns == ["group", "site"]


def test_equal_counts_by_default_with_the_noise_floor_beside_each_group(data):
    model = TinyClassifier().eval()
    ex = explain(model, "w4", data, "group", **FAST)  # None: the smallest group's count for every group
    assert {g: x.examples for g, x in ex.gradients.items()} == {"major": 20, "minor": 20}
    assert {c.examples for c in ex.curvature["fp"].values()} == {20}
    assert ex.settings["equal_examples"] and ex.settings["examples_cap"] == 20
    laps = ex.settings["timings_s"]  # where the time went, stage by stage
    assert set(laps) == {"validate", "quantize", "paired_pass", "gradients", "curvature"}
    assert laps["curvature"] > 0 and sum(laps.values()) <= ex.settings["wall_time_s"] + 0.1
    names = [n for n, _ in model.named_parameters() if n.endswith(".weight")]
    params = [model.get_parameter(n) for n in names]
    for group, grad in ex.gradients.items():
        assert grad.noise_floor is not None and grad.noise_floor > 0
        # the split-half estimate of E‖∇L̂ − ∇L‖ against the one from per-example gradients,
        # sqrt(tr Σ / n), on the whole group (its 20-example sample is a subset of it)
        x, y = group_tensors(data, group)
        per_example = torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(
                torch.nn.functional.cross_entropy(model(x[i : i + 1]).logits, y[i : i + 1]), params)])
            for i in range(len(y))
        ]).double()
        expected = (per_example.var(0).sum() / 20).sqrt().item()
        assert expected / 2 < grad.noise_floor < expected * 2
    text = ex.to_markdown()
    assert "20 examples of every group (equal counts)" in text and "noise floor" in text
    line = next(row for row in text.splitlines() if row.startswith("| minor | 20 |") and row.count("|") == 7)
    assert f"{ex.gradients['minor'].noise_floor:.4g}" in line
    again = Explanation.from_dict(json.loads(ex.to_json()))
    assert again.gradients["minor"].noise_floor == ex.gradients["minor"].noise_floor
