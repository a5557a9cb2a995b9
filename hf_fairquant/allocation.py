"""Fairness-aware mixed precision: choose weight bits per layer under a mean-bits budget.

``allocate_bits(model, dataset, group_spec, budget=4.0)`` measures, for every Conv2d/Linear
layer ``l``, candidate width ``b`` and group ``g``, the sensitivity ``s[l, b, g]``: how much
the group's mean loss rises when *only* layer ``l`` is quantized to ``b`` bits (one forward
pass over a group-stratified calibration subset per layer × width), or its second-order proxy
``g·ΔW + ½·tr(H)/numel·‖ΔW‖²`` (``sensitivity="hessian"``). It then picks one width per layer
exactly, with ``scipy.optimize.milp``:

- ``objective="worst_group"``: minimise ``max_g Σ_l s[l, b_l, g]`` (ties broken by the mean);
- ``objective="mean"``: minimise the example-weighted mean over groups (the group-blind baseline);

subject to ``Σ_l params_l · b_l ≤ budget · Σ_l params_l`` (the parameter-weighted mean weight
bits). The result is a :class:`~hf_fairquant.QuantRecipe` with one override per module (its
exact name), plus a table of what was chosen and why, the predicted per-group loss increase
(sum of sensitivities) and the measured one after PTQ with the recipe.
"""

from __future__ import annotations

from .errors import FairQuantError

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from ._format import escape_cell
from .batching import LABELS, iterate_batches, predict_batches
from .curvature import GroupObjective, hutchinson_trace
from .groups import GroupSpec, as_group_spec, check_enough_for_groups, stratified_indices
from .quantization.api import apply_plan, calibrate, freeze, is_quantized
from .quantization.backends import get_backend
from .quantization.recipe import (
    SUPPORTED_ACTIVATION_BITS,
    SUPPORTED_WEIGHT_BITS,
    LayerQuant,
    QuantRecipe,
    quantizable_modules,
)

OBJECTIVES = ("worst_group", "mean")
#: Sensitivity estimators: "measured" (forward passes) or "hessian" (second-order proxy).
SENSITIVITIES = ("measured", "hessian")
# After minimising the worst group, the mean is minimised among solutions within this
# (relative, on sensitivities scaled to max |s| = 1) tolerance of the optimum.
_TIE_TOLERANCE = 1e-7


@dataclass
class LayerChoice:
    """One row of the allocation table: a module, its size, its width and the evidence."""

    name: str
    params: int
    bits: int
    #: ``{bits: {group: mean-loss increase when only this layer is quantized to bits}}``
    sensitivity: dict[int, dict[str, float]]


@dataclass
class Allocation:
    """What :func:`allocate_bits` chose (``recipe``) and why (``layers``, ``predicted``)."""

    recipe: QuantRecipe
    objective: str
    budget: float
    candidate_bits: tuple[int, ...]
    group_names: list[str]
    layers: list[LayerChoice]
    effective_bits: float
    #: predicted per-group loss increase: the sum of the chosen layers' sensitivities
    predicted_loss_increase: dict[str, float]
    #: on the calibration subset, full precision and after PTQ with ``recipe``
    fp_loss: dict[str, float] = field(default_factory=dict)
    fp_accuracy: dict[str, float] = field(default_factory=dict)
    measured_loss_increase: dict[str, float] = field(default_factory=dict)
    measured_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def bits(self) -> dict[str, int]:
        return {layer.name: layer.bits for layer in self.layers}

    def to_markdown(self) -> str:
        """The per-layer table, then predicted vs measured per group."""
        groups = self.group_names
        head = ["layer", "params", "bits"] + [f"s[{b}] {g}" for b in self.candidate_bits for g in groups]
        rows = [head, ["---"] * len(head)]
        for layer in self.layers:
            rows.append([layer.name, str(layer.params), str(layer.bits)]
                        + [f"{layer.sensitivity[b][g]:+.4f}" for b in self.candidate_bits for g in groups])
        summary = [["group", "predicted Δloss", "measured Δloss", "FP acc", "PTQ acc"], ["---"] * 5]
        for g in groups:
            summary.append([
                g, f"{self.predicted_loss_increase[g]:+.4f}", _fmt(self.measured_loss_increase.get(g), "+.4f"),
                _fmt(self.fp_accuracy.get(g), ".3f"), _fmt(self.measured_accuracy.get(g), ".3f"),
            ])
        title = (f"objective {self.objective}, budget {self.budget:g} mean bits, "
                 f"effective {self.effective_bits:.3f} bits, candidates {list(self.candidate_bits)}")
        return "\n".join([title, "", _table(rows), "", _table(summary), ""])


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _table(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(escape_cell(c) for c in row) + " |" for row in rows)


# ---------------------------------------------------------------- validation
def _check_arguments(
    candidate_bits: Sequence[int], budget: float, objective: str, sensitivity: str,
    activations: int | None, calibration_size: int,
) -> tuple[int, ...]:
    """Validate the cheap arguments; return the sorted unique candidate widths."""
    bits = tuple(sorted({int(b) for b in candidate_bits}))
    bad = [b for b in candidate_bits if b not in SUPPORTED_WEIGHT_BITS]
    if not bits or bad:
        raise FairQuantError(f"unsupported candidate bits {bad or list(candidate_bits)}; allowed: a non-empty subset of {list(SUPPORTED_WEIGHT_BITS)}")
    if not isinstance(budget, (int, float)) or not bits[0] <= budget <= bits[-1]:
        raise FairQuantError(
            f"budget {budget!r} mean weight bits is outside the candidates' range: allowed {bits[0]} ≤ budget ≤ {bits[-1]}"
        )
    if objective not in OBJECTIVES:
        raise FairQuantError(f"unknown objective {objective!r}; allowed: {list(OBJECTIVES)}")
    if sensitivity not in SENSITIVITIES:
        raise FairQuantError(f"unknown sensitivity {sensitivity!r}; allowed: {list(SENSITIVITIES)}")
    if activations not in SUPPORTED_ACTIVATION_BITS:
        raise FairQuantError(f"unsupported activation bits {activations!r}; allowed: None (float) or 8")
    if calibration_size <= 0:
        raise FairQuantError(f"calibration_size must be positive, got {calibration_size}")
    return bits


# ---------------------------------------------------------------- the solver
def solve_allocation(
    sensitivity: np.ndarray,
    params: Sequence[int],
    candidate_bits: Sequence[int],
    budget: float,
    objective: str = "worst_group",
    group_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Index into ``candidate_bits`` for each layer, optimal for ``objective`` (exact MILP).

    ``sensitivity`` has shape (layers, widths, groups). Binary ``x[l, b]`` with one width per
    layer; the budget row is ``Σ params_l · bits_b · x[l, b] ≤ budget · Σ params_l``.
    ``worst_group`` adds a free variable ``t ≥ Σ s[:, :, g] · x`` for every group, minimises
    ``t``, then minimises the weighted mean among the solutions that keep ``t`` optimal.
    """
    s = np.asarray(sensitivity, dtype=float)
    if s.ndim != 3 or 0 in s.shape or not np.isfinite(s).all():
        raise FairQuantError(f"sensitivity must be a finite (layers, widths, groups) array, got shape {s.shape}")
    n_layers, n_bits, n_groups = s.shape
    params = np.asarray(params, dtype=float)
    bits = np.asarray(candidate_bits, dtype=float)
    if params.shape != (n_layers,) or bits.shape != (n_bits,):
        raise FairQuantError(f"params {params.shape} and candidate_bits {bits.shape} do not match sensitivity {s.shape}")
    if objective not in OBJECTIVES:
        raise FairQuantError(f"unknown objective {objective!r}; allowed: {list(OBJECTIVES)}")
    weights = np.full(n_groups, 1.0 / n_groups) if group_weights is None else np.asarray(group_weights, float)
    if weights.shape != (n_groups,) or (weights < 0).any() or weights.sum() <= 0:
        raise FairQuantError(f"group_weights must be {n_groups} non-negative numbers, not all zero; got {weights.tolist()}")
    weights = weights / weights.sum()
    scale = np.abs(s).max() or 1.0
    s = s / scale  # milp's tolerances are absolute: keep the coefficients O(1)

    n_x = n_layers * n_bits
    one_hot = LinearConstraint(np.kron(np.eye(n_layers), np.ones(n_bits)), 1, 1)
    total = params.sum()
    cost = (params[:, None] * bits[None, :]).ravel() / total  # mean bits contributed by each x
    budget_row = LinearConstraint(cost[None, :], -np.inf, budget + 1e-9)
    mean_cost = (s @ weights).ravel()
    lowest = float(cost.reshape(n_layers, n_bits).min(1).sum())  # every layer at its fewest bits
    if objective == "mean":
        x = _milp(mean_cost, [one_hot, budget_row], n_x, 0, budget, lowest)
        return x.reshape(n_layers, n_bits).argmax(1)

    groups_x = s.transpose(2, 0, 1).reshape(n_groups, n_x)  # row g: Σ_l,b s[l,b,g] x[l,b]
    worst_rows = LinearConstraint(np.hstack([groups_x, -np.ones((n_groups, 1))]), -np.inf, 0)
    base = [_with_t(one_hot), _with_t(budget_row), worst_rows]
    first = _milp(np.r_[np.zeros(n_x), 1.0], base, n_x, 1, budget, lowest)
    t_star = first[-1]
    cap = LinearConstraint(np.r_[np.zeros(n_x), 1.0][None, :], -np.inf, t_star + _TIE_TOLERANCE)
    second = _milp(np.r_[mean_cost, 0.0], base + [cap], n_x, 1, budget, lowest)
    return second[:n_x].reshape(n_layers, n_bits).argmax(1)


def _with_t(constraint: LinearConstraint) -> LinearConstraint:
    """The same constraint with a zero column for the trailing variable ``t``."""
    a = np.asarray(constraint.A)
    return LinearConstraint(np.hstack([a, np.zeros((a.shape[0], 1))]), constraint.lb, constraint.ub)


def _milp(c: np.ndarray, constraints: list, n_x: int, n_free: int, budget: float, lowest: float) -> np.ndarray:
    """Run HiGHS (gap 0: exact); x binary, the ``n_free`` trailing variables continuous and free."""
    lower = np.r_[np.zeros(n_x), np.full(n_free, -np.inf)]
    upper = np.r_[np.ones(n_x), np.full(n_free, np.inf)]
    result = milp(
        c, constraints=constraints, integrality=np.r_[np.ones(n_x), np.zeros(n_free)],
        bounds=Bounds(lower, upper), options={"mip_rel_gap": 0.0},
    )
    if result.status == 2:
        raise FairQuantError(
            f"bit allocation is infeasible: the budget constraint (mean weight bits ≤ {budget:g}) cannot "
            f"hold with one candidate width per layer; the fewest achievable is {lowest:.4g} mean bits"
        )
    if result.x is None or result.status != 0:
        raise RuntimeError(f"scipy.optimize.milp failed: {result.message}")
    return result.x


# ---------------------------------------------------------------- measurement
def _losses_and_hits(model: torch.nn.Module, batches: list[tuple[dict, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-example cross-entropy and correctness over the prepared batches (eval mode)."""
    preds, losses = predict_batches(model, batches)
    labels = torch.cat([labels for _, labels in batches]).cpu().numpy()
    return losses, (preds == labels).astype(float)


def _group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_groups) / np.bincount(codes, minlength=n_groups)


def _quantize_one(module: torch.nn.Module, bits: int, activations: int | None) -> torch.nn.Module:
    return get_backend("quanto").quantize_module(copy.deepcopy(module), LayerQuant(bits, activations))


def measure_sensitivity(
    model: torch.nn.Module,
    batches: list[tuple[dict, torch.Tensor]],
    codes: np.ndarray,
    n_groups: int,
    layers: Sequence[str],
    candidate_bits: Sequence[int],
    activations: int | None = None,
) -> np.ndarray:
    """``s[l, b, g]``: group g's mean-loss increase with only ``layers[l]`` at ``candidate_bits[b]``.

    One forward pass per layer × width (two with 8-bit activations: calibrate, then measure);
    the model is restored after each.
    """
    model.eval()
    fp = _group_means(_losses_and_hits(model, batches)[0], codes, n_groups)
    inputs_only = [inputs for inputs, _ in batches]
    out = np.zeros((len(layers), len(candidate_bits), n_groups))
    for i, name in enumerate(layers):
        original = model.get_submodule(name)
        for j, bits in enumerate(candidate_bits):
            qmodule = _quantize_one(original, bits, activations)
            model.set_submodule(name, qmodule)
            try:
                if activations:
                    calibrate(model, inputs_only)
                freeze(qmodule)
                out[i, j] = _group_means(_losses_and_hits(model, batches)[0], codes, n_groups) - fp
            finally:
                model.set_submodule(name, original)
    return out


def _group_batches(batches: list, codes: np.ndarray, n_groups: int, batch_size: int) -> list[list]:
    """The prepared batches regrouped: one list of batches per group code."""
    inputs = {k: torch.cat([b[0][k] for b in batches]) for k in batches[0][0]}
    labels = torch.cat([b[1] for b in batches])
    out = []
    for g in range(n_groups):
        rows = torch.from_numpy(np.flatnonzero(codes == g)).to(labels.device)
        out.append([
            ({k: v[chunk] for k, v in inputs.items()}, labels[chunk]) for chunk in rows.split(batch_size)
        ])
    return out


def _weight_delta(module: torch.nn.Module, bits: int) -> torch.Tensor:
    """ΔW = Q_bits(W) − W, flat (what optimum-quanto's weight quantization changes)."""
    with torch.no_grad():
        qweight = _quantize_one(module, bits, None).qweight.dequantize()
        return (qweight - module.weight).reshape(-1).to(module.weight.dtype)


def hessian_sensitivity(
    model: torch.nn.Module,
    group_batches: list[list],
    layers: Sequence[str],
    candidate_bits: Sequence[int],
    probes: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Second-order proxy of ``s[l, b, g]``: ``g·ΔW + ½ · tr(H)/numel · ‖ΔW‖²``.

    ``g`` and ``H`` are the gradient and Hessian of group g's mean loss w.r.t. layer l's weight
    (double backward, :class:`hf_fairquant.diagnostics.GroupObjective`), the trace estimated
    by Hutchinson (``probes`` Rademacher probes). Weights only: activation quantization is
    not part of the proxy. Cost: per group and layer, one gradient and ``probes`` HVPs.
    """
    out = np.zeros((len(layers), len(candidate_bits), len(group_batches)))
    for i, name in enumerate(layers):
        module = model.get_submodule(name)
        deltas = [_weight_delta(module, b) for b in candidate_bits]
        for g, batches in enumerate(group_batches):
            objective = GroupObjective(model, [module.weight], batches)
            grad = objective.gradient().to(module.weight.device)
            trace = hutchinson_trace(objective.hvp, objective.dim, probes=probes, seed=seed).value
            for j, delta in enumerate(deltas):
                out[i, j, g] = float(grad @ delta + 0.5 * trace / delta.numel() * (delta @ delta))
    return out


# ---------------------------------------------------------------- the verb
def allocate_bits(
    model: torch.nn.Module,
    dataset: Any,
    group_spec: GroupSpec | str = "group",
    candidate_bits: Iterable[int] = (2, 4, 8),
    budget: float = 4.0,
    objective: str = "worst_group",
    sensitivity: str = "measured",
    activations: int | None = None,
    *,
    calibration_size: int = 512,
    batch_size: int = 256,
    hessian_probes: int = 16,
    seed: int = 0,
) -> Allocation:
    """Choose weight bits per Conv2d/Linear of ``model`` from group sensitivity under ``budget``.

    ``dataset`` is preprocessed (model inputs, ``labels``, group column(s)); a
    ``calibration_size`` group-stratified subset of it is used throughout. ``budget`` is the
    parameter-weighted mean weight bits over the quantized modules. ``activations=8`` also
    quantizes activations (calibrated on the same subset). ``sensitivity="hessian"`` replaces the
    forward passes by the second-order proxy of :func:`hessian_sensitivity` (``hessian_probes``
    Hutchinson probes). ``model`` is left unchanged.
    Returns an :class:`Allocation` whose ``recipe`` goes straight into ``quantize`` or
    ``FairQuantTrainingArguments(quantization=...)``.
    """
    bits = _check_arguments(tuple(candidate_bits), budget, objective, sensitivity, activations, calibration_size)
    if hessian_probes <= 0:
        raise FairQuantError(f"hessian_probes must be positive, got {hessian_probes}")
    layers = quantizable_modules(model)
    if is_quantized(model):
        raise FairQuantError(f"{type(model).__name__} is already quantized: allocate bits on the full-precision model")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise FairQuantError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = as_group_spec(group_spec)
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    spec.validate(dataset, label_column=LABELS, num_labels=num_labels, split="allocation")
    spec = spec if spec.is_fitted else spec.fit(dataset)
    all_codes = spec.encode(dataset)
    counts = np.bincount(all_codes, minlength=spec.num_groups)
    if (counts == 0).any():
        missing = [n for n, c in zip(spec.names, counts) if c == 0]
        raise FairQuantError(f"group(s) {missing} have no example in the allocation dataset; every group needs some")
    check_enough_for_groups(calibration_size, spec.num_groups, "calibration_size", spec.names)  # before any pass

    rows = stratified_indices(all_codes, calibration_size, seed)
    subset = dataset.select(rows.tolist())
    codes = all_codes[rows]
    device = next(model.parameters()).device
    batches = [({k: v.to(device) for k, v in inputs.items()}, labels.to(device))
               for inputs, labels in iterate_batches(model, subset, batch_size)]
    params = [model.get_submodule(n).weight.numel() for n in layers]

    was_training = model.training
    if sensitivity == "hessian":
        grouped = _group_batches(batches, codes, spec.num_groups, batch_size)
        s = hessian_sensitivity(model, grouped, layers, bits, probes=hessian_probes, seed=seed)
    else:
        s = measure_sensitivity(model, batches, codes, spec.num_groups, layers, bits, activations)
    choice = solve_allocation(s, params, bits, float(budget), objective, group_weights=counts)
    recipe = _recipe(layers, [bits[k] for k in choice], activations, objective, budget)
    allocation = Allocation(
        recipe=recipe, objective=objective, budget=float(budget), candidate_bits=bits, group_names=spec.names,
        layers=[
            LayerChoice(name, p, bits[k], {b: dict(zip(spec.names, s[i, j].tolist())) for j, b in enumerate(bits)})
            for i, (name, p, k) in enumerate(zip(layers, params, choice))
        ],
        effective_bits=recipe.effective_bits(model),
        predicted_loss_increase=dict(zip(spec.names, s[np.arange(len(layers)), choice].sum(0).tolist())),
    )
    _measure_after_ptq(allocation, model, batches, codes, spec)
    model.train(was_training)
    return allocation


def _recipe(layers: Sequence[str], chosen: Sequence[int], activations: int | None, objective: str, budget: float) -> QuantRecipe:
    """One override per module, by its exact name; the default is the most common width."""
    default = max(set(chosen), key=lambda b: (list(chosen).count(b), b))
    return QuantRecipe(
        weight_bits=default, activation_bits=activations,
        overrides=tuple((name, LayerQuant(b, activations)) for name, b in zip(layers, chosen)),
        name=f"auto-{objective}-{budget:g}bits",
    )


def _measure_after_ptq(
    allocation: Allocation, model: torch.nn.Module, batches: list, codes: np.ndarray, spec: GroupSpec
) -> None:
    """Fill the FP and PTQ per-group loss/accuracy of ``allocation`` (calibration subset)."""
    n = spec.num_groups
    fp_loss, fp_hits = _losses_and_hits(model, batches)
    qmodel = apply_plan(copy.deepcopy(model), allocation.recipe.plan(model))
    if allocation.recipe.uses_activations:
        calibrate(qmodel, [inputs for inputs, _ in batches])
    freeze(qmodel)
    q_loss, q_hits = _losses_and_hits(qmodel.eval(), batches)
    names = spec.names
    allocation.fp_loss = dict(zip(names, _group_means(fp_loss, codes, n).tolist()))
    allocation.fp_accuracy = dict(zip(names, _group_means(fp_hits, codes, n).tolist()))
    allocation.measured_loss_increase = dict(zip(names, (_group_means(q_loss, codes, n) - _group_means(fp_loss, codes, n)).tolist()))
    allocation.measured_accuracy = dict(zip(names, _group_means(q_hits, codes, n).tolist()))
