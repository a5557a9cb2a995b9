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

import numpy as np
import torch
from tqdm.auto import tqdm

from . import deployment
from ._atomic import atomic_write_text
from ._config import check_n_boot, check_positive_int, resolve_config, split_commas
from ._format import JsonRoundTrip, markdown_table, num, pct, signed, signed_pct, to_plain
from .errors import FairQuantError
from .groups import INTERSECTION_SEPARATOR, GroupSpec, as_group_spec
from .inputs import GroupedInputs
from .metrics import load_group_disparity
from .quantization import (
    FLOAT_SHARE_WARNING,
    check_not_quantized,
    RecipeLike,
    check_pre_quantized,
    check_quantized,
    check_unique_names,
    describe_quantization,
    effective_bits,
    float_kinds,
    float_weights,
    get_artifact,
    load_quantized_checkpoint,
    model_size_bytes,
    parse_recipe,
    parse_recipes,
    quantize,
    recipe_quantizer,
)
from .quantization.serialization import META_NAME
from .tasks import MetricNames, TaskOutputs, get_task

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
    min_group_size: int = field(
        default=30, metadata={"help": "groups with fewer test examples get no interval (a bootstrap of so few covers "
                                      "far less than it claims; see the metric card)"}
    )
    p_adjust: str = field(
        default="holm", metadata={"help": "multiple-comparison adjustment of the per-group McNemar tests: holm, bh or none"}
    )
    backend: str | None = field(
        default=None,
        metadata={"help": "quantization backend of the preset recipes: quanto (the default: Conv2d and Linear, static "
                          "a8) or torchao (Linear only, dynamic a8); a preset may name its own, e.g. w4a8@torchao"},
    )
    quantized_models: list[str] = field(
        default_factory=list,
        metadata={"help": "pre-quantized checkpoints (local folders or Hub ids: torchao, bitsandbytes, or a folder "
                          "written by save_quantized) to audit against the model, each a row named after it"},
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
        self.quantized_models = split_commas(self.quantized_models or [])
        if self.backend is not None:  # every preset string on that backend ("w4a8" → "w4a8@torchao")
            from .quantization import is_preset, recipe_backends

            if self.backend not in recipe_backends():
                raise FairQuantError(f"audit backend {self.backend!r} is not one of {recipe_backends()}")
            self.recipes = [f"{r}@{self.backend}" if is_preset(r) and "@" not in r else r for r in self.recipes]
        check_positive_int("audit calibration_size", self.calibration_size)
        check_positive_int("audit batch_size", self.batch_size)
        check_n_boot("audit n_boot", self.n_boot)
        check_positive_int("audit min_group_size", self.min_group_size, allow_zero=True)
        if self.p_adjust not in ("holm", "bh", "none"):
            raise FairQuantError(f"audit p_adjust must be one of ['holm', 'bh', 'none'], got {self.p_adjust!r}")
        check_positive_int("audit seed", self.seed, allow_zero=True)
        level = self.confidence_level
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise FairQuantError(f"audit confidence_level must be a number in (0, 1), e.g. 0.95; got {level!r}")


@dataclass
class ModelResult:
    """One model's audit row: the group_disparity metric's output plus size facts.

    ``effective_bits``: nominal weight bits, parameter-weighted over the counted layers;
    ``storage_bits``: the same with each layer's quantization state counted (scales, zero points,
    bitsandbytes' absmax and code table); ``size_bytes``: the saved artifact's files when the audit
    saved one (a transformers config's row), else the model's tensors; ``float_share``: the share
    of the counted weights left float, with the largest such layers in ``float_layers``
    (``{name: class}``); ``quantization``: the library (and config) that quantized the model."""

    name: str
    effective_bits: float
    size_bytes: int
    metrics: dict[str, Any]
    recipe: dict[str, Any] | None = None
    storage_bits: float | None = None
    float_share: float | None = None
    float_layers: dict[str, str] | None = None
    quantization: str | None = None


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
    #: ``{row name: comparison}`` of a model with what its saved artifact reloads as (save →
    #: reload): identical outputs, or the reloaded row's name and the flip rate between the two
    round_trips: dict[str, Any] = field(default_factory=dict)
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

    @property
    def metric_names(self) -> MetricNames:
        """What the rows' metrics are called (the task's :class:`~hf_fairquant.tasks.MetricNames`)."""
        return get_task(self.task).metric_names

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
            fp=_model_result(data["fp"]),
            quantized=[_model_result(r) for r in data["quantized"]],
            settings=data.get("settings", {}),
            deployment=data.get("deployment", {}),
            task=data.get("task", "classification"),
            round_trips=data.get("round_trips", {}),
        )

    def extended(self, other: "AuditReport") -> "AuditReport":
        """A new report: these rows, then ``other``'s quantized rows (an audit of more models
        against the same FP reference, e.g. ``audit(..., reference=self)``), timings merged."""
        if other.fp != self.fp or other.group_names != self.group_names:
            raise FairQuantError("only a report against the same FP model and groups extends this one (audit(..., reference=report))")
        timings = {**self.settings.get("timings_s", {}),
                   **{k: v for k, v in other.settings.get("timings_s", {}).items() if k != "FP"}}
        return replace(self, quantized=[*self.quantized, *other.quantized], settings={**self.settings, "timings_s": timings},
                       deployment={**self.deployment, **other.deployment}, round_trips={**self.round_trips, **other.round_trips})

    def float_warnings(self) -> list[str]:
        """One line per quantized row that leaves more than 5 % of its counted weights float."""
        lines = []
        for r in self.quantized:
            if r.float_share is not None and r.float_share > FLOAT_SHARE_WARNING:
                layers = ", ".join(f"{n} ({k})" for n, k in list((r.float_layers or {}).items())[:4])
                more = len(r.float_layers or {}) > 4
                lines.append(f"{r.name} leaves {100 * r.float_share:.1f} % of its weights float ({layers}{' …' if more else ''}): "
                             f"its effective {r.effective_bits:.2f} bits count them at full precision")
        return lines

    def round_trip_lines(self) -> list[str]:
        """One line per model the audit saved and reloaded: identical, or how the reloaded one differs."""
        lines = []
        for name, rt in self.round_trips.items():
            if rt.get("error"):
                lines.append(f"{name}: not saved — {rt['error']} (its size is the model's tensors in memory)")
            elif rt.get("identical"):
                lines.append(f"{name}: saved ({rt['artifact_bytes']:,} bytes) and reloaded: identical outputs")
            else:
                lines.append(f"{name}: the reloaded artifact differs from the model evaluated in memory — flip rate "
                             f"{pct(rt['flip_rate'])} % between them, largest per-example loss change "
                             f"{rt['max_loss_change']:.3g}; audited as row '{rt['reloaded_row']}'")
        return lines

    @classmethod
    def from_loaded(cls, data: dict[str, Any]) -> "AuditReport":
        """A saved report, or a run's ``results.json`` (its ``"audit"``)."""
        return cls.from_dict(data["audit"] if "audit" in data and "fp" not in data else data)

    # ------------------------------------------------------------ rendering
    def to_markdown(self, max_group_columns: int = 6) -> str:
        """A table: one row per model; accuracies in %, CIs in brackets when bootstrapped; then,
        per quantized model and group, the paired test of its drop (see :meth:`paired_markdown`) — a
        language model's table: :func:`perplexity_markdown`."""
        if not self.metric_names.higher_is_better:
            return perplexity_markdown(self, max_group_columns)
        groups = self.group_names if len(self.group_names) <= max_group_columns else []
        counts = self.fp.metrics["group_count"]
        head = ["model", "bits", "overall", *groups]
        head += ["worst group", "gap", "Δgap vs FP", "drop per group", "disparate drop", "flip rate"]
        rows = []
        for r in [self.fp, *self.quantized]:
            m = r.metrics
            row = [r.name, f"{r.effective_bits:.2f}", pct(m["accuracy"])]
            row += [pct(m["group_accuracy"].get(g), self._interval(m, "group_accuracy_ci", g)) for g in groups]
            row += [f"{m['worst_group']} {pct(m['worst_group_accuracy'])}", pct(m["accuracy_gap"], _ci(m, "accuracy_gap_ci"))]
            if r is self.fp:
                row += ["—"] * 4
            else:
                drops = m["group_accuracy_drop"]
                significant = m.get("group_mcnemar_significant") or {}
                shown = groups or [m["worst_group"]]
                row += [
                    signed_pct(m["gap_change"]),
                    ", ".join(f"{g} {signed_pct(drops.get(g))}" + ("*" if significant.get(g) else "") for g in shown),
                    pct(m["disparate_drop"], _ci(m, "disparate_drop_ci")),
                    pct(m["flip_rate"]),
                ]
            rows.append(row)
        note = (
            f"\nGroups by {INTERSECTION_SEPARATOR.join(self.group_columns)}; test examples per group: "
            + ", ".join(f"{g} {counts.get(g, 0)}" for g in self.group_names)
            + ". Accuracy in %. gap = max − min group accuracy; Δgap = gap − FP gap (points); "
            "drop = FP − quantized accuracy (points; negative: the group gained); * = the drop is significant "
            "(exact McNemar test, adjusted for testing every group); disparate drop = "
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
                f" Brackets: {self.settings['confidence_level']:.0%} paired bootstrap intervals "
                f"({self.settings['n_boot']} resamples, stratified by group; each contains its estimate)"
            )
            small = self.fp.metrics.get("groups_too_small_for_interval") or []
            note += (f"; none for group(s) {', '.join(small)}, under {self.settings.get('min_group_size', 30)} test "
                     "examples, nor for the statistics over all groups." if small else ".")
        stored = [r for r in self.quantized if r.storage_bits is not None and abs(r.storage_bits - r.effective_bits) >= 0.005]
        if stored:
            note += (" bits = nominal weight bits over the Linear/Conv/Conv1D weights; stored (state counted: scales, zero "
                     "points, absmax): " + ", ".join(f"{r.name} {r.storage_bits:.2f}" for r in stored) + ".")
        described = [r for r in self.quantized  # rows not made from a preset: a config, a checkpoint, a given model
                     if r.quantization and not (r.recipe and "weight_bits" in r.recipe)]
        if described:
            note += " Quantized by: " + "; ".join(f"{r.name} = {r.quantization}" for r in described) + "."
        for line in self.float_warnings():
            note += f"\n\n**Float weights:** {line}."
        for line in self.round_trip_lines():
            note += f"\n\n**Save → reload:** {line}."
        per_group = "" if groups else "\nPer group (one row each, too many groups for columns above):\n\n" + self.group_markdown()
        table = markdown_table(head, rows) + "\n" + note + "\n" + per_group
        paired = self.paired_markdown()
        if paired:
            table += "\n**Per group, quantized vs FP (paired)**\n\n" + paired
        if self.deployment:
            table += "\n**Simulated vs deployed**\n\n" + deployment.to_markdown(self.deployment, groups or [])
        return table

    def _interval(self, metrics: dict, key: str, group: str) -> Any:
        """A group's interval, or the reason it has none (too few examples)."""
        interval = _ci(metrics, key, group)
        if interval is None and group in (metrics.get("groups_too_small_for_interval") or []):
            return NoInterval(f"no interval: n = {self.fp.metrics['group_count'].get(group, 0)} < "
                              f"{self.settings.get('min_group_size', 30)}")
        return interval

    def paired_markdown(self) -> str:
        """One row per quantized model and group: the drop with its paired interval, the examples
        it newly gets wrong / right, the exact McNemar p-value adjusted over the groups, and — for a
        drop that is not significant — the smallest drop this group's data would have detected
        (power 0.8), so "no significant drop" says how small a drop it rules out."""
        rows = []
        for r in self.quantized:
            m = r.metrics
            if "group_mcnemar_p_adjusted" not in m:
                continue
            for g in self.group_names:
                if g not in m["group_accuracy_drop"]:
                    continue
                significant = (m.get("group_mcnemar_significant") or {}).get(g)
                mde = (m.get("group_min_detectable_drop") or {}).get(g)
                verdict = ("significant" if significant else
                           ("n.s.; detectable ≥ " + (f"{100 * mde:.1f} pt" if mde is not None else "— (too few examples)")))
                rows.append([
                    r.name, g,
                    signed_pct(m["group_accuracy_drop"][g]) + _bracket(self._interval(m, "group_accuracy_drop_ci", g)),
                    f"{m['group_newly_wrong'][g]} / {m['group_newly_right'][g]}",
                    f"{m['group_mcnemar_p_adjusted'][g]:.3g}", verdict,
                ])
        if not rows:
            return ""
        method = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "unadjusted"}.get(self.settings.get("p_adjust", "holm"))
        return (markdown_table(["model", "group", "drop (pt) [interval]", "newly wrong / right", f"McNemar p ({method})",
                                "verdict"], rows)
                + "\nnewly wrong / right: examples the FP model got right and the quantized one wrong, and the reverse; "
                "only these decide the test. detectable ≥ X: the smallest drop the group's data would have shown as "
                "significant 8 times in 10, so a non-significant drop rules out drops about that large, not smaller ones.\n")

    def group_markdown(self) -> str:
        """One row per group (its test count, then each model's accuracy with its bootstrap
        interval): every group's CI stays visible when there are too many groups for columns."""
        if not self.metric_names.higher_is_better:
            return perplexity_group_markdown(self)
        models = [self.fp, *self.quantized]
        counts = self.fp.metrics["group_count"]
        rows = [[g, str(counts.get(g, 0))] + [pct(r.metrics["group_accuracy"].get(g), _ci(r.metrics, "group_accuracy_ci", g))
                                              for r in models] for g in self.group_names]
        return markdown_table(["group", "n"] + [r.name for r in models], rows) + "\n"


class NoInterval(str):
    """Why a number has no interval (printed in its place)."""


def _bracket(interval: Any) -> str:
    if interval is None:
        return ""
    if isinstance(interval, NoInterval):
        return f" [{interval}]"
    return f" [{signed_pct(interval[0])}, {signed_pct(interval[1])}]"


# ---------------------------------------------------------------- a language model's tables
def perplexity_markdown(report: AuditReport, max_group_columns: int = 6) -> str:
    """A causal LM's table: per-group perplexity (token-weighted), the paired NLL increase per
    group against FP and its spread, token agreement with FP; intervals in brackets."""
    names = report.metric_names
    groups = report.group_names if len(report.group_names) <= max_group_columns else []
    head = ["model", "bits", "perplexity", *groups, "worst group", "perplexity gap", "ΔNLL per group",
            "disparate ΔNLL", "token agreement"]
    rows = []
    for r in [report.fp, *report.quantized]:
        m = r.metrics
        row = [r.name, f"{r.effective_bits:.2f}", num(m[names.overall], _ci(m, f"{names.overall}_ci"))]
        row += [num(m[names.group].get(g), _ci(m, f"{names.group}_ci", g)) for g in groups]
        row += [f"{m[names.worst_group]} {num(m[names.worst_value])}", num(m[names.gap], _ci(m, f"{names.gap}_ci"))]
        if r is report.fp:
            row += ["—"] * 3
        else:
            increases = m[names.drop]
            shown = groups or [m.get("most_increased_group", m[names.worst_group])]
            row += [
                ", ".join(f"{g} {signed(increases.get(g))}" for g in shown),
                signed(m[names.disparate], ci=_ci(m, f"{names.disparate}_ci")),
                pct(m.get("agreement")),
            ]
        rows.append(row)
    counts, tokens = report.fp.metrics["group_count"], report.fp.metrics.get("group_tokens", {})
    note = (
        f"\nGroups by {INTERSECTION_SEPARATOR.join(report.group_columns)}; test texts (scored tokens) per group: "
        + ", ".join(f"{g} {counts.get(g, 0)} ({int(tokens.get(g, 0)):,})" for g in report.group_names)
        + ". Perplexity = exp(mean next-token NLL per token of the group); lower is better. gap = max − min group "
        "perplexity. ΔNLL = the model's − FP's mean NLL per token on the same texts (nats; positive: worse); "
        "disparate ΔNLL = max − min of the per-group ΔNLL; token agreement = share of scored tokens whose top-1 "
        "next-token prediction equals the FP model's (in %)."
    )
    if report.settings.get("eval_only_groups"):
        note += f" Eval-only group(s), with no calibration/training text: {', '.join(report.settings['eval_only_groups'])}."
    if report.settings.get("n_boot"):
        note += (
            f" Brackets: {report.settings['confidence_level']:.0%} bootstrap intervals "
            f"({report.settings['n_boot']} resamples of texts, stratified by group and paired)."
        )
    per_group = "" if groups else "\nPer group (one row each, too many groups for columns above):\n\n" + report.group_markdown()
    return markdown_table(head, rows) + "\n" + note + "\n" + per_group


def perplexity_group_markdown(report: AuditReport) -> str:
    """A causal LM's per-group rows: texts, scored tokens, each model's perplexity with its interval."""
    names = report.metric_names
    models = [report.fp, *report.quantized]
    counts, tokens = report.fp.metrics["group_count"], report.fp.metrics.get("group_tokens", {})
    rows = [[g, str(counts.get(g, 0)), f"{int(tokens.get(g, 0)):,}"]
            + [num(r.metrics[names.group].get(g), _ci(r.metrics, f"{names.group}_ci", g)) for r in models]
            for g in report.group_names]
    return markdown_table(["group", "texts", "tokens"] + [r.name for r in models], rows) + "\n"


def _model_result(data: dict[str, Any]) -> ModelResult:
    """A saved row; bits not known when it was written (JSON null, e.g. a model compared from
    lm-eval samples) read back as NaN."""
    bits = data.get("effective_bits")
    return ModelResult(**{**data, "effective_bits": float("nan") if bits is None else bits})


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
    """A model quantized elsewhere (e.g. by QAT, or by any library) with the recipe it was quantized
    with, for ``audit(..., quantized_models={name: QuantizedModel(model, recipe)})`` (a bare model
    works too; ``model`` may also be a checkpoint: a local folder or Hub id, loaded after its format
    is checked)."""

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
    A value of ``quantized_models`` may also be a checkpoint (a local folder or Hub id:
    pre-quantized torchao or bitsandbytes, or a folder written by ``save_quantized``), as may each
    entry of ``config.quantized_models`` (named after its path); their formats are checked before
    any work (GPTQ, AWQ, compressed-tensors need packages and a GPU here: refused, naming what).
    A recipe may be a transformers quantization config (``BitsAndBytesConfig(load_in_4bit=True)``,
    ``TorchAoConfig(...)``, an alias such as ``"bnb-nf4"``): the model is built as transformers builds
    it, audited, then saved and reloaded, and the reloaded artifact is audited too when its outputs
    differ (``report.round_trips``).
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
    check_not_quantized(model, "audit")  # the FP reference: a quantized one would audit against itself
    spec = as_group_spec(group_spec)
    recipes = parse_recipes(recipes) if recipes else []
    given = {name: q if isinstance(q, QuantizedModel) else QuantizedModel(q) for name, q in (quantized_models or {}).items()}
    for path in cfg.quantized_models:
        given[checkpoint_name(path)] = QuantizedModel(path)
    check_unique_names([r.row_name for r in recipes] + list(given), "audited models")
    deployed_models = dict(deployed_models or {})
    known = {r.row_name for r in recipes} | set(given)
    for name, qmodel in deployed_models.items():
        if name not in known:
            raise FairQuantError(f"deployed_models[{name!r}] names no audited model; allowed: {sorted(known)}")
        given[deployment.deployed_name(name)] = QuantizedModel(qmodel)
    for name, q in given.items():
        if isinstance(q.model, (str, Path)):  # a checkpoint: its format must load on this machine
            check_loadable(q.model, f"quantized_models[{name!r}]")
        else:
            check_quantized(q.model, f"quantized_models[{name!r}]")
    for recipe in recipes:
        recipe.plan(model)  # a pattern matching nothing, or a config this machine cannot run, fails here
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
    boot = dict(n_boot=n_boot, confidence_level=confidence_level, seed=seed, min_group_size=cfg.min_group_size,
                p_adjust=cfg.p_adjust)

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

    def evaluate(name: str, qmodel: torch.nn.Module, recipe: dict[str, Any] | None, how: str | None = None) -> ModelResult:
        outputs_of[name] = run_pass(qmodel, name, timings.setdefault(name, {}))
        share, floats = float_weights(qmodel)
        return ModelResult(
            name, effective_bits(qmodel), model_size_bytes(qmodel), metrics_of(outputs_of[name], fp_outputs), recipe,
            storage_bits=effective_bits(qmodel, count_state=True), float_share=share,
            float_layers=float_kinds(qmodel, list(floats)[:8]) if floats else {},
            quantization=how or describe_quantization(qmodel),
        )

    round_trips: dict[str, Any] = {}

    def round_trip(name: str, row: ModelResult, qmodel: torch.nn.Module, artifact: Any, recipe: dict[str, Any]) -> None:
        """Save and reload what was built (what ships); audit the reloaded model if it differs."""
        started = time.perf_counter()
        reloaded, size, error = artifact.save_and_reload(qmodel)
        if reloaded is None:
            round_trips[name] = {"identical": None, "error": error}
            return
        row.size_bytes = size  # the saved artifact's bytes
        outputs = evaluation.outputs(reloaded, batch_size, desc=f"{name} reloaded" if progress else None, shard=cfg.shard)
        timings.setdefault(name, {})["round_trip_s"] = time.perf_counter() - started
        mine = outputs_of[name]
        identical = bool(np.array_equal(mine.predictions, outputs.predictions) and np.array_equal(mine.losses, outputs.losses))
        entry = {"identical": identical, "artifact_bytes": size, "error": None}
        if not identical:
            reloaded_name = f"{name} reloaded"
            outputs_of[reloaded_name] = outputs
            share, floats = float_weights(reloaded)
            results.append(ModelResult(
                reloaded_name, effective_bits(reloaded), size, metrics_of(outputs, fp_outputs), recipe,
                storage_bits=effective_bits(reloaded, count_state=True), float_share=share,
                float_layers=float_kinds(reloaded, list(floats)[:8]) if floats else {},
                quantization=row.quantization,
            ))
            entry.update(
                reloaded_row=reloaded_name,
                flip_rate=float(1.0 - mine.agreement(outputs).mean()) if len(mine) else 0.0,
                max_loss_change=float(np.max(np.abs(mine.losses - outputs.losses))) if len(mine) else 0.0,
            )
        round_trips[name] = entry

    results = []
    for recipe in tqdm(recipes, desc="recipes", disable=not progress or not recipes):
        started = time.perf_counter()
        quantizer = recipe_quantizer(recipe)
        source = model if quantizer.builds_new_model else copy.deepcopy(model)  # a builder leaves the model as it was
        qmodel = quantize(source, recipe, calibration, group_spec=spec, calibration_size=calibration_size, seed=seed)
        timings[recipe.row_name] = {"quantize_s": time.perf_counter() - started}
        row = evaluate(recipe.row_name, qmodel, recipe.to_dict(), recipe.describe() if quantizer.builds_new_model else None)
        results.append(row)
        if quantizer.audits_round_trip:
            round_trip(recipe.row_name, row, qmodel, get_artifact(quantizer.name), recipe.to_dict())
        del qmodel, source  # one quantized copy alive at a time
    for name, q in given.items():
        recipe = parse_recipe(q.recipe).to_dict() if q.recipe is not None else None
        if isinstance(q.model, (str, Path)):
            started = time.perf_counter()
            loaded = load_quantized_checkpoint(q.model, model_class=type(model))
            timings[name] = {"load_s": time.perf_counter() - started}
            results.append(evaluate(name, loaded, recipe or {"checkpoint": str(q.model)}))
            del loaded
        else:
            results.append(evaluate(name, q.model, recipe))
    settings = {
        "n_boot": n_boot, "confidence_level": confidence_level, "seed": seed,
        "min_group_size": cfg.min_group_size, "p_adjust": cfg.p_adjust,
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
    return AuditReport(list(spec.columns), spec.names, fp, results, settings, compared, task=task.name,
                       round_trips=round_trips, fp_outputs=fp_outputs)


def checkpoint_name(path: str | Path) -> str:
    """The row name of a checkpoint: a Hub id as given, a local folder by its name."""
    text = str(path).rstrip("/")
    return Path(text).name if Path(text).expanduser().exists() else text


def check_loadable(path: str | Path, what: str) -> None:
    """Before any work: a checkpoint given as a quantized model is one this machine can load —
    a folder written by ``save_quantized``, or a pre-quantized transformers checkpoint whose format
    has its package (and GPU) here."""
    from ._paths import local_folder_or_hub_id

    where = local_folder_or_hub_id(path, what)
    if isinstance(where, Path) and (where / META_NAME).is_file():
        return
    try:
        check_pre_quantized(where)
    except FairQuantError as err:
        raise type(err)(f"{what}: {err}") from None
