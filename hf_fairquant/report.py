"""The run's outputs, rendered from its :class:`~hf_fairquant.results.RunResult`: ``results.json``
(every number), ``report.md``, ``plots/``, the model card and the final screen — so their numbers
are the numbers in ``results.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ._atomic import atomic_directory
from ._format import markdown_table
from .audit import AuditReport
from .results import RunResult
from .summary import model_rows, summary_table, summary_title

PLOTS_DIR = "plots"


# ---------------------------------------------------------------------------- the screen
def summary_screen(result: RunResult) -> str:
    """What the user sees at the end: the table, the bits, where everything is."""
    from .deployment import deployment_lines
    from .quantization import get_artifact

    lines = [summary_title(result.audit) + ", test split " + result.data.eval_split, summary_table(result.audit), ""]
    lines += [f"float weights: {line}" for line in result.audit.float_warnings()]
    lines += [f"save → reload: {line}" for line in result.audit.round_trip_lines()]
    published = result.published
    if published:
        lines.append(
            f"published model: {published.name} — {published.effective_bits:.2f} mean weight bits, "
            f"{published.size_bytes / 1e3:.0f} kB vs {published.fp_size_bytes / 1e3:.0f} kB FP"
        )
    if result.deployment:
        lines += deployment_lines({"files": result.deployment.files, "not_exported": result.deployment.not_exported})
    out = Path(result.output_dir)
    names = ["README.md", "report.md", "results.json", PLOTS_DIR + "/", "onnx/"]
    lines.append(f"outputs in {out}/: " + ", ".join(n for n in names if (out / n.rstrip('/')).exists()))
    repo_id = result.card.get("repo_id")
    if result.pushed_to:
        lines.append(f"pushed: {result.pushed_to}")
    if published:  # after a push, the Hub id anyone can load; else the local folder
        target = repo_id if result.pushed_to and repo_id else str(out)
        if get_artifact(published.backend).publishing.loads_with_transformers:  # no hf_fairquant needed
            lines.append(f"load it: {result.model.auto_class}.from_pretrained({target!r})  (plain transformers)")
            lines.append(f"or: hf_fairquant.load_quantized({target!r})")
        else:
            lines.append(f"load it: hf_fairquant.load_quantized({target!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files
def write_outputs(result: RunResult, onnx_dir: str | Path | None = None) -> Path:
    """Write the whole output folder ``result.output_dir`` under a temporary name, then rename it
    into place (an earlier folder is replaced whole; see :func:`~hf_fairquant._atomic.atomic_directory`):
    the published model with its processor and card, ``fp_model/`` when the run trained it,
    ``onnx/``, ``report.md``, ``results.json`` and ``plots/``."""
    from .cards import render_card
    from .quantization import QuantRecipe, save_quantized

    out = Path(result.output_dir)
    with atomic_directory(out) as tmp:  # trainer checkpoints live outside (the run's scratch folder)
        if onnx_dir is not None:  # the ONNX Runtime artifacts (exported and audited before)
            shutil.copytree(onnx_dir, tmp / Path(onnx_dir).name)
        plots = tmp / PLOTS_DIR
        plots.mkdir()
        save_group_accuracy_plot(result, plots / "group_accuracy.png")
        if result.explanation is not None:
            result.explanation.save_plots(plots)
        if result.model.trained_here and result.fp_model is not None:
            result.fp_model.save_pretrained(tmp / "fp_model")
            if result.processor is not None:
                result.processor.save_pretrained(tmp / "fp_model")
        if result.quantized_model is not None:
            save_quantized(result.quantized_model, tmp, recipe=QuantRecipe.parse(result.mitigation.recipe))
            if result.processor is not None:
                result.processor.save_pretrained(tmp)
            (tmp / "README.md").write_text(str(render_card(result)), encoding="utf-8")
        (tmp / "report.md").write_text(render_report(result), encoding="utf-8")
        result.save(tmp)
    return out


def save_group_accuracy_plot(result: RunResult, path: Path) -> Path:
    """Grouped bars: each group's accuracy (a language model: perplexity) under FP, every PTQ recipe
    and the mitigated model."""
    return plot_group_accuracy(result.audit, path, "per group: full precision, PTQ, mitigated")


def plot_group_accuracy(audit: AuditReport, path: Path, title: str = "per group") -> Path:
    """Grouped bars: each group's headline metric (accuracy; a language model's perplexity) under
    every model of ``audit`` (FP first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = model_rows(audit)
    groups = audit.group_names
    x = np.arange(len(rows))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4), layout="constrained")
    for i, g in enumerate(groups):
        heights = [np.nan if r["groups"][g] is None else r["groups"][g] for r in rows]  # no test examples: no bar
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, heights, width, label=g)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    _label_axes(ax, audit, title)
    ax.legend(fontsize=8, ncols=min(len(groups), 4))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_axes(ax: Any, audit: Any, title: str) -> None:
    """The plot's labels by the task's metric names (accuracy in %; a perplexity on a log scale)."""
    names = audit.metric_names
    if names.higher_is_better:
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"accuracy {title}")
        return
    ax.set_ylabel(f"{names.label} (lower is better)")
    ax.set_yscale("log")
    ax.set_title(f"{names.label} {title}")


def _stage_passes(result: RunResult) -> str:
    """The stage times as multiples of one FP evaluation pass over the eval split (the audit's)."""
    settings = result.audit.settings
    fp_s = settings.get("timings_s", {}).get("FP", {}).get("evaluate_s")
    if not fp_s:
        return ""
    stages = {k: v for k, v in result.wall_time_s.items() if k != "total" and isinstance(v, (int, float))}
    return (
        f" In FP evaluation passes (one over the {settings.get('eval_examples', '?')} eval examples took {fp_s:.2f} s): "
        + ", ".join(f"{k} {v / fp_s:.1f}" for k, v in stages.items()) + "."
    )


def _explained_because(audit: Any) -> str:
    """Why explain chose its recipe (see :func:`~hf_fairquant.run.runner.worst_recipe`)."""
    if audit.metric_names.higher_is_better:
        return "the recipe that lowered the worst group's accuracy most"
    return "the recipe that raised the worst-off group's NLL most"


def task_sections(audit: AuditReport, level: str = "##") -> list[str]:
    """The task's own sections of an audit (e.g. multiple choice's stereotype preference), as
    Markdown headings and bodies."""
    from .tasks import get_task

    parts = []
    for title, body in get_task(audit.task).markdown_sections(audit):
        parts += [f"{level} {title}", body]
    return parts


def render_report(result: RunResult) -> str:
    """``report.md``: audit, explain and mitigation in one document, plots inline."""
    data = result.data
    parts = [
        f"# hf-fairquant report: {result.card['model_name']}",
        f"Reproduce: `{result.command}` (hf_fairquant {result.hf_fairquant_version}). "
        f"Wall time {result.wall_time_s.get('total', '?')} s: "
        + ", ".join(f"{k} {v} s" for k, v in result.wall_time_s.items() if k != "total") + "."
        + _stage_passes(result),
        "## Groups",
        (result.card.get("group_description") or "Groups from the column(s) " + ", ".join(data.group_columns) + ".")
        + " Examples per group: "
        + "; ".join(f"{split}: " + ", ".join(f"{g} {n}" for g, n in c.items()) for split, c in data.group_counts.items())
        + ".",
        "## Audit: full precision, post-training quantization" + (" and the mitigated model" if result.mitigation else ""),
        result.audit.to_markdown(),
        f"![{result.audit.metric_names.label} per group]({PLOTS_DIR}/group_accuracy.png)",
    ]
    parts += task_sections(result.audit)
    if result.deployment:
        from .deployment import files_markdown

        parts += ["## Deployed on a CPU: ONNX Runtime",
                  files_markdown({"files": result.deployment.files, "not_exported": result.deployment.not_exported})]
    if result.explanation is not None:
        body = result.explanation.to_markdown(PLOTS_DIR)
        body = body.split("\n", 1)[1] if body.startswith("# ") else body  # its title: our heading says it
        body = body.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
        parts += [f"## Why: explaining {result.explained_recipe} ({_explained_because(result.audit)})", body.strip()]
    if result.mitigation:
        m, p = result.mitigation, result.published
        parts += [
            f"## Mitigation: {m.name}",
            "Fair QAT with `FairQuantTrainer` from the full-precision weights: "
            + ", ".join(f"{k}={json.dumps(v)}" for k, v in m.arguments.items() if v is not None)
            + f". Mean weight bits {p.effective_bits:.2f}; final training loss "
            + (f"{m.train_loss:.4f}." if m.train_loss is not None else "—."),
            markdown_table(["layer", "bits"], [[f"`{n}`", b] for n, b in p.layer_bits.items()]),
        ]
    return "\n\n".join(parts) + "\n"
