"""Fairness-aware mixed precision: choose weight bits per layer under a mean-bits budget.

``allocate_bits(model, dataset, group_spec, budget=4.0)`` measures, for every Conv2d/Linear
layer ``l``, candidate width ``b`` and group ``g``, the sensitivity ``s[l, b, g]``: how much
the group's mean loss rises when *only* layer ``l`` is quantized to ``b`` bits (one forward
pass over a group-stratified calibration subset per layer × width), its second-order proxy
``g·ΔW + ½·tr(H)/numel·‖ΔW‖²`` (``sensitivity="hessian"``), or the gradient score of NVIDIA
ModelOpt's AutoQuantize made per group (``sensitivity="gradient"``): the group's mean of
``½·(∂ℓ/∂y · (Q(y) − y))²`` over its examples, y a layer's output and Q(y) the output with that
layer's weights quantized — every layer and width from one forward and one backward pass over
the subset (forward hooks keep each layer's input; Q(y) − y = layer(x; ΔW) is linear in ΔW). It
then picks one width per layer exactly, with ``scipy.optimize.milp``:

- ``objective="worst_group"``: minimise ``max_g Σ_l s[l, b_l, g]`` (ties broken by the mean);
- ``objective="mean"``: minimise the example-weighted mean over groups (the group-blind baseline);
- ``objective="cvar"``: minimise the mean of the worst ``alpha`` share of groups by example
  weight (CVaR_α, the Rockafellar–Uryasev linearisation: ``τ + (1/α)·Σ_g w_g·u_g`` with
  ``u_g ≥ L_g − τ``, ``u_g ≥ 0``); α = 1 is the mean, α → 0 the worst group;

subject to ``Σ_l params_l · b_l ≤ budget · Σ_l params_l`` (the parameter-weighted mean weight
bits). The result is a :class:`~hf_fairquant.QuantRecipe` with one override per module (its
exact name), plus a table of what was chosen and why, the predicted per-group loss increase
(sum of sensitivities) and the measured one after PTQ with the recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from tqdm.auto import tqdm

from ._format import escape_cell
from .curvature import GroupObjective, hutchinson_trace
from .errors import FairQuantError
from .groups import GroupSpec, check_enough_for_groups, stratified_indices
from .inputs import GroupedInputs
from .quantization.api import apply_plan, calibrate, check_not_quantized, freeze
from .quantization.backends import DEFAULT_BACKEND, get_quantizer
from .quantization.recipe import (
    SUPPORTED_ACTIVATION_BITS,
    SUPPORTED_WEIGHT_BITS,
    LayerQuant,
    QuantRecipe,
    quantizable_modules,
)
from .tasks import Task, TaskOutputs, task_of

OBJECTIVES = ("worst_group", "mean", "cvar")
#: Sensitivity estimators: "measured" (forward passes), "hessian" (second-order proxy) or
#: "gradient" (AutoQuantize's per-example output-gradient score, per group).
SENSITIVITIES = ("measured", "hessian", "gradient")
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
def _is_number(text: Any) -> bool:
    try:
        float(text.strip())
    except (AttributeError, ValueError):
        return False
    return True


def _check_arguments(
    candidate_bits: Sequence[int], budget: float, objective: str, sensitivity: str,
    activations: int | None, calibration_size: int,
) -> tuple[int, ...]:
    """Validate the cheap arguments; return the sorted unique candidate widths."""
    bits = tuple(sorted({int(b) for b in candidate_bits}))
    bad = [b for b in candidate_bits if b not in SUPPORTED_WEIGHT_BITS]
    if not bits or bad:
        raise FairQuantError(f"unsupported candidate bits {bad or list(candidate_bits)}; allowed: a non-empty subset of {list(SUPPORTED_WEIGHT_BITS)}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise FairQuantError(
            f"budget must be a number of mean weight bits ({bits[0]} ≤ budget ≤ {bits[-1]}), got "
            f"{type(budget).__name__} {budget!r}" + (f": pass {float(budget.strip())!r}" if _is_number(budget) else "")
        )
    if not bits[0] <= budget <= bits[-1]:
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
    alpha: float = 0.2,
) -> np.ndarray:
    """Index into ``candidate_bits`` for each layer, optimal for ``objective`` (exact MILP).

    ``sensitivity`` has shape (layers, widths, groups). Binary ``x[l, b]`` with one width per
    layer; the budget row is ``Σ params_l · bits_b · x[l, b] ≤ budget · Σ params_l``.
    ``worst_group`` adds a free variable ``t ≥ Σ s[:, :, g] · x`` for every group, minimises
    ``t``, then minimises the weighted mean among the solutions that keep ``t`` optimal.
    ``cvar`` adds ``τ`` (free) and ``u_g ≥ 0`` with ``u_g ≥ Σ s[:, :, g]·x − τ`` and minimises
    ``τ + Σ_g w_g u_g / alpha`` (``w`` the normalised ``group_weights``): at the optimum that is
    exactly the mean loss of the worst ``alpha`` share of the example weight.
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
    check_alpha(alpha)
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
        return _chosen(x, n_layers, n_bits)

    groups_x = s.transpose(2, 0, 1).reshape(n_groups, n_x)  # row g: Σ_l,b s[l,b,g] x[l,b]
    if objective == "cvar":
        # variables: x (n_x), τ (1, free), u (n_groups, ≥ 0 by the rows below)
        pad = lambda c: _with_t(c, 1 + n_groups)  # noqa: E731
        excess = LinearConstraint(np.hstack([groups_x, -np.ones((n_groups, 1)), -np.eye(n_groups)]), -np.inf, 0)
        positive = LinearConstraint(np.hstack([np.zeros((n_groups, n_x + 1)), np.eye(n_groups)]), 0, np.inf)
        c = np.r_[np.zeros(n_x), 1.0, weights / alpha]
        x = _milp(c, [pad(one_hot), pad(budget_row), excess, positive], n_x, 1 + n_groups, budget, lowest)
        return _chosen(x[:n_x], n_layers, n_bits)
    worst_rows = LinearConstraint(np.hstack([groups_x, -np.ones((n_groups, 1))]), -np.inf, 0)
    base = [_with_t(one_hot), _with_t(budget_row), worst_rows]
    first = _milp(np.r_[np.zeros(n_x), 1.0], base, n_x, 1, budget, lowest)
    t_star = first[-1]
    cap = LinearConstraint(np.r_[np.zeros(n_x), 1.0][None, :], -np.inf, t_star + _TIE_TOLERANCE)
    second = _milp(np.r_[mean_cost, 0.0], base + [cap], n_x, 1, budget, lowest)
    return _chosen(second[:n_x], n_layers, n_bits)


def _chosen(x: np.ndarray, n_layers: int, n_bits: int) -> np.ndarray:
    """The width index picked for each layer: the one binary ``x[l, b]`` set per row."""
    rows, columns = np.nonzero(x.reshape(n_layers, n_bits) > 0.5)
    if not np.array_equal(rows, np.arange(n_layers)):
        raise RuntimeError(f"scipy.optimize.milp returned no one-hot choice per layer: {x.reshape(n_layers, n_bits)}")
    return columns


def _with_t(constraint: LinearConstraint, extra: int = 1) -> LinearConstraint:
    """The same constraint with zero columns for ``extra`` trailing variables (``t``, ...)."""
    a = np.asarray(constraint.A)
    return LinearConstraint(np.hstack([a, np.zeros((a.shape[0], extra))]), constraint.lb, constraint.ub)


def check_alpha(alpha: float) -> None:
    """CVaR's share of the example weight: 0 < alpha ≤ 1."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise FairQuantError(
            f"alpha {alpha!r} is not a share of the example weight: allowed 0 < alpha ≤ 1 "
            "(1: the mean over groups; smaller: the mean of the worst groups holding that share)"
        )


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
def _losses_and_hits(model: torch.nn.Module, batches: list[tuple[dict, torch.Tensor]], task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Per-example loss and correctness (share of its scored units) over the prepared batches (eval mode)."""
    model.eval()
    with torch.no_grad():
        outputs = TaskOutputs.concatenate(task.batch_outputs(model(**inputs), targets) for inputs, targets in batches)
    starts = np.concatenate([[0], np.cumsum(outputs.units)[:-1]])
    hits = np.add.reduceat(outputs.correct.astype(float), starts) / np.maximum(outputs.units, 1)
    return outputs.losses, hits


def _group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_groups) / np.bincount(codes, minlength=n_groups)


def _quantize_one(module: torch.nn.Module, bits: int, activations: int | None, backend: str = DEFAULT_BACKEND) -> torch.nn.Module:
    return get_quantizer(backend).quantize_module(copy.deepcopy(module), LayerQuant(bits, activations))


def measure_sensitivity(
    model: torch.nn.Module,
    batches: list[tuple[dict, torch.Tensor]],
    codes: np.ndarray,
    n_groups: int,
    layers: Sequence[str],
    candidate_bits: Sequence[int],
    activations: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> np.ndarray:
    """``s[l, b, g]``: group g's mean-loss increase with only ``layers[l]`` at ``candidate_bits[b]``.

    One forward pass per layer × width (two with 8-bit activations: calibrate, then measure);
    the model is restored after each.
    """
    task = _task(model, task)
    model.eval()
    fp = _group_means(_losses_and_hits(model, batches, task)[0], codes, n_groups)
    inputs_only = [inputs for inputs, _ in batches]
    out = np.zeros((len(layers), len(candidate_bits), n_groups))
    for i, name in enumerate(tqdm(layers, desc="measured sensitivity", unit="layer", disable=not progress, leave=False)):
        original = model.get_submodule(name)
        for j, bits in enumerate(candidate_bits):
            qmodule = _quantize_one(original, bits, activations)
            model.set_submodule(name, qmodule)
            try:
                freeze(qmodule)
                if activations:
                    calibrate(model, inputs_only)
                out[i, j] = _group_means(_losses_and_hits(model, batches, task)[0], codes, n_groups) - fp
            finally:
                model.set_submodule(name, original)
    return out


def group_batches(batches: list, codes: np.ndarray, n_groups: int, batch_size: int) -> list[list]:
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


def _weight_delta(module: torch.nn.Module, bits: int, backend: str = DEFAULT_BACKEND) -> torch.Tensor:
    """ΔW = Q_bits(W) − W, flat (what the backend's weight quantization changes)."""
    with torch.no_grad():
        qweight = get_quantizer(backend).quantized_weight(_quantize_one(module, bits, None, backend))
        return (qweight - module.weight).reshape(-1).to(module.weight.dtype)


def hessian_sensitivity(
    model: torch.nn.Module,
    group_batches: list[list],
    layers: Sequence[str],
    candidate_bits: Sequence[int],
    probes: int = 16,
    seed: int = 0,
    progress: bool = False,
    task: Task | None = None,
) -> np.ndarray:
    """Second-order proxy of ``s[l, b, g]``: ``g·ΔW + ½ · tr(H)/numel · ‖ΔW‖²``.

    ``g`` and ``H`` are the gradient and Hessian of group g's mean loss w.r.t. layer l's weight
    (double backward, :class:`hf_fairquant.diagnostics.GroupObjective`), the trace estimated
    by Hutchinson (``probes`` Rademacher probes). Weights only: activation quantization is
    not part of the proxy. Cost: per group and layer, one gradient and ``probes`` HVPs, each one
    backward through the gradient's kept graphs (:meth:`~hf_fairquant.curvature.GroupObjective.retained`).
    """
    out = np.zeros((len(layers), len(candidate_bits), len(group_batches)))
    for i, name in enumerate(tqdm(layers, desc="hessian sensitivity", unit="layer", disable=not progress, leave=False)):
        module = model.get_submodule(name)
        deltas = [_weight_delta(module, b) for b in candidate_bits]
        for g, batches in enumerate(group_batches):
            objective = GroupObjective(model, [module.weight], batches, task=_task(model, task))
            with objective.retained():  # the probes reuse the gradient's graphs
                grad = objective.gradient().to(module.weight.device)
                trace = hutchinson_trace(objective.hvp, objective.dim, probes=probes, seed=seed).value
            for j, delta in enumerate(deltas):
                out[i, j, g] = float(grad @ delta + 0.5 * trace / delta.numel() * (delta @ delta))
    return out


class _OutputRecorder:
    """Forward hooks that keep every listed module's input and output of one forward (per call)."""

    def __init__(self, modules: Sequence[torch.nn.Module]):
        self.calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in modules]
        self.active = True
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def hook(module, args, output):
            if self.active and args and torch.is_tensor(output) and output.requires_grad:
                self.calls[index].append((args[0].detach(), output))
        return hook

    def clear(self) -> None:
        for calls in self.calls:
            calls.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _output_change(module: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Q(y) − y for a Linear/Conv2d: the layer applied to ``x`` with weight ΔW and no bias."""
    params = {"weight": delta.view_as(module.weight)}
    if getattr(module, "bias", None) is not None:
        params["bias"] = torch.zeros_like(module.bias)
    return torch.func.functional_call(module, params, (x,))


def gradient_sensitivity(
    model: torch.nn.Module,
    batches: list[tuple[dict, torch.Tensor]],
    codes: np.ndarray,
    n_groups: int,
    layers: Sequence[str],
    candidate_bits: Sequence[int],
    progress: bool = False,
    task: Task | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AutoQuantize's score per group: ``s[l, b, g] = mean_{i∈g} ½·(∂ℓ_i/∂y_l · (Q_b(y_l) − y_l))²``.

    ``y_l`` is layer l's output for example i, ``ℓ_i`` its cross-entropy, ``Q_b(y_l)`` the output
    with only layer l's weights quantized to b bits (the rest of the network as it is): the
    first-order change of ℓ_i is ``∂ℓ_i/∂y · Δy``, and the square is the Fisher (Gauss–Newton)
    estimate of the loss increase. One forward and one backward per batch give ∂ℓ_i/∂y of every
    layer at once (eval mode: example i's loss depends on example i's outputs only); Δy is the
    layer applied to its recorded input with weight ΔW, one extra layer evaluation per width.
    Returns ``(s, per-example FP loss, per-example FP correctness)`` (the loss of the same pass).
    """
    task = _task(model, task)
    modules = [model.get_submodule(n) for n in layers]
    deltas = [[_weight_delta(m, b) for b in candidate_bits] for m in modules]
    totals = np.zeros((len(layers), len(candidate_bits), n_groups))
    losses, hits = [], []
    weights = [m.weight for m in modules]
    flags = [w.requires_grad for w in weights]
    recorder = _OutputRecorder(modules)
    offset = 0
    was_training = model.training
    model.eval()
    try:
        for w in weights:
            w.requires_grad_(True)  # every layer's output then requires grad (parallel branches too)
        for inputs, labels in tqdm(batches, desc="gradient sensitivity", disable=not progress, leave=False):
            recorder.clear()
            recorder.active = True
            with torch.enable_grad():
                output = model(**inputs)
                loss = task.loss(output, labels)
                outputs = [y for calls in recorder.calls for _, y in calls]
                grads = iter(torch.autograd.grad(loss.sum(), outputs, allow_unused=True))
            recorder.active = False
            batch_codes = codes[offset : offset + len(loss)]
            offset += len(loss)
            losses.append(loss.detach().cpu().numpy())
            scored = task.batch_outputs(output, labels)
            starts = np.concatenate([[0], np.cumsum(scored.units)[:-1]])
            hits.append(np.add.reduceat(scored.correct.astype(float), starts) / np.maximum(scored.units, 1))
            with torch.no_grad():
                for i, (module, calls) in enumerate(zip(modules, recorder.calls)):
                    per_call = [(x, next(grads)) for x, _ in calls]
                    for j, delta in enumerate(deltas[i]):
                        first_order = sum(
                            (g * _output_change(module, x, delta)).flatten(1).sum(1) for x, g in per_call if g is not None
                        )
                        if torch.is_tensor(first_order):
                            totals[i, j] += np.bincount(
                                batch_codes, weights=0.5 * first_order.double().cpu().numpy() ** 2, minlength=n_groups
                            )
    finally:
        recorder.remove()
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
        model.train(was_training)
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    return totals / np.maximum(counts, 1), np.concatenate(losses), np.concatenate(hits)


# ---------------------------------------------------------------- the verb
def _task(model: torch.nn.Module, task: Task | None) -> Task:
    return task if task is not None else task_of(model)


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
    alpha: float = 0.2,
    calibration_size: int = 512,
    batch_size: int = 256,
    hessian_probes: int = 16,
    seed: int = 0,
    progress: bool = True,
    data_collator: Any = None,
    processing_class: Any = None,
) -> Allocation:
    """Choose weight bits per Conv2d/Linear of ``model`` from group sensitivity under ``budget``.

    ``dataset`` is preprocessed (model inputs, ``labels``, group column(s)); a
    ``calibration_size`` group-stratified subset of it is used throughout. ``budget`` is the
    parameter-weighted mean weight bits over the quantized modules. ``activations=8`` also
    quantizes activations (calibrated on the same subset). ``sensitivity="hessian"`` replaces the
    forward passes by the second-order proxy of :func:`hessian_sensitivity` (``hessian_probes``
    Hutchinson probes); ``sensitivity="gradient"`` by AutoQuantize's per-group gradient score
    (:func:`gradient_sensitivity`: one forward + backward over the subset for every layer and
    width; weights only, like "hessian"). ``objective="cvar"`` minimises the mean loss of the
    worst ``alpha`` share of the examples' groups. ``progress`` shows a bar per stage.
    ``model`` is left unchanged. ``data_collator``/``processing_class`` build the batches as
    the Trainer does (:class:`~hf_fairquant.batching.ModelInputs`).
    Returns an :class:`Allocation` whose ``recipe`` goes straight into ``quantize`` or
    ``FairQuantTrainingArguments(quantization=...)``.
    """
    bits = _check_arguments(tuple(candidate_bits), budget, objective, sensitivity, activations, calibration_size)
    if hessian_probes <= 0:
        raise FairQuantError(f"hessian_probes must be positive, got {hessian_probes}")
    check_alpha(alpha)
    check_not_quantized(model, "allocate_bits")
    layers = quantizable_modules(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise FairQuantError(f"batch_size must be a positive integer, got {batch_size!r}")
    inputs = GroupedInputs.of(model, dataset, group_spec, split="allocation", data_collator=data_collator,
                              processing_class=processing_class)  # everything checked, before any work
    spec, task = inputs.spec, inputs.task
    all_codes = inputs.codes
    counts = np.bincount(all_codes, minlength=spec.num_groups)
    if (counts == 0).any():
        missing = [n for n, c in zip(spec.names, counts) if c == 0]
        raise FairQuantError(f"group(s) {missing} have no example in the allocation dataset; every group needs some")
    check_enough_for_groups(calibration_size, spec.num_groups, "calibration_size", spec.names)  # before any pass

    rows = stratified_indices(all_codes, calibration_size, seed)
    codes = all_codes[rows]
    batches = list(inputs.select(rows).batches(batch_size))
    params = [model.get_submodule(n).weight.numel() for n in layers]

    was_training = model.training
    fp = None
    if sensitivity == "hessian":
        grouped = group_batches(batches, codes, spec.num_groups, batch_size)
        s = hessian_sensitivity(model, grouped, layers, bits, probes=hessian_probes, seed=seed, progress=progress, task=task)
    elif sensitivity == "gradient":
        s, *fp = gradient_sensitivity(model, batches, codes, spec.num_groups, layers, bits, progress=progress, task=task)
    else:
        s = measure_sensitivity(model, batches, codes, spec.num_groups, layers, bits, activations, progress=progress, task=task)
    choice = solve_allocation(s, params, bits, float(budget), objective, group_weights=counts, alpha=alpha)
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
    _measure_after_ptq(allocation, model, batches, codes, spec, task, fp)
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
    allocation: Allocation, model: torch.nn.Module, batches: list, codes: np.ndarray, spec: GroupSpec, task: Task,
    fp: Sequence[np.ndarray] | None = None,
) -> None:
    """Fill the FP and PTQ per-group loss/accuracy of ``allocation`` (calibration subset);
    ``fp`` (per-example loss, correctness) reuses an FP pass already made."""
    n = spec.num_groups
    fp_loss, fp_hits = fp if fp else _losses_and_hits(model, batches, task)
    qmodel = freeze(apply_plan(copy.deepcopy(model), allocation.recipe.plan(model)))
    if allocation.recipe.uses_activations:  # after freeze: same ranges, no re-quantizing per forward
        calibrate(qmodel, [inputs for inputs, _ in batches])
    q_loss, q_hits = _losses_and_hits(qmodel.eval(), batches, task)
    names = spec.names
    allocation.fp_loss = dict(zip(names, _group_means(fp_loss, codes, n).tolist()))
    allocation.fp_accuracy = dict(zip(names, _group_means(fp_hits, codes, n).tolist()))
    allocation.measured_loss_increase = dict(zip(names, (_group_means(q_loss, codes, n) - _group_means(fp_loss, codes, n)).tolist()))
    allocation.measured_accuracy = dict(zip(names, _group_means(q_hits, codes, n).tolist()))
