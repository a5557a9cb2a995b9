"""Render an Explanation as Markdown that reads as the chain: one table per link."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._format import markdown_table, pct
from ..groups import INTERSECTION_SEPARATOR

if TYPE_CHECKING:  # pragma: no cover
    from ._explanation import Explanation


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _image(plots_dir: str | None, name: str, alt: str) -> str:
    return f"\n\n![{alt}]({plots_dir}/{name})" if plots_dir else ""


def render(ex: "Explanation", plots_dir: str | None = None) -> str:
    groups = ex.group_names
    s = ex.settings
    units = f"{s.get('unit', 'example')}s"  # "tokens" for a causal LM: groups compared at equal token counts
    counts = ", ".join(f"{g} {ex.logits[g].count}" for g in groups)
    parts = [
        f"# Explain: {ex.quantization.get('name', 'quantized')} vs full precision",
        f"Groups by {INTERSECTION_SEPARATOR.join(ex.group_columns)}; examples per group: {counts}. "
        f"Gradients and curvature over the `{s.get('parameters', 'quantized')}` parameters "
        f"({s.get('dimension', '?')} values) on "
        + (f"{s.get('examples_cap')} {units} of every group (equal counts); " if s.get("equal_examples")
           else f"up to {s.get('examples_cap', 'all')} {units} per group (unequal counts: a smaller sample has a larger ‖∇L‖ "
                "and λ_max from sampling noise alone); ")
        + f"at most {s['hvp_budget']} Hessian-vector products per group; " * bool(s.get("hvp_budget"))
        + f"seed {s.get('seed')}."
        + (f" Wall time {s['wall_time_s']} s." if "wall_time_s" in s else ""),
    ]

    # 1. drift
    head = ["layer", "bits", "weight error"] + [f"act. drift {g}" for g in groups] + ["act. drift all"]
    rows = [
        [f"`{d.name}`", d.bits, _num(d.weight_error, 3)]
        + [_num(d.activation_drift[g], 3) for g in groups]
        + [_num(d.activation_drift_overall, 3)]
        for d in ex.layers
    ]
    parts += [
        "## 1. Quantization moves weights and activations",
        "Weight error ‖W_q − W‖/‖W‖ per quantized module; activation drift ‖a_q − a‖/‖a‖ of its output, "
        "FP and quantized model fed the same inputs (so it includes what earlier layers passed on).\n\n"
        + markdown_table(head, rows) + _image(plots_dir, "activation_drift.png", "activation drift per layer and group"),
    ]

    # 2. logits
    head = [
        "group", "n", "logit var FP", "logit var Q", "ratio Q/FP", "margin FP", "margin Q",
        "confidence FP", "confidence Q", "loss FP", "loss Q", "excess loss", "acc. FP", "acc. Q", "drop (pt)",
    ]
    rows = []
    for name, gl in [*ex.logits.items(), ("all", ex.overall)]:
        rows.append([
            name, str(gl.count), _num(gl.fp.logit_variance), _num(gl.quantized.logit_variance),
            _num(gl.variance_ratio, 3), _num(gl.fp.margin), _num(gl.quantized.margin),
            _num(gl.fp.confidence, 3), _num(gl.quantized.confidence, 3), _num(gl.fp.loss), _num(gl.quantized.loss),
            f"{gl.excess_loss:+.4g}", pct(gl.fp.accuracy), pct(gl.quantized.accuracy), f"{100 * gl.accuracy_drop:+.1f}",
        ])
    means = (
        "Means over each group's examples: logit variance across classes (population variance), margin = "
        "true-class logit − best other logit (the distance-to-boundary proxy), confidence = max softmax, "
        "cross-entropy loss, accuracy in %."
        if units == "examples" else
        f"Means over each group's scored {units} (n: texts): logit variance across the vocabulary (population "
        "variance) — does quantization shrink the per-token logit spread? —, margin = next token's logit − best "
        "other logit, confidence = max softmax, next-token NLL, top-1 next-token accuracy in %."
    )
    parts += [
        "## 2. Logits, margins, loss and accuracy per group, FP vs quantized",
        means + "\n\n"
        + markdown_table(head, rows) + _image(plots_dir, "groups.png", "accuracy, loss and logit variance per group"),
    ]

    # 3. gradients
    rows = [
        [g, str(ex.gradients[g].examples), _num(ex.gradients[g].fp), _num(ex.gradients[g].noise_floor),
         _num(_ratio(ex.gradients[g].fp, ex.gradients[g].noise_floor), 3), _num(ex.gradients[g].quantized)]
        for g in groups
    ]
    parts += [
        "## 3. Gradient norms per group",
        "‖∇θ L_g‖ of each group's mean loss; the quantized model through its fake-quantized "
        "(straight-through) graph. Noise floor: the norm sampling noise alone gives at this many "
        f"{units}, √(n_A·n_B)/n·‖∇L_A − ∇L_B‖ over a random split of the group's sample into halves; "
        "a ‖∇L‖ near its noise floor (ratio ≈ 1) says more about the sample size than about the group.\n\n"
        + markdown_table(["group", units, "‖∇L‖ FP", "noise floor", "‖∇L‖ / floor", "‖∇L‖ quantized"], rows),
    ]

    # 4. curvature
    method = s.get("eigen_method", "lanczos")
    head = ["model", "group", units, "λ_max", "HVPs", "residual", "trace", "± s.e.", "probes"]
    rows = []
    for model, per_group in ex.curvature.items():
        for g in groups:
            c = per_group[g]
            trace_se = "exact" if c.trace_exact else _num(c.trace_stderr, 2)
            converged = "" if c.lambda_converged else " (not converged)"
            rows.append([model, g, str(c.examples), _num(c.lambda_max) + converged, str(c.lambda_hvps),
                         _num(c.lambda_residual, 2), _num(c.trace), trace_se, str(c.trace_probes)])
    parts += [
        "## 4. Curvature per group",
        f"Top Hessian eigenvalue of each group's loss ({method}; HVPs = Hessian-vector products used, "
        f"stopped at relative residual {s.get('tol', '?')} or at the budget — then marked not converged, "
        "with the residual it reached) and "
        "the Hessian trace (Hutchinson, Rademacher probes, ± its standard error).\n\n"
        + markdown_table(head, rows) + _image(plots_dir, "gradients_curvature.png", "gradient norm and λ_max per group"),
    ]

    # 5. bound
    b = ex.bound
    rank_b = {g: i + 1 for i, g in enumerate(b.order_by_bound)}
    rank_m = {g: i + 1 for i, g in enumerate(b.order_by_measured)}
    rows = [
        [g, _num(b.groups[g].gradient_term), _num(b.groups[g].curvature_term), _num(b.groups[g].bound),
         f"{b.groups[g].taylor:+.4g}", f"{b.groups[g].measured_excess_loss:+.4g}", str(rank_b[g]), str(rank_m[g])]
        for g in groups
    ]
    verdict = "yes" if b.ordering_matches else "no"
    tau = "" if b.kendall_tau is None else f" (Kendall τ = {b.kendall_tau:+.2f})"
    parts += [
        "## 5. The bound: excess loss ≲ ‖∇L_g‖·‖Δθ‖ + ½·λ_max(H_g)·‖Δθ‖²",
        f"‖Δθ‖ = {_num(b.delta_norm)} (the quantization perturbation of the quantized weights). Taylor = "
        "g_g·Δθ + ½·ΔθᵀH_gΔθ, the second-order prediction; measured = L_g(θ_q) − L_g(θ) with the deployed "
        "quantized model (activation quantization included, which Δθ does not cover). Rank 1 = largest.\n\n"
        + markdown_table(["group", "‖g‖·‖Δθ‖", "½·λ_max·‖Δθ‖²", "bound", "Taylor", "measured", "rank by bound", "rank by measured"], rows)
        + f"\n\nDoes the bound order the groups as the measured excess loss does? **{verdict}**{tau}.",
    ]
    return "\n\n".join(parts) + "\n"
