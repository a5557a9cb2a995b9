"""The model card of a published quantized model, rendered from a run's :class:`~hf_fairquant.results.RunResult`.

``render_card(result)`` fills the template ``templates/model_card.md`` (also at
``model_cards/template.md``) through ``huggingface_hub.ModelCard.from_template``; the
model-index carries one ``EvalResult`` per group and model (FP accuracy, quantized accuracy,
drop) plus overall accuracy and the gap, with the exact values of ``results.json``. What the card
says about the artifact (library, ``library_name``, tags, how to load it) comes from its backend
(:class:`~hf_fairquant.quantization.Publishing`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._format import ci_text, num, pct, signed
from ._paths import hub_id
from .errors import FairQuantError
from .metrics import metric_load_snippet
from .quantization import Publishing, get_artifact
from .results import RunResult
from .summary import SUMMARY_GROUP_COLUMNS, summary_table

TEMPLATE = "model_card.md"

#: Hub ids of the offline sources' datasets (the model-index names a dataset by its Hub id).
OFFLINE_DATASET_IDS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}
def dataset_hub_id(result: RunResult) -> str | None:
    """The evaluated dataset's Hub id: the card's ``dataset_id``, an offline source's known id,
    or the source when it is a Hub id (not a local path, not an offline name without one)."""
    source = result.data.source
    if result.card.get("dataset_id"):
        return hub_id(result.card["dataset_id"])
    if source in OFFLINE_DATASET_IDS:
        return OFFLINE_DATASET_IDS[source]
    from .data import OFFLINE_SOURCES

    return None if source in OFFLINE_SOURCES else hub_id(source)


def _display_name(value: str) -> str:
    """A local path shown by its last component (``/home/me/data/bios`` → ``bios``)."""
    return value if hub_id(value) else (Path(value).name or value)


def template_path() -> str:
    """The packaged Jinja template (``model_cards/template.md`` links to it)."""
    return str(resources.files("hf_fairquant") / "templates" / TEMPLATE)


def eval_results(result: RunResult) -> list[EvalResult]:
    """model-index entries: overall and per-group accuracy of the FP and the published model,
    each group's drop, and both gaps — values as in ``results.json`` (fractions, not %)."""
    audit = result.audit
    # dataset.type: the Hub id when there is one, else a name (an offline source, a local folder's
    # last component) — never a local path
    source = result.data.source
    common = dict(
        task_type=result.model.pipeline_tag,
        dataset_type=dataset_hub_id(result) or _display_name(source),
        dataset_name=result.card.get("dataset_name") or _display_name(source),
        dataset_split=result.data.eval_split,
    )
    fp, q = audit.fp.metrics, result.published_row.metrics
    name = result.published.name
    if not audit.metric_names.higher_is_better:
        return [EvalResult(metric_type=t, metric_name=n, metric_value=v, **common) for t, n, v in _loss_entries(audit, fp, q, name)]
    entries = [
        ("accuracy", "accuracy (FP)", fp["accuracy"]),
        ("accuracy", f"accuracy ({name})", q["accuracy"]),
        ("accuracy_gap", "group accuracy gap (FP)", fp["accuracy_gap"]),
        ("accuracy_gap", f"group accuracy gap ({name})", q["accuracy_gap"]),
    ]
    for g in audit.group_names:
        if g not in fp["group_accuracy"] or g not in q["group_accuracy"]:
            continue  # no test examples of this group: nothing measured, nothing to index
        entries += [
            ("accuracy", f"accuracy, group {g} (FP)", fp["group_accuracy"][g]),
            ("accuracy", f"accuracy, group {g} ({name})", q["group_accuracy"][g]),
            ("accuracy_drop", f"accuracy drop, group {g} ({name} vs FP)", q["group_accuracy_drop"][g]),
        ]
    for f in (result.deployment.files if result.deployment else []):  # the ONNX Runtime artifacts that ship
        d = audit.result(f["name"]).metrics
        label = f"{f['name']}, deployed {f['file']}"
        entries += [("accuracy", f"accuracy ({label})", d["accuracy"])]
        entries += [("accuracy", f"accuracy, group {g} ({label})", d["group_accuracy"][g]) for g in audit.group_names]
        entries += [("file_size_bytes", f"file size in bytes ({label})", f["size_bytes"])]
        if f.get("speedup"):
            entries += [("speedup", f"throughput vs torch FP32, batch {f['speedup']['batch_size']} ({label})",
                         f["speedup"]["vs_torch_fp32"])]
    return [EvalResult(metric_type=t, metric_name=n, metric_value=v, **common) for t, n, v in entries]


def _loss_entries(audit: Any, fp: dict[str, Any], q: dict[str, Any], name: str) -> list[tuple[str, str, float]]:
    """model-index entries of a task whose headline is a loss-like metric (a causal LM: metric type
    ``perplexity``): overall and per group for FP and the published model, each group's mean NLL
    increase per token, both gaps — values as in ``results.json``."""
    names = audit.metric_names
    kind = names.model_index_type
    entries = [
        (kind, f"{names.label} (FP)", fp[names.overall]),
        (kind, f"{names.label} ({name})", q[names.overall]),
        (names.gap, f"group {names.label} gap (FP)", fp[names.gap]),
        (names.gap, f"group {names.label} gap ({name})", q[names.gap]),
    ]
    for g in audit.group_names:
        if g not in fp[names.group] or g not in q[names.group]:
            continue
        entries += [
            (kind, f"{names.label}, group {g} (FP)", fp[names.group][g]),
            (kind, f"{names.label}, group {g} ({name})", q[names.group][g]),
            ("nll_increase", f"NLL increase per token, group {g} ({name} vs FP)", q[names.drop][g]),
        ]
    return entries


def render_card(result: RunResult) -> ModelCard:
    """The model card of the run's published (mitigated) model."""
    if result.published is None:
        raise FairQuantError("the run published no model (it had no `mitigation` section): nothing to card")
    card = result.card
    publishing = _publishing(result)
    data = ModelCardData(
        model_name=card["model_name"],
        license=card["license"],
        library_name=publishing.library_name,
        pipeline_tag=result.model.pipeline_tag,
        base_model=hub_id(result.model.name_or_path),
        datasets=[d for d in [dataset_hub_id(result)] if d] or None,
        tags=["hf-fairquant", "quantization", *publishing.tags, "fairness", *card.get("tags", [])],
        eval_results=eval_results(result),
    )
    return ModelCard.from_template(data, template_path=template_path(), **_template_values(result))


def _publishing(result: RunResult) -> Publishing:
    return get_artifact(result.published.backend).publishing


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{g} {n}" for g, n in counts.items())


def _template_values(result: RunResult) -> dict[str, Any]:
    audit, data, card, p = result.audit, result.data, result.card, result.published
    publishing = _publishing(result)
    name_or_path = result.model.name_or_path
    base = _display_name(name_or_path) if name_or_path else f"a {result.model.model_type} trained from scratch by this run"
    confidence = audit.settings.get("confidence_level", 0.95)
    repo_id = card.get("repo_id") or card["model_name"]
    eval_counts = _counts(data.group_counts[data.eval_split])

    return {
        "load_line": publishing.load_line(repo_id, result.model.auto_class, result.model.pipeline_tag),
        "load_snippet": publishing.load_snippet(repo_id, result.model.auto_class, result.model.pipeline_tag),
        "backend_note": publishing.note,
        "model_name": card["model_name"],
        "repo_id": repo_id,
        "summary": (
            f"{p.name}: {base}, quantized to {p.effective_bits:.2f} mean weight bits with fairness-aware "
            f"quantization-aware training (`FairQuantTrainer`), and audited per group against its full-precision "
            f"model and post-training quantization ({', '.join(r.name for r in audit.quantized if r.name != p.name) or 'none'})."
        ),
        "size_kb": f"{p.size_bytes / 1e3:.0f}",
        "fp_size_kb": f"{p.fp_size_bytes / 1e3:.0f}",
        "eval_split": data.eval_split,
        "eval_counts": eval_counts,
        "train_counts": _counts(data.group_counts[data.train_split]),
        "summary_table": summary_table(audit, markdown=True) + _group_table(audit),
        "published_name": p.name,
        "effective_bits": f"{p.effective_bits:.2f}",
        "confidence": f"{confidence:.0%}",
        "group_description": card.get("group_description") or f"Groups from the column(s) {', '.join(data.group_columns)} of the dataset.",
        "quantization": publishing.quantization_text(p.effective_bits, p.layer_bits) + _kept_float_text(p),
        "mitigation": _mitigation_text(result.mitigation),
        "explanation": _explanation_text(result),
        "limitations": _limitations(result, publishing),
        "command": result.command,
        "provenance": "This card was written by hf-fairquant from the run's `results.json`; every number below is in that file.",
        "metric_snippet": metric_load_snippet(),
        "footer": "Full report: `report.md`. Every number: `results.json`.",
        **_deployment_values(result),
        **(_accuracy_values(result) if audit.metric_names.higher_is_better else _loss_values(result)),
    }


def _gap_ci(metrics: dict, settings: dict) -> str:
    """The accuracy gap's interval, or why it has none (groups too small, or no bootstrap)."""
    small = metrics.get("groups_too_small_for_interval") or []
    if metrics.get("accuracy_gap_ci") is None and small:
        return f"no interval: group(s) {', '.join(small)} have fewer than {settings.get('min_group_size', 30)} test examples"
    return ci_text(metrics.get("accuracy_gap_ci"))


def _accuracy_values(result: RunResult) -> dict[str, Any]:
    """The template values of an accuracy headline (a classifier)."""
    audit, data, p = result.audit, result.data, result.published
    q, fp = result.published_row.metrics, audit.fp.metrics
    confidence = audit.settings.get("confidence_level", 0.95)
    eval_counts = _counts(data.group_counts[data.eval_split])
    return {
        "metric_heading": "Accuracy per group",
        "gap": pct(q["accuracy_gap"]),
        "gap_ci": _gap_ci(q, audit.settings),
        "fp_gap": pct(fp["accuracy_gap"]),
        "fp_gap_ci": _gap_ci(fp, audit.settings),
        "accuracy_intro": (
            f"Test split `{data.eval_split}` ({eval_counts}). Accuracy in %; "
            "gap = best − worst group; Δgap = gap − the\nfull-precision model's gap (points)."
        ),
        "published_text": (
            f"The published model is **{p.name}**: {p.effective_bits:.2f} mean weight bits. Its accuracy gap between\n"
            f"groups is {pct(q['accuracy_gap'])} points ({confidence:.0%} bootstrap interval {_gap_ci(q, audit.settings)}), "
            f"against {pct(fp['accuracy_gap'])} ({_gap_ci(fp, audit.settings)})\nfor the full-precision model.\n\n"
            "![accuracy per group](plots/group_accuracy.png)"
        ),
    }


def _kept_float_text(published: Any) -> str:
    """What ``publish_backend: auto`` kept float to publish a folder plain transformers loads."""
    if not published.kept_float:
        return ""
    kept = "; ".join(f"`{n}` ({why})" for n, why in published.kept_float.items())
    return (f"\n\nKept in float32 so that plain transformers loads this folder: {kept}. The mean weight bits "
            f"({published.effective_bits:.2f}) count them at 32 bits.")


def _group_table(audit: Any) -> str:
    """With more groups than the summary's columns show: one row per group, accuracy with its CI."""
    if len(audit.group_names) <= SUMMARY_GROUP_COLUMNS:
        return ""
    confidence = audit.settings.get("confidence_level", 0.95)
    what = "accuracy in %" if audit.metric_names.higher_is_better else audit.metric_names.label
    return (f"\n\nPer group, {what} with its {confidence:.0%} bootstrap interval (small groups have wide "
            f"intervals):\n\n" + audit.group_markdown().rstrip("\n"))


def _loss_values(result: RunResult) -> dict[str, Any]:
    """The template values of a loss-like headline (a causal LM's perplexity)."""
    audit, data = result.audit, result.data
    names = audit.metric_names
    p = result.published
    q, fp = result.published_row.metrics, audit.fp.metrics
    confidence = audit.settings.get("confidence_level", 0.95)
    label = names.label
    increases = ", ".join(f"{g} {signed(v)}" for g, v in q[names.drop].items())
    ci = q.get(f"{names.disparate}_ci")
    return {
        "metric_heading": f"{label.capitalize()} per group",
        "gap": num(q[names.gap]),
        "gap_ci": _num_ci(q.get(f"{names.gap}_ci")),
        "fp_gap": num(fp[names.gap]),
        "fp_gap_ci": _num_ci(fp.get(f"{names.gap}_ci")),
        "accuracy_intro": (
            f"Test split `{data.eval_split}` ({_counts(data.group_counts[data.eval_split])} texts). {label.capitalize()} = "
            "exp(mean next-token NLL per token of the group), lower is better; gap = worst − best group;\n"
            "Δgap = gap − the full-precision model's gap."
        ),
        "published_text": (
            f"The published model is **{p.name}**: {p.effective_bits:.2f} mean weight bits. Its mean NLL per token rose "
            f"by {signed(q['loss_increase'])} nats against the full-precision model (per group: {increases});\nthe "
            f"spread of those increases over groups is {signed(q[names.disparate])} ({confidence:.0%} bootstrap "
            f"interval {_num_ci(ci, signed=True)}). Its {label} gap between groups is {num(q[names.gap])} "
            f"against {num(fp[names.gap])} for the full-precision model; {pct(q.get('agreement'))} % of its top-1 "
            f"next-token predictions equal the full-precision model's.\n\n"
            f"![{label} per group](plots/group_accuracy.png)"
        ),
    }


def _num_ci(interval: Any, signed: bool = False) -> str:
    if not interval:
        return "not bootstrapped"
    if signed:
        return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
    return f"[{num(interval[0])}, {num(interval[1])}]"


def _deployment_values(result: RunResult) -> dict[str, Any]:
    """The "run it with onnxruntime" section: the snippet and the files table (empty: no export)."""
    from .deployment import card_snippet, files_markdown
    from .tasks import get_task

    deployment = result.deployment
    if not deployment or not deployment.files:
        return {"onnx_snippet": "", "onnx_files": ""}
    repo_id = result.card.get("repo_id") or result.card["model_name"]
    as_dict = {"files": deployment.files, "not_exported": deployment.not_exported}
    return {"onnx_snippet": card_snippet(repo_id, as_dict, get_task(result.model.task).snippet_predictions()),
            "onnx_files": files_markdown(as_dict)}


def _mitigation_text(m: Any) -> str:
    args = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in m.arguments.items() if v is not None)
    text = f"Fair QAT from the full-precision weights with `FairQuantTrainer`: {args}."
    if m.allocated_bits:
        text += " Bits per layer were allocated from group sensitivity under the budget."
    return text


def _explanation_text(result: RunResult) -> str:
    ex = result.explanation
    if ex is None:
        return "Not measured in this run (no `explain` stage)."
    groups = ex.group_names
    grads = ", ".join(f"{g} {ex.gradients[g].fp:.3g}" for g in groups if g in ex.gradients)
    curv = ex.curvature.get("fp", {})
    lam = ", ".join(f"{g} {curv[g].lambda_max:.3g}" for g in groups if g in curv)
    var = ", ".join(f"{g} {ex.logits[g].fp.logit_variance:.3g} → {ex.logits[g].quantized.logit_variance:.3g}" for g in groups)
    loss = ", ".join(f"{g} {ex.logits[g].excess_loss:+.3g}" for g in groups)
    lines = [_explained_line(result), ""]
    lines.append(f"- logit variance, FP → quantized: {var}")
    lines.append(f"- loss increase under quantization: {loss}")
    if grads:
        lines.append(f"- gradient norm of each group's loss (FP): {grads}")
    if lam:
        lines.append(f"- top Hessian eigenvalue λ_max (FP): {lam}")
    lines += [
        "",
        "![accuracy, loss and logit variance per group](plots/groups.png)",
        "",
        "![gradient norm and λ_max per group](plots/gradients_curvature.png)",
        "",
        "Details, per layer: `report.md`.",
    ]
    return "\n".join(lines)


def _explained_line(result: RunResult) -> str:
    """Which recipe explain measured and why (see :func:`~hf_fairquant.run.runner.worst_recipe`)."""
    audited = result.audit.result(result.explained_recipe)
    if not result.audit.metric_names.higher_is_better:
        rise = audited.metrics["worst_group_loss"] - result.audit.fp.metrics["worst_group_loss"]
        return (f"Measured for {result.explained_recipe}, the post-training recipe that raised the worst-off group's "
                f"mean NLL most ({rise:+.3f} nats per token):")
    fp_worst = result.audit.fp.metrics["worst_group_accuracy"]
    fall = 100 * (fp_worst - audited.metrics["worst_group_accuracy"])
    return (f"Measured for {result.explained_recipe}, the post-training recipe that lowered the worst group's "
            f"accuracy most ({fall:.1f} points):")


def _limitations(result: RunResult, publishing: Publishing) -> list[str]:
    data, audit = result.data, result.audit
    items = []
    if data.long_tail_classes:
        items.append(
            f"The groups are derived, not demographic: the classes {', '.join(data.long_tail_classes)} were kept at "
            f"{100 * data.long_tail_fraction:.0f} % of their training examples to make a rare group. Results on "
            "real demographic groups may differ."
        )
    items.append(
        f"Measured on {audit.settings.get('eval_examples', '?')} test examples "
        f"({_counts(data.group_counts[data.eval_split])}); the intervals are bootstrap intervals over these "
        "examples only — they do not cover the variation between training seeds."
    )
    items.append("One training run (one seed) per model; the quantization gains and losses can change with the seed.")
    items.append("Not measured: latency or memory at inference"
                 + (f" ({publishing.speed_note})" if publishing.speed_note else "")
                 + ", calibration of predicted probabilities, robustness to distribution shift.")
    return items
