"""Audit: how post-training quantization changes each group's accuracy and loss.

``audit(model, eval_dataset, recipes, group_spec, calibration_dataset)`` evaluates the
full-precision model once, then each recipe's PTQ model once, and takes every group number
from the ``group_disparity`` evaluate metric (one implementation of the math).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from . import deployment
from ._atomic import atomic_write_text
from ._config import check_positive_int, resolve_config, split_commas
from ._format import JsonRoundTrip, markdown_table, pct, signed_pct, to_plain
from .errors import FairQuantError
from .groups import INTERSECTION_SEPARATOR, GroupSpec, as_group_spec
from .inputs import GroupedInputs
from .metrics import load_group_disparity
from .quantization import (
    QuantRecipe,
    RecipeLike,
    check_unique_names,
    effective_bits,
    is_quantized,
    model_size_bytes,
    parse_recipes,
    quantize,
)
from .tasks import TaskOutputs

DEFAULT_RECIPES = ("w8a8", "w4a8", "w4", "w2a8")


@dataclass
class AuditConfig:
    """How :func:`audit` quantizes and evaluates (YAML section ``audit``, CLI ``hf-fairquant audit``).

    ``recipes``: presets (``"w4a8"``), comma lists (``"w8a8,w4"``) or recipe mappings
    (``{"preset": "w2a8", "overrides": {...}}``).
    """

    recipes: list[str] = field(
        default_factory=lambda: list(DEFAULT_RECIPES),
        metadata={"help": "PTQ recipes to audit: presets (w8a8, w4a8, w4, w2a8, ...), comma-separated or repeated"},
    )
    calibration_size: int = field(
        default=512, metadata={"help": "group-stratified examples that calibrate activation ranges"}
    )
    batch_size: int = field(default=256, metadata={"help": "examples per forward pass"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the intervals (0: none)"})
    confidence_level: float = field(default=0.95, metadata={"help": "coverage of the bootstrap intervals, in (0, 1)"})
    seed: int = field(default=0, metadata={"help": "seeds calibration sampling and the bootstrap"})
    backend: str | None = field(
        default=None,
        metadata={"help": "quantization backend of the preset recipes: quanto (the default: Conv2d and Linear, static "
                          "a8) or torchao (Linear only, dynamic a8); a preset may name its own, e.g. w4a8@torchao"},
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "evaluate every model through torch.compile (compile seconds reported apart in "
                          "settings.timings_s; a model the compiler cannot handle runs eagerly). Off by default: on a "
                          "CPU compiling costs more than it saves unless a pass takes minutes (docs/performance.md)"},
    )
    shard: bool = field(
        default=True,
        metadata={"help": "under several processes (accelerate launch, torchrun) each evaluates its share of the "
                          "batches and the outputs are gathered in example order (the report equals one process's); "
                          "every process must call audit. --no-shard: every process evaluates everything"},
    )

    def __post_init__(self) -> None:
        self.recipes = split_commas(self.recipes)
        if self.backend is not None:  # every preset string on that backend ("w4a8" → "w4a8@torchao")
            from .quantization import available_backends

            if self.backend not in available_backends():
                raise FairQuantError(f"audit backend {self.backend!r} is not one of {available_backends()}")
            self.recipes = [f"{r}@{self.backend}" if isinstance(r, str) and "@" not in r else r for r in self.recipes]
        check_positive_int("audit calibration_size", self.calibration_size)
        check_positive_int("audit batch_size", self.batch_size)
        check_positive_int("audit n_boot", self.n_boot, allow_zero=True)
        check_positive_int("audit seed", self.seed, allow_zero=True)
        level = self.confidence_level
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise FairQuantError(f"audit confidence_level must be a number in (0, 1), e.g. 0.95; got {level!r}")


@dataclass
class ModelResult:
    """One model's audit row: the group_disparity metric's output plus size facts."""

    name: str
    effective_bits: float
    size_bytes: int
    metrics: dict[str, Any]
    recipe: dict[str, Any] | None = None


@dataclass
class AuditReport(JsonRoundTrip):
    """FP vs quantized, per group. ``to_json``/``from_json(text)`` round-trip, ``save(path)``/
    ``load(path)`` too; ``to_markdown`` renders."""

    group_columns: list[str]
    group_names: list[str]
    fp: ModelResult
    quantized: list[ModelResult]
    settings: dict[str, Any] = field(default_factory=dict)
    #: ``{simulated name: comparison}`` of each deployed (ONNX Runtime) model with its simulation
    deployment: dict[str, Any] = field(default_factory=dict)
    #: the task the rows were measured under (its metric names label the tables)
    task: str = "classification"
    #: the FP model's per-example outputs in this process (never serialised): a later
    #: ``audit(..., reference=report)`` over the same data reuses them instead of a pass
    fp_outputs: TaskOutputs | None = field(default=None, repr=False, compare=False)

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
        data = asdict(self)
        data.pop("fp_outputs")
        return to_plain(data)

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
            deployment=data.get("deployment", {}),
            task=data.get("task", "classification"),
        )

    def extended(self, other: "AuditReport") -> "AuditReport":
        """A new report: these rows, then ``other``'s quantized rows (an audit of more models
        against the same FP reference, e.g. ``audit(..., reference=self)``), timings merged."""
        if other.fp != self.fp or other.group_names != self.group_names:
            raise FairQuantError("only a report against the same FP model and groups extends this one (audit(..., reference=report))")
        timings = {**self.settings.get("timings_s", {}),
                   **{k: v for k, v in other.settings.get("timings_s", {}).items() if k != "FP"}}
        return replace(self, quantized=[*self.quantized, *other.quantized], settings={**self.settings, "timings_s": timings},
                       deployment={**self.deployment, **other.deployment})

    @classmethod
    def from_loaded(cls, data: dict[str, Any]) -> "AuditReport":
        """A saved report, or a run's ``results.json`` (its ``"audit"``)."""
        return cls.from_dict(data["audit"] if "audit" in data and "fp" not in data else data)

    # ------------------------------------------------------------ rendering
    def to_markdown(self, max_group_columns: int = 6) -> str:
        """A table: one row per model; accuracies in %, CIs in brackets when bootstrapped."""
        groups = self.group_names if len(self.group_names) <= max_group_columns else []
        head = ["model", "bits", "overall", *groups]
        head += ["worst group", "gap", "Δgap vs FP", "drop per group", "disparate drop", "flip rate"]
        rows = []
        for r in [self.fp, *self.quantized]:
            m = r.metrics
            row = [r.name, f"{r.effective_bits:.2f}", pct(m["accuracy"])]
            row += [pct(m["group_accuracy"].get(g), _ci(m, "group_accuracy_ci", g)) for g in groups]
            row += [f"{m['worst_group']} {pct(m['worst_group_accuracy'])}", pct(m["accuracy_gap"], _ci(m, "accuracy_gap_ci"))]
            if r is self.fp:
                row += ["—"] * 4
            else:
                drops = m["group_accuracy_drop"]
                shown = groups or [m["worst_group"]]
                row += [
                    signed_pct(m["gap_change"]),
                    ", ".join(f"{g} {signed_pct(drops.get(g))}" for g in shown),
                    pct(m["disparate_drop"], _ci(m, "disparate_drop_ci")),
                    pct(m["flip_rate"]),
                ]
            rows.append(row)
        counts = self.fp.metrics["group_count"]
        note = (
            f"\nGroups by {INTERSECTION_SEPARATOR.join(self.group_columns)}; test examples per group: "
            + ", ".join(f"{g} {counts.get(g, 0)}" for g in self.group_names)
            + ". Accuracy in %. gap = max − min group accuracy; Δgap = gap − FP gap (points); "
            "drop = FP − quantized accuracy (points; negative: the group gained); disparate drop = "
            "max − min of the per-group drops; flip rate = share of predictions that changed vs FP."
        )
        if self.settings.get("eval_only_groups"):
            note += (
                f" Eval-only group(s), with no calibration/training example: {', '.join(self.settings['eval_only_groups'])}."
            )
        absent = [g for g in self.group_names if not counts.get(g)]
        if absent:
            note += f" n/a: no test examples of group(s) {', '.join(absent)} (seen in the calibration/training data only)."
        if self.settings.get("n_boot"):
            note += (
                f" Brackets: {self.settings['confidence_level']:.0%} bootstrap intervals "
                f"({self.settings['n_boot']} resamples, stratified by group)."
            )
        per_group = "" if groups else "\nPer group (one row each, too many groups for columns above):\n\n" + self.group_markdown()
        table = markdown_table(head, rows) + "\n" + note + "\n" + per_group
        if self.deployment:
            table += "\n**Simulated vs deployed**\n\n" + deployment.to_markdown(self.deployment, groups or [])
        return table

    def group_markdown(self) -> str:
        """One row per group (its test count, then each model's accuracy with its bootstrap
        interval): every group's CI stays visible when there are too many groups for columns."""
        models = [self.fp, *self.quantized]
        counts = self.fp.metrics["group_count"]
        rows = [[g, str(counts.get(g, 0))] + [pct(r.metrics["group_accuracy"].get(g), _ci(r.metrics, "group_accuracy_ci", g))
                                              for r in models] for g in self.group_names]
        return markdown_table(["group", "n"] + [r.name for r in models], rows) + "\n"


def _ci(metrics: dict, key: str, group: str | None = None) -> list[float] | None:
    value = metrics.get(key)
    if value is None:
        return None
    return value.get(group) if group is not None else value


# ---------------------------------------------------------------- evaluation
def predict(
    model: torch.nn.Module, dataset: Any, batch_size: int = 256, desc: str | None = None,
    data_collator: Any = None, processing_class: Any = None, group_spec: Any = "group", task: Any = None,
    torch_compile: bool = False,
) -> TaskOutputs:
    """One pass: the task's per-example outputs (``predictions``, ``losses``, …) for every row of
    ``dataset`` (a ``datasets.Dataset`` or :class:`~hf_fairquant.inputs.GroupedInputs`), through
    ``torch.compile`` with ``torch_compile``."""
    inputs = GroupedInputs.of(model, dataset, group_spec, task=task, data_collator=data_collator,
                              processing_class=processing_class)
    return inputs.outputs(model, batch_size, desc, torch_compile=torch_compile)


@dataclass(frozen=True)
class QuantizedModel:
    """A model quantized elsewhere (e.g. by QAT) with the recipe it was quantized with, for
    ``audit(..., quantized_models={name: QuantizedModel(model, recipe)})`` (a bare model works too)."""

    model: torch.nn.Module
    recipe: Any = None


def audit(
    model: torch.nn.Module,
    eval_dataset: Any,
    recipes: RecipeLike | Iterable[RecipeLike] | None = None,
    group_spec: GroupSpec | str = "group",
    calibration_dataset: Any = None,
    *,
    config: AuditConfig | None = None,
    progress: bool = True,
    quantized_models: Mapping[str, torch.nn.Module | QuantizedModel] | None = None,
    deployed_models: Mapping[str, torch.nn.Module] | None = None,
    reference: AuditReport | None = None,
    data_collator: Any = None,
    processing_class: Any = None,
    task: Any = None,
    **options: Any,
) -> AuditReport:
    """Evaluate ``model`` and its PTQ versions under each recipe, per group.

    ``eval_dataset`` (and ``calibration_dataset``) hold the model inputs (materialised or through
    ``with_transform``), ``labels`` or ``label``, and the group column(s) — or are
    :class:`~hf_fairquant.inputs.GroupedInputs`; ``data_collator`` (default: dynamic padding when
    ``processing_class`` is a tokenizer) and ``processing_class`` (an image processor turns a PIL
    column into ``pixel_values``) build the batches, as in ``Trainer``. ``task`` (default: the
    task of the model's head, see :mod:`hf_fairquant.tasks`) says what the per-example outputs
    are. A group with evaluation examples but none in ``calibration_dataset`` is audited
    and listed in ``settings["eval_only_groups"]``. ``model`` is not modified (each recipe
    quantizes a copy). ``recipes`` (default: ``config.recipes``) may be empty to audit only
    ``quantized_models`` ({name: model or :class:`QuantizedModel`}): models quantized elsewhere
    (e.g. by QAT with :class:`~hf_fairquant.FairQuantTrainer`), compared with the same FP reference.
    ``deployed_models`` ({simulated name: model}, e.g. ``{"W8A8": load_onnx(dir)}``) adds the
    artifacts that ship (ONNX Runtime models), each as a row ``"<name> ONNX"`` and compared with
    the simulated row of that name in ``report.deployment``. Options come
    from ``config`` (:class:`AuditConfig`) and/or keywords naming its fields (a keyword wins).
    ``reference``: an earlier report of this process on the same ``eval_dataset`` and FP
    ``model``; its FP row and per-example outputs are reused (no second FP pass).
    Everything is validated before the first forward pass.
    """
    cfg = resolve_config(AuditConfig, config, options, "audit")
    recipes = cfg.recipes if recipes is None else recipes
    calibration_size, batch_size, n_boot = cfg.calibration_size, cfg.batch_size, cfg.n_boot
    confidence_level, seed = cfg.confidence_level, cfg.seed
    spec = as_group_spec(group_spec)
    recipes = parse_recipes(recipes) if recipes else []
    given = {name: q if isinstance(q, QuantizedModel) else QuantizedModel(q) for name, q in (quantized_models or {}).items()}
    check_unique_names([str(r).upper() for r in recipes] + list(given), "audited models")
    deployed_models = dict(deployed_models or {})
    known = {str(r).upper() for r in recipes} | set(given)
    for name, qmodel in deployed_models.items():
        if name not in known:
            raise FairQuantError(f"deployed_models[{name!r}] names no audited model; allowed: {sorted(known)}")
        given[deployment.deployed_name(name)] = QuantizedModel(qmodel)
    for name, q in given.items():
        if not is_quantized(q.model):
            raise FairQuantError(f"quantized_models[{name!r}] holds no quantized module: quantize or train it with QAT first")
    for recipe in recipes:
        recipe.plan(model)  # a pattern matching nothing fails here, before any work
        if recipe.uses_activations and calibration_dataset is None:
            raise FairQuantError(f"recipe {recipe} quantizes activations: pass a calibration_dataset")
    batching = dict(data_collator=data_collator, processing_class=processing_class)
    evaluation = GroupedInputs.of(model, eval_dataset, spec, task=task, split="eval", **batching)
    eval_only: list[str] = []
    calibration = None
    if calibration_dataset is not None:
        calibration = GroupedInputs.of(
            model, calibration_dataset, GroupSpec(spec.columns), task=evaluation.task, split="calibration", **batching
        )
        spec = GroupSpec(spec.columns).fit(evaluation.dataset, calibration.dataset)
        evaluation, calibration = evaluation.with_spec(spec), calibration.with_spec(spec)
        eval_only = spec.eval_only_groups(calibration.dataset, {"eval": evaluation.dataset})
    spec = evaluation.spec
    task = evaluation.task

    if reference is not None and (reference.fp_outputs is None or len(reference.fp_outputs) != len(evaluation)):
        raise FairQuantError(
            "audit(reference=...) needs a report made in this process by audit() on the same eval_dataset "
            f"({len(evaluation)} rows); this one "
            + ("has no per-example FP outputs (loaded from JSON?)" if reference.fp_outputs is None
               else f"covers {len(reference.fp_outputs)} rows")
        )

    metric = load_group_disparity()
    groups = evaluation.group_names()
    boot = dict(n_boot=n_boot, confidence_level=confidence_level, seed=seed)

    def metrics_of(outputs: TaskOutputs, against: TaskOutputs | None = None) -> dict[str, Any]:
        return task.compute_metrics(metric, outputs, evaluation.references, groups, reference=against, **boot)

    timings: dict[str, dict[str, float]] = {}

    def run_pass(evaluated: torch.nn.Module, name: str, clock: dict[str, float]) -> TaskOutputs:
        """One evaluation pass; its seconds in ``clock`` (evaluate_s, and compile_s apart)."""
        started = time.perf_counter()
        outputs = evaluation.outputs(evaluated, batch_size, desc=name if progress else None,
                                     torch_compile=cfg.torch_compile, shard=cfg.shard, timings=clock)
        clock["evaluate_s"] = time.perf_counter() - started - clock.get("compile_s", 0.0)
        return outputs

    if reference is not None:
        fp_outputs, fp = reference.fp_outputs, reference.fp
        timings["FP"] = {**reference.settings.get("timings_s", {}).get("FP", {}), "reused": 1}
    else:
        timings["FP"] = {}
        fp_outputs = run_pass(model, "FP", timings["FP"])
        fp = ModelResult("FP", effective_bits(model), model_size_bytes(model), metrics_of(fp_outputs))

    outputs_of: dict[str, TaskOutputs] = {}

    def evaluate(name: str, qmodel: torch.nn.Module, recipe: dict[str, Any] | None) -> ModelResult:
        outputs_of[name] = run_pass(qmodel, name, timings.setdefault(name, {}))
        return ModelResult(name, effective_bits(qmodel), model_size_bytes(qmodel), metrics_of(outputs_of[name], fp_outputs), recipe)

    results = []
    for recipe in tqdm(recipes, desc="recipes", disable=not progress or not recipes):
        started = time.perf_counter()
        qmodel = quantize(copy.deepcopy(model), recipe, calibration, group_spec=spec, calibration_size=calibration_size, seed=seed)
        timings[str(recipe).upper()] = {"quantize_s": time.perf_counter() - started}
        results.append(evaluate(str(recipe).upper(), qmodel, recipe.to_dict()))
        del qmodel  # one quantized copy alive at a time
    for name, q in given.items():
        recipe = QuantRecipe.parse(q.recipe).to_dict() if q.recipe is not None else None
        results.append(evaluate(name, q.model, recipe))
    settings = {
        "n_boot": n_boot, "confidence_level": confidence_level, "seed": seed,
        "calibration_size": calibration_size if calibration is not None else 0,
        "eval_examples": len(evaluation),
        "eval_only_groups": eval_only,
        "torch_compile": cfg.torch_compile,
        "timings_s": {k: {t: round(v, 3) for t, v in d.items()} for k, d in timings.items()},
    }
    by_name = {r.name: r for r in results}
    compared = {
        name: deployment.compare(
            metric, outputs_of[name].example_predictions(), outputs_of[deployment.deployed_name(name)].example_predictions(),
            by_name[name].metrics, by_name[deployment.deployed_name(name)].metrics,
            references=evaluation.references, groups=groups, **boot,
        )
        for name in deployed_models
    }
    return AuditReport(list(spec.columns), spec.names, fp, results, settings, compared, task=task.name, fp_outputs=fp_outputs)
