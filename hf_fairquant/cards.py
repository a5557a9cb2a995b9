"""The model card of a published quantized model, rendered from a run's ``results.json``.

``render_card(results)`` fills the template ``templates/model_card.md`` (also at
``model_cards/template.md``) through ``huggingface_hub.ModelCard.from_template``; the
model-index carries one ``EvalResult`` per group and model (FP accuracy, quantized accuracy,
drop) plus overall accuracy and the gap, with the exact values of ``results.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._format import ci_text, pct
from ._paths import hub_id
from .errors import FairQuantError
from .summary import SUMMARY_GROUP_COLUMNS, summary_table

TEMPLATE = "model_card.md"

#: Hub ids of the offline sources' datasets (the model-index names a dataset by its Hub id).
OFFLINE_DATASET_IDS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}
def dataset_hub_id(results: dict[str, Any]) -> str | None:
    """The evaluated dataset's Hub id: the card's ``dataset_id``, an offline source's known id,
    or the source when it is a Hub id (not a local path, not an offline name without one)."""
    source = results["data"]["source"]
    if results["card"].get("dataset_id"):
        return hub_id(results["card"]["dataset_id"])
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


def eval_results(results: dict[str, Any]) -> list[EvalResult]:
    """model-index entries: overall and per-group accuracy of the FP and the published model,
    each group's drop, and both gaps — values as in ``results.json`` (fractions, not %)."""
    audit = results["audit"]
    published = _published(results)
    # dataset.type: the Hub id when there is one, else a name (an offline source, a local folder's
    # last component) — never a local path
    source = results["data"]["source"]
    common = dict(
        task_type=results["model"]["task"],
        dataset_type=dataset_hub_id(results) or _display_name(source),
        dataset_name=results["card"].get("dataset_name") or _display_name(source),
        dataset_split=results["data"]["eval_split"],
    )
    fp, q = audit["fp"]["metrics"], published["metrics"]
    name = published["name"]
    entries = [
        ("accuracy", "accuracy (FP)", fp["accuracy"]),
        ("accuracy", f"accuracy ({name})", q["accuracy"]),
        ("accuracy_gap", "group accuracy gap (FP)", fp["accuracy_gap"]),
        ("accuracy_gap", f"group accuracy gap ({name})", q["accuracy_gap"]),
    ]
    for g in audit["group_names"]:
        if g not in fp["group_accuracy"] or g not in q["group_accuracy"]:
            continue  # no test examples of this group: nothing measured, nothing to index
        entries += [
            ("accuracy", f"accuracy, group {g} (FP)", fp["group_accuracy"][g]),
            ("accuracy", f"accuracy, group {g} ({name})", q["group_accuracy"][g]),
            ("accuracy_drop", f"accuracy drop, group {g} ({name} vs FP)", q["group_accuracy_drop"][g]),
        ]
    for f in (results.get("deployment") or {}).get("files", []):  # the ONNX Runtime artifacts that ship
        d = next(r for r in audit["quantized"] if r["name"] == f["name"])["metrics"]
        label = f"{f['name']}, deployed {f['file']}"
        entries += [("accuracy", f"accuracy ({label})", d["accuracy"])]
        entries += [("accuracy", f"accuracy, group {g} ({label})", d["group_accuracy"][g]) for g in audit["group_names"]]
        entries += [("file_size_bytes", f"file size in bytes ({label})", f["size_bytes"])]
        if f.get("speedup"):
            entries += [("speedup", f"throughput vs torch FP32, batch {f['speedup']['batch_size']} ({label})",
                         f["speedup"]["vs_torch_fp32"])]
    return [EvalResult(metric_type=t, metric_name=n, metric_value=v, **common) for t, n, v in entries]


def render_card(results: dict[str, Any]) -> ModelCard:
    """The model card of the run's published (mitigated) model."""
    if not results.get("published"):
        raise FairQuantError("results hold no published model (the run had no `mitigation` section): nothing to card")
    card = results["card"]
    data = ModelCardData(
        model_name=card["model_name"],
        license=card["license"],
        library_name="hf-fairquant",
        pipeline_tag=results["model"]["task"],
        base_model=hub_id(results["model"]["name_or_path"]),
        datasets=[d for d in [dataset_hub_id(results)] if d] or None,
        tags=["hf-fairquant", "quantization", _LIBRARY[_backend(results)], "fairness", *card.get("tags", [])],
        eval_results=eval_results(results),
    )
    return ModelCard.from_template(data, template_path=template_path(), **_template_values(results))


_LIBRARY = {"quanto": "optimum-quanto", "torchao": "torchao"}


def _backend(results: dict[str, Any]) -> str:
    return results["published"].get("backend", "quanto")


def _load_values(results: dict[str, Any], repo_id: str) -> dict[str, str]:
    """How to load the published model: plain transformers for torchao, ``load_quantized`` else."""
    auto = "AutoModelForSequenceClassification" if results["model"]["task"] == "text-classification" else "AutoModelForImageClassification"
    if _backend(results) == "torchao":
        return {
            "load_line": (f"Loads with plain transformers (and torchao installed): `{auto}.from_pretrained(\"{repo_id}\")` "
                          f"or `pipeline(\"{results['model']['task']}\", model=\"{repo_id}\")`; no hf_fairquant needed."),
            "load_snippet": (f"from transformers import {auto}, pipeline\n\n"
                             f"model = {auto}.from_pretrained(\"{repo_id}\")  # torchao integer weights, exact logits of the audited model\n"
                             f"classify = pipeline(\"{results['model']['task']}\", model=\"{repo_id}\")  # with its preprocessor"),
            "backend_note": ("Quantized with torchao: int8 weights run on int8 kernels with dynamic (per-token) int8 "
                             "activations; int4/int2 weights are stored unpacked in int8 bytes."),
        }
    return {
        "load_line": (f"Load it with `hf_fairquant.load_quantized(\"{repo_id}\")`: these are optimum-quanto weights, and "
                      f"plain `transformers.from_pretrained` refuses this folder (by design) rather than load random weights."),
        "load_snippet": (f"from hf_fairquant import load_quantized\n\n"
                         f"model = load_quantized(\"{repo_id}\")  # integer weights, exact logits of the audited model"),
        "backend_note": "Quantization is simulated by optimum-quanto: the model is smaller on disk but not faster on a CPU.",
    }


def _published(results: dict[str, Any]) -> dict[str, Any]:
    name = results["published"]["name"]
    return next(r for r in results["audit"]["quantized"] if r["name"] == name)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{g} {n}" for g, n in counts.items())


def _template_values(results: dict[str, Any]) -> dict[str, Any]:
    audit, data, card = results["audit"], results["data"], results["card"]
    published, p = _published(results), results["published"]
    q, fp = published["metrics"], audit["fp"]["metrics"]
    name_or_path = results["model"]["name_or_path"]
    base = _display_name(name_or_path) if name_or_path else f"a {results['model']['model_type']} trained from scratch by this run"
    confidence = audit["settings"].get("confidence_level", 0.95)
    repo_id = card.get("repo_id") or card["model_name"]
    return {
        **_load_values(results, repo_id),
        "model_name": card["model_name"],
        "repo_id": repo_id,
        "summary": (
            f"{p['name']}: {base}, quantized to {p['effective_bits']:.2f} mean weight bits with fairness-aware "
            f"quantization-aware training (`FairQuantTrainer`), and audited per group against its full-precision "
            f"model and post-training quantization ({', '.join(r['name'] for r in audit['quantized'] if r['name'] != p['name']) or 'none'})."
        ),
        "size_kb": f"{p['size_bytes'] / 1e3:.0f}",
        "fp_size_kb": f"{p['fp_size_bytes'] / 1e3:.0f}",
        "eval_split": data["eval_split"],
        "eval_counts": _counts(data["group_counts"][data["eval_split"]]),
        "train_counts": _counts(data["group_counts"][data["train_split"]]),
        "summary_table": summary_table(results, markdown=True) + _group_table(results),
        "published_name": p["name"],
        "effective_bits": f"{p['effective_bits']:.2f}",
        "gap": pct(q["accuracy_gap"]),
        "gap_ci": ci_text(q.get("accuracy_gap_ci")),
        "fp_gap": pct(fp["accuracy_gap"]),
        "fp_gap_ci": ci_text(fp.get("accuracy_gap_ci")),
        "confidence": f"{confidence:.0%}",
        "group_description": card.get("group_description") or f"Groups from the column(s) {', '.join(data['group_columns'])} of the dataset.",
        "quantization": _quantization_text(p),
        "mitigation": _mitigation_text(results["mitigation"]),
        "explanation": _explanation_text(results),
        "limitations": _limitations(results),
        "command": results["command"],
        "provenance": "This card was written by hf-fairquant from the run's `results.json`; every number below is in that file.",
        "accuracy_intro": (
            f"Test split `{data['eval_split']}` ({_counts(data['group_counts'][data['eval_split']])}). Accuracy in %; "
            "gap = best − worst group; Δgap = gap − the\nfull-precision model's gap (points)."
        ),
        "published_text": (
            f"The published model is **{p['name']}**: {p['effective_bits']:.2f} mean weight bits. Its accuracy gap between\n"
            f"groups is {pct(q['accuracy_gap'])} points ({confidence:.0%} bootstrap interval {ci_text(q.get('accuracy_gap_ci'))}), "
            f"against {pct(fp['accuracy_gap'])} ({ci_text(fp.get('accuracy_gap_ci'))})\nfor the full-precision model.\n\n"
            "![accuracy per group](plots/group_accuracy.png)"
        ),
        "footer": "Full report: `report.md`. Every number: `results.json`.",
        **_deployment_values(results),
    }


def _group_table(results: dict[str, Any]) -> str:
    """With more groups than the summary's columns show: one row per group, accuracy with its CI."""
    from .audit import AuditReport

    audit = results["audit"]
    if len(audit["group_names"]) <= SUMMARY_GROUP_COLUMNS:
        return ""
    confidence = audit["settings"].get("confidence_level", 0.95)
    return (f"\n\nPer group, accuracy in % with its {confidence:.0%} bootstrap interval (small groups have wide "
            f"intervals):\n\n" + AuditReport.from_dict(audit).group_markdown().rstrip("\n"))


def _deployment_values(results: dict[str, Any]) -> dict[str, Any]:
    """The "run it with onnxruntime" section: the snippet and the files table (empty: no export)."""
    from .deployment import card_snippet, files_markdown

    deployment = results.get("deployment")
    if not deployment or not deployment.get("files"):
        return {"onnx_snippet": "", "onnx_files": ""}
    repo_id = results["card"].get("repo_id") or results["card"]["model_name"]
    return {"onnx_snippet": card_snippet(repo_id, deployment), "onnx_files": files_markdown(deployment)}


def _quantization_text(p: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{n}` | {b} |" for n, b in p["layer_bits"].items())
    return (
        ("torchao (weights per layer as below; `a8` = dynamic 8-bit activations, ranges computed per forward). "
         if p.get("backend") == "torchao" else
         "optimum-quanto (weights per layer as below; `a8` = 8-bit activations, calibrated on group-stratified "
         "training examples). ")
        + f"Mean weight bits, weighted by parameters: {p['effective_bits']:.2f}.\n\n"
        f"| layer | bits |\n| --- | --- |\n{rows}"
    )


def _mitigation_text(m: dict[str, Any]) -> str:
    args = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in m["arguments"].items() if v is not None)
    text = f"Fair QAT from the full-precision weights with `FairQuantTrainer`: {args}."
    if m.get("allocated_bits"):
        text += " Bits per layer were allocated from group sensitivity under the budget."
    return text


def _explanation_text(results: dict[str, Any]) -> str:
    ex = results.get("explain")
    if ex is None:
        return "Not measured in this run (no `explain` stage)."
    groups = ex["group_names"]
    grads = ", ".join(f"{g} {ex['gradients'][g]['fp']:.3g}" for g in groups if g in ex["gradients"])
    curv = ex["curvature"].get("fp", {})
    lam = ", ".join(f"{g} {curv[g]['lambda_max']:.3g}" for g in groups if g in curv)
    var = ", ".join(
        f"{g} {ex['logits'][g]['fp']['logit_variance']:.3g} → {ex['logits'][g]['quantized']['logit_variance']:.3g}"
        for g in groups
    )
    loss = ", ".join(f"{g} {ex['logits'][g]['excess_loss']:+.3g}" for g in groups)
    audited = next(r for r in results["audit"]["quantized"] if r["name"] == results["explained_recipe"])
    fp_worst = results["audit"]["fp"]["metrics"]["worst_group_accuracy"]
    fall = 100 * (fp_worst - audited["metrics"]["worst_group_accuracy"])
    lines = [f"Measured for {results['explained_recipe']}, the post-training recipe that lowered the worst group's "
             f"accuracy most ({fall:.1f} points):", ""]
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


def _limitations(results: dict[str, Any]) -> list[str]:
    data, audit = results["data"], results["audit"]
    items = []
    if data.get("long_tail_classes"):
        items.append(
            f"The groups are derived, not demographic: the classes {', '.join(data['long_tail_classes'])} were kept at "
            f"{100 * data['long_tail_fraction']:.0f} % of their training examples to make a rare group. Results on "
            "real demographic groups may differ."
        )
    items.append(
        f"Measured on {audit['settings'].get('eval_examples', '?')} test examples "
        f"({_counts(data['group_counts'][data['eval_split']])}); the intervals are bootstrap intervals over these "
        "examples only — they do not cover the variation between training seeds."
    )
    items.append("One training run (one seed) per model; the quantization gains and losses can change with the seed.")
    items.append("Not measured: latency or memory at inference"
                 + (" (quanto simulates quantization on a CPU)" if _backend(results) == "quanto" else "")
                 + ", calibration of predicted probabilities, robustness to distribution shift.")
    return items
