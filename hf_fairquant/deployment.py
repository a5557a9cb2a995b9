"""Simulated vs deployed: does the quantization simulation predict what the shipped artifact does?

The audit evaluates a recipe twice — simulated (quanto/torchao modules in torch) and deployed
(the ONNX Runtime int8/int4 model that ships) — against the same FP reference. :func:`compare`
then puts the two side by side, per group: how many predictions differ between them (flip
rate), each group's accuracy difference (deployed − simulated, with a paired bootstrap interval),
whether the deployed accuracy lies inside the simulated model's interval, and the two disparities
vs FP. The math is the ``group_disparity`` metric's, with the simulation as the reference.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._format import markdown_table, pct, signed_pct

DEPLOYED_SUFFIX = " ONNX"


def deployed_name(simulated: str) -> str:
    """The audit row name of the deployed model of ``simulated`` (``"W8A8"`` → ``"W8A8 ONNX"``)."""
    return f"{simulated}{DEPLOYED_SUFFIX}"


def compare(
    metric: Any,
    simulated_predictions: np.ndarray,
    deployed_predictions: np.ndarray,
    simulated_metrics: Mapping[str, Any],
    deployed_metrics: Mapping[str, Any],
    *,
    references: np.ndarray,
    groups: Any,
    n_boot: int = 0,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The simulated-vs-deployed comparison of one recipe (plain JSON types)."""
    paired = metric.compute(
        predictions=deployed_predictions, reference_predictions=simulated_predictions,
        references=references, groups=groups, n_boot=n_boot, confidence_level=confidence_level, seed=seed,
    )
    names = list(paired["group_accuracy"])
    difference = {g: -paired["group_accuracy_drop"][g] for g in names}
    drop_ci = paired.get("group_accuracy_drop_ci")
    difference_ci = {g: [-drop_ci[g][1], -drop_ci[g][0]] for g in names} if drop_ci else None
    sim_ci = simulated_metrics.get("group_accuracy_ci")
    within = (
        {g: bool(sim_ci[g][0] - 1e-12 <= deployed_metrics["group_accuracy"][g] <= sim_ci[g][1] + 1e-12) for g in names}
        if sim_ci else None
    )
    return {
        "flip_rate": paired["flip_rate"],
        "group_flip_rate": paired["group_flip_rate"],
        "accuracy_difference": -paired["accuracy_drop"],
        "group_accuracy_difference": difference,
        "group_accuracy_difference_ci": difference_ci,
        "within_simulated_ci": within,
        "gap": {"simulated": simulated_metrics["accuracy_gap"], "deployed": deployed_metrics["accuracy_gap"]},
        "disparate_drop": {
            "simulated": simulated_metrics.get("disparate_drop"), "deployed": deployed_metrics.get("disparate_drop"),
        },
    }


def to_markdown(comparisons: Mapping[str, Mapping[str, Any]], group_names: list[str]) -> str:
    """One row per recipe: flip rate between simulation and artifact, each group's accuracy
    difference (deployed − simulated, points, paired interval), gap and disparate drop of both."""
    if not comparisons:
        return ""
    head = ["recipe", "flip rate sim vs deployed", *[f"Δ {g}" for g in group_names],
            "gap sim → deployed", "disparate drop sim → deployed", "deployed inside sim CI"]
    rows = []
    for name, c in comparisons.items():
        ci = c.get("group_accuracy_difference_ci") or {}
        cells = [f"{signed_pct(c['group_accuracy_difference'][g])}"
                 + (f" [{signed_pct(ci[g][0])}, {signed_pct(ci[g][1])}]" if g in ci else "") for g in group_names]
        within = c.get("within_simulated_ci")
        inside = "n/a" if within is None else ("all groups" if all(within.values()) else
                                               "not: " + ", ".join(g for g, ok in within.items() if not ok))
        dd = c["disparate_drop"]
        rows.append([name, pct(c["flip_rate"]), *cells, f"{pct(c['gap']['simulated'])} → {pct(c['gap']['deployed'])}",
                     f"{pct(dd['simulated'])} → {pct(dd['deployed'])}", inside])
    note = (
        "\nSimulated = the recipe's quantized torch model; deployed = its ONNX Runtime model "
        f"(rows '<recipe>{DEPLOYED_SUFFIX}' above). Δ = deployed − simulated accuracy (points), brackets: paired "
        "bootstrap interval; 'inside sim CI': the deployed group accuracy lies in the simulated model's interval."
    )
    return markdown_table(head, rows) + "\n" + note + "\n"
