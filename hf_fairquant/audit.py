"""Audit: how post-training quantization changes each group's accuracy and loss.

``audit(model, eval_dataset, recipes, group_spec, calibration_dataset)`` evaluates the
full-precision model once, then each recipe's PTQ model once, and takes every group number
from the ``group_disparity`` evaluate metric (one implementation of the math).
"""

from __future__ import annotations

from .errors import FairQuantError

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from ._atomic import atomic_write_text
from ._text import md_row
from .batching import LABELS, iterate_batches, predict_batches
from .data.preprocessing import check_image_size
from .groups import GroupSpec, as_group_spec
from .metrics import load_group_disparity
from .quantization import (
    RecipeLike,
    check_unique_names,
    effective_bits,
    is_quantized,
    model_size_bytes,
    parse_recipes,
    quantize,
)


@dataclass
class ModelResult:
    """One model's audit row: the group_disparity metric's output plus size facts."""

    name: str
    effective_bits: float
    size_bytes: int
    metrics: dict[str, Any]
    recipe: dict[str, Any] | None = None


@dataclass
class AuditReport:
    """FP vs quantized, per group. ``to_json``/``from_json`` round-trip; ``to_markdown`` renders."""

    group_columns: list[str]
    group_names: list[str]
    fp: ModelResult
    quantized: list[ModelResult]
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ access
    def result(self, name: str) -> ModelResult:
        for r in [self.fp, *self.quantized]:
            if r.name.lower() == name.lower():
                return r
        raise KeyError(f"no audited model named {name!r}; have {[r.name for r in [self.fp, *self.quantized]]}")

    def group_accuracy(self, name: str) -> dict[str, float]:
        return self.result(name).metrics["group_accuracy"]

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AuditReport":
        return cls(
            group_columns=data["group_columns"],
            group_names=data["group_names"],
            fp=ModelResult(**data["fp"]),
            quantized=[ModelResult(**r) for r in data["quantized"]],
            settings=data.get("settings", {}),
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "AuditReport":
        text = Path(text_or_path).read_text() if Path(str(text_or_path)).is_file() else str(text_or_path)
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------ rendering
    def to_markdown(self, max_group_columns: int = 6) -> str:
        """A table: one row per model; accuracies in %, CIs in brackets when bootstrapped."""
        groups = self.group_names if len(self.group_names) <= max_group_columns else []
        head = ["model", "bits", "overall"] + [f"{g}" for g in groups]
        head += ["worst group", "gap", "Δgap vs FP", "drop per group", "disparate drop", "flip rate"]
        rows = [head, ["---"] * len(head)]
        for r in [self.fp, *self.quantized]:
            m = r.metrics
            row = [r.name, f"{r.effective_bits:.2f}", _pct(m["accuracy"])]
            row += [_pct(m["group_accuracy"].get(g), _ci(m, "group_accuracy_ci", g)) for g in groups]
            row += [f"{m['worst_group']} {_pct(m['worst_group_accuracy'])}", _pct(m["accuracy_gap"], _ci(m, "accuracy_gap_ci"))]
            if r is self.fp:
                row += ["—"] * 4
            else:
                drops = m["group_accuracy_drop"]
                shown = groups or [m["worst_group"]]
                row += [
                    _signed_pct(m["gap_change"]),
                    ", ".join(f"{g} {_signed_pct(drops.get(g))}" for g in shown),
                    _pct(m["disparate_drop"], _ci(m, "disparate_drop_ci")),
                    _pct(m["flip_rate"]),
                ]
            rows.append(row)
        lines = [md_row(row) for row in rows]
        counts = self.fp.metrics["group_count"]
        note = (
            f"\nGroups by {'×'.join(self.group_columns)}; test examples per group: "
            + ", ".join(f"{g} {counts.get(g, 0)}" for g in self.group_names)
            + ". Accuracy in %. gap = max − min group accuracy; Δgap = gap − FP gap (points); "
            "drop = FP − quantized accuracy (points; negative: the group gained); disparate drop = "
            "max − min of the per-group drops; flip rate = share of predictions that changed vs FP."
        )
        absent = [g for g in self.group_names if not counts.get(g)]
        if absent:
            note += f" n/a: no test examples of group(s) {', '.join(absent)} (seen in the calibration/training data only)."
        if self.settings.get("n_boot"):
            note += (
                f" Brackets: {self.settings['confidence_level']:.0%} bootstrap intervals "
                f"({self.settings['n_boot']} resamples, stratified by group)."
            )
        return "\n".join(lines) + "\n" + note + "\n"


def _pct(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"  # a group with no test examples
    text = f"{100 * value:.1f}"
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci is not None else "")


def _signed_pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{round(100 * value, 1) + 0.0:+.1f}"  # + 0.0: a rounded -0.0 prints as +0.0


def _ci(metrics: dict, key: str, group: str | None = None) -> list[float] | None:
    value = metrics.get(key)
    if value is None:
        return None
    return value.get(group) if group is not None else value


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ---------------------------------------------------------------- evaluation
def check_audit_arguments(*, calibration_size: Any, batch_size: Any, n_boot: Any, confidence_level: Any, seed: Any) -> None:
    """Types and ranges of audit's numeric options (before any data or model is touched)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    problems = []
    for name, value in (("calibration_size", calibration_size), ("batch_size", batch_size)):
        if not is_int(value) or value <= 0:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if not is_int(n_boot) or n_boot < 0:
        problems.append(f"n_boot must be an integer >= 0 (0: no bootstrap intervals), got {n_boot!r}")
    if isinstance(confidence_level, bool) or not isinstance(confidence_level, (int, float)) or not 0 < confidence_level < 1:
        problems.append(f"confidence_level must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence_level!r}")
    if not is_int(seed) or seed < 0:
        problems.append(f"seed must be an integer >= 0, got {seed!r}")
    if problems:
        raise FairQuantError("; ".join(problems))


def predict(model: torch.nn.Module, dataset: Any, batch_size: int = 256, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One pass: (predicted class, per-example cross-entropy loss) for every row."""
    model.eval()
    batches = iterate_batches(model, dataset, batch_size)
    total = -(-len(dataset) // batch_size)
    return predict_batches(model, tqdm(batches, total=total, desc=desc, disable=desc is None, leave=False))


def audit(
    model: torch.nn.Module,
    eval_dataset: Any,
    recipes: RecipeLike | Iterable[RecipeLike],
    group_spec: GroupSpec | str,
    calibration_dataset: Any = None,
    *,
    calibration_size: int = 512,
    batch_size: int = 256,
    n_boot: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
    quantized_models: Mapping[str, torch.nn.Module] | None = None,
) -> AuditReport:
    """Evaluate ``model`` and its PTQ versions under each recipe, per group.

    ``eval_dataset`` (and ``calibration_dataset``) are preprocessed: model input columns,
    ``labels`` and the group column(s). ``model`` is not modified (each recipe quantizes a
    copy). ``quantized_models`` ({name: model}) adds models quantized elsewhere (e.g. by QAT
    with :class:`~hf_fairquant.FairQuantTrainer`), compared with the same FP reference.
    Everything is validated before the first forward pass.
    """
    check_audit_arguments(calibration_size=calibration_size, batch_size=batch_size, n_boot=n_boot,
                          confidence_level=confidence_level, seed=seed)
    spec = as_group_spec(group_spec)
    recipes = parse_recipes(recipes) if recipes else []
    quantized_models = dict(quantized_models or {})
    check_unique_names([str(r).upper() for r in recipes] + list(quantized_models), "audited models")
    for name, qmodel in quantized_models.items():
        if not is_quantized(qmodel):
            raise FairQuantError(f"quantized_models[{name!r}] holds no quantized module: quantize or train it with QAT first")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    spec.validate(eval_dataset, label_column=LABELS, num_labels=num_labels, split="eval")
    spec = spec if spec.is_fitted else spec.fit(eval_dataset)
    if calibration_dataset is not None:
        GroupSpec(spec.columns).validate(calibration_dataset, label_column=LABELS, num_labels=num_labels, split="calibration")
        spec = GroupSpec(spec.columns).fit(eval_dataset, calibration_dataset)
    if hasattr(model, "config"):
        check_image_size(model.config, eval_dataset)
    for recipe in recipes:
        recipe.plan(model)  # a pattern matching nothing fails here, before any work
        if recipe.uses_activations and calibration_dataset is None:
            raise FairQuantError(f"recipe {recipe} quantizes activations: pass a calibration_dataset")

    metric = load_group_disparity()
    groups = spec.group_names(eval_dataset)
    references = np.asarray(eval_dataset.with_format("numpy")[LABELS][:])
    common = dict(references=references, groups=groups, n_boot=n_boot, confidence_level=confidence_level, seed=seed)

    fp_preds, fp_losses = predict(model, eval_dataset, batch_size, desc="FP" if progress else None)
    fp = ModelResult(
        name="FP",
        effective_bits=effective_bits(model),
        size_bytes=model_size_bytes(model),
        metrics=metric.compute(predictions=fp_preds, losses=fp_losses, **common),
    )

    def evaluate(name: str, qmodel: torch.nn.Module, recipe: dict[str, Any] | None) -> ModelResult:
        preds, losses = predict(qmodel, eval_dataset, batch_size, desc=name if progress else None)
        metrics = metric.compute(
            predictions=preds, losses=losses, reference_predictions=fp_preds, reference_losses=fp_losses, **common
        )
        return ModelResult(name, effective_bits(qmodel), model_size_bytes(qmodel), metrics, recipe)

    results = []
    for recipe in tqdm(recipes, desc="recipes", disable=not progress or not recipes):
        qmodel = quantize(
            copy.deepcopy(model), recipe, calibration_dataset,
            group_spec=spec, calibration_size=calibration_size, seed=seed,
        )
        results.append(evaluate(str(recipe).upper(), qmodel, recipe.to_dict()))
    for name, qmodel in quantized_models.items():
        results.append(evaluate(name, qmodel, None))
    settings = {
        "n_boot": n_boot, "confidence_level": confidence_level, "seed": seed,
        "calibration_size": calibration_size if calibration_dataset is not None else 0,
        "eval_examples": len(eval_dataset),
    }
    return AuditReport(list(spec.columns), spec.names, fp, results, settings)
