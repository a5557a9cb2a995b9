"""The fairness model card of a :class:`~hf_fairquant.FairQuantTrainer`'s model.

Rendered on the pipeline's template (``hf_fairquant/templates/model_card.md``, through
``huggingface_hub.ModelCard.from_template``) from what the trainer knows, so that
``save_model`` and ``push_to_hub`` publish the same kind of card as ``hf-fairquant run``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .._format import pct, to_plain
from .._paths import hub_id
from ..metrics import metric_load_snippet
from ..tasks import modality_of

TEMPLATE = "model_card.md"


def _template_path() -> str:
    return str(resources.files("hf_fairquant") / "templates" / TEMPLATE)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{g} {n}" for g, n in counts.items())


#: The trainer arguments a card reports (what makes the fair QAT what it is).
TRAINER_CARD_ARGUMENTS = (
    "quantization", "group_columns", "group_sampling", "sampling_power", "group_weighting", "dro_step_size",
    "calibration_size", "range_update_steps", "num_train_epochs", "max_steps", "learning_rate",
    "per_device_train_batch_size", "seed",
)


def _last_group_eval(log_history: list[dict[str, Any]], group_key: str = "group_accuracy") -> dict[str, Any] | None:
    """The last logged evaluation that holds per-group results (``eval_<group_key>/<g>``)."""
    for entry in reversed(log_history):
        if any(k.startswith(f"eval_{group_key}/") for k in entry):
            return entry
    return None


def float_weight_bits(model: Any) -> float:
    """Parameter-weighted mean bits of the float weights of every Conv2d/Linear (QAT modules included:
    they hold float weights until converted)."""
    import torch

    from ..quantization.recipe import float_bits, weighted_bits

    pairs = [(m.weight.numel(), float_bits(m.weight)) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and isinstance(getattr(m, "weight", None), torch.Tensor)]
    return weighted_bits(pairs) if pairs else 32.0


def trainer_card(
    trainer: Any,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    finetuned_from: str | None = None,
    dataset_tags: str | list[str] | None = None,
    dataset: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    **_: Any,
) -> ModelCard:
    """The fairness card of a :class:`~hf_fairquant.FairQuantTrainer`'s model, on the pipeline's
    template, from what the trainer knows: the recipe and bits per layer, the groups and their
    training counts, the DRO weights, the last evaluation's per-group metrics (log history).

    Metadata holds only Hub ids: ``base_model`` from ``finetuned_from`` or the model's
    ``name_or_path`` when it is a Hub id; the model-index (per-group accuracy) only when the
    evaluation data has a Hub id (``dataset_tags``, else the eval dataset's ``info.dataset_name``).
    Keyword names follow ``Trainer.create_model_card`` (others are ignored).
    """
    from ..quantization import (
        PLAIN_LIBRARY_NAME,
        effective_bits,
        get_artifact,
        is_quantized,
        layer_bits,
        model_size_bytes,
        quantizer_of,
    )

    model, args, spec = trainer.model, trainer.args, trainer.group_spec
    model_name = model_name or Path(args.output_dir).name
    repo_id = repo_id or getattr(args, "hub_model_id", None) or model_name
    recipe = trainer.quant_recipe
    pending = getattr(trainer, "qat_converted", None) is False  # fake-quantized for QAT: float weights
    quantized = is_quantized(model) and not pending
    bits = float_weight_bits(model) if pending else effective_bits(model)
    size = model_size_bytes(model)
    fp_size = 4 * sum(p.numel() for p in model.parameters())
    names = trainer.task.metric_names
    evaluation = _last_group_eval(trainer.state.log_history, names.group)
    dro = getattr(trainer.loss_weighting, "q", None)
    dro_weights = dict(zip(spec.names, dro.tolist())) if dro is not None else None
    train_counts = None
    if trainer.train_dataset is not None:  # the trainer holds integer codes in args.group_code_column
        codes = np.asarray(trainer.train_dataset.with_format("numpy")[args.group_code_column][:])
        train_counts = dict(zip(spec.names, np.bincount(codes, minlength=spec.num_groups).tolist()))

    def get(key: str, group: str | None = None) -> Any:
        return None if evaluation is None else evaluation.get(f"eval_{key}" + (f"/{group}" if group else ""))

    accuracy = names.higher_is_better  # else a loss-like headline (a causal LM's perplexity), shown as it is
    rows = [f"| group | training examples | eval examples | {names.label} | mean loss |" + (" DRO weight |" if dro_weights else ""),
            "| --- | --- | --- | --- | --- |" + (" --- |" if dro_weights else "")]
    for g in spec.names:
        acc, loss, count = get(names.group, g), get("group_mean_loss", g), get("group_count", g)
        shown = (pct(acc) if accuracy else f"{acc:.2f}") if acc is not None else "—"
        row = [g, str(train_counts[g]) if train_counts else "—", str(int(count)) if count is not None else "—",
               shown, f"{loss:.3f}" if loss is not None else "—"]
        if dro_weights:
            row.append(f"{dro_weights[g]:.3f}")
        rows.append("| " + " | ".join(row) + " |")
    table = "\n".join(rows)
    if evaluation is not None and not accuracy:
        intro = (f"The last evaluation (step {evaluation.get('step', '?')}): overall {names.label} "
                 f"{get(names.overall):.2f} (lower is better).")
        published = (f"{names.label.capitalize()} gap between groups (worst − best): {get(names.gap):.2f}; worst group "
                     f"{names.label} {get(names.worst_value):.2f}. The trainer does not audit the full-precision "
                     "model: `hf_fairquant.audit(fp_model, eval_ds, [], 'language', quantized_models={'QAT': model})` "
                     "compares them per group.")
    elif evaluation is not None:
        intro = (f"The last evaluation (step {evaluation.get('step', '?')}): overall accuracy "
                 f"{pct(get('accuracy'))} %. Accuracy in %.")
        published = (f"Accuracy gap between groups (best − worst): {pct(get('accuracy_gap'))} points; worst group "
                     f"accuracy {pct(get('worst_group_accuracy'))} %. The trainer does not audit the full-precision "
                     "model: `hf_fairquant.audit(fp_model, eval_ds, [], 'group', quantized_models={'QAT': model})` "
                     "compares them per group.")
    else:
        intro = "Not evaluated: call `trainer.evaluate()` before saving to put per-group results here."
        published = ""
    arguments = {k: to_plain(getattr(args, k, None)) for k in TRAINER_CARD_ARGUMENTS}
    mitigation = "Fair QAT with `FairQuantTrainer`: " + ", ".join(
        f"`{k}={json.dumps(v)}`" for k, v in arguments.items() if v is not None
    ) + "."
    if getattr(trainer, "allocation", None) is not None:
        mitigation += " Bits per layer were allocated from group sensitivity under the budget."
    if dro_weights:
        mitigation += " Final Group-DRO weights: " + ", ".join(f"{g} {w:.3f}" for g, w in dro_weights.items()) + "."
    layers = {n: str(q) if q is not None else "float" for n, q in layer_bits(model).items()}
    quantizer = quantizer_of(model) if quantized else None
    publishing = get_artifact(quantizer.name).publishing if quantizer is not None else None
    quantization = (
        publishing.quantization_text(bits, layers) if publishing is not None else
        (f"Not quantized yet: the model is prepared for QAT with `{recipe}` (fake-quantized modules over float "
         f"weights) and `train()` has not converted it, so these weights are full precision ({bits:.2f} mean bits)."
         if pending else "Full precision (the trainer had no `quantization` recipe).")
    )
    dataset_ids = [d for d in ([dataset_tags] if isinstance(dataset_tags, str) else list(dataset_tags or [])) if hub_id(d)]
    eval_set = trainer.eval_dataset if not isinstance(trainer.eval_dataset, dict) else next(iter(trainer.eval_dataset.values()), None)
    info_name = getattr(getattr(eval_set, "info", None), "dataset_name", None)
    dataset_id = next(iter(dataset_ids), None) or hub_id(info_name)
    results = []
    if evaluation is not None and dataset_id:
        common = dict(task_type=trainer.task.pipeline_tag(modality_of(model)), dataset_type=dataset_id,
                      dataset_name=(dataset if isinstance(dataset, str) else None) or dataset_id, dataset_split="eval")
        kind, label = names.model_index_type, names.label
        entries = [(kind, f"{label} ({recipe or 'FP'})", get(names.overall)),
                   (names.gap, f"group {label} gap ({recipe or 'FP'})", get(names.gap))]
        entries += [(kind, f"{label}, group {g} ({recipe or 'FP'})", get(names.group, g)) for g in spec.names]
        results = [EvalResult(metric_type=t, metric_name=n, metric_value=float(v), **common) for t, n, v in entries if v is not None]
    extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
    modality = modality_of(model)
    data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name=publishing.library_name if publishing is not None else PLAIN_LIBRARY_NAME,
        pipeline_tag=trainer.task.pipeline_tag(modality),
        base_model=hub_id(finetuned_from) or hub_id(getattr(getattr(model, "config", None), "_name_or_path", None)),
        datasets=dataset_ids or None,
        tags=["hf-fairquant", "quantization", *(publishing.tags if publishing else ()), "fairness", *extra_tags],
        eval_results=results or None,
    )
    auto_class, pipeline_tag = trainer.task.auto_class(modality), trainer.task.pipeline_tag(modality)
    if publishing is not None:
        load = {"load_line": publishing.load_line(repo_id, auto_class, pipeline_tag),
                "load_snippet": publishing.load_snippet(repo_id, auto_class, pipeline_tag), "backend_note": publishing.note}
    else:  # a full-precision model: plain transformers
        load = {"load_line": f"`{auto_class}.from_pretrained(\"{repo_id}\")` (full precision; no hf_fairquant needed).",
                "load_snippet": (f"from transformers import {auto_class}\n\nmodel = {auto_class}.from_pretrained(\"{repo_id}\")"),
                "backend_note": "Not quantized."}
    what = str(recipe).upper() if recipe else "full precision"
    if pending:
        what = f"full precision, not yet trained or converted (QAT recipe {what} prepared)"
    values = {
        **load,
        "model_name": model_name,
        "repo_id": repo_id,
        "summary": (
            f"{model_name}: trained with `FairQuantTrainer` — {what} "
            f"({bits:.2f} mean weight bits), group sampling `{args.group_sampling}`, loss weighting "
            f"`{json.dumps(to_plain(args.group_weighting))}`, groups by {spec.name}."
        ),
        "provenance": ("This card was written by `FairQuantTrainer` from what the trainer knows: its arguments, "
                       "the groups, the DRO weights and the last evaluation in `trainer.state.log_history`."),
        "size_kb": f"{size / 1e3:.0f}",
        "fp_size_kb": f"{fp_size / 1e3:.0f}",
        "metric_heading": f"{names.label.capitalize()} per group",
        "accuracy_intro": intro,
        "summary_table": table,
        "published_text": published,
        "group_description": f"Groups from the column(s) {', '.join(spec.columns)}: {', '.join(spec.names)}.",
        "train_counts": _counts(train_counts) if train_counts else "not known (no train_dataset)",
        "quantization": quantization,
        "mitigation": mitigation,
        "explanation": "Not measured by the trainer: `hf_fairquant.explain(fp_model, recipe, eval_ds, 'group')` measures it.",
        "limitations": [
            "Per-group numbers are from one evaluation of one training run (one seed), without confidence intervals.",
            "Not measured: latency or memory at inference"
            + (f" ({publishing.speed_note})" if publishing is not None and publishing.speed_note else "") + ".",
        ],
        "command": "FairQuantTrainer(model, FairQuantTrainingArguments(**" + json.dumps(arguments) + "), ...).train()",
        "metric_snippet": metric_load_snippet(),
        "footer": "Every logged number: `trainer.state.log_history` (`trainer_state.json` in checkpoints).",
    }
    return ModelCard.from_template(data, template_path=_template_path(), **values)
