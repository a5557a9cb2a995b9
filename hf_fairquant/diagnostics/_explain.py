"""``explain``: measure the chain from weight change to group accuracy, per layer and per group.

Order of work: validate everything (arguments, recipe, and the data through
:class:`~hf_fairquant.inputs.GroupedInputs`: groups, references, a loss for every one) → quantize
a copy → one paired pass over the data (drift and logits) → per group, on its sampled examples:
gradients (FP and straight-through quantized), curvature (λ_max, trace), the Taylor terms along
Δθ → the bound. Losses and logit statistics are the task's (cross-entropy for a classifier).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import kendalltau
from tqdm.auto import tqdm

from .._config import resolve_config
from ..curvature import GroupObjective, hutchinson_trace, top_eigenvalue
from ..groups import GroupSpec
from ..inputs import GroupedInputs
from ..quantization import RecipeLike, calibration_batches
from . import _models
from ._config import ExplainConfig, lambda_budget_of
from ._drift import weight_errors
from ._explanation import (
    BoundSummary,
    Explanation,
    GroupBound,
    GroupCurvature,
    GroupGradient,
    GroupLogits,
    LayerDrift,
    LogitSummary,
)
from ._passes import PairedPass, paired_pass
from ._sampling import examples_to_use, sample_rows, sample_rows_by_units, split_halves


def explain(
    model: torch.nn.Module,
    recipe_or_quantized_model: RecipeLike | torch.nn.Module,
    dataset: Any,
    group_spec: GroupSpec | str | Sequence[str],
    *,
    calibration_dataset: Any = None,
    config: ExplainConfig | None = None,
    progress: bool = True,
    data_collator: Any = None,
    processing_class: Any = None,
    task: Any = None,
    **options: Any,
) -> Explanation:
    """Measure every link of the chain for ``model`` (full precision, not modified).

    ``recipe_or_quantized_model``: a recipe/preset (``"w4a8"``; a copy of ``model`` is quantized,
    activations calibrated on ``calibration_size`` group-stratified examples of
    ``calibration_dataset``, else of ``dataset``) or a model quantized from ``model``.
    ``dataset``: model inputs (materialised or through ``with_transform``), ``labels`` or
    ``label``, group column(s) — or :class:`~hf_fairquant.inputs.GroupedInputs`; batches are built
    as the Trainer builds them (``data_collator``, ``processing_class``); ``task`` (default: the
    model head's) says what the loss is. Groups with no
    example in ``calibration_dataset`` are explained too and listed in
    ``settings["eval_only_groups"]``.

    Options come from ``config`` (:class:`ExplainConfig`) and/or keywords naming its fields
    (``explain(..., probes=8)``; a keyword wins). Gradients and curvature use each group's mean
    loss (the task's: cross-entropy, or a causal LM's NLL per token) on ``examples_per_group``
    examples (None, the default: every group at the smallest group's count, at most 128 — so groups
    are compared at equal sample size; ``"all"``; or an int — an error if a group has fewer); for a
    task that scores tokens (a causal LM) these are counts of scored tokens (default cap 4,096),
    met exactly (the last sampled text scores only the tokens still needed), the logit statistics
    are per-token means and activation drift leaves padding out; beside each ‖∇L‖ its sampling noise
    floor at that size (split halves, no extra pass). Gradients and HVPs are accumulated over
    micro-batches of ``chunk_size`` examples (memory bounded by the chunk), over the
    ``parameters``: ``"quantized"`` (the weights quantization perturbs, default: the bound's Δθ
    lives there) or ``"all"``. λ_max: ``eigen_method`` ``"lanczos"`` (largest algebraic) or
    ``"power"`` (largest magnitude), to relative tolerance ``tol``, at most ``max_iterations``
    products; the trace from ``probes`` Rademacher probes. ``hvp_budget`` caps the products per
    group and model (None: no cap): the Taylor term takes 1 and the trace ``probes``, λ_max the
    rest, and stops there with its achieved residual and "not converged" rather than running
    on. ``quantized_curvature`` adds the straight-through quantized model's curvature.
    Everything is seeded by ``seed``.
    """
    started = time.perf_counter()
    cfg = resolve_config(ExplainConfig, config, options, "explain")
    calibration_size, examples_per_group, parameters = cfg.calibration_size, cfg.examples_per_group, cfg.parameters
    eigen_method, tol, max_iterations, lanczos_vectors = cfg.eigen_method, cfg.tol, cfg.max_iterations, cfg.lanczos_vectors
    probes, quantized_curvature, batch_size, seed = cfg.probes, cfg.quantized_curvature, cfg.batch_size, cfg.seed
    # ------------------------------------------------------------ validate (no heavy work)
    hvp_budget, chunk_size, shard = cfg.hvp_budget, cfg.chunk_size, cfg.shard
    lambda_budget = lambda_budget_of(hvp_budget, probes, max_iterations)
    recipe, plan, quantizer = _models.resolve(model, recipe_or_quantized_model)
    batching = dict(data_collator=data_collator, processing_class=processing_class)
    inputs = GroupedInputs.of(model, dataset, group_spec, task=task, split="explain", **batching)
    spec = inputs.spec
    eval_only: list[str] = []
    if calibration_dataset is not None:
        calibrating = GroupedInputs.of(model, calibration_dataset, GroupSpec(spec.columns), task=inputs.task,
                                       split="calibration", **batching)
        eval_only = GroupSpec(spec.columns).fit(inputs.dataset, calibrating.dataset).eval_only_groups(
            calibrating.dataset, {"explain": inputs.dataset}
        )
    codes = inputs.codes
    unit = inputs.task.unit_name  # "token" for a causal LM: groups are compared at equal token counts
    units = _row_units(inputs, batch_size) if unit != "example" else None
    counts = {name: int((codes == i).sum()) for i, name in enumerate(spec.names)}
    counts = {g: c for g, c in counts.items() if c > 0}
    available = counts if units is None else {g: int(units[codes == spec.code_of(g)].sum()) for g in counts}
    sizes = examples_to_use(available, examples_per_group, unit)

    # ------------------------------------------------------------ quantize
    laps = dict.fromkeys(("validate", "quantize", "paired_pass", "gradients", "curvature"), 0.0)
    lap = [started]

    def clock(stage: str) -> None:  # seconds since the last call go to ``stage``
        now = time.perf_counter()
        laps[stage] += now - lap[0]
        lap[0] = now

    clock("validate")
    calibration = None
    needs_calibration = recipe is not None and any(q.activation_bits for q in plan.values())
    if needs_calibration:
        source = calibration_dataset if calibration_dataset is not None else inputs.dataset
        calibration = calibration_batches(
            model, source, calibration_size, GroupSpec(spec.columns), batch_size, seed, **batching,
        )
    qm = _models.build(model, recipe_or_quantized_model, recipe, plan, quantizer, calibration)
    layers = list(plan)
    clock("quantize")

    # ------------------------------------------------------------ links 1 and 2
    w_errors = weight_errors(model, qm.frozen, layers, quantizer)
    pass_clock: dict[str, float] = {}
    passed = paired_pass(model, qm.frozen, inputs, layers, batch_size, progress, torch_compile=cfg.torch_compile,
                         shard=shard, timings=pass_clock)
    masks = {g: codes == spec.code_of(g) for g in counts}
    drift_layers = _layer_drift(passed, masks, w_errors, plan)
    weights = passed.units if units is not None else None
    logits = {g: _group_logits(passed, m, weights) for g, m in masks.items()}
    overall = _group_logits(passed, np.ones(len(codes), dtype=bool), weights)
    clock("paired_pass")
    if cfg.torch_compile:  # compile seconds apart from the pass's own
        laps["compile"] = pass_clock.get("compile_s", 0.0)
        laps["paired_pass"] -= laps["compile"]

    # ------------------------------------------------------------ links 3, 4, 5 per group
    names = _parameter_names(model, layers, parameters)
    fp_params = [model.get_parameter(n) for n in names]
    q_params = [qm.straight_through.get_parameter(n) for n in names]
    deltas = _models.weight_deltas(model, qm)
    delta = torch.cat([
        deltas[n.rsplit(".", 1)[0]].reshape(-1) if n.endswith(".weight") and n.rsplit(".", 1)[0] in deltas
        else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
        for n, p in zip(names, fp_params)
    ]).to(fp_params[0].dtype)
    delta_norm = float(delta.double().norm())
    eig = dict(method=eigen_method, tol=tol, max_iterations=lambda_budget, lanczos_vectors=lanczos_vectors, seed=seed)
    eig_quantized = {**eig, "max_iterations": min(max_iterations, lambda_budget + 1)}  # no Taylor term there

    gradients, curvature, taylor = {}, {"fp": {}}, {}
    if quantized_curvature:
        curvature["quantized"] = {}
    texts_used = {}
    for g in tqdm(list(counts), desc="groups", disable=not progress):
        if units is None:
            rows, keep = sample_rows(codes, spec.code_of(g), sizes[g], seed), None
        else:  # exactly sizes[g] tokens: the last sampled text scores only the tokens still needed
            rows, keep = sample_rows_by_units(codes, spec.code_of(g), units, sizes[g], seed)
            texts_used[g] = len(rows)
        halves = split_halves(rows, seed) if len(rows) >= 2 else (rows,)
        batches, parts, half_sizes = [], [], []
        for label, half in enumerate(halves):  # micro-batches never straddle the halves (the noise floor's)
            half_keep = None if keep is None else keep[np.searchsorted(rows, half)]
            piece = _sampled_batches(inputs, half, half_keep, chunk_size or batch_size)
            batches += piece
            parts += [label] * len(piece)
            half_sizes.append(len(half) if half_keep is None else int(half_keep.sum()))
        objective = dict(chunk_size=chunk_size, task=inputs.task, parts=parts, shard=shard)
        fp_obj = GroupObjective(model, fp_params, batches, **objective)
        q_obj = GroupObjective(qm.straight_through, q_params, batches, **objective)
        with tqdm(desc=f"curvature {g}", unit="HVP", disable=not progress, leave=False) as bar, fp_obj.retained():
            fp_obj.on_hvp = q_obj.on_hvp = bar.update
            grad, noise = _gradient_and_noise(fp_obj, half_sizes)  # builds the graphs the products reuse
            fp_obj.release_gradient()
            q_grad = q_obj.gradient() if not quantized_curvature else None
            clock("gradients")
            quadratic = float(torch.dot(fp_obj.hvp(delta).double(), delta.double()))
            curvature["fp"][g] = _curvature(fp_obj, eig, probes, seed)
        if quantized_curvature:
            with q_obj.retained():
                q_grad = q_obj.gradient()
                curvature["quantized"][g] = _curvature(q_obj, eig_quantized, probes, seed)
        gradients[g] = GroupGradient(sum(half_sizes), float(grad.double().norm()), float(q_grad.double().norm()), noise)
        taylor[g] = float(torch.dot(grad.double(), delta.double())) + 0.5 * quadratic
        clock("curvature")

    bound = _bound(delta_norm, gradients, curvature["fp"], taylor, logits)
    settings = {
        "parameters": parameters, "dimension": int(delta.numel()), "eigen_method": eigen_method, "tol": tol,
        "max_iterations": max_iterations, "lanczos_vectors": lanczos_vectors, "probes": probes,
        "hvp_budget": hvp_budget, "chunk_size": chunk_size, "torch_compile": cfg.torch_compile,
        "examples_per_group": examples_per_group, "examples_cap": max(sizes.values()),
        "equal_examples": len(set(sizes.values())) == 1,
        "batch_size": batch_size, "seed": seed,
        **({"unit": unit, "texts_per_group": texts_used} if units is not None else {}),
        "calibration_size": calibration_size if needs_calibration else 0,
        "calibrated_on": None if not needs_calibration else ("calibration_dataset" if calibration_dataset is not None else "dataset"),
        "eval_examples": len(inputs),
        "eval_only_groups": eval_only,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "timings_s": {k: round(v, 2) for k, v in laps.items()},
    }
    return Explanation(
        group_columns=list(spec.columns),
        group_names=list(counts),
        quantization=_quantization_info(recipe, plan),
        layers=drift_layers,
        logits=logits,
        overall=overall,
        gradients=gradients,
        curvature=curvature,
        bound=bound,
        settings=settings,
    )


# ---------------------------------------------------------------- validation helpers
def _row_units(inputs: GroupedInputs, batch_size: int) -> np.ndarray:
    """Scored units (tokens) of every row, from the targets alone (no forward pass)."""
    return np.concatenate([inputs.task.units(targets).cpu().numpy() for _, targets in inputs.batches(batch_size)])


def _sampled_batches(inputs: GroupedInputs, rows: np.ndarray, keep: np.ndarray | None, size: int) -> list:
    """``(inputs, targets)`` batches of ``rows``; with ``keep``, row i scores only its first ``keep[i]`` units."""
    batches, start = [], 0
    for batch, targets in inputs.select(rows).batches(size):
        n = int(targets.shape[0])
        if keep is not None:
            targets = inputs.task.limit_units(targets, torch.as_tensor(keep[start:start + n]))
        batches.append((batch, targets))
        start += n
    return batches


def _gradient_and_noise(objective: GroupObjective, sizes: list[int]) -> tuple[torch.Tensor, float | None]:
    """∇ of the group's mean loss and its split-half sampling noise floor
    √(n_A·n_B)/n · ‖∇L_A − ∇L_B‖ (E‖∇L̂ − ∇L‖ at n examples), from the objective's gradient
    parts (its micro-batches of half A, labelled 0, and of half B, 1: the same backward passes)."""
    parts = objective.gradient_parts()
    gradient = objective.gradient()
    if len(sizes) < 2:
        return gradient, None
    n_a, n_b = sizes
    n = n_a + n_b
    mean_a, mean_b = parts[0].double() * (n / n_a), parts[1].double() * (n / n_b)  # each half's own mean gradient
    noise = float((mean_a - mean_b).norm()) * (n_a * n_b) ** 0.5 / n
    return gradient, noise


def _parameter_names(model: torch.nn.Module, layers: list[str], parameters: str) -> list[str]:
    if parameters == "quantized":
        return [f"{name}.weight" for name in layers]
    return [n for n, _ in model.named_parameters()]


def _quantization_info(recipe: Any, plan: dict) -> dict[str, Any]:
    layer_bits = {n: str(q) for n, q in plan.items()}
    if recipe is not None:
        return {**recipe.to_dict(), "name": str(recipe).upper(), "layers": layer_bits}
    kinds = sorted(set(layer_bits.values()))
    return {"name": "+".join(k.upper() for k in kinds) + " (given model)", "layers": layer_bits}


# ---------------------------------------------------------------- aggregation
def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def _layer_drift(passed: PairedPass, masks: dict[str, np.ndarray], errors: dict[str, float], plan: dict) -> list[LayerDrift]:
    out = []
    for j, name in enumerate(passed.layers):
        per_group = {
            g: _ratio(float(np.sqrt(passed.drift_sq[m, j].sum())), float(np.sqrt(passed.norm_sq[m, j].sum())))
            for g, m in masks.items()
        }
        overall = _ratio(float(np.sqrt(passed.drift_sq[:, j].sum())), float(np.sqrt(passed.norm_sq[:, j].sum())))
        out.append(LayerDrift(name, str(plan[name]), errors[name], per_group, overall))
    return out


def _summary(stats: dict[str, np.ndarray], mask: np.ndarray, weights: np.ndarray | None = None) -> LogitSummary:
    """Means over the group's examples; with ``weights`` (scored tokens) the per-token means."""
    if weights is None:
        mean = {k: float(v[mask].mean()) for k, v in stats.items()}
    else:
        mean = {k: float(np.average(v[mask], weights=weights[mask])) for k, v in stats.items()}
    return LogitSummary(mean["correct"], mean["loss"], mean["logit_variance"], mean["confidence"], mean["margin"])


def _group_logits(passed: PairedPass, mask: np.ndarray, weights: np.ndarray | None = None) -> GroupLogits:
    fp, q = _summary(passed.fp, mask, weights), _summary(passed.quantized, mask, weights)
    return GroupLogits(
        int(mask.sum()), fp, q, _ratio(q.logit_variance, fp.logit_variance), q.loss - fp.loss, fp.accuracy - q.accuracy
    )


def _curvature(objective: GroupObjective, eig: dict, probes: int, seed: int) -> GroupCurvature:
    top = top_eigenvalue(objective.hvp, objective.dim, dtype=objective.dtype, **eig)
    trace = hutchinson_trace(objective.hvp, objective.dim, probes=probes, seed=seed, dtype=objective.dtype)
    return GroupCurvature(
        objective.num_units, top.value, top.hvps, top.converged, trace.value, trace.stderr, trace.probes, trace.exact,
        top.residual,
    )


def _bound(
    delta_norm: float,
    gradients: dict[str, GroupGradient],
    curvature: dict[str, GroupCurvature],
    taylor: dict[str, float],
    logits: dict[str, GroupLogits],
) -> BoundSummary:
    groups = {}
    for g in gradients:
        first = gradients[g].fp * delta_norm
        second = 0.5 * curvature[g].lambda_max * delta_norm**2
        groups[g] = GroupBound(first, second, first + second, taylor[g], logits[g].excess_loss)
    by_bound = sorted(groups, key=lambda g: -groups[g].bound)
    by_measured = sorted(groups, key=lambda g: -groups[g].measured_excess_loss)
    tau = None
    if len(groups) > 1:
        value = kendalltau([groups[g].bound for g in groups], [groups[g].measured_excess_loss for g in groups]).statistic
        tau = None if np.isnan(value) else float(value)
    return BoundSummary(delta_norm, groups, by_bound, by_measured, by_bound == by_measured, tau)
