"""The per-group tables of an audit: one row per audited model, and the summary table shown on
the screen, in ``report.md`` and in the model card."""

from __future__ import annotations

from typing import Any

from ._format import markdown_table
from .audit import AuditReport

#: More groups than this: the summary table shows no per-group columns (the card adds one row per group).
SUMMARY_GROUP_COLUMNS = 6


def model_rows(audit: AuditReport) -> list[dict[str, Any]]:
    """One row per audited model (FP, PTQ recipes, mitigated): accuracies in %, bits, gap (a
    language model's rows: :func:`metric_rows`, perplexities)."""
    if not audit.metric_names.higher_is_better:
        return metric_rows(audit)
    rows = []
    for r in [audit.fp, *audit.quantized]:
        m = r.metrics
        rows.append({
            "name": r.name,
            "bits": r.effective_bits,
            "overall": 100 * m["accuracy"],
            "groups": {g: _percent(m["group_accuracy"].get(g)) for g in audit.group_names},  # None: no test examples
            "gap": 100 * m["accuracy_gap"],
            "gap_change": 100 * m["gap_change"] if "gap_change" in m else None,
        })
    return rows


def metric_rows(audit: AuditReport) -> list[dict[str, Any]]:
    """:func:`model_rows` by the task's metric names, values as the metric gives them (a causal
    LM: perplexity overall and per group, the perplexity gap and its change against FP)."""
    names = audit.metric_names
    rows = []
    for r in [audit.fp, *audit.quantized]:
        m = r.metrics
        rows.append({
            "name": r.name,
            "bits": r.effective_bits,
            "overall": m[names.overall],
            "groups": {g: m[names.group].get(g) for g in audit.group_names},
            "gap": m[names.gap],
            "gap_change": m.get(names.gap_change),
        })
    return rows


def summary_title(audit: AuditReport) -> str:
    """What the summary table shows, for its caption."""
    names = audit.metric_names
    if names.higher_is_better:
        return "Accuracy per group (%)"
    return f"{names.label.capitalize()} per group (lower is better)"


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def summary_table(audit: AuditReport, markdown: bool = False) -> str:
    """The per-group table (FP / PTQ / mitigated): plain text for the terminal or Markdown."""
    groups = audit.group_names
    shown = groups if len(groups) <= SUMMARY_GROUP_COLUMNS else []
    head = ["model", "bits", "overall", *shown, "gap", "Δgap vs FP"]
    body = []
    digits = 1 if audit.metric_names.higher_is_better else 2  # accuracy in %, a perplexity as it is
    for row in model_rows(audit):
        body.append([
            row["name"], f"{row['bits']:.2f}", f"{row['overall']:.{digits}f}",
            *["n/a" if row["groups"][g] is None else f"{row['groups'][g]:.{digits}f}" for g in shown],
            f"{row['gap']:.{digits}f}", "—" if row["gap_change"] is None else f"{row['gap_change']:+.{digits}f}",
        ])
    if markdown:
        return markdown_table(head, body)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [head, *body])
