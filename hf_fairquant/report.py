"""The run's outputs: ``results.json`` (every number), ``report.md``, ``plots/`` and the card.

:func:`build_results` gathers what a pipeline run measured into one JSON-able dict;
everything written afterwards — the report, the model card, the final screen — is rendered
from that dict, so their numbers are the numbers in ``results.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ._atomic import atomic_directory
from ._format import to_plain
from .summary import model_rows, summary_table

RESULTS_FORMAT = "hf_fairquant.results/1"
PLOTS_DIR = "plots"
#: Checkpoint folders a run's trainers may have written into the output folder; kept.
CHECKPOINT_DIRS = ("checkpoints", "mitigation_checkpoints")
_MITIGATION_FIELDS = (
    "quantization", "group_column", "group_sampling", "sampling_power", "group_weighting", "dro_step_size",
    "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "lr_scheduler_type",
    "warmup_steps", "weight_decay", "range_update_steps", "calibration_size", "seed",
)


def build_results(
    recipe: Any,
    report: Any,
    *,
    spec: Any,
    data: Any,
    model: Any,
    explanation: Any = None,
    explained: str | None = None,
    trainer: Any = None,
    quantized: Any = None,
    timings: dict[str, float] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Everything a run measured, as plain JSON types."""
    from . import __version__
    from .quantization import backend_of, layer_bits

    counts = spec.counts(data)
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "hf_fairquant_version": __version__,
        "command": command or "hf-fairquant " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "model": {
            "name_or_path": recipe.model.name_or_path,
            "model_type": model.config.model_type,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "task": "text-classification" if recipe.data.text_column else "image-classification",
            "trained_here": recipe.training is not None,
            "fp_training": _training_summary(recipe.training),
        },
        "data": {
            "source": recipe.data.source,
            "train_split": recipe.data.train_split,
            "eval_split": recipe.data.eval_split,
            "long_tail_classes": list(recipe.data.long_tail_classes),
            "long_tail_fraction": recipe.data.long_tail_fraction if recipe.data.long_tail_classes else None,
            "group_columns": list(spec.columns),
            "group_names": list(spec.names),
            "group_counts": {split: dict(c) for split, c in counts.items()},
        },
        "card": _card_section(recipe),
        "audit": report.to_dict(),
        "explained_recipe": explained if explanation is not None else None,
        "explain": explanation.to_dict() if explanation is not None else None,
        "mitigation": None,
        "published": None,
        "wall_time_s": dict(timings or {}),
    }
    if trainer is not None and quantized is not None:
        mitigated = report.quantized[-1]
        args = trainer.args
        arguments = {k: getattr(args, k) for k in _MITIGATION_FIELDS if not (k == "max_steps" and args.max_steps <= 0)}
        allocation = getattr(trainer, "allocation", None)
        results["mitigation"] = {
            "name": mitigated.name,
            "recipe": trainer.quant_recipe.to_dict(),
            "arguments": to_plain(arguments),
            "train_loss": _final_train_loss(trainer),
            "allocated_bits": allocation.bits if allocation is not None else None,
        }
        results["published"] = {
            "name": mitigated.name,
            "backend": backend_of(quantized).name,
            "effective_bits": mitigated.effective_bits,
            "size_bytes": mitigated.size_bytes,
            "fp_size_bytes": report.fp.size_bytes,
            "layer_bits": {n: (str(q) if q is not None else "float") for n, q in layer_bits(quantized).items()},
        }
    return to_plain(results)


def _training_summary(args: Any) -> dict[str, Any] | None:
    if args is None:
        return None
    keys = ("num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "lr_scheduler_type", "seed")
    return to_plain({k: getattr(args, k) for k in keys})


def _card_section(recipe: Any) -> dict[str, Any]:
    from dataclasses import asdict

    card = asdict(recipe.card)
    card["model_name"] = card["model_name"] or Path(recipe.output_dir).name
    card["repo_id"] = card["repo_id"] or recipe.output_dir  # what load_quantized(...) is shown with
    return card


def _final_train_loss(trainer: Any) -> float | None:
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    return losses[-1] if losses else None



# ---------------------------------------------------------------------------- the screen
def summary_screen(results: dict[str, Any], output_dir: Path, pushed: str | None = None) -> str:
    """What the user sees at the end: the table, the bits, where everything is."""
    lines = ["Accuracy per group (%), test split " + results["data"]["eval_split"], summary_table(results), ""]
    published = results.get("published")
    if published:
        lines.append(
            f"published model: {published['name']} — {published['effective_bits']:.2f} mean weight bits, "
            f"{published['size_bytes'] / 1e3:.0f} kB vs {published['fp_size_bytes'] / 1e3:.0f} kB FP"
        )
    out = Path(output_dir)
    names = ["README.md", "report.md", "results.json", PLOTS_DIR + "/"]
    lines.append(f"outputs in {out}/: " + ", ".join(n for n in names if (out / n.rstrip('/')).exists()))
    repo_id = (results.get("card") or {}).get("repo_id")
    if pushed:
        lines.append(f"pushed: {pushed}")
    if published:  # after a push, the Hub id anyone can load; else the local folder
        target = repo_id if pushed and repo_id else str(out)
        lines.append(f"load it: hf_fairquant.load_quantized({target!r})")
        if published.get("backend") == "torchao":
            lines.append(f"or with plain transformers (+ torchao): AutoModelFor*.from_pretrained({target!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files
def write_outputs(
    out: str | Path,
    results: dict[str, Any],
    *,
    fp_model: Any = None,
    quantized: Any = None,
    processor: Any = None,
    explanation: Any = None,
) -> Path:
    """Write the whole output folder under a temporary name, then rename it into place."""
    from .cards import render_card
    from .quantization import QuantRecipe, save_quantized

    out = Path(out)
    with atomic_directory(out) as tmp:
        for name in CHECKPOINT_DIRS:  # a trainer's checkpoints (save_strategy) survive the swap
            if (out / name).is_dir() and any((out / name).iterdir()):
                os.replace(out / name, tmp / name)
        plots = tmp / PLOTS_DIR
        plots.mkdir()
        save_group_accuracy_plot(results, plots / "group_accuracy.png")
        if explanation is not None:
            explanation.save_plots(plots)
        if fp_model is not None:
            fp_model.save_pretrained(tmp / "fp_model")
            if processor is not None:
                processor.save_pretrained(tmp / "fp_model")
        if quantized is not None:
            save_quantized(quantized, tmp, recipe=QuantRecipe.parse(results["mitigation"]["recipe"]))
            if processor is not None:
                processor.save_pretrained(tmp)
            (tmp / "README.md").write_text(str(render_card(results)), encoding="utf-8")
        (tmp / "report.md").write_text(render_report(results, explanation), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


def save_group_accuracy_plot(results: dict[str, Any], path: Path) -> Path:
    """Grouped bars: each group's accuracy under FP, every PTQ recipe and the mitigated model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = model_rows(results)
    groups = results["audit"]["group_names"]
    x = np.arange(len(rows))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4), layout="constrained")
    for i, g in enumerate(groups):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, [r["groups"][g] for r in rows], width, label=g)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("accuracy per group: full precision, PTQ, mitigated")
    ax.legend(fontsize=8, ncols=min(len(groups), 4))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _stage_passes(results: dict[str, Any]) -> str:
    """The stage times as multiples of one FP evaluation pass over the eval split (the audit's)."""
    settings = results.get("audit", {}).get("settings", {})
    fp_s = settings.get("timings_s", {}).get("FP", {}).get("evaluate_s")
    if not fp_s:
        return ""
    stages = {k: v for k, v in results["wall_time_s"].items() if k != "total" and isinstance(v, (int, float))}
    return (
        f" In FP evaluation passes (one over the {settings.get('eval_examples', '?')} eval examples took {fp_s:.2f} s): "
        + ", ".join(f"{k} {v / fp_s:.1f}" for k, v in stages.items()) + "."
    )


def render_report(results: dict[str, Any], explanation: Any = None) -> str:
    """``report.md``: audit, explain and mitigation in one document, plots inline."""
    from .audit import AuditReport

    data = results["data"]
    parts = [
        f"# hf-fairquant report: {results['card']['model_name']}",
        f"Reproduce: `{results['command']}` (hf_fairquant {results['hf_fairquant_version']}). "
        f"Wall time {results['wall_time_s'].get('total', '?')} s: "
        + ", ".join(f"{k} {v} s" for k, v in results["wall_time_s"].items() if k != "total") + "."
        + _stage_passes(results),
        "## Groups",
        (results["card"].get("group_description") or "Groups from the column(s) " + ", ".join(data["group_columns"]) + ".")
        + " Examples per group: "
        + "; ".join(f"{split}: " + ", ".join(f"{g} {n}" for g, n in c.items()) for split, c in data["group_counts"].items())
        + ".",
        "## Audit: full precision, post-training quantization" + (" and the mitigated model" if results["mitigation"] else ""),
        AuditReport.from_dict(results["audit"]).to_markdown(),
        f"![accuracy per group]({PLOTS_DIR}/group_accuracy.png)",
    ]
    if explanation is not None:
        body = explanation.to_markdown(PLOTS_DIR)
        body = body.split("\n", 1)[1] if body.startswith("# ") else body  # its title: our heading says it
        body = body.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
        parts += [f"## Why: explaining {results['explained_recipe']} (the recipe that lowered the worst group's accuracy most)",
                  body.strip()]
    if results["mitigation"]:
        m = results["mitigation"]
        p = results["published"]
        parts += [
            f"## Mitigation: {m['name']}",
            f"Fair QAT with `FairQuantTrainer` from the full-precision weights: "
            + ", ".join(f"{k}={json.dumps(v)}" for k, v in m["arguments"].items() if v is not None)
            + f". Mean weight bits {p['effective_bits']:.2f}; final training loss "
            + (f"{m['train_loss']:.4f}." if m["train_loss"] is not None else "—."),
            "| layer | bits |\n| --- | --- |\n" + "\n".join(f"| `{n}` | {b} |" for n, b in p["layer_bits"].items()),
        ]
    return "\n\n".join(parts) + "\n"
